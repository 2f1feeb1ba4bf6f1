. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/verify/fixture.bash"
# Hospital IT audits packages with Debian's own tools: `minisign -Vm NAME.age -p
# site/minisign.pub` prints the trusted comment, and `age -d -i aggregator/age.key`
# (then `zstd -d` when enc=zstd+age) reproduces the plaintext whose sha256 is plain=.
# And the reverse: a package made with the standard tools alone verifies with ours.
for tool in age minisign zstd; do
  command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install age minisign zstd)"
done
SHAPE=64,64,64 make_federation
for z in "" --zstd; do
  rm -f a.age a.age.minisig
  expect_exit 0 fedseg-pack hospital-a.h5 --key hospital-a --to agg $z -o a.age
  expect_exit 0 minisign -Vm a.age -p hospital-a/minisign.pub -Q
  tc=$(cat "$TMP/stdout")
  [ "$tc" = "$(sed -n 's/^trusted comment: //p' a.age.minisig)" ] || fail "minisign printed '$tc'"
  plain=$(echo "$tc" | sed -E 's/.* plain=([0-9a-f]{64}) .*/\1/')
  if [ -n "$z" ]; then
    [[ "$tc" == *" enc=zstd+age "* ]] || fail "enc: $tc"
    age -d -i agg/age.key a.age | zstd -q -d >plain.h5
  else
    [[ "$tc" == *" enc=age "* ]] || fail "enc: $tc"
    age -d -i agg/age.key -o plain.h5 a.age
  fi
  [ "$(sha256sum plain.h5 | cut -d' ' -f1)" = "$plain" ] || fail "sha256 of the audited plaintext is not plain="
  cmp -s plain.h5 hospital-a.h5 || fail "audited plaintext differs"
  # minisign also rejects a package tampered with.
  cp a.age t.age && printf 'x' >>t.age && cp a.age.minisig t.age.minisig
  expect_exit 1 minisign -Vm t.age -p hospital-a/minisign.pub -Q
done

# Made with the standard tools only (the reference recipe), verified and unpacked by fedseg.
R=$(grep -v '^#' agg/age.pub)
zstd -q -3 -c hospital-b.h5 | age -r "$R" -o b.age
tc="fedseg1 fed=fed1 round=3 site=hospital-b kind=update base=$BASE plain=$(sha256sum hospital-b.h5 | cut -d' ' -f1) enc=zstd+age ts=$(date +%s) nonce=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
minisign -S -s hospital-b/minisign.key -m b.age -t "$tc" >/dev/null
expect_exit 0 fedseg-verify b.age --federation federation.json --aggregator-pub agg --identity agg -o out_b.h5 \
  --expect-round 3 --expect-site hospital-b
cmp -s out_b.h5 hospital-b.h5 || fail "unpacked file differs"
