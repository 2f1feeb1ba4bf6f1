# Shared by the fedseg-report tests (sourced after lib.sh; not a test case itself).
# Builds ex/: federation "fedr" with sites north, south, west (tiny model), and three
# aggregated rounds (LATEST = 3, open), each with signed reports including "metrics":
#   round 0: all three accepted; metrics from all three
#   round 1: west sends nothing (missing; aggregated after the deadline with --now);
#            west's unsigned receipt says why (with markup in its message)
#   round 2: west's update holds a NaN (rejected, class "values"); metrics from all three
# Every update records its training loss (epoch_loss, epochs) as fedseg-train does.
. "$FEDSEG_SOURCE/tests/cli/aggregate/fixture.bash"

make_ids north south west
make_fed ex fedr north,south,west --preset small --base-filters 2 --depth 1 --seed 3 \
  --min-sites 2 --deadline 3600 --after-deadline aggregate
mkdir -p pub && cp agg/minisign.pub pub/minisign.pub

cat >"$AGGPY/reporttest.py" <<'PYEOF'
"""Updates with a training loss and metrics files, as fedseg-train and fedseg-eval write them."""
import json

import h5py
import numpy as np

from aggtest import flat, params, sha256, unflat, write_update


def update(path, g, site, n, rng, loss, nan=False):
    g0 = params(g)
    d = 0.01 * rng.standard_normal(flat(g0).size)
    if nan:
        d[d.size // 2] = np.nan
    write_update(path, g, site, n, unflat(d, g0))
    with h5py.File(path, "a") as f:
        f.attrs["epoch_loss"] = np.asarray(loss, np.float64)
        f.attrs["epochs"] = np.int64(len(loss))


def metrics(path, g, site, n, rng):
    with h5py.File(g, "r") as f:
        r = int(f.attrs["round"])
    with h5py.File(path, "w") as f:
        f.attrs["fedseg_format"] = np.int64(1)
        f.attrs["kind"] = "metrics"
        f.attrs["created"] = "2026-01-01T00:00:00Z"
        f.attrs["tool"] = "report-test"
        f.attrs["provenance"] = json.dumps({"split": "val", "hd95": "pooled"})
        f.attrs["federation"] = "fedr"
        f.attrs["round"] = np.int64(r)
        f.attrs["site"] = site
        f.attrs["base_sha256"] = sha256(g)
        f.attrs["num_cases"] = np.int64(n)
        f.attrs["case_ids"] = json.dumps(["%s-%03d" % (site, i) for i in range(n)])
        f.attrs["region_order"] = json.dumps(["ET", "TC", "WT"])
        f.attrs["summary"] = "{}"
        for m in ("dice", "hd95", "sensitivity", "specificity", "volume_pred_ml", "volume_ref_ml"):
            v = rng.uniform(0.2 + 0.1 * r, 0.6 + 0.1 * r, (n, 3)) if m != "hd95" else rng.uniform(0, 40, (n, 3))
            f.create_dataset("cases/" + m, data=v)
PYEOF

# report_round R SITES NAN_SITE NOW: updates and metrics of round R from SITES (NAN_SITE's update
# holds a NaN), packed and aggregated (at Unix time NOW when given).
report_round() {
  local r=$1 sites=$2 nan=$3 now=${4:-} s
  "$PY" - "$r" "$sites" "$nan" <<'PYEOF' || fail "writing round $1's updates"
import sys
import numpy as np
from reporttest import update, metrics
r, sites, nan = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
g = "ex/rounds/%d/global.h5" % r
for k, s in enumerate(sites):
    rng = np.random.default_rng(100 * r + k)
    update("u%d-%s.h5" % (r, s), g, s, 10 + k, rng, [1.0 - 0.1 * r - 0.02 * k, 0.9 - 0.1 * r - 0.03 * k], nan=(s == nan))
    metrics("m%d-%s.h5" % (r, s), g, s, 3 + k, rng)
PYEOF
  mkdir -p "ex/rounds/$r/metrics"
  for s in ${sites//,/ }; do
    pack_update ex "$r" "$s" "u$r-$s.h5"
    fedseg-pack "m$r-$s.h5" --key "id-$s" --to agg -o "ex/rounds/$r/metrics/$s.age" -q >"$TMP/pack.out" 2>&1 ||
      fail "fedseg-pack m$r-$s.h5: $(cat "$TMP/pack.out")"
  done
  fedseg-aggregate ex --key agg -q ${now:+--now "$now"} >"$TMP/agg.out" 2>&1 ||
    fail "fedseg-aggregate round $r: $(cat "$TMP/agg.out")"
}

report_round 0 north,south,west ""
ts=$(signed_ts ex/rounds/1/global.h5)
report_round 1 north,south "" "$((ts + 7200))"
mkdir -p ex/rounds/1/receipts
cat >ex/rounds/1/receipts/west.json <<'JSONEOF'
{"fedseg_receipt": 1, "federation": "fedr", "site": "west", "round": 1, "status": "failed", "step": "train",
 "exit_code": 65, "exit_class": "data", "message": "fedseg-train: error: <script>alert('x')</script> & \"bad\" dataset 'w.h5'",
 "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:01:00Z", "timings": {}, "versions": {}}
JSONEOF
report_round 2 north,south,west west
