. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (crypto issue, item 2): fedseg::crypto interoperates both ways with
# Debian's own `age` (1.1.1) and `minisign` (0.11), which hospital IT uses to
# audit packages, for payloads of 0, 1, 65535, 65536, 65537 bytes and 10 MB:
#   our .age decrypts with `age -d -i`; `age -r` output decrypts with ours (and
#   both give the same ciphertext size);
#   `minisign -V -H` accepts our signatures with the trusted comment intact; we
#   accept minisign's, including one made with a password-protected key from
#   `minisign -G`, which we also load ourselves (password from a file and from an
#   environment variable) and sign with.
for tool in age age-keygen minisign; do
  command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install age minisign; see tests/interop/PACKAGES_CRYPTO)"
done
command -v fedseg-agetool >/dev/null || fail "fedseg-agetool not built in $FEDSEG_BUILD/bin"
umask 077

age-keygen -o cli.agekey 2>/dev/null
CLI_R=$(age-keygen -y cli.agekey)
expect_exit 0 fedseg-agetool --age-keygen -o impl.agekey
IMPL_R=$(cat "$TMP/stdout")
[ "$(age-keygen -y impl.agekey)" = "$IMPL_R" ] || fail "age-keygen -y disagrees with our recipient $IMPL_R"

minisign -G -W -p cli.pub -s cli.key >/dev/null
expect_exit 0 fedseg-agetool --minisign-keygen -p impl.pub -s impl.key
IMPL_ID=$(cat "$TMP/stdout")
grep -qx "untrusted comment: minisign public key $IMPL_ID" impl.pub || fail "public key comment: $(cat impl.pub)"

for n in 0 1 65535 65536 65537 10000000; do
  head -c "$n" /dev/urandom >"p$n.bin"
  # age: ours -> age CLI
  expect_exit 0 fedseg-agetool --encrypt -r "$CLI_R" -r "$IMPL_R" "p$n.bin" -o "ours$n.age"
  expect_exit 0 age -d -i cli.agekey "ours$n.age"  # plaintext in $TMP/stdout (age -o makes no file for 0 bytes)
  cmp -s "p$n.bin" "$TMP/stdout" || fail "age -d of our $n-byte file differs"
  # age: age CLI -> ours
  expect_exit 0 age -r "$IMPL_R" -r "$CLI_R" -o "cli$n.age" "p$n.bin"
  expect_exit 0 fedseg-agetool --decrypt -i impl.agekey "cli$n.age" -o "d2_$n.bin"
  cmp -s "p$n.bin" "d2_$n.bin" || fail "our decryption of age's $n-byte file differs"
  [ "$(stat -c %s "ours$n.age")" -eq "$(stat -c %s "cli$n.age")" ] || fail "ciphertext sizes differ for $n bytes"

  # minisign: we sign (our key and minisign's -W key), minisign verifies with -H (prehashed only)
  tc="fedseg1 fed=f1 round=7 site=hospA kind=update n=$n plain=$(sha256sum "p$n.bin" | cut -d' ' -f1)"
  for key in impl cli; do
    expect_exit 0 fedseg-agetool --sign -s "$key.key" -t "$tc" "ours$n.age" -x "ours$n.$key.minisig"
    expect_exit 0 minisign -V -H -p "$key.pub" -m "ours$n.age" -x "ours$n.$key.minisig" -Q
    [ "$(cat "$TMP/stdout")" = "$tc" ] || fail "minisign -V printed '$(cat "$TMP/stdout")', want '$tc'"
  done
  # minisign signs (its key and our unencrypted key, no password), we verify
  for key in cli impl; do
    expect_exit 0 minisign -S -s "$key.key" -m "cli$n.age" -x "cli$n.$key.minisig" -t "$tc"
    expect_exit 0 fedseg-agetool --verify -p "$key.pub" "cli$n.age" -x "cli$n.$key.minisig"
    [ "$(cat "$TMP/stdout")" = "$tc" ] || fail "our verify printed '$(cat "$TMP/stdout")', want '$tc'"
  done
done

# Byte-identical signatures: Ed25519 is deterministic, so both tools must write the same file.
expect_exit 0 minisign -S -s cli.key -m p1.bin -x same_cli.minisig -t "same"
expect_exit 0 fedseg-agetool --sign -s cli.key -t "same" p1.bin -x same_ours.minisig
cmp -s same_cli.minisig same_ours.minisig || fail "our signature file differs from minisign's: $(diff same_cli.minisig same_ours.minisig)"

