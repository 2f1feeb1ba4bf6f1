. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# fedseg-keygen writes the four identity files in the standard tools' own formats
# and modes, prints a phone-readable fingerprint, and never overwrites a key.
expect_exit 0 fedseg-keygen --help
expect_stdout_has "fedseg-keygen"
expect_exit 64 fedseg-keygen --no-such-flag
expect_exit 64 fedseg-keygen
expect_exit 64 fedseg-keygen -o id --site 'bad site'
[ ! -e id ] || fail "folder created despite the usage error"

expect_exit 0 fedseg-keygen -o id --site hospital-a
expect_stdout_has "fingerprint:"
fp=$(sed -n 's/^fingerprint: *//p' "$TMP/stdout")
[[ "$fp" =~ ^([0-9A-F]{4} ){7}[0-9A-F]{4}$ ]] || fail "fingerprint '$fp' is not 8 groups of 4 hex digits"
[ "$(stat -c %a id/age.key)" = 600 ] || fail "age.key mode $(stat -c %a id/age.key)"
[ "$(stat -c %a id/minisign.key)" = 600 ] || fail "minisign.key mode"
[ "$(stat -c %a id/age.pub)" = 644 ] || fail "age.pub mode"
[ "$(stat -c %a id/minisign.pub)" = 644 ] || fail "minisign.pub mode"
grep -q "hospital-a" id/age.key || fail "no --site label in age.key"
recipient=$(grep -v '^#' id/age.pub)
[[ "$recipient" == age1* ]] || fail "age.pub: $(cat id/age.pub)"
expect_stdout_has "$recipient"

# The same fingerprint from the public files alone (the other end of the phone call).
expect_exit 0 fedseg-keygen --fingerprint id --json
expect_json
"$PY" - "$TMP/stdout" "$fp" "$recipient" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["fingerprint"] == sys.argv[2], j
assert j["age_recipient"] == sys.argv[3], j
assert len(j["minisign_key_id"]) == 16 and len(j["minisign_public_key"]) == 56, j
assert j["created"] is False
PYEOF
expect_exit 66 fedseg-keygen --fingerprint nowhere

# Never overwrite, not even with --force; nothing else is written either.
before=$(sha256sum id/* | sha256sum)
expect_exit 73 fedseg-keygen -o id
expect_stderr_has "id/age.key"
expect_exit 73 fedseg-keygen -o id --force
[ "$(sha256sum id/* | sha256sum)" = "$before" ] || fail "an identity file changed"
mkdir partial && echo x >partial/minisign.pub
expect_exit 73 fedseg-keygen -o partial
[ ! -e partial/age.key ] || fail "keygen wrote into a folder holding a key file"

# Usable by the standard tools when installed (the interop tests do more).
if command -v age >/dev/null && command -v minisign >/dev/null; then
  echo hello >m.txt
  expect_exit 0 age -R id/age.pub -o m.age m.txt
  expect_exit 0 age -d -i id/age.key m.age
  expect_stdout_has hello
  expect_exit 0 minisign -S -s id/minisign.key -m m.txt
  expect_exit 0 minisign -V -p id/minisign.pub -m m.txt
fi
