#!/usr/bin/python3
"""Reference for tests/interop/metrics_scipy.sh: fedseg::metrics against scipy.

Writes random mask pairs (empty, single-voxel, touching the border, anisotropic
spacing, blobs, noise, thin and flat volumes) and BraTS label volumes to one raw file
with a manifest, runs fedseg-metricstool on them (cropped to the union bounding box,
on the whole grid, and with several threads), and compares every value with a
reference written here from the algorithm's description (MedPy's, which is not
packaged in Debian; its code is not copied):

  surface(M)      = M XOR binary_erosion(M, generate_binary_structure(3, 1))
                    (scipy's default border_value=0: the outside of the array is
                    background, so mask voxels on the array border are surface)
  d(A -> B)       = distance_transform_edt(NOT surface(B), sampling=spacing)[surface(A)]
  HD95 pooled     = numpy.percentile(concatenate(d(A->B), d(B->A)), 95)   (linear)
  HD95 max-dir.   = max(percentile(d(A->B), 95), percentile(d(B->A), 95))
  empty masks     : both -> 0; one -> 373.12866 (pooled) or 374 (max-directed)
  Dice            : 2|A∩B| / (|A| + |B|), both empty -> 1

Usage: metrics_scipy.py WORKDIR [--cases N] [--seed S]   (the tool is found on PATH)
Exit 0 when everything agrees to 1e-6, 1 otherwise (printing the first differences).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
from scipy import ndimage

TOL = 1e-6
EMPTY_POOLED = 373.12866
EMPTY_MAX = 374.0
FOOTPRINT = ndimage.generate_binary_structure(3, 1)


# --- the reference ------------------------------------------------------------------

def surface(m):
    return m ^ ndimage.binary_erosion(m, structure=FOOTPRINT, iterations=1)


def directed(sa, sb, spacing):
    return ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]


def reference(pred, ref, spacing):
    p = pred.astype(bool)
    r = ref.astype(bool)
    tp = int(np.count_nonzero(p & r))
    npred = int(np.count_nonzero(p))
    nref = int(np.count_nonzero(r))
    n = p.size
    out = {
        "tp": tp, "fp": npred - tp, "fn": nref - tp, "tn": n - npred - nref + tp,
        "dice": 1.0 if npred + nref == 0 else 2.0 * tp / (npred + nref),
        "sensitivity": (1.0 if npred == 0 else 0.0) if nref == 0 else tp / nref,
        "volume_pred_ml": npred * float(np.prod(spacing)) / 1000.0,
        "volume_ref_ml": nref * float(np.prod(spacing)) / 1000.0,
    }
    tn, fp = out["tn"], out["fp"]
    out["specificity"] = 1.0 if tn + fp == 0 else tn / (tn + fp)
    sp = surface(p) if npred else np.zeros_like(p)
    sr = surface(r) if nref else np.zeros_like(r)
    out["surface_pred"] = int(np.count_nonzero(sp))
    out["surface_ref"] = int(np.count_nonzero(sr))
    if npred == 0 and nref == 0:
        out["hd95"] = out["hd95_max_directed"] = 0.0
        d1 = d2 = np.zeros(0)
    elif npred == 0 or nref == 0:
        out["hd95"], out["hd95_max_directed"] = EMPTY_POOLED, EMPTY_MAX
        d1 = d2 = np.zeros(0)
    else:
        d1 = directed(sp, sr, spacing)
        d2 = directed(sr, sp, spacing)
        out["hd95"] = float(np.percentile(np.hstack((d1, d2)), 95))
        out["hd95_max_directed"] = float(max(np.percentile(d1, 95), np.percentile(d2, 95)))
    return out, d1, d2


def region_masks(labels, coding):
    if coding == "regions":
        return [((labels >> r) & 1).astype(bool) for r in range(3)]
    et = 4 if coding == "brats2021" else 3
    return [labels == et, (labels == 1) | (labels == et), (labels == 1) | (labels == 2) | (labels == et)]


# --- the cases ----------------------------------------------------------------------

def blob(rng, shape, spacing=None):
    """An ellipsoid-ish blob: smoothed noise around a random centre, thresholded."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [rng.uniform(0, s - 1) for s in shape]
    rad = [max(0.6, rng.uniform(0.15, 0.5) * s) for s in shape]
    d = ((zz - c[0]) / rad[0]) ** 2 + ((yy - c[1]) / rad[1]) ** 2 + ((xx - c[2]) / rad[2]) ** 2
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) * rng.uniform(0, 0.8)
    return (d + noise < 1.0).astype(np.uint8)


