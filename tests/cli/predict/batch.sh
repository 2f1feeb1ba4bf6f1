. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/train/fixture.bash"
# fedseg-predict with a model: one segmentation per case in its original grid; a bad
# case is reported on one line and the others are written (exit 65); probability maps.
need_python_module nibabel numpy
fedseg-synth -o cohort --cases 3 --shape 36,32,28 --seed 5 -q
make_tiny_federation
G=ex/rounds/0/global.h5
first=$(ls cohort | head -1)
expect_exit 0 fedseg-predict "$G" "cohort/$first" -o one --federation ex/federation.json --patch 16 --probabilities --json
expect_json
[ -e "one/$first.nii.gz" ] && [ -e "one/${first}_prob.nii.gz" ] || fail "outputs missing"
"$PY" - "$first" <<'PYEOF'
import sys, numpy as np, nibabel as nib
cid = sys.argv[1]
ref = nib.load(f"cohort/{cid}/{cid}_t1.nii.gz")
seg, prob = nib.load(f"one/{cid}.nii.gz"), nib.load(f"one/{cid}_prob.nii.gz")
assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine), (seg.shape, ref.shape)
assert prob.shape == ref.shape + (3,)
s, p = np.asarray(seg.dataobj), np.asarray(prob.dataobj)
assert set(np.unique(s)) <= {0, 1, 2, 4} and p.min() >= 0 and p.max() <= 1
# labels follow the probabilities: WT > 0.5 -> 2, TC -> 1, ET -> 4
exp = np.zeros(s.shape, np.uint8)
exp[p[..., 2] > 0.5] = 2; exp[p[..., 1] > 0.5] = 1; exp[p[..., 0] > 0.5] = 4
assert (exp == s).all()
PYEOF
# A rerun leaves finished cases alone.
before=$(sha256sum "one/$first.nii.gz")
expect_exit 0 fedseg-predict "$G" "cohort/$first" -o one --federation ex/federation.json --patch 16 --json
expect_stdout_has '"exists"'
[ "$before" = "$(sha256sum "one/$first.nii.gz")" ] || fail "a finished case was rewritten"
expect_exit 64 fedseg-predict "$G" cohort -o x --federation ex/federation.json --patch 10
expect_exit 64 fedseg-predict "$G" cohort -o x                      # neither --federation nor --unverified

# One broken case (truncated T1): reported, the others written, exit 65.
second=$(ls cohort | sed -n 2p)
head -c 500 "cohort/$second/${second}_t1.nii.gz" > t && mv t "cohort/$second/${second}_t1.nii.gz"
expect_exit 65 fedseg-predict "$G" cohort -o all --federation ex/federation.json --patch 16
expect_stderr_has "$second"
n=$(ls all | wc -l)
[ "$n" -eq 2 ] || fail "expected 2 segmentations, got $n"
[ ! -e "all/$second.nii.gz" ] || fail "the broken case has an output"
