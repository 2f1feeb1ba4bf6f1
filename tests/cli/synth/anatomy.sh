# --anatomy: missing file 66, unreadable 65, a real brain (mricron-data's ch2bet) works.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 66 fedseg-synth -o out --cases 1 --shape 32,32,24 --anatomy nope.nii.gz
expect_stderr_has "nope.nii.gz"
expect_stderr_lines 1
head -c 5000 /dev/urandom >junk.nii.gz
expect_exit 65 fedseg-synth -o out --cases 1 --shape 32,32,24 --anatomy junk.nii.gz
expect_stderr_has "junk.nii.gz"
[ ! -e out ] || fail "a bad anatomy created output"

ch2=/usr/share/mricron/templates/ch2bet.nii.gz
[ -f "$ch2" ] || ch2=$(dpkg -L mricron-data 2>/dev/null | grep '/ch2bet.nii.gz$' | head -1 || true)
[ -n "$ch2" ] && [ -f "$ch2" ] || skip "ch2bet.nii.gz not installed (apt-get install mricron-data)"
expect_exit 0 fedseg-synth -o real --cases 2 --shape 64,64,48 --seed 3 --anatomy "$ch2" --json
expect_json
need_python_module nibabel numpy
"$PY" - real <<'PY' || fail "anatomy cohort check failed"
import sys, glob, numpy as np, nibabel as nib
for case in sorted(glob.glob(sys.argv[1] + "/*/")):
    cid = case.rstrip("/").split("/")[-1]
    seg = np.asarray(nib.load(f"{case}{cid}_seg.nii.gz").dataobj)
    assert set(np.unique(seg)) == {0, 1, 2, 4}, np.unique(seg)
    brain = None
    for m in ("t1", "t1ce", "t2", "flair"):
        a = np.asarray(nib.load(f"{case}{cid}_{m}.nii.gz").dataobj)
        assert a.shape == (64, 64, 48) and a.dtype == np.int16
        if brain is None: brain = a > 0
        assert ((a > 0) == brain).all(), m
    assert brain.mean() > 0.1, brain.mean()
    assert (brain[seg > 0]).all()
PY
