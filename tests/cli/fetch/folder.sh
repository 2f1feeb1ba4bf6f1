. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# fedseg-fetch between folders (a shared NFS/SMB mount): atomic copy, identical -> 0,
# different -> 73 unless --force, missing -> 66, a folder as DEST, no temp file left.
mkdir share local
head -c 100000 /dev/urandom >share/global.h5
expect_exit 0 fedseg-fetch share/global.h5 local/
expect_stdout_empty
expect_stderr_empty
cmp share/global.h5 local/global.h5 || fail "copy differs"
expect_exit 0 fedseg-fetch share/global.h5 local/global.h5 --json
expect_json
grep -q '"action": "unchanged"' stdout || fail "not unchanged: $(cat stdout)"
echo different >share/other
expect_exit 73 fedseg-fetch share/other local/global.h5
expect_stderr_has "output exists 'local/global.h5'"
expect_exit 0 fedseg-fetch share/other local/global.h5 --force
cmp share/other local/global.h5 || fail "--force did not replace"
expect_exit 66 fedseg-fetch share/missing local/
expect_exit 64 fedseg-fetch share/global.h5 ftp://example/x
[ -z "$(find local -name '.*')" ] || fail "temp files left: $(ls -A local)"
