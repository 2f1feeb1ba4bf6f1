. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/aggregate/fixture.bash"
# The sites' evaluations of round R's global model (rounds/R/metrics/<site>.age) are combined
# into report.json "metrics" (issue 7): per site the means, federation-wide the mean, median
# and std pooled over every case (so the mean is weighted by case count), checked against
# numpy. A metrics package for another model is rejected and listed, a missing one listed;
# neither holds up the round.
make_ids north south west
make_fed ex fedm north,south,west --preset small --base-filters 2 --depth 1 --seed 3

"$PY" - <<'PYEOF'
import json
import h5py
import numpy as np
from aggtest import params, flat, unflat, write_update, sha256
rng = np.random.default_rng(11)
g = "ex/rounds/0/global.h5"
g0 = params(g)
for k, s in enumerate(("north", "south", "west")):
    write_update("u-%s.h5" % s, g, s, 10 + k, unflat(0.01 * rng.standard_normal(flat(g0).size), g0))

def write_metrics(path, site, n, base, hd95="pooled"):
    """A metrics file as fedseg-eval -o M.h5 writes it (docs/formats.md, Metrics)."""
    with h5py.File(path, "w") as f:
        f.attrs["fedseg_format"] = np.int64(1)
        f.attrs["kind"] = "metrics"
        f.attrs["created"] = "2026-01-01T00:00:00Z"
        f.attrs["tool"] = "aggregate-test"
        f.attrs["provenance"] = json.dumps({"split": "val", "hd95": hd95})
        f.attrs["federation"] = "fedm"
        f.attrs["round"] = np.int64(0)
        f.attrs["site"] = site
        f.attrs["base_sha256"] = base
        f.attrs["num_cases"] = np.int64(n)
        f.attrs["case_ids"] = json.dumps(["%s-%03d" % (site, i) for i in range(n)])
        f.attrs["region_order"] = json.dumps(["ET", "TC", "WT"])
        f.attrs["summary"] = "{}"
        vals = {}
        for m in ("dice", "hd95", "sensitivity", "specificity", "volume_pred_ml", "volume_ref_ml"):
            v = rng.uniform(0, 1, (n, 3)) if m != "hd95" else rng.uniform(0, 40, (n, 3))
            f.create_dataset("cases/" + m, data=v)
            vals[m] = v
    return vals

base = sha256(g)
north = write_metrics("m-north.h5", "north", 3, base)
south = write_metrics("m-south.h5", "south", 9, base)
write_metrics("m-west.h5", "west", 4, "0" * 64)  # made for another model
expected = {"sites": {"north": {m: v.mean(axis=0).tolist() for m, v in north.items()},
                      "south": {m: v.mean(axis=0).tolist() for m, v in south.items()}},
            "federation": {}}
for m in north:
    pooled = np.concatenate([north[m], south[m]])
    expected["federation"][m] = {"mean": pooled.mean(axis=0).tolist(), "median": np.median(pooled, axis=0).tolist(),
                                 "std": pooled.std(axis=0).tolist()}
json.dump(expected, open("expected.json", "w"))
PYEOF

for s in north south west; do pack_update ex 0 "$s" "u-$s.h5"; done
mkdir -p ex/rounds/0/metrics
for s in north south west; do
  fedseg-pack "m-$s.h5" --key "id-$s" --to agg -o "ex/rounds/0/metrics/$s.age" -q >"$TMP/pack.out" 2>&1 ||
    fail "fedseg-pack m-$s.h5: $(cat "$TMP/pack.out")"
done
expect_exit 0 fedseg-aggregate ex --key agg -q
[ -s ex/rounds/1/global.h5 ] || fail "no global for round 1"
agg_verifies ex/rounds/0/report.json || fail "the report does not verify with minisign"

"$PY" - <<'PYEOF'
import json
import numpy as np
from aggtest import report
r = report("ex")["metrics"]
want = json.load(open("expected.json"))
regions = ["ET", "TC", "WT"]
def close(a, b, what):
    if not np.allclose(a, b, rtol=1e-12, atol=1e-12):
        raise SystemExit("%s: got %s, numpy %s" % (what, a, b))
assert r["region_order"] == regions, r["region_order"]
assert r["model"] == "rounds/0/global.h5", r["model"]
assert r["hd95"] == "pooled", r["hd95"]
assert r["federation"]["num_cases"] == 12 and r["federation"]["sites"] == 2, r["federation"]
assert [s["site"] for s in r["sites"]] == ["north", "south"], r["sites"]
for s in r["sites"]:
    for m, v in want["sites"][s["site"]].items():
        close([s[m][g] for g in regions], v, "%s %s" % (s["site"], m))
for m, stats in want["federation"].items():
    for k, v in stats.items():
        close([r["federation"][m][g][k] for g in regions], v, "federation %s %s" % (m, k))
    assert all(r["federation"][m][g]["n"] == 12 for g in regions)
rej = r["rejected"]
assert len(rej) == 1 and rej[0]["site"] == "west" and rej[0]["class"] == "fields" and "base" in rej[0]["reason"], rej
assert r["missing"] == [], r["missing"]
PYEOF
# The decrypted metrics are not left in the state folder.
leftover=$(find agg/state -name 'metrics-*' 2>/dev/null)
[ -z "$leftover" ] || fail "decrypted metrics left behind: $leftover"

# Round 1 without any metrics: the round goes ahead, every site listed as missing.
"$PY" - <<'PYEOF'
import numpy as np
from aggtest import params, flat, unflat, write_update
g = "ex/rounds/1/global.h5"
g0 = params(g)
for k, s in enumerate(("north", "south", "west")):
    write_update("v-%s.h5" % s, g, s, 5, unflat(np.full(flat(g0).size, 0.001 * (k + 1)), g0))
PYEOF
for s in north south west; do pack_update ex 1 "$s" "v-$s.h5"; done
expect_exit 0 fedseg-aggregate ex --key agg -q
"$PY" -c '
from aggtest import report
r = report("ex", 1)["metrics"]
assert r["missing"] == ["north", "south", "west"] and r["sites"] == [] and r["federation"]["num_cases"] == 0, r
' || fail "round 1 metrics: $("$PY" -c 'from aggtest import report; print(report("ex", 1)["metrics"])')"
