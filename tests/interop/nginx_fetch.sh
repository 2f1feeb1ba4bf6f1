. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/transfer/nginx.bash"
# fedseg-fetch against a real nginx: download, nothing to do when identical, 73 when
# different, --force, 404 -> 66, 403 -> 77, --sha256, quiet under cron, no part file left.
head -c 300000 /dev/urandom >"$WWW/files/global.h5"
echo other >"$WWW/files/other"
plain_server
nginx_start
R=(--retries 2 --retry-delay 0.05)

mkdir out
expect_exit 0 fedseg-fetch "$BASE/files/global.h5" out/ "${R[@]}"
expect_stdout_empty
expect_stderr_empty
cmp out/global.h5 "$WWW/files/global.h5" || fail "fetched bytes differ"
no_part_files out
# Again: identical, nothing to do.
expect_exit 0 fedseg-fetch "$BASE/files/global.h5" out/global.h5 "${R[@]}" --json
expect_json
[ "$(json_field action)" = unchanged ] || fail "expected unchanged: $(cat stdout)"
# A different existing file: 73 (sizes differ: decided by HEAD), then --force.
expect_exit 73 fedseg-fetch "$BASE/files/other" out/global.h5 "${R[@]}"
expect_stderr_has "output exists 'out/global.h5'"
expect_stderr_lines 1
cmp out/global.h5 "$WWW/files/global.h5" || fail "73 changed the file"
expect_exit 0 fedseg-fetch "$BASE/files/other" out/global.h5 "${R[@]}" --force
cmp out/global.h5 "$WWW/files/other" || fail "--force did not replace"
no_part_files out
# Same size, different bytes: downloaded, compared, refused.
head -c 300000 /dev/urandom >"$WWW/files/same-size"
cp "$WWW/files/global.h5" out/same-size
expect_exit 73 fedseg-fetch "$BASE/files/same-size" out/same-size "${R[@]}"
cmp out/same-size "$WWW/files/global.h5" || fail "73 changed the file"
no_part_files out
# Missing -> 66, forbidden -> 77: no retries for either, nothing left behind.
expect_exit 66 fedseg-fetch "$BASE/files/missing.h5" out/ "${R[@]}" --json
expect_json
[ "$(json_field retries)" = 0 ] || fail "404 was retried"
[ "$(json_field http_status)" = 404 ] || fail "http_status: $(cat stdout)"
expect_exit 77 fedseg-fetch "$BASE/forbidden/x" out/ "${R[@]}"
expect_stderr_has "not permitted '$BASE/forbidden/x': HTTP 403"
[ ! -e out/missing.h5 ] && [ ! -e out/x ] || fail "output after an error"
no_part_files out
# --sha256: a mismatch is 65 and leaves nothing; a match is 0.
sha=$(sha256sum "$WWW/files/global.h5" | cut -d' ' -f1)
expect_exit 65 fedseg-fetch "$BASE/files/global.h5" out/g2.h5 "${R[@]}" --sha256 "$(printf '0%.0s' $(seq 64))"
[ ! -e out/g2.h5 ] || fail "checksum mismatch left a file"
expect_exit 0 fedseg-fetch "$BASE/files/global.h5" out/g2.h5 "${R[@]}" --sha256 "$sha"
no_part_files out
# --https-only refuses plain http (69); a URL as DEST is a usage error (64).
expect_exit 69 fedseg-fetch "$BASE/files/global.h5" out/g3.h5 --https-only
expect_exit 64 fedseg-fetch "$BASE/files/global.h5" "$BASE/dav/x"
# -v prints one summary line.
expect_exit 0 fedseg-fetch "$BASE/files/global.h5" out/g4.h5 -v
expect_stderr_has "fetched $BASE/files/global.h5 -> out/g4.h5: 300000 bytes"
