. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/verify/fixture.bash"
# fedseg-verify: usage and input errors, the bound fields as text and JSON, the
# --expect-* checks, the roster's trust root and unpacking.
make_federation
expect_exit 0 fedseg-pack hospital-a.h5 --key hospital-a --to agg --zstd -o a.age

expect_exit 0 fedseg-verify --help
expect_stdout_has "--expect-round"
expect_exit 64 fedseg-verify --no-such-flag a.age --pub hospital-a
expect_exit 64 fedseg-verify a.age                                       # no key
expect_exit 64 fedseg-verify a.age --pub hospital-a --federation federation.json
expect_exit 64 fedseg-verify a.age --pub hospital-a -o out.h5            # -o without --identity
expect_exit 66 fedseg-verify missing.age --pub hospital-a
expect_exit 66 fedseg-verify a.age --pub nowhere
expect_exit 66 fedseg-verify a.age --federation missing.json
cp a.age lone.age
expect_exit 66 fedseg-verify lone.age --pub hospital-a                   # no lone.age.minisig

# Text: the bound fields on stdout.
expect_exit 0 fedseg-verify a.age --pub hospital-a
expect_stdout_has "good signature by key"
expect_stdout_has "round       3"
expect_stdout_has "site        hospital-a"
expect_stdout_has "enc         zstd+age"
# Roster: the signer is named.
expect_exit 0 fedseg-verify a.age --federation federation.json --aggregator-pub agg --expect-federation fed1 \
  --expect-round 3 --expect-site hospital-a --expect-kind update --expect-base "$BASE" --json
expect_json
"$PY" - "$TMP/stdout" "$(sha256sum hospital-a.h5 | cut -d' ' -f1)" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["ok"] is True and j["signer"] == "hospital-a" and j["unpacked"] is None, j
assert j["fields"]["plain"] == sys.argv[2] and j["fields"]["round"] == 3, j
PYEOF

# Each --expect-* mismatch is a `fields` failure (65).
for opt in "--expect-federation fed2" "--expect-round 4" "--expect-site hospital-b" "--expect-kind metrics" \
  "--expect-base $(printf 'c%.0s' $(seq 64))"; do
  # shellcheck disable=SC2086
  expect_exit 65 fedseg-verify a.age --federation federation.json $opt
  expect_stderr_has "package rejected (fields)"
  expect_stderr_lines 1
done
expect_exit 65 fedseg-verify a.age --federation federation.json --expect-round 4 --json
expect_json
"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["ok"] is False and j["error"]["class"]=="fields" and j["error"]["code"]==65, j' "$TMP/stdout"
expect_exit 65 fedseg-verify a.age --pub hospital-a --max-size 100
expect_stderr_has "package rejected (size)"

# Trust root: the roster's signature must verify with the pinned aggregator key.
expect_exit 65 fedseg-verify a.age --federation federation.json --aggregator-pub hospital-b
sed -i 's/"rounds": 10/"rounds": 11/' federation.json
expect_exit 65 fedseg-verify a.age --federation federation.json --aggregator-pub agg
expect_exit 0 fedseg-verify a.age --federation federation.json     # unpinned: the local copy is trusted
rm federation.json.minisig
expect_exit 66 fedseg-verify a.age --federation federation.json --aggregator-pub agg
expect_exit 64 fedseg-verify a.age --pub hospital-a --aggregator-pub agg

# Unpack: the plaintext appears (0600), existing output 73 unless --force.
expect_exit 0 fedseg-verify a.age --pub hospital-a --identity agg -o out.h5 --expect-round 3
expect_stdout_has "unpacked    out.h5"
cmp -s hospital-a.h5 out.h5 || fail "unpacked file differs"
[ "$(stat -c %a out.h5)" = 600 ] || fail "plaintext mode $(stat -c %a out.h5)"
expect_exit 73 fedseg-verify a.age --pub hospital-a --identity agg -o out.h5
expect_exit 0 fedseg-verify a.age --pub hospital-a --identity agg/age.key -o out.h5 --force --json
expect_json
"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["unpacked"]=="out.h5" and j["plain_bytes"]>0, j' "$TMP/stdout"
# --identity without -o: every step, the plaintext in memory, nothing written.
before=$(ls -A)
expect_exit 0 fedseg-verify a.age --pub hospital-a --identity agg --json
expect_json
"$PY" -c 'import json, os, sys; j = json.load(open(sys.argv[1]))
assert j["unpacked"] is None and j["plain_bytes"] == os.path.getsize("hospital-a.h5"), j' "$TMP/stdout"
expect_exit 0 fedseg-verify a.age --pub hospital-a --identity agg --threads 1
expect_stdout_has "decrypted   in memory ($(stat -c %s hospital-a.h5) bytes"
[ "$(ls -A)" = "$before" ] || fail "verify --identity without -o wrote a file: $(ls -A)"
expect_exit 65 fedseg-verify a.age --pub hospital-a --identity hospital-b
expect_stderr_has "package rejected (decrypt)"
# An identity that is not a recipient: decrypt failure, nothing written.
rm out.h5
expect_exit 65 fedseg-verify a.age --pub hospital-a --identity hospital-b -o out.h5
expect_stderr_has "package rejected (decrypt)"
expect_stderr_has "no_match"
no_plaintext .
chmod 644 agg/age.key
expect_exit 77 fedseg-verify a.age --pub hospital-a --identity agg -o out.h5
no_plaintext .
