#!/usr/bin/python3
"""Reference implementation of fedseg-prep's steps in Python (nibabel + numpy + h5py).

Used by bench/prep.sh as the baseline fedseg-prep is measured against, and as an
independent cross-check of fedseg-prep's output (bench/compare_prep.py).

    HDF5_PLUGIN_PATH=BUILD/hdf5-plugins /usr/bin/python3 bench/prep_reference.py COHORT_DIR OUT.h5

COHORT_DIR holds BraTS-2021-named cases: <ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz.
Per case, single-threaded, one case after the other:
  1. load the four modalities (float32) and the label map (uint8) with nibabel; check that
     shapes and affines agree (atol 1e-3), that values are finite, that labels are in {0,1,2,4};
  2. reorient to RAS+ (nibabel.as_closest_canonical);
  3. resample to 1 mm (scipy.ndimage.zoom, order 1 images / order 0 labels) only when the
     spacing is not already 1 mm (never for fedseg-synth cohorts);
  4. crop to the bounding box of voxels nonzero in any modality, plus a margin (default 2),
     clipped to the volume;
  5. z-score each modality over its own nonzero voxels (population std, floor 1e-8);
     zeros stay 0;
  6. region-coded labels: bit0 ET, bit1 TC, bit2 WT (4 -> 7, 1 -> 6, 2 -> 4, 0 -> 0);
  7. write /cases/<id>/image (4,Z,Y,X) float16 and /cases/<id>/label (Z,Y,X) uint8, chunks
     (1,64,64,64) / (64,64,64) clipped to the shape, byte shuffle + zstd level 1 (filter
     32015, fedseg's HDF5 plugin), with per-case attributes.

The crop box is stored as `crop_box` = [x0, y0, z0, x1, y1, z1] (begin inclusive, end
exclusive) in voxel indices of the RAS+-reoriented (and resampled) volume, as fedseg-prep
does; `affine` maps a stored voxel (x, y, z) to world mm.
--timing prints the seconds spent in each step to stderr.
"""

import argparse
import datetime
import hashlib
import json
import os
import sys
import time

import h5py
import nibabel as nib
import numpy as np

MODALITIES = ("t1", "t1ce", "t2", "flair")
LABEL_VALUES = (0, 1, 2, 4)
# BraTS 2021 label -> region bits (bit0 ET, bit1 TC, bit2 WT).
REGION_LUT = np.zeros(256, np.uint8)
REGION_LUT[4] = 0b111
REGION_LUT[1] = 0b110
REGION_LUT[2] = 0b100


class BadData(Exception):
    pass


class Timer:
    def __init__(self):
        self.t = {}
        self.last = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.t[name] = self.t.get(name, 0.0) + now - self.last
        self.last = now


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def find_cases(cohort):
    cases = []
    for cid in sorted(os.listdir(cohort)):
        d = os.path.join(cohort, cid)
        if not os.path.isdir(d):
            continue
        files = {m: os.path.join(d, f"{cid}_{m}.nii.gz") for m in MODALITIES + ("seg",)}
        missing = [p for p in files.values() if not os.path.exists(p)]
        if missing:
            raise BadData(f"case '{cid}': missing {', '.join(os.path.basename(p) for p in missing)}")
        cases.append((cid, files))
    if not cases:
        raise BadData(f"no cases in '{cohort}'")
    return cases


def check_labels(lab, path):
    if lab.dtype.kind in "ui":
        if lab.min() < 0 or lab.max() > 255:
            raise BadData(f"'{path}': label values outside 0..255")
        counts = np.bincount(lab.ravel().astype(np.intp, copy=False), minlength=256)
        bad = [v for v in np.nonzero(counts)[0] if v not in LABEL_VALUES]
    else:
        vals = np.unique(lab)
        bad = [v for v in vals if v not in LABEL_VALUES]
    if bad:
        raise BadData(f"'{path}': label values {bad} not in {{0,1,2,4}}")
    return lab.astype(np.uint8, copy=False)


def resample_1mm(arrs, lab, zooms, affine):
    """scipy.ndimage.zoom to about 1 mm. zoom maps output index i to input index
    i * (n_in - 1) / (n_out - 1) (corner voxels aligned), so that is the new affine; the
    grid is not fedseg-prep's (voxel centres at exactly 1 mm), so outputs of resampled
    cohorts are not expected to match fedseg-prep's voxel for voxel."""
    from scipy import ndimage

    factors = np.asarray(zooms, float)  # mm per voxel -> voxels per mm at 1 mm
    n_in = np.asarray(arrs[0].shape)
    arrs = [ndimage.zoom(a, factors, order=1).astype(np.float32, copy=False) for a in arrs]
    lab = ndimage.zoom(lab, factors, order=0)
    n_out = np.asarray(arrs[0].shape)
    step = (n_in - 1) / np.maximum(n_out - 1, 1)
    affine = affine.copy()
    affine[:3, :3] = affine[:3, :3] * step[None, :]
    return arrs, lab, affine


