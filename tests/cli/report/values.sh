. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/report/fixture.bash"
# fedseg-report on three aggregated rounds (fixture.bash: west missing in round 1 with an
# unsigned receipt, west's NaN update rejected in round 2): --json carries the signed
# reports' values unchanged (Dice per site and federation-wide, norms, losses, participation
# with the rejection reason); the HTML is well-formed, self-contained, has the plots
# (svg.plot#dice-WT, dice-TC, dice-ET, norms, loss, participation) with one point or cell
# per site and round, and escapes what the inputs say. Quiet on success.

# Quiet under cron: nothing on stdout or stderr.
expect_exit 0 fedseg-report ex -o report.html --aggregator-pub pub
expect_stdout_empty
expect_stderr_empty
[ -s report.html ] || fail "no report.html"
# --json: the same data on stdout; the pinned key may also be the minisign.pub file.
expect_exit 0 fedseg-report ex --json --aggregator-pub pub/minisign.pub
expect_json
cp "$TMP/stdout" report.json
# -v: one summary line.
expect_exit 0 fedseg-report ex -o report2.html --aggregator-pub pub -v
expect_stderr_lines 1
expect_stderr_has "report2.html"

"$PY" - <<'PYEOF'
import json
import math
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

doc = json.load(open("report.json"))
reports = [json.load(open("ex/rounds/%d/report.json" % r)) for r in range(3)]
sites = ["north", "south", "west"]
regions = ["WT", "TC", "ET"]

assert doc["tool"] == "fedseg-report" and doc["federation"] == "fedr", doc["federation"]
assert doc["verification"] == "pinned" and doc["problems"] == [], (doc["verification"], doc["problems"])
assert doc["latest"]["round"] == 3 and doc["rounds_aggregated"] == 3, (doc["latest"], doc["rounds_aggregated"])
assert doc["sites"] == sites and doc["rule"] == "fedavg", (doc["sites"], doc["rule"])
assert [r["round"] for r in doc["rounds"]] == [0, 1, 2, 3]
assert [r["status"] for r in doc["rounds"]] == ["aggregated"] * 3 + ["open"]

# Values straight from the signed reports.
for r, rep in enumerate(reports):
    got = doc["rounds"][r]
    assert got["update_norm"] == rep["update_norm"], (r, got["update_norm"])
    m = rep["metrics"]
    for g in regions:
        for k in ("mean", "median", "std", "n"):
            assert got["dice"][g][k] == m["federation"]["dice"][g][k], (r, g, k)
    msites = {s["site"]: s for s in m["sites"]}
    acc = {a["site"]: a for a in rep["accepted"]}
    rej = {a["site"]: a for a in rep["rejected"]}
    for s in sites:
        x = got["sites"][s]
        if s in msites:
            assert x["dice"] == {g: msites[s]["dice"][g] for g in regions}, (r, s, x["dice"])
            assert x["metrics"] == "accepted"
        else:
            assert x["dice"] is None and x["metrics"] == "missing", (r, s, x)
        if s in acc:
            assert x["participation"] == "accepted", (r, s, x)
            for k in ("norm", "weight", "cosine", "num_examples"):
                assert x[k] == acc[s][k], (r, s, k)
            assert x["epoch_loss"] == acc[s]["train"]["epoch_loss"], (r, s)
            assert x["loss"] == acc[s]["train"]["epoch_loss"][-1], (r, s)
        elif s in rej:
            assert x["participation"] == "rejected" and x["reason"] == rej[s]["reason"] and x["class"] == rej[s]["class"], x
        else:
            assert s in rep["quorum"]["missing"] and x["participation"] == "missing", (r, s, x)

p = {(r["round"], s): r["sites"][s]["participation"] for r in doc["rounds"] for s in sites}
assert p[(1, "west")] == "missing" and p[(2, "west")] == "rejected" and p[(0, "west")] == "accepted", p
assert all(p[(3, s)] == "pending" for s in sites), p
w2 = doc["rounds"][2]["sites"]["west"]
assert w2["class"] == "values" and "NaN" in w2["reason"], w2
rc = doc["rounds"][1]["sites"]["west"]["receipt"]
assert rc["signed"] is False and rc["status"] == "failed" and rc["step"] == "train" and rc["exit_class"] == "data", rc
assert doc["rounds"][0]["sites"]["west"]["receipt"] is None

# The HTML: well-formed (it is also valid XML), self-contained, escaped.
text = open("report.html", encoding="utf-8").read()
ET.fromstring(text[text.index("<html"):])
low = text.lower()
assert "<script" not in low and "<link" not in low and "src=" not in low and "url(" not in low, "external or script content"
assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;bad&quot;" in text, "receipt message not escaped"
assert "unsigned" in text

class Svg(HTMLParser):
    def __init__(self):
        super().__init__()
        self.plots, self.cur, self.points, self.cells = {}, None, {}, {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and "plot" in (a.get("class") or "").split():
            self.cur = a["id"]
            self.plots[self.cur] = 0
            self.points[self.cur] = {}
        elif tag == "circle" and self.cur and a.get("class") == "pt":
            self.points[self.cur][(a["data-site"], int(a["data-round"]))] = float(a["data-value"])
        elif tag == "g" and self.cur == "participation" and a.get("class") == "cell":
            self.cells[(a["data-site"], int(a["data-round"]))] = a["data-state"]
    def handle_endtag(self, tag):
        if tag == "svg":
            self.cur = None

h = Svg()
h.feed(text)
want = {"dice-WT", "dice-TC", "dice-ET", "norms", "loss", "participation"}
assert want <= set(h.plots), sorted(h.plots)
def close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
for r, rep in enumerate(reports):
    msites = {s["site"]: s for s in rep["metrics"]["sites"]}
    acc = {a["site"]: a for a in rep["accepted"]}
    for g in regions:
        pts = h.points["dice-" + g]
        for s in sites:
            if s in msites:
                assert close(pts[(s, r)], msites[s]["dice"][g]), ("dice", g, s, r)
            else:
                assert (s, r) not in pts, ("dice point without metrics", g, s, r)
        assert close(pts[("federation", r)], rep["metrics"]["federation"]["dice"][g]["mean"]), ("dice fed", g, r)
    for s in sites:
        if s in acc:
            assert close(h.points["norms"][(s, r)], acc[s]["norm"]), ("norm", s, r)
            assert close(h.points["loss"][(s, r)], acc[s]["train"]["epoch_loss"][-1]), ("loss", s, r)
        else:
            assert (s, r) not in h.points["norms"] and (s, r) not in h.points["loss"], (s, r)
    assert close(h.points["norms"][("aggregate", r)], rep["update_norm"]), r
for (r, s), st in p.items():
    assert h.cells[(s, r)] == st, (s, r, h.cells.get((s, r)), st)
assert len(h.cells) == 12, len(h.cells)
PYEOF
