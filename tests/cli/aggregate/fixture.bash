# Shared by the fedseg-aggregate tests (sourced after lib.sh; not a test case itself).
#   make_ids SITE...                 -> agg/ (the aggregator) and id-SITE/ per site
#   make_fed EX FED SITES [init...]  -> EX/ from fedseg-init (SITES: comma-separated ids), with
#                                       EX/rounds/0/updates/ made; the identities come from make_ids
#   pack_update EX ROUND SITE U.h5   -> EX/rounds/ROUND/updates/SITE.age(.minisig), signed by id-SITE
#   signed_ts FILE                   -> the ts= field of FILE.minisig's trusted comment
#   sha FILE                         -> its sha256 (hex)
#   agg_verifies FILE                -> status of Debian's minisign on FILE with the aggregator's key
#   $AGGPY                           -> a Python module (import aggtest) with the h5py/numpy helpers:
#                                       params(path), write_update(...), flat(...), unflat(...), report(...)
need_python_module h5py numpy
command -v minisign >/dev/null || skip "minisign is not installed (apt-get install minisign)"
export HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR"

make_ids() {
  fedseg-keygen -q -o agg --site aggregator >/dev/null 2>&1 || fail "keygen agg"
  local s
  for s in "$@"; do
    fedseg-keygen -q -o "id-$s" --site "$s" >/dev/null 2>&1 || fail "keygen $s"
  done
}

make_fed() {
  local ex=$1 fed=$2 sites=$3 s
  shift 3
  local args=()
  for s in ${sites//,/ }; do args+=(--site "$s=id-$s"); done
  fedseg-init --federation "$fed" --key agg "${args[@]}" -o "$ex" -q "$@" >"$TMP/init.out" 2>&1 ||
    fail "fedseg-init $fed $*: $(cat "$TMP/init.out")"
  mkdir -p "$ex/rounds/0/updates"
}

pack_update() {
  mkdir -p "$1/rounds/$2/updates"
  fedseg-pack "$4" --key "id-$3" --to agg -o "$1/rounds/$2/updates/$3.age" -q >"$TMP/pack.out" 2>&1 ||
    fail "fedseg-pack $4 for $3: $(cat "$TMP/pack.out")"
}

signed_ts() { sed -n 's/^trusted comment: fedseg1 .* ts=\([0-9][0-9]*\) .*$/\1/p' "$1.minisig"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
agg_verifies() { minisign -Vq -m "$1" -p agg/minisign.pub >/dev/null 2>&1; }

AGGPY=$TMP/pylib
mkdir -p "$AGGPY"
cat >"$AGGPY/aggtest.py" <<'PYEOF'
"""Helpers of the fedseg-aggregate tests: update files written with h5py (as a site's
fedseg-train would), model tensors as dicts and flat float64 vectors."""
import hashlib
import json

import h5py
import numpy as np


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def params(path, group="params"):
    """{name: array} of a fedseg file's tensors under group, sorted by name."""
    out = {}
    with h5py.File(path, "r") as f:
        f[group].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return dict(sorted(out.items()))


def flat(d):
    """One float64 vector of a tensor dict, in name order."""
    return np.concatenate([np.asarray(d[k], np.float64).ravel() for k in sorted(d)])


def unflat(v, like, dtype=np.float32):
    out, i = {}, 0
    for k in sorted(like):
        n = like[k].size
        out[k] = np.asarray(v[i:i + n]).reshape(like[k].shape).astype(dtype)
        i += n
    return out


def write_update(path, global_path, site, num_examples, deltas, dtype=np.float32, round=None):
    """An update file (kind=update) against global_path with /delta/<name> = deltas."""
    with h5py.File(global_path, "r") as g:
        fed = g.attrs["federation"]
        fed = fed.decode() if isinstance(fed, bytes) else str(fed)
        r = int(g.attrs["round"]) if round is None else round
    with h5py.File(path, "w") as f:
        f.attrs["fedseg_format"] = np.int64(1)
        f.attrs["kind"] = "update"
        f.attrs["created"] = "2026-01-01T00:00:00Z"
        f.attrs["tool"] = "aggregate-test"
        f.attrs["provenance"] = json.dumps({"test": True})
        f.attrs["federation"] = fed
        f.attrs["round"] = np.int64(r)
        f.attrs["site"] = site
        f.attrs["base_sha256"] = sha256(global_path)
        f.attrs["num_examples"] = np.int64(num_examples)
        for k, v in deltas.items():
            f.create_dataset("delta/" + k, data=np.asarray(v, dtype))


def report(ex, r=0):
    return json.load(open("%s/rounds/%d/report.json" % (ex, r)))


def f32_close(got, want, ulps=2):
    """got (float32) is want (float64) rounded to float32, within a few ulps."""
    got = np.asarray(got, np.float64)
    want32 = np.asarray(want, np.float32)
    tol = ulps * np.spacing(np.maximum(np.abs(want32), np.float32(1e-30))).astype(np.float64)
    return bool(np.all(np.abs(got - want) <= tol + 1e-12))
PYEOF
export PYTHONPATH="$AGGPY${PYTHONPATH:+:$PYTHONPATH}"
