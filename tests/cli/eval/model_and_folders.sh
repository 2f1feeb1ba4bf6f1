. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/train/fixture.bash"
# fedseg-eval: a model on a dataset's split (outputs .csv + summary, .json, .h5 that
# fedseg-pack accepts), and prediction folders against labels (an oracle scores 1/0;
# a missing prediction is reported while the other cases are scored).
need_python_module h5py
fedseg-synth -o cohort --cases 3 --shape 32,32,24 --seed 5 -q
fedseg-prep cohort -o site.h5 --val-fraction 0.5 -q
make_tiny_federation
G=ex/rounds/0/global.h5
expect_exit 0 fedseg-eval --help
expect_exit 64 fedseg-eval "$G" site.h5 -o m.csv                                  # no --federation / --unverified
expect_exit 64 fedseg-eval "$G" site.h5 --federation ex/federation.json --split test
expect_exit 64 fedseg-eval "$G" site.h5 --federation ex/federation.json --hd95 median
expect_exit 0 fedseg-eval "$G" site.h5 --federation ex/federation.json --split all -o m.csv --json --patch 16
expect_json
[ -s m.csv ] && [ -s m.summary.json ] || fail "no m.csv / m.summary.json"
"$PY" - <<'PYEOF'
import csv, json
rows = list(csv.DictReader(open("m.csv")))
assert len(rows) == 9 and {r["region"] for r in rows} == {"ET", "TC", "WT"}, rows
s = json.load(open("m.summary.json"))
assert s["cases"] == 3 and s["split"] == "all" and s["hd95_convention"] == "pooled"
wt = [float(r["dice"]) for r in rows if r["region"] == "WT"]
assert abs(s["regions"]["WT"]["dice"]["mean"] - sum(wt) / 3) < 1e-12
PYEOF
expect_exit 73 fedseg-eval "$G" site.h5 --federation ex/federation.json --split all -o m.csv --patch 16
# A metrics file for the aggregator: needs --site; fedseg-pack accepts it.
expect_exit 64 fedseg-eval "$G" site.h5 --federation ex/federation.json -o m.h5 --patch 16 --split all
expect_exit 0 fedseg-eval "$G" site.h5 --federation ex/federation.json -o m.h5 --site a --patch 16 --split all
expect_exit 0 fedseg-pack m.h5 --key site-a --to agg -o m.age
HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR" "$PY" -c '
import h5py, json
f = h5py.File("m.h5", "r"); a = f.attrs
assert a["kind"] == "metrics" and a["site"] == "a" and a["federation"] == "fedtest" and a["num_cases"] == 3
assert f["cases/dice"].shape == (3, 3) and json.loads(a["region_order"]) == ["ET", "TC", "WT"]'
# A bad model signature.
cp "$G" g.h5 && cp "$G.minisig" g.h5.minisig && printf 'x' | dd of=g.h5 bs=1 seek=3000 conv=notrunc status=none
expect_exit 65 fedseg-eval g.h5 site.h5 --federation ex/federation.json --patch 16
expect_stderr_has "g.h5"

# Folders: oracle predictions score perfectly.
expect_exit 0 fedseg-predict --oracle cohort -o pred -q
expect_exit 0 fedseg-eval --predictions pred --labels cohort --json
"$PY" -c '
import json, sys; s = json.load(open(sys.argv[1]))["summary"]
for r in ("ET", "TC", "WT"):
    assert s["regions"][r]["dice"]["mean"] == 1 and s["regions"][r]["hd95"]["mean"] == 0, s' "$TMP/stdout"
first=$(ls pred | head -1)
rm "pred/$first"
expect_exit 65 fedseg-eval --predictions pred --labels cohort --json -o partial.json
expect_stderr_has "no prediction"
"$PY" -c 'import json; assert json.load(open("partial.json"))["summary"]["cases"] == 2'
expect_exit 64 fedseg-eval --predictions pred