def perturb(rng, m):
    """A prediction-like variant: shifted, dilated or eroded, a few voxels flipped."""
    out = np.roll(m, tuple(int(v) for v in rng.integers(-2, 3, 3)), axis=(0, 1, 2))
    k = rng.integers(0, 3)
    if k == 1:
        out = ndimage.binary_dilation(out, FOOTPRINT)
    elif k == 2:
        out = ndimage.binary_erosion(out, FOOTPRINT)
    flips = rng.random(m.shape) < rng.uniform(0, 0.02)
    return (out.astype(bool) ^ flips).astype(np.uint8)


def single(shape, at):
    m = np.zeros(shape, np.uint8)
    m[tuple(at)] = 1
    return m


def rand_spacing(rng):
    k = rng.integers(0, 4)
    if k == 0:
        return [1.0, 1.0, 1.0]
    if k == 1:
        return [float(rng.choice([2.0, 3.0, 5.0])), 0.9375, 0.9375]
    return [float(v) for v in np.round(rng.uniform(0.3, 3.0, 3), 4)]


def rand_shape(rng, lo=1, hi=24):
    return tuple(int(v) for v in rng.integers(lo, hi + 1, 3))


def binary_cases(rng, n):
    cases = []  # (name, pred, ref, spacing)

    def add(name, p, r, sp=None):
        cases.append((name, p.astype(np.uint8), r.astype(np.uint8), sp or rand_spacing(rng)))

    s = (7, 9, 11)
    z = np.zeros(s, np.uint8)
    add("both-empty", z, z, [1.0, 1.0, 1.0])
    add("both-empty-aniso", z, z, [2.5, 0.7, 1.1])
    b = blob(rng, s)
    b[3, 4, 5] = 1
    add("pred-empty", z, b)
    add("ref-empty", b, z)
    add("single-vs-empty", single(s, (0, 0, 0)), z)
    add("single-same", single(s, (3, 4, 5)), single(s, (3, 4, 5)))
    add("single-two-points", single(s, (0, 0, 0)), single(s, (6, 8, 10)), [2.0, 1.5, 0.5])
    add("single-corner-voxel-grid", np.ones((1, 1, 1), np.uint8), np.ones((1, 1, 1), np.uint8))
    add("full-vs-full", np.ones(s, np.uint8), np.ones(s, np.uint8), [1.2, 0.8, 3.0])
    add("full-vs-single", np.ones(s, np.uint8), single(s, (3, 4, 5)), [1.2, 0.8, 3.0])
    add("full-vs-blob", np.ones((12, 10, 14), np.uint8), blob(rng, (12, 10, 14)))
    face = np.zeros(s, np.uint8)
    face[:, :, -1] = 1
    add("face-vs-face", face, np.flip(face, 2).copy(), [1.0, 1.0, 2.0])
    slab = np.zeros(s, np.uint8)
    slab[0:3] = 1
    add("slab-border", slab, np.roll(slab, 1, 0))
    for i in range(4):
        sh = rand_shape(rng, 2, 10)
        add(f"single-random-{i}", single(sh, [rng.integers(0, v) for v in sh]),
            single(sh, [rng.integers(0, v) for v in sh]))
        add(f"single-vs-blob-{i}", single(sh, [rng.integers(0, v) for v in sh]), blob(rng, sh))
    for i in range(6):  # thin and flat grids: every voxel touches the border
        sh = [int(v) for v in rng.integers(1, 16, 3)]
        sh[int(rng.integers(0, 3))] = 1
        add(f"flat-{i}", (rng.random(sh) < 0.4), (rng.random(sh) < 0.4))
    for i in range(3):
        sh = (int(rng.integers(1, 3)), 1, int(rng.integers(5, 40)))
        add(f"line-{i}", (rng.random(sh) < 0.3), (rng.random(sh) < 0.3))
    for i in range(6):  # the same mask: HD95 0
        sh = rand_shape(rng, 3)
        m = blob(rng, sh)
        add(f"identical-{i}", m, m)
    for i in range(6):  # medium volumes with realistic blobs (threads engage)
        sh = (int(rng.integers(40, 70)), int(rng.integers(40, 80)), int(rng.integers(40, 80)))
        r = blob(rng, sh)
        add(f"medium-{i}", perturb(rng, r), r)
    while len(cases) < n:  # random: blobs, perturbed blobs, noise, mixtures
        i = len(cases)
        sh = rand_shape(rng, 1, 26)
        k = i % 5
        if k == 0:
            p, r = blob(rng, sh), blob(rng, sh)
        elif k == 1:
            r = blob(rng, sh)
            p = perturb(rng, r)
        elif k == 2:
            dens = rng.uniform(0.01, 0.6)
            p, r = rng.random(sh) < dens, rng.random(sh) < dens
        elif k == 3:  # inside a larger grid: the bounding box does not reach the border
            r = blob(rng, sh)
            p = perturb(rng, r)
            pad = [(int(rng.integers(1, 6)), int(rng.integers(1, 6))) for _ in range(3)]
            p, r = np.pad(p, pad), np.pad(r, pad)
        else:
            p = blob(rng, sh) | blob(rng, sh)
            r = perturb(rng, p)
        add(f"random-{i}", p, r)
    return cases


