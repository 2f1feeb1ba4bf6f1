. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/aggregate/fixture.bash"
# A federation just made by fedseg-init (LATEST = round 0, nothing aggregated): the report
# has every plot, empty with a message, and round 0 open; without LATEST the rounds are
# found by their folders (a warning, still exit 0).
make_ids north south
make_fed ex fede north,south --preset small --base-filters 2 --depth 1 --seed 3
expect_exit 0 fedseg-report ex -o report.html --json --aggregator-pub agg
expect_json
"$PY" - <<'PYEOF'
import json
d = json.load(open("stdout"))  # expect_exit kept it in $TMP, the current folder
assert d["rounds_aggregated"] == 0 and d["latest"]["round"] == 0, d
assert [(r["round"], r["status"]) for r in d["rounds"]] == [(0, "open")], d["rounds"]
assert all(x["participation"] == "pending" for x in d["rounds"][0]["sites"].values())
t = open("report.html", encoding="utf-8").read()
for i in ("dice-WT", "dice-TC", "dice-ET", "norms", "loss", "participation"):
    assert 'class="plot" id="%s"' % i in t, i
assert t.count("no round aggregated yet") >= 5, t.count("no round aggregated yet")
assert 'class="pt"' not in t
PYEOF
rm ex/LATEST ex/LATEST.minisig
expect_exit 0 fedseg-report ex -o report2.html --aggregator-pub agg
expect_stderr_has "LATEST"