def prepare_case(cid, files, margin, timer):
    """Returns (image (4,Z,Y,X) float16, label (Z,Y,X) uint8, attrs)."""
    attrs = {}
    sha = [sha256_file(files[m]) for m in MODALITIES + ("seg",)]
    timer.lap("sha256")

    imgs = [nib.load(files[m]) for m in MODALITIES]
    seg = nib.load(files["seg"])
    shape0 = imgs[0].shape
    affine0 = imgs[0].affine
    if len(shape0) != 3:
        raise BadData(f"'{files['t1']}': expected a 3-D image, got shape {shape0}")
    for img, m in zip(imgs[1:] + [seg], MODALITIES[1:] + ("seg",)):
        if img.shape != shape0:
            raise BadData(f"'{files[m]}': shape {img.shape} differs from t1's {shape0}")
        if not np.allclose(img.affine, affine0, atol=1e-3):
            raise BadData(f"'{files[m]}': affine differs from t1's")

    # Reorientation of a proxied image loads the on-disk values and flips them (views);
    # get_fdata then converts to float32 in one copy.
    can = [nib.as_closest_canonical(i) for i in imgs]
    can_seg = nib.as_closest_canonical(seg)
    arrs = []
    for c, m in zip(can, MODALITIES):
        a = c.get_fdata(dtype=np.float32)
        if not np.isfinite(a).all():
            raise BadData(f"'{files[m]}': non-finite values")
        arrs.append(a)
    lab = check_labels(np.asanyarray(can_seg.dataobj), files["seg"])
    affine = can[0].affine
    zooms = can[0].header.get_zooms()[:3]
    timer.lap("load+reorient")

    spacing = np.asarray(zooms, float)
    if not np.allclose(zooms, 1.0, atol=1e-3):
        arrs, lab, affine = resample_1mm(arrs, lab, zooms, affine)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    timer.lap("resample")

    shape = arrs[0].shape
    mask = arrs[0] != 0
    for a in arrs[1:]:
        mask |= a != 0
    lo, hi = [0, 0, 0], [0, 0, 0]
    for ax in range(3):
        other = tuple(i for i in range(3) if i != ax)
        idx = np.nonzero(mask.any(axis=other))[0]
        if idx.size == 0:
            raise BadData(f"case '{cid}': every voxel is zero")
        lo[ax] = max(int(idx[0]) - margin, 0)
        hi[ax] = min(int(idx[-1]) + 1 + margin, shape[ax])
    sl = tuple(slice(lo[i], hi[i]) for i in range(3))
    timer.lap("crop")

    X, Y, Z = (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])
    image = np.empty((4, Z, Y, X), np.float16)
    means, stds = [], []
    for c, a in enumerate(arrs):
        a = a[sl]
        nz = a != 0
        v = a[nz]
        mean = float(v.mean(dtype=np.float64)) if v.size else 0.0
        std = float(v.std(dtype=np.float64)) if v.size else 0.0
        std = max(std, 1e-8)
        means.append(mean)
        stds.append(std)
        z = np.where(nz, (a - np.float32(mean)) * np.float32(1.0 / std), np.float32(0))
        image[c] = z.T  # (x,y,z) -> (z,y,x), float32 -> float16
    timer.lap("zscore")

    label = np.ascontiguousarray(REGION_LUT[lab[sl]].T)
    timer.lap("regions")

    attrs["source_files"] = json.dumps(
        [os.path.basename(files[m]) for m in MODALITIES + ("seg",)])
    attrs["sha256"] = json.dumps(dict(zip(MODALITIES + ("seg",), sha)))
    attrs["original_shape"] = np.asarray(shape0, np.int64)
    attrs["original_affine"] = np.asarray(affine0, np.float64).ravel()
    shift = np.eye(4)
    shift[:3, 3] = lo
    attrs["affine"] = (np.asarray(affine, np.float64) @ shift).ravel()  # stored (x,y,z) index -> world
    attrs["canonical_shape"] = np.asarray(shape, np.int64)
    attrs["crop_box"] = np.asarray(lo + hi, np.int64)
    attrs["norm_mean"] = np.asarray(means)
    attrs["norm_std"] = np.asarray(stds)
    attrs["spacing"] = spacing
    attrs["modalities"] = json.dumps(list(MODALITIES))
    return image, label, attrs


def split_of(cid, val_fraction):
    """Deterministic train/val assignment from the case id (not necessarily fedseg's)."""
    h = int.from_bytes(hashlib.sha256(cid.encode()).digest()[:8], "big") / 2.0**64
    return "val" if h < val_fraction else "train"


def chunks_for(shape, chunk):
    return tuple(min(c, s) for c, s in zip(chunk, shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort")
    ap.add_argument("out")
    ap.add_argument("--margin", type=int, default=2)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--zstd-level", type=int, default=1)
    ap.add_argument("--timing", action="store_true", help="per-step seconds on stderr")
    args = ap.parse_args()

    try:
        cases = find_cases(args.cohort)
    except BadData as e:
        print(f"prep_reference: error: {e}", file=sys.stderr)
        return 65
    timer = Timer()
    tmp = args.out + ".tmp"
    filt = dict(shuffle=True, compression=32015, compression_opts=(args.zstd_level,))
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["fedseg_format"] = np.int64(1)
            f.attrs["kind"] = "dataset"
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.attrs["tool"] = "prep_reference.py"
            f.attrs["provenance"] = json.dumps({"cohort": os.path.abspath(args.cohort),
                                                "margin": args.margin, "scheme": "brats2021"})
            timer.lap("setup")
            for cid, files in cases:
                image, label, attrs = prepare_case(cid, files, args.margin, timer)
                g = f.create_group(f"cases/{cid}")
                g.create_dataset("image", data=image, chunks=chunks_for(image.shape, (1, 64, 64, 64)), **filt)
                g.create_dataset("label", data=label, chunks=chunks_for(label.shape, (64, 64, 64)), **filt)
                for k, v in attrs.items():
                    g.attrs[k] = v
                g.attrs["split"] = split_of(cid, args.val_fraction)
                timer.lap("write")
        os.replace(tmp, args.out)
    except BadData as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        print(f"prep_reference: error: {e}", file=sys.stderr)
        return 65
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    timer.lap("close")
    if args.timing:
        total = sum(timer.t.values())
        print(f"  {'total':<14} {total:8.3f} s  {len(cases)} cases", file=sys.stderr)
        for k, v in timer.t.items():
            print(f"  {k:<14} {v:8.3f} s  {100 * v / total:5.1f} %", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
