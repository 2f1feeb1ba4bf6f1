. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/verify/fixture.bash"
# Acceptance (packages issue, item 3): every tampered package is rejected with
# its class, exit 65, and no plaintext (nor temp file) is written. Each case
# drives the real path: fedseg-verify against the signed roster with the
# aggregator's identity, unpacking to out.h5.
command -v fedseg-agetool >/dev/null || fail "fedseg-agetool not built"
make_federation
expect_exit 0 fedseg-pack hospital-a.h5 --key hospital-a --to agg --zstd -o a.age
expect_exit 0 fedseg-pack hospital-b.h5 --key hospital-b --to agg -o b.age

# reject CLASS AGE [SIG] [extra options]: exit 65, the class named, nothing written.
reject() {
  local cls=$1 age=$2 sig=${3:-}
  shift 3 || shift $#
  local sigopt=()
  [ -n "$sig" ] && sigopt=(--signature "$sig")
  expect_exit 65 fedseg-verify "$age" "${sigopt[@]}" --federation federation.json --aggregator-pub agg \
    --identity agg -o out.h5 "$@"
  expect_stderr_has "package rejected ($cls)"
  no_plaintext .
}
expect_exit 0 fedseg-verify a.age --federation federation.json --aggregator-pub agg --identity agg -o out.h5
rm out.h5

# 1. One bit flipped at 100 random positions of the .age and of the .minisig
#    (each file; positions drawn with a fixed seed, printed on failure).
"$PY" - <<'PYEOF'
import os, random, subprocess, sys
rnd = random.Random(20240611)
fails = []
for name in ("a.age", "a.age.minisig"):
    data = open(name, "rb").read()
    positions = rnd.sample(range(len(data)), 100)
    for pos in positions:
        bit = rnd.randrange(8)
        bad = bytearray(data)
        bad[pos] ^= 1 << bit
        age, sig = ("t.age", "t.age.minisig")
        open(age, "wb").write(bad if name == "a.age" else open("a.age", "rb").read())
        open(sig, "wb").write(bad if name != "a.age" else open("a.age.minisig", "rb").read())
        r = subprocess.run(["fedseg-verify", age, "--federation", "federation.json", "--aggregator-pub", "agg",
                            "--identity", "agg", "-o", "out.h5"], capture_output=True, text=True)
        left = [f for f in os.listdir(".") if f.startswith("out") or "fedseg-tmp" in f]
        if r.returncode != 65 or "package rejected (signature)" not in r.stderr or left:
            fails.append((name, pos, bit, r.returncode, r.stderr.strip(), left))
for f in fails[:5]:
    print("FAIL flip", f, file=sys.stderr)
sys.exit(1 if fails else 0)
PYEOF

# 2. Truncation and appended bytes, of either file.
head -c -1 a.age >t.age && cp a.age.minisig t.age.minisig
reject signature t.age
head -c 1000 a.age >t.age
reject signature t.age
cp a.age t.age && printf 'x' >>t.age
reject signature t.age
cp a.age t.age && head -c 65536 /dev/urandom >>t.age
reject signature t.age
cp a.age t.age && head -c -2 a.age.minisig >t.age.minisig
reject signature t.age
cp a.age.minisig t.age.minisig && printf 'x\n' >>t.age.minisig
reject signature t.age
cp a.age.minisig t.age.minisig && printf '\n' >>t.age.minisig
reject signature t.age
: >t.age.minisig
reject signature t.age
# The untrusted comment is not signed, so fedseg fixes it: an edit is rejected too.
sed '1s/.*/untrusted comment: edited/' a.age.minisig >t.age.minisig
reject signature t.age

# 3. A signature swapped between sites (hospital-b's .minisig on hospital-a's .age).
cp a.age t.age && cp b.age.minisig t.age.minisig
reject signature t.age

# 3b. A valid .minisig (authentic trusted comment, known key, right fields) beside
#     other ciphertext. verify checks the comment before reading the .age, then
#     hashes and decrypts concurrently: the file signature must still decide, before
#     anything is published, whatever decryption made of the bytes; nothing is left
#     in the output folder, not even the temp file.
#     (i) The same plaintext packed again: decrypts to exactly the signed plain=
#     and the right inner attributes; only the file signature catches it.
expect_exit 0 fedseg-pack hospital-a.h5 --key hospital-a --to agg --zstd -o again.age
cp again.age t.age && cp a.age.minisig t.age.minisig
reject signature t.age
expect_stderr_has "bad_signature"
for t in 1 2; do
  reject signature t.age "" --threads "$t"