# Tampering is caught by both sides alike.
sed 's/^trusted comment: fedseg1 fed=f1 round=7/trusted comment: fedseg1 fed=f1 round=8/' ours1.impl.minisig >forged.minisig
expect_exit 65 fedseg-agetool --verify -p impl.pub ours1.age -x forged.minisig
expect_stderr_has "trusted comment"
expect_exit 1 minisign -V -p impl.pub -m ours1.age -x forged.minisig
sed '1s/.*/untrusted comment: edited/' ours1.impl.minisig >edited.minisig
expect_exit 0 fedseg-agetool --verify -p impl.pub ours1.age -x edited.minisig
expect_exit 65 fedseg-agetool --verify -p cli.pub ours1.age -x ours1.impl.minisig
expect_stderr_has "$IMPL_ID"
expect_exit 65 fedseg-agetool --verify -p impl.pub ours0.age -x ours1.impl.minisig
# A legacy (not prehashed) signature is refused by us and by minisign -H.
expect_exit 0 minisign -S -l -s cli.key -m p1.bin -x legacy.minisig
expect_exit 65 fedseg-agetool --verify -p cli.pub p1.bin -x legacy.minisig
expect_stderr_has "legacy"
expect_exit 1 minisign -V -H -p cli.pub -m p1.bin -x legacy.minisig

# Password-protected key from minisign -G (scrypt, ~1 GiB): minisign signs with it,
# we verify; we load it (password file, environment variable) and minisign verifies.
printf 'hunter2\nhunter2\n' | minisign -G -p enc.pub -s enc.key >/dev/null 2>&1 || fail "minisign -G with a password failed"
grep -q '^RWRTY' enc.key || fail "minisign -G did not write a scrypt-protected key: $(cat enc.key)"
printf 'hunter2\n' | minisign -S -s enc.key -m cli1.age -x cli1.enc.minisig -t "enc by minisign" >/dev/null 2>&1 ||
  fail "minisign -S with the password-protected key failed"
expect_exit 0 fedseg-agetool --verify -p enc.pub cli1.age -x cli1.enc.minisig
[ "$(cat "$TMP/stdout")" = "enc by minisign" ] || fail "trusted comment: $(cat "$TMP/stdout")"
printf 'hunter2\n' >pw.txt
chmod 600 pw.txt
expect_exit 0 fedseg-agetool --sign -s enc.key --password-file pw.txt -t "enc by fedseg (file)" ours1.age -x o1.pwfile.minisig
expect_exit 0 minisign -V -H -p enc.pub -m ours1.age -x o1.pwfile.minisig -Q
[ "$(cat "$TMP/stdout")" = "enc by fedseg (file)" ] || fail "trusted comment: $(cat "$TMP/stdout")"
expect_exit 0 env FEDSEG_TEST_PW=hunter2 fedseg-agetool --sign -s enc.key --password-env FEDSEG_TEST_PW -t "enc by fedseg (env)" ours1.age -x o1.pwenv.minisig
expect_exit 0 minisign -V -H -p enc.pub -m ours1.age -x o1.pwenv.minisig -Q
[ "$(cat "$TMP/stdout")" = "enc by fedseg (env)" ] || fail "trusted comment: $(cat "$TMP/stdout")"
expect_exit 78 env FEDSEG_TEST_PW=wrong fedseg-agetool --sign -s enc.key --password-env FEDSEG_TEST_PW -t x ours1.age -x bad.minisig
expect_exit 78 fedseg-agetool --sign -s enc.key -t x ours1.age -x bad.minisig
[ ! -e bad.minisig ] || fail "a signature was written despite the failure"

# Secret keys readable by others are refused, naming the file; public keys are not.
chmod 644 impl.key impl.pub
expect_exit 77 fedseg-agetool --sign -s impl.key -t x p1.bin -x x.minisig
expect_stderr_has "impl.key"
chmod 640 impl.agekey
expect_exit 77 fedseg-agetool --decrypt -i impl.agekey cli1.age -o x.bin
expect_stderr_has "impl.agekey"
chmod 600 impl.agekey
expect_exit 0 fedseg-agetool --verify -p impl.pub ours1.age -x ours1.impl.minisig

# A damaged or truncated file fails with exit 65 and leaves no output behind.
head -c -1 cli65537.age >trunc.age
expect_exit 65 fedseg-agetool --decrypt -i impl.agekey trunc.age -o trunc.bin
expect_stderr_has "payload"
[ ! -e trunc.bin ] || fail "partial plaintext left behind"
expect_exit 0 age -r "$CLI_R" -o cli_only.age p1.bin
expect_exit 65 fedseg-agetool --decrypt -i impl.agekey cli_only.age -o x.bin
expect_stderr_has "no_match"
[ ! -e x.bin ] || fail "output written for a file we cannot decrypt"