def label_cases(rng):
    cases = []  # (name, pred, pred_coding, ref, ref_coding, spacing)
    for i in range(6):
        sh = rand_shape(rng, 6, 30)
        for coding, values in (("brats2021", [0, 1, 2, 4]), ("brats2023", [0, 1, 2, 3])):
            ref = np.zeros(sh, np.uint8)
            wt = blob(rng, sh).astype(bool)
            ref[wt] = values[2]
            ref[wt & blob(rng, sh).astype(bool)] = values[1]
            ref[wt & blob(rng, sh).astype(bool)] = values[3]
            pred = np.roll(ref, tuple(int(v) for v in rng.integers(-2, 3, 3)), axis=(0, 1, 2))
            if i == 0:
                pred[...] = 0  # every region empty in the prediction
            cases.append((f"labels-{coding}-{i}", pred, coding, ref, coding, rand_spacing(rng)))
            # a region-coded prediction scored against BraTS labels
            rb = np.zeros(sh, np.uint8)
            for r, m in enumerate(region_masks(pred, coding)):
                rb |= (m.astype(np.uint8) << r)
            rb[rng.random(sh) < 0.02] = rng.integers(0, 8)
            cases.append((f"labels-regions-vs-{coding}-{i}", rb, "regions", ref, coding, rand_spacing(rng)))
    return cases


# --- running and comparing ------------------------------------------------------------

def write_manifest(workdir, cases, labels):
    raw_path = os.path.join(workdir, "pairs.u8")
    entries = []
    with open(raw_path, "wb") as f:
        off = 0
        for c in cases:
            if labels:
                name, pred, pc, ref, rc, sp = c
            else:
                name, pred, ref, sp = c
                pc = rc = "binary"
            assert pred.shape == ref.shape
            f.write(np.ascontiguousarray(pred, np.uint8).tobytes())
            f.write(np.ascontiguousarray(ref, np.uint8).tobytes())
            entries.append({"name": name, "shape": list(pred.shape), "spacing": sp, "pred_offset": off,
                            "ref_offset": off + pred.size, "pred_coding": pc, "ref_coding": rc})
            off += 2 * pred.size
    path = os.path.join(workdir, "labels.json" if labels else "binary.json")
    with open(path, "w") as f:
        json.dump({"raw": raw_path, "cases": entries}, f)
    return path


