# Shared by the package tests (sourced after lib.sh; not a test case itself):
# identities for an aggregator and three sites, a roster federation.json for fed1
# listing the aggregator, hospital-a and hospital-b (not hospital-c), signed by the
# aggregator, and round-3 updates of hospital-a and hospital-b.
BASE=$(printf 'b%.0s' $(seq 64))
make_federation() {
  local s
  for s in agg hospital-a hospital-b hospital-c; do
    fedseg-keygen -q -o "$s" --site "${s/agg/aggregator}" >/dev/null || fail "keygen $s"
  done
  "$PY" - <<'PYEOF'
import json
def pub(d):
    r = [l for l in open(d + "/age.pub").read().split("\n") if l and not l.startswith("#")][0]
    k = open(d + "/minisign.pub").read().split("\n")[1]
    return {"age_recipient": r, "minisign_public_key": k}
doc = {"fedseg_federation": 1, "federation": "fed1", "aggregator": pub("agg"),
       "sites": [dict(id=s, **pub(s)) for s in ("hospital-a", "hospital-b")],
       "plan": {"rounds": 10}}
json.dump(doc, open("federation.json", "w"), indent=1)
PYEOF
  fedseg-agetool --sign -s agg/minisign.key -t "fedseg roster fed1" federation.json -x federation.json.minisig >/dev/null ||
    fail "cannot sign the roster"
  for s in hospital-a hospital-b; do
    fedseg-testwrite -o "$s.h5" --kind update --site "$s" --base "$BASE" --federation fed1 --round 3 \
      --shape "${SHAPE:-16,16,16}" >/dev/null || fail "testwrite $s"
  done
}
# no_plaintext DIR: no decrypted file or temp file left in DIR.
no_plaintext() {
  local left
  left=$(find "${1:-.}" -maxdepth 1 \( -name 'out*.h5' -o -name '.*fedseg-tmp*' \) | head -3)
  [ -z "$left" ] || fail "plaintext left behind: $left"
}
