. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/train/fixture.bash"
# Acceptance 4 of issue 5: bad inputs each give a one-line error naming the file,
# the documented exit code, and no update file.
need_python_module h5py
make_site_dataset 2
make_tiny_federation
G=ex/rounds/0/global.h5
train() { fedseg-train "$@" --max-steps 1 -o update.h5; }
no_update() { [ ! -e update.h5 ] || fail "update.h5 written: $*"; ls -a | grep -q fedseg-tmp && fail "temp file left: $*"; true; }

expect_exit 0 fedseg-train --help
expect_exit 64 fedseg-train "$G" site.h5 --federation ex/federation.json -o update.h5        # no --site
expect_exit 66 train missing.h5 site.h5 --federation ex/federation.json --site a
expect_exit 66 train "$G" missing.h5 --federation ex/federation.json --site a
expect_exit 78 train "$G" site.h5 --federation ex/federation.json --site nobody
expect_stderr_has "nobody"
no_update
expect_exit 69 train "$G" site.h5 --federation ex/federation.json --site a --device cuda
expect_stderr_has "CUDA"
expect_exit 64 train "$G" site.h5 --federation ex/federation.json --site a --device tpu

# A global model with a bad signature: a changed model, a changed signature, no signature.
cp "$G" g.h5 && cp "$G.minisig" g.h5.minisig
printf 'x' | dd of=g.h5 bs=1 seek=5000 conv=notrunc status=none
expect_exit 65 train g.h5 site.h5 --federation ex/federation.json --site a
expect_stderr_has "g.h5"
expect_stderr_has "signature"
expect_stderr_lines 1
no_update bad-signature
cp "$G" g.h5 && sed -i 's/round=0/round=1/' g.h5.minisig
expect_exit 65 train g.h5 site.h5 --federation ex/federation.json --site a
no_update altered-comment
rm g.h5.minisig
expect_exit 66 train g.h5 site.h5 --federation ex/federation.json --site a
no_update no-signature

# The wrong round, and the wrong federation (another federation's model, signed by its aggregator).
expect_exit 65 train "$G" site.h5 --federation ex/federation.json --site a --round 2
expect_stderr_has "round 0, expected 2"
no_update wrong-round
mkdir other && (cd other && fedseg-keygen -o agg >/dev/null 2>&1 && fedseg-keygen -o s >/dev/null 2>&1 &&
  fedseg-init --federation otherfed --key agg --site a=s --preset small --base-filters 4 --depth 2 --patch 16 -o ex -q)
expect_exit 65 train other/ex/rounds/0/global.h5 site.h5 --federation ex/federation.json --site a
expect_stderr_has "other/ex/rounds/0/global.h5"
no_update other-aggregator
# ... and with that federation's own key but this federation's plan pinned to our aggregator:
expect_exit 65 train other/ex/rounds/0/global.h5 site.h5 --federation other/ex/federation.json --aggregator-pub agg --site a
no_update pinned

# Datasets that do not fit: wrong channel count, wrong label coding / scheme, wrong regions, no training cases.
bad_dataset() {  # NAME ATTR VALUE
  cp site.h5 "$1"
  "$PY" -c 'import sys, h5py; f = h5py.File(sys.argv[1], "r+"); f.attrs[sys.argv[2]] = sys.argv[3]' "$1" "$2" "$3"
}
bad_dataset three.h5 channels '["t1", "t1ce", "flair"]'
expect_exit 65 train "$G" three.h5 --federation ex/federation.json --site a
expect_stderr_has "three.h5"
expect_stderr_has "3 channels"
no_update channels
bad_dataset scheme.h5 label_scheme brats2019
expect_exit 65 train "$G" scheme.h5 --federation ex/federation.json --site a
expect_stderr_has "label scheme"
no_update scheme
bad_dataset coding.h5 label_coding "0 background, 1 NCR, 2 ED, 4 ET"
expect_exit 65 train "$G" coding.h5 --federation ex/federation.json --site a
no_update coding
bad_dataset regions.h5 region_order '["WT", "TC", "ET"]'
expect_exit 65 train "$G" regions.h5 --federation ex/federation.json --site a
no_update regions
cp site.h5 empty.h5
"$PY" -c 'import h5py; f = h5py.File("empty.h5", "r+"); [f["cases"].__delitem__(k) for k in list(f["cases"])]'
expect_exit 65 train "$G" empty.h5 --federation ex/federation.json --site a
expect_stderr_has "empty.h5"
no_update empty
fedseg-prep cohort -o allval.h5 --val-fraction 1 -q
expect_exit 65 train "$G" allval.h5 --federation ex/federation.json --site a
expect_stderr_has "no train cases"
no_update all-val
expect_exit 65 train "$G" "$G" --federation ex/federation.json --site a     # a model is not a dataset
no_update not-a-dataset

# A damaged plan: its signature no longer verifies.
cp -r ex ex2 && sed -i 's/"epochs": 1/"epochs": 2/' ex2/federation.json
expect_exit 65 train ex2/rounds/0/global.h5 site.h5 --federation ex2/federation.json --site a
expect_stderr_has "federation.json"
no_update plan

# Sanity: the same command with good inputs works.
expect_exit 0 train "$G" site.h5 --federation ex/federation.json --site a
[ -e update.h5 ] || fail "no update.h5"
