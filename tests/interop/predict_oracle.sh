. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance 2 of issue 7: predicting with an oracle (each case's own label regions
# instead of a model) reproduces the input label file voxel for voxel in the original
# space, for oblique, flipped, axis-permuted and resampled (coarser than 1 mm,
# anisotropic) inputs. nibabel makes the variants and compares.
need_python_module nibabel numpy
fedseg-synth -o base --cases 1 --shape 48,44,36 --seed 9 -q
"$PY" - <<'PYEOF'
import glob, os
import numpy as np, nibabel as nib
src = sorted(glob.glob("base/*/"))[0].rstrip("/")
cid = os.path.basename(src)
mods = ["t1", "t1ce", "t2", "flair", "seg"]
imgs = {m: nib.load(f"{src}/{cid}_{m}.nii.gz") for m in mods}
def save(variant, fn):
    d = f"cohort/{variant}"
    os.makedirs(d, exist_ok=True)
    for m in mods:
        data, aff = fn(np.asarray(imgs[m].dataobj), imgs[m].affine.copy())
        out = nib.Nifti1Image(data.astype(imgs[m].get_data_dtype()), aff)
        out.set_qform(aff, 1); out.set_sform(aff, 1)
        nib.save(out, f"{d}/{variant}_{m}.nii.gz")
def rot(aff, deg, axis):
    t = np.deg2rad(deg); c, s = np.cos(t), np.sin(t)
    R = np.eye(4)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R @ aff
save("plain", lambda d, a: (d, a))
def flip(d, a):  # x reversed: LAS storage of the same anatomy
    n = d.shape[0]
    f = np.eye(4); f[0, 0] = -1; f[0, 3] = n - 1
    return d[::-1].copy(), a @ f
save("flipped", flip)
save("oblique", lambda d, a: (d, rot(a, 17, 2) @ np.eye(4)))
save("oblique2", lambda d, a: (d, rot(rot(a, 11, 0), -23, 1)))
def permute(d, a):  # stored as (z, x, y) with a matching affine, plus a flip of z
    p = np.transpose(d, (2, 0, 1))[::-1].copy()
    P = np.zeros((4, 4)); P[3, 3] = 1
    # new index (i,j,k) = (nz-1-z, x, y)
    P[2, 0] = -1; P[2, 3] = d.shape[2] - 1; P[0, 1] = 1; P[1, 2] = 1
    return p, a @ P
save("permuted", permute)
def coarse(d, a):  # 1.5 x 1.5 x 3 mm: every 2nd/2nd/3rd voxel of a 1 mm grid, scaled affine
    return d[::2, ::2, ::3].copy(), a @ np.diag([2.0, 2.0, 3.0, 1.0])
save("coarse", coarse)
save("coarse_oblique", lambda d, a: (lambda dd, aa: (dd, rot(aa, 9, 2)))(*coarse(d, a)))
PYEOF
expect_exit 0 fedseg-predict --oracle cohort -o out --json
expect_json
"$PY" - <<'PYEOF'
import glob, os
import numpy as np, nibabel as nib
n = 0
for d in sorted(glob.glob("cohort/*/")):
    v = os.path.basename(d.rstrip("/"))
    ref = nib.load(f"{d}/{v}_seg.nii.gz")
    out = nib.load(f"out/{v}.nii.gz")
    a, b = np.asarray(ref.dataobj), np.asarray(out.dataobj)
    assert a.shape == b.shape, (v, a.shape, b.shape)
    assert np.allclose(ref.affine, out.affine, atol=1e-4), (v, ref.affine, out.affine)
    diff = int((a != b).sum())
    print("%-15s shape %-14s zooms %-20s tumour voxels %5d  differing %d" % (v, a.shape, tuple(round(z, 2) for z in ref.header.get_zooms()), int((a > 0).sum()), diff))
    assert (a > 0).sum() > 0, v
    assert diff == 0, v
    n += 1
assert n == 7, n
PYEOF
# BraTS 2023 naming and labels (ET is 3) round-trip too.
fedseg-synth -o b23 --cases 1 --shape 32,32,24 --seed 3 --naming brats2023 -q
expect_exit 0 fedseg-predict --oracle b23 -o out23 --scheme brats2023
"$PY" - <<'PYEOF'
import glob, os, numpy as np, nibabel as nib
seg = glob.glob("b23/*/*-seg.nii.gz")[0]
cid = os.path.basename(os.path.dirname(seg))
a = np.asarray(nib.load(f"out23/{cid}.nii.gz").dataobj); r = np.asarray(nib.load(seg).dataobj)
assert 3 in np.unique(r) and (a == r).all(), (np.unique(a), np.unique(r))
PYEOF
