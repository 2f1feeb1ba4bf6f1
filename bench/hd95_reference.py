#!/usr/bin/python3
"""HD95 on BraTS-sized masks with scipy: the reference bench/hd95.sh times fedseg against.

    hd95_reference.py gen DIR [CASES] [SEED]   writes DIR/masks.u8 + DIR/manifest.json
    hd95_reference.py time DIR [REPEAT]        prints JSON: per-case values, seconds

gen: CASES (default 4) pairs of 155x240x240 (Z, Y, X) uint8 masks, 1 mm voxels: a
tumour-like reference (an ellipsoid with a noisy boundary, 3 to 30 cm³, somewhere in
the brain-sized middle of the grid) and a prediction made from it the way a model
errs: shifted by a few voxels, dilated or eroded, boundary voxels flipped, and in every
other case a small false-positive blob a few centimetres away.

time: the MedPy algorithm as written in tests/interop/metrics_scipy.py, on the whole
grid as MedPy runs it (hd95 calls the surface-distance function twice, each eroding
both masks and computing one distance transform over all 8.9 M voxels). The timed call
is the pooled HD95 alone, arrays already in memory; the max-directed value is computed
from the same distances, untimed, for the comparison. seconds = best run over all cases.
"""
import json
import os
import sys
import time

import numpy as np
from scipy import ndimage

SHAPE = (155, 240, 240)
FOOTPRINT = ndimage.generate_binary_structure(3, 1)


def surface_distances(result, reference, spacing):
    result = result.astype(bool)
    reference = reference.astype(bool)
    rb = result ^ ndimage.binary_erosion(result, structure=FOOTPRINT, iterations=1)
    fb = reference ^ ndimage.binary_erosion(reference, structure=FOOTPRINT, iterations=1)
    return ndimage.distance_transform_edt(~fb, sampling=spacing)[rb]


def hd95(result, reference, spacing):
    d1 = surface_distances(result, reference, spacing)
    d2 = surface_distances(reference, result, spacing)
    return float(np.percentile(np.hstack((d1, d2)), 95)), d1, d2


def tumour(rng, volume_cm3):
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = (3 * volume_cm3 * 1000 / (4 * np.pi)) ** (1 / 3)  # mm = voxels
    radii = r * rng.uniform(0.8, 1.25, 3)
    radii *= r / np.prod(radii) ** (1 / 3)
    c = [rng.uniform(0.35, 0.65) * s for s in SHAPE]
    d = ((zz - c[0]) / radii[0]) ** 2 + ((yy - c[1]) / radii[1]) ** 2 + ((xx - c[2]) / radii[2]) ** 2
    lo = [max(0, int(c[i] - 1.6 * radii[i])) for i in range(3)]
    hi = [min(SHAPE[i], int(c[i] + 1.6 * radii[i]) + 1) for i in range(3)]
    box = tuple(slice(lo[i], hi[i]) for i in range(3))
    noise = ndimage.gaussian_filter(rng.standard_normal([h - l for l, h in zip(lo, hi)]), 2.0) * 1.5
    m = np.zeros(SHAPE, bool)
    m[box] = d[box] + noise < 1.0
    return m, c, r


def prediction(rng, ref, c, r, index):
    p = np.roll(ref, tuple(int(v) for v in rng.integers(-3, 4, 3)), axis=(0, 1, 2))
    k = index % 3
    if k == 1:
        p = ndimage.binary_dilation(p, FOOTPRINT, iterations=2)
    elif k == 2:
        p = ndimage.binary_erosion(p, FOOTPRINT, iterations=1)
    edge = p ^ ndimage.binary_erosion(p, FOOTPRINT)
    p = p ^ (edge & (rng.random(SHAPE) < 0.2))
    if index % 2 == 1:  # a false-positive blob 3-5 cm away
        zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
        v = rng.standard_normal(3)
        v *= rng.uniform(r + 30, r + 50) / np.linalg.norm(v)
        f = [min(max(c[i] + v[i], 5), SHAPE[i] - 6) for i in range(3)]
        p |= (zz - f[0]) ** 2 + (yy - f[1]) ** 2 + (xx - f[2]) ** 2 < 16
    return p


def gen(d, cases, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    entries = []
    n = int(np.prod(SHAPE))
    with open(os.path.join(d, "masks.u8"), "wb") as f:
        for i in range(cases):
            ref, c, r = tumour(rng, [4.0, 12.0, 3.0, 30.0][i % 4])
            pred = prediction(rng, ref, c, r, i)
            f.write(pred.astype(np.uint8).tobytes())
            f.write(ref.astype(np.uint8).tobytes())
            entries.append({"shape": list(SHAPE), "spacing": [1.0, 1.0, 1.0], "pred_offset": 2 * i * n,
                            "ref_offset": (2 * i + 1) * n})
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"raw": "masks.u8", "cases": entries}, f)


def load(d):
    man = json.load(open(os.path.join(d, "manifest.json")))
    raw = np.fromfile(os.path.join(d, man["raw"]), np.uint8)
    out = []
    for e in man["cases"]:
        n = int(np.prod(e["shape"]))
        p = raw[e["pred_offset"]: e["pred_offset"] + n].reshape(e["shape"]).astype(bool)
        r = raw[e["ref_offset"]: e["ref_offset"] + n].reshape(e["shape"]).astype(bool)
        out.append((p, r, tuple(e["spacing"])))
    return out


def time_cases(d, repeat):
    cases = load(d)
    runs = []
    results = []
    for rep in range(repeat):
        t0 = time.perf_counter()
        vals = [hd95(p, r, sp) for p, r, sp in cases]
        runs.append(time.perf_counter() - t0)
        if rep == 0:
            for (p, r, sp), (h, d1, d2) in zip(cases, vals):
                results.append({"hd95": h,
                                "hd95_max_directed": float(max(np.percentile(d1, 95), np.percentile(d2, 95))),
                                "volume_pred_ml": int(p.sum()) / 1000.0, "volume_ref_ml": int(r.sum()) / 1000.0})
    print(json.dumps({"cases": results, "seconds": min(runs), "repeat": repeat}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 4, int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    elif len(sys.argv) >= 3 and sys.argv[1] == "time":
        time_cases(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
