# Files load in nibabel with the expected shape, dtype, affine and label set, both namings.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
need_python_module nibabel numpy
expect_exit 0 fedseg-synth -o b21 --cases 2 --shape 40,36,24 --seed 2
expect_exit 0 fedseg-synth -o b23 --cases 1 --shape 40,36,24 --seed 2 --naming brats2023 --prefix BraTS-GLI --first-index 7
[ -f b23/BraTS-GLI-00007-000/BraTS-GLI-00007-000-t2f.nii.gz ] || fail "brats2023 names: $(find b23)"
"$PY" - <<'PY' || fail "nibabel check failed"
import glob, numpy as np, nibabel as nib
def check(case, names, labels):
    brain = None
    for n in names[:4]:
        img = nib.load(case + n)
        a = np.asarray(img.dataobj)
        assert img.shape == (40, 36, 24), img.shape
        assert a.dtype == np.int16, a.dtype
        assert img.header["sform_code"] > 0 and img.header["qform_code"] > 0
        assert np.allclose(img.affine, [[-1, 0, 0, 0], [0, -1, 0, 35], [0, 0, 1, 0], [0, 0, 0, 1]]), img.affine
        assert np.allclose(img.get_qform(), img.get_sform())
        assert np.allclose(img.header.get_zooms(), (1, 1, 1))
        if brain is None: brain = a > 0
        assert ((a > 0) == brain).all(), n
        assert a.min() == 0 and a.max() > 50
    seg = nib.load(case + names[4])
    s = np.asarray(seg.dataobj)
    assert s.dtype == np.uint8, s.dtype
    assert set(np.unique(s).tolist()) == labels, np.unique(s)
    assert brain[s > 0].all()
for case in sorted(glob.glob("b21/*/")):
    cid = case.rstrip("/").split("/")[-1]
    check(case, [f"{cid}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg")], {0, 1, 2, 4})
case = "b23/BraTS-GLI-00007-000/"
check(case, [f"BraTS-GLI-00007-000-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f", "seg")], {0, 1, 2, 3})
PY
