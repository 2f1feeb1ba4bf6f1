. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (issue 2): our zstd-chunked tensor files read in h5py and h5dump
# through the built plugin, and h5py-written filter-32015 files read in fedseg.
need_python_module h5py numpy
command -v h5dump >/dev/null || skip "h5dump not installed (apt-get install hdf5-tools)"
export HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR"
[ -f "$HDF5_PLUGIN_PATH/libh5zstd_fedseg.so" ] || fail "plugin not built in $HDF5_PLUGIN_PATH"

# 1. fedseg writes (formula in tests/tools/testwrite.cpp), h5py reads identical values.
for dt in float32 float16 float64 uint8 int16 int32 int64; do
  fedseg-testwrite -o "w_$dt.h5" --dtype "$dt" --tensors 3 --shape 7,50,40
  "$PY" - "w_$dt.h5" "$dt" <<'PYEOF'
import sys, h5py, numpy as np
path, dt = sys.argv[1], sys.argv[2]
with h5py.File(path, "r") as f:
    assert f.attrs["fedseg_format"] == 1 and f.attrs["kind"] == "global", dict(f.attrs)
    for k in range(3):
        d = f["params/t%d" % k]
        assert "32015" in d._filters, d._filters
        assert d.shuffle == (np.dtype(dt).itemsize > 1)
        i = np.arange(7 * 50 * 40, dtype=np.uint64)
        if np.dtype(dt).kind == "f":
            expect = (((i * 7 + k * 13) % 1000).astype(np.float64) * 0.25 - 100).astype(dt)
        else:
            expect = ((i * 7 + k * 13) % 100).astype(dt)
        got = d[...]
        assert got.dtype == np.dtype(dt), (got.dtype, dt)
        assert np.array_equal(got.reshape(-1), expect), (path, k)
print("h5py read", path, "ok")
PYEOF
done

# 2. float16 storage rounds exactly like numpy's float32 -> float16 conversion.
"$PY" -c '
import numpy as np, sys
v = np.concatenate([np.linspace(-70000, 70000, 20001), np.logspace(-9, 4, 5000), -np.logspace(-9, 4, 5000),
                    [0.0, 65504.0, 65519.99, 65520.0, 5.960464477539063e-08, 2.980232238769531e-08]]).astype(np.float32)
v.tofile("values.f32")
'
fedseg-testwrite -o f16.h5 --dtype float16 --tensors 0 --from-f32 values.f32
"$PY" -c '
import h5py, numpy as np
v = np.fromfile("values.f32", dtype="<f4")
with h5py.File("f16.h5", "r") as f:
    got = f["values"][...]
assert got.dtype == np.float16
want = v.astype(np.float16)
bad = np.flatnonzero(got.view(np.uint16) != want.view(np.uint16))
assert bad.size == 0, [(v[i], got[i], want[i]) for i in bad[:10]]
print("float16 storage matches numpy rounding on", v.size, "values")
'
h5dump -d /params/t1 -s 0,0,0 -c 1,1,5 w_float32.h5 >dump.txt || fail "h5dump failed: $(cat dump.txt)"
# element i of t1: ((i*7+13) % 1000) * 0.25 - 100 for the first 5 values of a 7x50x40 slab
grep -q -- "-96.75, -95, -93.25, -91.5, -89.75" dump.txt || fail "h5dump printed: $(cat dump.txt)"

# 3. h5py writes with filter 32015 through our plugin; fedseg reads it.
"$PY" - <<'PYEOF'
import h5py, numpy as np, json
rng = np.random.default_rng(7)
with h5py.File("py.h5", "w") as f:
    f.attrs["fedseg_format"] = 1
    f.attrs["kind"] = "update"
    f.attrs["created"] = "2026-01-01T00:00:00Z"
    f.attrs["tool"] = "h5py"
    f.attrs["provenance"] = "{}"
    f.attrs["round"] = 4
    sums = {}
    for name, dt in [("delta/a", "float32"), ("delta/b", "float16"), ("delta/c", "uint8"), ("delta/d", "int64")]:
        x = (rng.standard_normal((33, 17, 9)) * 50).astype(dt)
        f.create_dataset(name, data=x, chunks=(8, 17, 9), compression=32015, compression_opts=(5,), shuffle=True)
        import hashlib
        sums[name] = hashlib.sha256(x.astype(x.dtype.newbyteorder("<")).tobytes()).hexdigest()
json.dump(sums, open("py_sums.json", "w"))
PYEOF
expect_exit 0 fedseg-inspect --check --json py.h5
"$PY" - "$TMP/stdout" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))["files"][0]
sums = json.load(open("py_sums.json"))
assert d["ok"] and d["kind"] == "update" and d["attributes"]["round"] == 4, d
got = {t["name"]: t["sha256"] for t in d["tensors"]}
assert got == sums, (got, sums)
assert all("zstd" in t["filters"] for t in d["tensors"])
print("fedseg read h5py's file: sha256 of every tensor matches")
PYEOF
