. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/verify/fixture.bash"
# fedseg-pack: exit codes, outputs, the signed comment and its JSON report.
make_federation
expect_exit 0 fedseg-pack --help
expect_stdout_has "--zstd"
expect_exit 64 fedseg-pack --no-such-flag
expect_exit 64 fedseg-pack hospital-a.h5 --key hospital-a -o a.age          # no --to
expect_exit 64 fedseg-pack hospital-a.h5 --key hospital-a --to agg -o a.age --zstd=30
expect_exit 66 fedseg-pack missing.h5 --key hospital-a --to agg -o a.age
expect_exit 66 fedseg-pack hospital-a.h5 --key nowhere --to agg -o a.age
expect_exit 66 fedseg-pack hospital-a.h5 --key hospital-a --to nowhere -o a.age
expect_exit 65 fedseg-pack hospital-a.h5 --key hospital-a --to age1notarecipient -o a.age
[ ! -e a.age ] && [ ! -e a.age.minisig ] || fail "outputs written despite errors"

expect_exit 0 fedseg-pack hospital-a.h5 --key hospital-a --to agg --to hospital-a/age.pub -o a.age --json
expect_json
"$PY" - "$TMP/stdout" "$BASE" "$(sha256sum hospital-a.h5 | cut -d' ' -f1)" <<'PYEOF'
import json, re, sys
j = json.load(open(sys.argv[1]))
f = j["fields"]
assert (f["federation"], f["round"], f["site"], f["kind"], f["base"], f["enc"]) == ("fed1", 3, "hospital-a", "update", sys.argv[2], "age"), f
assert f["plain"] == sys.argv[3], f
assert re.fullmatch(r"[0-9a-f]{32}", f["nonce"]), f
assert j["recipients"] == 2 and j["signature"] == "a.age.minisig"
tc = open("a.age.minisig").read().split("\n")[2]
assert tc == "trusted comment: " + j["trusted_comment"], tc
assert re.fullmatch(r"fedseg1 fed=fed1 round=3 site=hospital-a kind=update base=[0-9a-f]{64} plain=[0-9a-f]{64} enc=age ts=\d+ nonce=[0-9a-f]{32}", j["trusted_comment"])
PYEOF
[ "$(stat -c %a a.age)" = 644 ] || fail "a.age mode"

# Existing outputs: 73 unless --force; either file blocks.
expect_exit 73 fedseg-pack hospital-a.h5 --key hospital-a --to agg -o a.age
rm a.age
expect_exit 73 fedseg-pack hospital-a.h5 --key hospital-a --to agg -o a.age
[ ! -e a.age ] || fail "a.age written although a.age.minisig existed"
expect_exit 0 fedseg-pack hospital-a.h5 --key hospital-a --to agg -o a.age --force --zstd=5
expect_stdout_has "a.age.minisig"
grep -q 'enc=zstd+age' a.age.minisig || fail "no enc=zstd+age"
expect_exit 0 fedseg-verify a.age --pub hospital-a --identity agg -o out.h5
cmp -s hospital-a.h5 out.h5 || fail "round trip differs"
ls -a | grep -q fedseg-tmp && fail "temp files left"

# Not packable: a dataset, an update without site, a global model with a site.
fedseg-testwrite -o ds.h5 --kind dataset >/dev/null
expect_exit 65 fedseg-pack ds.h5 --key hospital-a --to agg -o ds.age
expect_stderr_has "kind 'dataset'"
fedseg-testwrite -o nosite.h5 --kind update >/dev/null
expect_exit 65 fedseg-pack nosite.h5 --key hospital-a --to agg -o ns.age
expect_stderr_has "site"
fedseg-testwrite -o g.h5 --kind global --federation fed1 --round 4 >/dev/null
expect_exit 0 fedseg-pack g.h5 --key agg --to hospital-a --to hospital-b -o g.age
grep -q 'site=- kind=global base=-' g.age.minisig || fail "global comment: $(sed -n 3p g.age.minisig)"
expect_exit 0 fedseg-verify g.age --federation federation.json --identity hospital-b -o out_g.h5
cmp -s g.h5 out_g.h5 || fail "global round trip differs"

# A secret key readable by others is refused (77).
chmod 644 hospital-a/minisign.key
expect_exit 77 fedseg-pack hospital-a.h5 --key hospital-a --to agg -o b.age
expect_stderr_has "minisign.key"