def run_tool(manifest, *args):
    out = subprocess.run(["fedseg-metricstool", manifest, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class Checker:
    def __init__(self):
        self.failures = []
        self.checked = 0
        self.largest = 0.0

    def close(self, what, got, want, tol=TOL):
        self.checked += 1
        if got is not None and tol == TOL:
            self.largest = max(self.largest, abs(float(got) - float(want)))
        if got is None or not abs(float(got) - float(want)) <= tol:
            self.failures.append(f"{what}: fedseg {got!r}, reference {want!r}")

    def equal(self, what, got, want):
        self.checked += 1
        if got != want:
            self.failures.append(f"{what}: fedseg {got!r}, reference {want!r}")


INTS = ("tp", "fp", "fn", "tn", "surface_pred", "surface_ref")
REALS = ("dice", "hd95", "hd95_max_directed", "sensitivity", "specificity", "volume_pred_ml", "volume_ref_ml")


def compare(chk, name, got, want):
    for k in INTS:
        chk.equal(f"{name} {k}", got[k], want[k])
    for k in REALS:
        chk.close(f"{name} {k}", got[k], want[k])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--cases", type=int, default=240)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    chk = Checker()

    bcases = binary_cases(rng, a.cases)
    man = write_manifest(a.workdir, bcases, labels=False)
    crop = run_tool(man, "--distances", "--threads", "1")
    full = run_tool(man, "--full-grid", "--threads", "1")
    threaded = run_tool(man, "--threads", "3")
    kinds = {"empty": 0, "single": 0, "border": 0, "interior": 0, "aniso": 0}
    for i, (name, pred, ref, sp) in enumerate(bcases):
        want, d1, d2 = reference(pred, ref, sp)
        got = crop["cases"][i]
        compare(chk, name, got, want)
        chk.equal(f"{name} number of distances pred->ref", len(got["pred_to_ref"]), len(d1))
        chk.equal(f"{name} number of distances ref->pred", len(got["ref_to_pred"]), len(d2))
        if len(got["pred_to_ref"]) == len(d1) and len(d1):
            chk.close(f"{name} distances pred->ref (largest difference)",
                      float(np.max(np.abs(np.array(got["pred_to_ref"]) - d1))), 0.0)
        if len(got["ref_to_pred"]) == len(d2) and len(d2):
            chk.close(f"{name} distances ref->pred (largest difference)",
                      float(np.max(np.abs(np.array(got["ref_to_pred"]) - d2))), 0.0)
        for k in INTS + REALS:  # the union bounding box gives the whole grid's values
            chk.close(f"{name} {k} cropped vs whole grid", full["cases"][i][k], got[k], 1e-9)
            chk.close(f"{name} {k} 3 threads vs 1", threaded["cases"][i][k], got[k], 1e-9)
        p, r = pred.astype(bool), ref.astype(bool)
        kinds["empty"] += (not p.any()) or (not r.any())
        kinds["single"] += int(np.count_nonzero(p)) == 1 or int(np.count_nonzero(r)) == 1
        border = False
        for m in (p, r):
            for ax in range(3):
                border |= bool(np.take(m, 0, ax).any() or np.take(m, -1, ax).any())
        kinds["border"] += border
        kinds["interior"] += not border and bool(p.any() or r.any())
        kinds["aniso"] += len(set(sp)) > 1

    lcases = label_cases(rng)
    lman = write_manifest(a.workdir, lcases, labels=True)
    lres = run_tool(lman)
    for i, (name, pred, pc, ref, rc, sp) in enumerate(lcases):
        pm, rm = region_masks(pred, pc), region_masks(ref, rc)
        for r, region in enumerate(("ET", "TC", "WT")):
            want, _, _ = reference(pm[r], rm[r], sp)
            compare(chk, f"{name} {region}", lres["cases"][i][region], want)

    print(f"{len(bcases)} mask pairs ({kinds['empty']} with an empty mask, {kinds['single']} single-voxel, "
          f"{kinds['border']} touching the border, {kinds['interior']} inside it, {kinds['aniso']} anisotropic), {len(lcases)} label pairs; "
          f"{chk.checked} values compared, tolerance {TOL}, largest difference {chk.largest:.3g}")
    if min(kinds.values()) == 0 or len(bcases) < 200:
        print("FAIL: the case mix lacks a required kind", file=sys.stderr)
        return 1
    if chk.failures:
        for f in chk.failures[:30]:
            print("FAIL:", f, file=sys.stderr)
        print(f"{len(chk.failures)} differences", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
