. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/report/fixture.bash"
# fedseg-report verifies every input before use: a report.json with one byte changed is
# listed (one error line naming it), counted and not used, the page is still written, exit
# 65; --unverified reads it anyway and says so; a plan signed by another key than the pinned
# one writes nothing (65). Exit codes: 66 no exchange / no federation.json, 73 the output
# exists (without --force), 64 nothing to write.

# Usage and missing inputs.
expect_exit 64 fedseg-report ex --aggregator-pub pub
expect_exit 64 fedseg-report ex -o x.html --aggregator-pub pub --unverified
expect_exit 66 fedseg-report no-such-exchange -o x.html --aggregator-pub pub
expect_stderr_lines 1
expect_stderr_has "no-such-exchange"
mkdir empty-ex
expect_exit 66 fedseg-report empty-ex -o x.html --aggregator-pub pub
expect_stderr_has "federation.json"
[ ! -e x.html ] || fail "x.html written for a missing exchange"

# An existing output is kept unless --force.
echo keep >out.html
expect_exit 73 fedseg-report ex -o out.html --aggregator-pub pub
expect_stderr_has "out.html"
[ "$(cat out.html)" = keep ] || fail "out.html replaced without --force"
expect_exit 0 fedseg-report ex -o out.html --aggregator-pub pub --force
grep -q 'id="dice-WT"' out.html || fail "out.html not replaced with --force"

# The plan signed by the aggregator, but another key pinned: nothing is written.
expect_exit 65 fedseg-report ex -o wrongkey.html --aggregator-pub id-north
expect_stderr_has "federation.json"
[ ! -e wrongkey.html ] || fail "a report was written with a plan that did not verify"

# One byte of round 1's report changed (a digit of the aggregate's norm).
"$PY" - <<'PYEOF'
p = "ex/rounds/1/report.json"
b = bytearray(open(p, "rb").read())
i = b.index(b'"update_norm": ') + len(b'"update_norm": ') + 3
b[i] = ord("1") if b[i] != ord("1") else ord("2")
open(p, "wb").write(bytes(b))
PYEOF
expect_exit 65 fedseg-report ex -o tampered.html --aggregator-pub pub
expect_stderr_lines 1
expect_stderr_has "rounds/1/report.json"
[ -s tampered.html ] || fail "no report written when one input failed verification"
expect_exit 65 fedseg-report ex --json --aggregator-pub pub
expect_json
cp "$TMP/stdout" tampered.json
expect_exit 0 fedseg-report ex --json --unverified
expect_stderr_has "unverified"
cp "$TMP/stdout" unverified.json
expect_exit 0 fedseg-report ex -o unverified.html --unverified

"$PY" - <<'PYEOF'
import json
from html.parser import HTMLParser
d = json.load(open("tampered.json"))
assert len(d["problems"]) == 1, d["problems"]
pr = d["problems"][0]
assert pr["file"].endswith("rounds/1/report.json") and pr["class"] == "signature", pr
r1 = d["rounds"][1]
assert r1["status"] == "failed verification" and "update_norm" not in r1, r1
assert all(x["participation"] == "unknown" and "norm" not in x for x in r1["sites"].values()), r1["sites"]
assert [r["status"] for r in d["rounds"]] == ["aggregated", "failed verification", "aggregated", "open"]
assert d["rounds_aggregated"] == 2

class Points(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rounds, self.cells = set(), {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "circle" and a.get("class") == "pt":
            self.rounds.add(int(a["data-round"]))
        if tag == "g" and a.get("class") == "cell":
            self.cells[(a["data-site"], int(a["data-round"]))] = a["data-state"]
text = open("tampered.html", encoding="utf-8").read()
h = Points()
h.feed(text)
assert h.rounds == {0, 2}, ("round 1's values were used", h.rounds)
assert h.cells[("north", 1)] == "unknown", h.cells
assert 'id="problems"' in text and "rounds/1/report.json" in text, "the bad file is not listed"

u = json.load(open("unverified.json"))
assert u["verification"] == "none" and u["problems"] == [] and u["aggregator_key"] is None, u["verification"]
assert u["rounds"][1]["status"] == "aggregated"
assert u["rounds"][1]["update_norm"] == json.load(open("ex/rounds/1/report.json"))["update_norm"]
assert "--unverified" in open("unverified.html", encoding="utf-8").read()
PYEOF
