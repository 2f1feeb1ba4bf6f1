#!/usr/bin/python3
"""FedAvg of decrypted fedseg updates with numpy and h5py: the reference of bench/aggregate.sh.

    aggregate_reference.py GLOBAL.h5 OUT.h5 UPDATE.h5...   [--timing]

What a careful Python user would write, one update after the other, single-threaded:

1. read the global model's parameter names and shapes (/params/<name>);
2. read every update's num_examples and compute the FedAvg weights p_k = n_k / sum(n);
3. per update: open the file, load every delta fully (np.asarray(f["delta"][name]) for
   each name), check names and shapes against the model, and add p_k * delta in float64
   to the running sum (one float64 array per parameter: memory flat in the number of
   updates);
4. new params = global params + the sum, in float64, stored float32;
5. write them as a fedseg model file: /params/<name> chunked about 1 MiB per chunk (the
   rule of fedseg's auto_chunks), byte shuffle + zstd level 1 (filter 32015 through
   fedseg's HDF5 plugin: HDF5_PLUGIN_PATH=BUILD/hdf5-plugins), as fedseg-aggregate does.

It does none of fedseg-aggregate's other work: no signature or decryption (its inputs are
already decrypted), no finiteness check, no norms, cosines or report, no fsync.
--timing prints {"read_global", "load", "sum", "write", "total"} seconds as JSON on stderr.
"""
import argparse
import json
import sys
import time

import h5py
import numpy as np


def auto_chunks(shape, itemsize, target=1 << 20):
    """fedseg's h5::auto_chunks: halve the largest dimension until a chunk is <= 1 MiB."""
    c = list(shape)
    while int(np.prod(c, dtype=np.int64)) * itemsize > target:
        i = int(np.argmax(c))
        if c[i] <= 1:
            break
        c[i] = (c[i] + 1) // 2
    return tuple(max(v, 1) for v in c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("global_h5")
    ap.add_argument("out_h5")
    ap.add_argument("updates", nargs="+")
    ap.add_argument("--zstd-level", type=int, default=1)
    ap.add_argument("--timing", action="store_true")
    args = ap.parse_args()
    t = {"read_global": 0.0, "load": 0.0, "sum": 0.0, "write": 0.0}
    t0 = time.perf_counter()

    with h5py.File(args.global_h5, "r") as g:
        gattrs = dict(g.attrs)
        names = sorted(g["params"].keys())
        params = {n: np.asarray(g["params"][n]) for n in names}
    t["read_global"] = time.perf_counter() - t0

    examples = []
    for path in args.updates:
        with h5py.File(path, "r") as f:
            examples.append(int(f.attrs["num_examples"]))
    total = float(sum(examples))
    acc = {n: np.zeros(params[n].shape, dtype=np.float64) for n in names}
    for path, n_k in zip(args.updates, examples):
        p_k = n_k / total
        ta = time.perf_counter()
        with h5py.File(path, "r") as f:
            delta = {n: np.asarray(f["delta"][n]) for n in names}
            extra = set(f["delta"].keys()) - set(names)
        if extra:
            sys.exit("%s: tensors not in the model: %s" % (path, sorted(extra)[:3]))
        tb = time.perf_counter()
        for n in names:
            d = delta[n]
            if d.shape != params[n].shape:
                sys.exit("%s: delta/%s has shape %s, the model %s" % (path, n, d.shape, params[n].shape))
            acc[n] += d.astype(np.float64) * p_k
        del delta
        t["load"] += tb - ta
        t["sum"] += time.perf_counter() - tb

    tw = time.perf_counter()
    with h5py.File(args.out_h5, "w") as o:
        for k in ("fedseg_format", "architecture", "num_parameters"):
            if k in gattrs:
                o.attrs[k] = gattrs[k]
        o.attrs["kind"] = "global"
        o.attrs["federation"] = gattrs.get("federation", "")
        o.attrs["round"] = np.int64(int(gattrs.get("round", 0)) + 1)
        o.attrs["tool"] = "bench/aggregate_reference.py"
        o.attrs["provenance"] = json.dumps({"rule": "fedavg", "updates": len(args.updates)})
        for n in names:
            w = (params[n].astype(np.float64) + acc[n]).astype(np.float32)
            o.create_dataset("params/" + n, data=w, chunks=auto_chunks(w.shape, 4), shuffle=True,
                             compression=32015, compression_opts=(args.zstd_level,))
    t["write"] = time.perf_counter() - tw
    t["total"] = time.perf_counter() - t0
    if args.timing:
        print(json.dumps({k: round(v, 4) for k, v in t.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
