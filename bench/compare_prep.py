#!/usr/bin/python3
"""Compares two fedseg dataset files case by case (e.g. fedseg-prep's output against
bench/prep_reference.py's):

    HDF5_PLUGIN_PATH=BUILD/hdf5-plugins /usr/bin/python3 bench/compare_prep.py A.h5 B.h5

Per case: image and label shapes and dtypes, the crop box and original shape/affine
attributes (any attribute whose name contains "crop", "original" or "split" is shown
side by side), the largest absolute image difference (and in float16 ulps), and the
number of label voxels that differ. Exit status 0 when shapes match, labels are equal and
images differ by at most --max-ulp float16 ulps (default 1), 1 otherwise.
"""

import argparse
import sys

import h5py
import numpy as np


def ordered(a):
    """float16 bit patterns -> integers ordered like the values (for ulp distances)."""
    i = a.astype(np.float16, copy=False).view(np.int16).astype(np.int32)
    return np.where(i < 0, -32768 - i, i)


def fmt(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray):
        return np.array2string(v.ravel(), separator=",", max_line_width=200)
    return str(v)


# Attributes both tools must agree on when both write them.
CHECKED = ("crop_box", "original_shape", "original_affine", "affine", "split", "canonical_shape")


def same_attr(a, b):
    if isinstance(a, (bytes, str)) or isinstance(b, (bytes, str)):
        return fmt(a) == fmt(b)
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.allclose(a, b, atol=1e-4)


def interesting_attrs(g):
    return {k: g.attrs[k] for k in g.attrs
            if any(w in k.lower() for w in ("crop", "original", "split", "spacing", "shape", "norm", "affine"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--max-ulp", type=int, default=1)
    args = ap.parse_args()
    fa, fb = h5py.File(args.a, "r"), h5py.File(args.b, "r")
    ca = set(fa["cases"].keys()) if "cases" in fa else set()
    cb = set(fb["cases"].keys()) if "cases" in fb else set()
    bad = 0
    print(f"A = {args.a}\nB = {args.b}")
    if ca != cb:
        print(f"MISMATCH case ids: only in A {sorted(ca - cb)}, only in B {sorted(cb - ca)}")
        bad += 1
    for cid in sorted(ca & cb):
        ga, gb = fa["cases"][cid], fb["cases"][cid]
        print(f"case {cid}")
        for k in ("image", "label"):
            if k not in ga or k not in gb:
                print(f"  MISMATCH {k}: present in A {k in ga}, in B {k in gb}")
                bad += 1
                continue
            da, db = ga[k], gb[k]
            print(f"  {k}: A {da.dtype} {da.shape} chunks {da.chunks}  B {db.dtype} {db.shape} chunks {db.chunks}")
            if da.shape != db.shape:
                print(f"  MISMATCH {k} shape")
                bad += 1
                continue
            xa, xb = da[...], db[...]
            if k == "image":
                d = np.abs(xa.astype(np.float32) - xb.astype(np.float32))
                ulp = np.abs(ordered(xa) - ordered(xb))
                worst = np.unravel_index(int(np.argmax(d)), d.shape)
                nzdiff = int(((xa != 0) != (xb != 0)).sum())
                print(f"  image: max |A-B| {float(d.max()):.6g} at {tuple(int(i) for i in worst)} "
                      f"(A {float(xa[worst]):.6g}, B {float(xb[worst]):.6g}); max {int(ulp.max())} float16 ulp; "
                      f"{int((ulp > 0).sum())} of {ulp.size} voxels differ; zero/nonzero disagree at {nzdiff}")
                for c in range(xa.shape[0]):
                    print(f"    channel {c}: max |A-B| {float(d[c].max()):.6g}, max {int(ulp[c].max())} ulp")
                if ulp.max() > args.max_ulp or nzdiff:
                    print("  MISMATCH image values")
                    bad += 1
            else:
                n = int((xa != xb).sum())
                print(f"  label: {n} voxels differ; values A {np.unique(xa).tolist()} B {np.unique(xb).tolist()}")
                if n:
                    bad += 1
        aa, ab = interesting_attrs(ga), interesting_attrs(gb)
        for k in sorted(set(aa) | set(ab)):
            va = fmt(aa[k]) if k in aa else "-"
            vb = fmt(ab[k]) if k in ab else "-"
            same = "" if va == vb else ("   (only in A)" if k not in ab else "   (only in B)" if k not in aa else "   (differs)")
            print(f"  attr {k}: A {va}  B {vb}{same}")
            if k in CHECKED and k in aa and k in ab and not same_attr(aa[k], ab[k]):
                print(f"  MISMATCH attribute {k}")
                bad += 1
    print("RESULT:", "match" if bad == 0 else f"{bad} mismatch(es)")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