done
#     (ii) Hospital B's package (valid ciphertext, other plaintext); (iii) an age file
#     that does not decrypt for us; (iv) a decompression bomb encrypted to the
#     aggregator (anyone can): rejected as signature, not as what decryption found.
cp b.age t.age
reject signature t.age
head -c 70000 /dev/urandom >t.age
reject signature t.age
#     The bomb: one zstd frame of 8192 RLE blocks, 32 KiB that expand to 1 GiB.
"$PY" -c 'import sys; b = bytes([2, 0, 0x10, 0]); sys.stdout.buffer.write(bytes([0x28, 0xB5, 0x2F, 0xFD, 0, 0x38]) + b * 8191 + bytes([3, 0, 0x10, 0]))' >bomb.zst
fedseg-agetool --encrypt -r "$(grep -v '^#' agg/age.pub)" bomb.zst -o t.age >/dev/null
reject signature t.age
rm -f again.age again.age.minisig bomb.zst

# 4. Site B re-signs site A's ciphertext. Claiming site B (its own key), it passes
#    the signature and fields but the HDF5 inside says hospital-a: inner. Claiming
#    site A with B's key: fields.
tc=$(sed -n 's/^trusted comment: //p' a.age.minisig)
cp a.age t.age
fedseg-agetool --sign -s hospital-b/minisign.key -t "${tc/site=hospital-a/site=hospital-b}" t.age -x t.age.minisig >/dev/null
reject inner t.age
expect_stderr_has "inner attribute site 'hospital-a'"
fedseg-agetool --sign -s hospital-b/minisign.key -t "$tc" t.age -x t.age.minisig >/dev/null
reject fields t.age
expect_stderr_has "key of site 'hospital-b'"

# 5. An old round replayed: round 3 is not the open round 4.
reject fields a.age "" --expect-round 4
expect_stderr_has "round 3, expected 4"

# 6. An unknown key: hospital-c is not in the roster; a --pub key that did not sign.
expect_exit 0 fedseg-testwrite -o c.h5 --kind update --site hospital-c --federation fed1 --round 3
expect_exit 0 fedseg-pack c.h5 --key hospital-c --to agg -o c.age
reject signature c.age
expect_stderr_has "not in the roster"
expect_exit 65 fedseg-verify a.age --pub hospital-b --identity agg -o out.h5
expect_stderr_has "package rejected (signature)"
no_plaintext .

# The other classes, each with its own message: hash (plain= is not the
# plaintext's sha256, validly signed by the site), fields (malformed or
# non-canonical comments, other federation), decrypt, size.
tc_hash="${tc/plain=/plain=0}"
tc_hash=$(echo "$tc_hash" | sed -E 's/plain=0([0-9a-f]{63})[0-9a-f]/plain=0\1/')
fedseg-agetool --sign -s hospital-a/minisign.key -t "$tc_hash" t.age -x t.age.minisig >/dev/null
reject hash t.age
no_plaintext .
for bad in "${tc/fedseg1 /fedseg2 }" "${tc/ round=3/ round=03}" "${tc/ nonce=/  nonce=}" "$tc extra=1" \
  "${tc/ ts=/ ts=1 ts=}" "${tc/fed=fed1/fed=fed2}" "${tc/kind=update/kind=dataset}" "${tc/enc=zstd+age/enc=gzip}"; do
  fedseg-agetool --sign -s hospital-a/minisign.key -t "$bad" t.age -x t.age.minisig >/dev/null
  reject fields t.age
done
# A valid signature over a file that is not an age file for us: decrypt.
head -c 5000 /dev/urandom >t.age
fedseg-agetool --sign -s hospital-a/minisign.key -t "$tc" t.age -x t.age.minisig >/dev/null
reject decrypt t.age
reject size a.age "" --max-size 1000
# Validly signed and encrypted, but the zstd payload is garbage or cut short: decrypt.
R=$(grep -v '^#' agg/age.pub)
head -c 5000 /dev/urandom >junk.bin
fedseg-agetool --encrypt -r "$R" junk.bin -o t.age >/dev/null
fedseg-agetool --sign -s hospital-a/minisign.key -t "$tc" t.age -x t.age.minisig >/dev/null
reject decrypt t.age
expect_stderr_has "does not decompress"
command -v zstd >/dev/null || exit 0
zstd -q -c hospital-a.h5 | head -c 2000 >part.zst
fedseg-agetool --encrypt -r "$R" part.zst -o t.age >/dev/null
fedseg-agetool --sign -s hospital-a/minisign.key -t "$tc" t.age -x t.age.minisig >/dev/null
reject decrypt t.age
expect_stderr_has "truncated"
