. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance 3 of issue 5: a fedseg model file loads into the PyTorch definition in
# share/fedseg/python (Debian's python3-torch + python3-h5py), and on the same input
# its outputs match fedseg's LibTorch ones within 1e-4. Both presets' layouts are
# checked (depth 3 with the small preset; depth 4 as in fets, at a reduced width),
# with trained (not freshly initialised) weights for one of them.
need_python_module torch h5py numpy
fedseg-keygen -o agg >/dev/null 2>&1
fedseg-keygen -o s >/dev/null 2>&1
fedseg-init --federation py --key agg --site a=s --preset small -o small -q --seed 1
fedseg-init --federation py --key agg --site a=s --preset fets --base-filters 6 -o fets -q --seed 2
fedseg-synth -o cohort --cases 2 --shape 32,32,24 --seed 5 -q
fedseg-prep cohort -o site.h5 --val-fraction 0 -q
fedseg-init --federation py --key agg --site a=s --preset small --patch 16 --lr 1e-2 -o trained -q --seed 3
fedseg-train trained/rounds/0/global.h5 site.h5 --federation trained/federation.json --site a -o upd.h5 -q
export HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR" PYTHONPATH="$FEDSEG_SOURCE/share/fedseg/python"
"$PY" - <<'PYEOF'
import subprocess, h5py, numpy as np, torch, fedseg_model
torch.manual_seed(0)
# A trained model: global + delta, written as a model file by h5py the way fedseg does.
with h5py.File("trained/rounds/0/global.h5", "r") as g, h5py.File("upd.h5", "r") as u, h5py.File("trained.h5", "w") as t:
    for k, v in g.attrs.items():
        t.attrs[k] = v
    for n in g["params"]:
        t["params/" + n] = g["params"][n][()] + u["delta"][n][()]
cases = [("small/rounds/0/global.h5", (1, 4, 32, 32, 32)), ("fets/rounds/0/global.h5", (2, 4, 32, 32, 16)),
         ("trained.h5", (1, 4, 24, 24, 24))]
for path, shape in cases:
    model, meta = fedseg_model.load(path)
    model.eval()
    x = np.random.default_rng(len(path)).standard_normal(shape).astype(np.float32)
    with h5py.File("x.h5", "w") as f:
        f["x"] = x
    subprocess.check_call(["fedseg-nnforward", path, "x.h5", "-o", "y.f32"])
    n_out = meta["architecture"]["out_channels"]
    y = np.fromfile("y.f32", dtype=np.float32).reshape((shape[0], n_out) + shape[2:])
    with torch.no_grad():
        yp = model(torch.from_numpy(x)).numpy()
    d = float(np.abs(y - yp).max())
    print("%s: %d parameters, max |C++ - PyTorch| = %.3g (output range %.3g)" %
          (path, sum(p.numel() for p in model.parameters()), d, float(np.abs(yp).max())))
    assert d < 1e-4, d
    # The parameter names are the state_dict keys, all of them and nothing else.
    with h5py.File(path, "r") as f:
        assert set(f["params"]) == set(model.state_dict()), path
PYEOF
