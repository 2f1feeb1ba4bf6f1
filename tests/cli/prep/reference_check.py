"""Recomputes fedseg-prep's result for cases of a BraTS-2021-named cohort with
nibabel + numpy (independently of fedseg's code) and compares with the dataset.
Usage: /usr/bin/python3 reference_check.py COHORT DATASET.h5 [MARGIN]"""
import json
import os
import sys

import h5py
import nibabel as nib
import numpy as np

cohort, dataset = sys.argv[1], sys.argv[2]
margin = int(sys.argv[3]) if len(sys.argv) > 3 else 2
CODE = {0: 0, 1: 6, 2: 4, 4: 7}  # region bits: 1 ET, 2 TC, 4 WT

with h5py.File(dataset, "r") as f:
    assert f.attrs["kind"] == "dataset"
    assert json.loads(f.attrs["channels"]) == ["t1", "t1ce", "t2", "flair"]
    ids = sorted(f["cases"].keys())
    assert ids, "no cases"
    for cid in ids:
        g = f["cases"][cid]
        imgs = [nib.as_closest_canonical(nib.load(os.path.join(cohort, cid, "%s_%s.nii.gz" % (cid, m))))
                for m in ["t1", "t1ce", "t2", "flair"]]
        data = [im.get_fdata(dtype=np.float64) for im in imgs]
        canon_affine = imgs[0].affine
        nz = np.zeros(data[0].shape, bool)
        for d in data:
            nz |= d != 0
        idx = np.argwhere(nz)
        lo = np.maximum(idx.min(0) - margin, 0)
        hi = np.minimum(idx.max(0) + 1 + margin, np.array(data[0].shape))
        box = list(lo) + list(hi)
        assert list(g.attrs["crop_box"]) == box, (cid, list(g.attrs["crop_box"]), box)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        img = g["image"][...].astype(np.float64)
        assert img.shape == (4,) + tuple((hi - lo)[::-1]), (img.shape, hi - lo)
        for c, d in enumerate(data):
            v = d[d != 0]
            mean, std = v.mean(), max(v.std(), 1e-8)
            assert abs(g.attrs["norm_mean"][c] - mean) <= 1e-9 * max(1, abs(mean)), (cid, c, g.attrs["norm_mean"][c], mean)
            assert abs(g.attrs["norm_std"][c] - std) <= 1e-6 * std, (cid, c, g.attrs["norm_std"][c], std)
            want = np.where(d[sl] != 0, (d[sl] - mean) / std, 0).transpose(2, 1, 0)
            got = img[c]
            # stored as float16: half-precision rounding of the z-scores
            err = np.abs(got - want) - (np.abs(want) * 2.0 ** -10 + 2.0 ** -24)
            assert err.max() <= 1e-6, (cid, c, float(np.abs(got - want).max()))
            assert np.array_equal(got == 0, want == 0), (cid, c, "zero pattern differs")
        seg = np.asanyarray(nib.as_closest_canonical(
            nib.load(os.path.join(cohort, cid, "%s_seg.nii.gz" % cid))).dataobj).astype(np.uint8)
        want_lab = np.vectorize(CODE.get)(seg[sl]).astype(np.uint8).transpose(2, 1, 0)
        assert np.array_equal(g["label"][...], want_lab), (cid, "labels differ")
        # The stored grid's affine: canonical affine shifted by the crop start.
        shift = np.eye(4)
        shift[:3, 3] = lo
        aff = np.array(g.attrs["affine"]).reshape(4, 4)
        assert np.allclose(aff, canon_affine @ shift, atol=1e-6), (aff, canon_affine @ shift)
        # to_original maps stored voxels back onto the original voxel grid.
        orig = nib.load(os.path.join(cohort, cid, "%s_t1.nii.gz" % cid))
        t = np.array(g.attrs["to_original"]).reshape(4, 4)
        assert np.allclose(orig.affine @ t, aff, atol=1e-6)
        assert list(g.attrs["original_shape"]) == list(orig.shape)
        assert g.attrs["original_orientation"] == "".join(nib.aff2axcodes(orig.affine))
        print("case %s: crop box %s, statistics, z-scores, labels and affines match numpy" % (cid, box))
