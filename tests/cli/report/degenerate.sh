. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/report/fixture.bash"
# Values a site controls must not hang or break the report (both were bugs): training losses
# that give a plot's y-range a width of a few ulps (0.1 from three sites averages to
# 0.10000000000000002: the tick loop never advanced), huge and equal values, and a receipt
# message cut at 300 bytes in the middle of a UTF-8 character (--json failed with 70).
# The reports are edited, so they are read with --unverified.
"$PY" - <<'PYEOF'
import json
for r in (0, 1, 2):
    p = "ex/rounds/%d/report.json" % r
    d = json.load(open(p))
    # One site: its loss 0.1 against the federation's 3 * 0.1 / 3 = 0.10000000000000002;
    # norms 1e15 and 1e15 + 0.125 from round to round.
    d["accepted"] = d["accepted"][:1]
    a = d["accepted"][0]
    a["num_examples"] = 3
    a.setdefault("train", {})["epoch_loss"] = [0.1]
    a["norm"] = 1e15 + 0.125 * (r % 2)
    json.dump(d, open(p, "w"))
rc = "ex/rounds/1/receipts/west.json"
d = json.load(open(rc))
d["message"] = "a" * 299 + "\u00e9 and more"
json.dump(d, open(rc, "w"), ensure_ascii=False)
PYEOF
expect_exit 0 timeout 20 fedseg-report ex -o r.html --unverified
expect_exit 0 timeout 20 fedseg-report ex --json --unverified
expect_json
"$PY" - "$TMP/stdout" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
msgs = [(v.get("receipt") or {}).get("message") for r in d["rounds"] for v in r["sites"].values()]
msgs = [m for m in msgs if m]
assert any(m == "a" * 299 for m in msgs), msgs
PYEOF
[ $? = 0 ] || fail "the receipt message was not cut at a character boundary"
"$PY" -c '
import sys
from html.parser import HTMLParser
HTMLParser().feed(open("r.html", encoding="utf-8").read())
' || fail "r.html is not valid UTF-8 HTML"
