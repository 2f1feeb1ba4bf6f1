. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/train/fixture.bash"
# Acceptance 1 of issue 5: on a small synthetic dataset a small model learns: the
# loss falls and the training Dice of the whole tumour rises from the first epoch
# to the last. Also checks the update file against h5py and the global model.
need_python_module h5py numpy
make_site_dataset 4
make_tiny_federation --epochs 12 --patches-per-case 4 --lr 1e-2 --batch-size 2 --foreground-fraction 0.8 --patch 24,24,24

expect_exit 0 fedseg-train ex/rounds/0/global.h5 site.h5 --federation ex/federation.json --site a -o update.h5 \
  --threads 2 --json
expect_json
"$PY" - "$TMP/stdout" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["status"] == "trained" and j["epochs"] == 12 and j["steps"] == 12 * 8, j
loss, dice = j["epoch_loss"], j["epoch_dice"]
print("epoch loss", [round(v, 4) for v in loss])
print("epoch WT Dice", [round(d[2], 3) for d in dice])
assert len(loss) == 12 and len(dice) == 12
assert sum(loss[-2:]) / 2 < sum(loss[:2]) / 2 - 0.02, "loss did not fall: %s" % loss
assert sum(d[2] for d in dice[-2:]) / 2 > sum(d[2] for d in dice[:2]) / 2 + 0.05, "WT Dice did not rise: %s" % dice
t = j["timings"]
assert t["data_seconds"] < 0.2 * (t["data_seconds"] + t["compute_seconds"]), t
PYEOF

# The update: kind update, bound attributes, one delta per global parameter, same shapes.
HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR" "$PY" - "$(sha256sum ex/rounds/0/global.h5 | cut -d' ' -f1)" <<'PYEOF'
import sys, h5py, numpy as np
u, g = h5py.File("update.h5", "r"), h5py.File("ex/rounds/0/global.h5", "r")
a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in u.attrs.items()}
assert a["kind"] == "update" and a["federation"] == "fedtest" and a["round"] == 0 and a["site"] == "a", a
assert a["base_sha256"] == sys.argv[1], a
assert a["num_examples"] == 4 and a["epochs"] == 12 and len(a["loss_curve"]) == 96, a
names = set(u["delta"].keys())
assert names == set(g["params"].keys()), names ^ set(g["params"].keys())
moved = 0
for n in names:
    d, p = u["delta"][n][()], g["params"][n][()]
    assert d.shape == p.shape and d.dtype == np.float32 and np.isfinite(d).all(), n
    moved += np.abs(d).max() > 0
assert moved == len(names), "some parameters did not change"
PYEOF
[ ! -e update.h5.checkpoint ] || fail "checkpoint left behind"

# Rerunning the finished step does nothing (exit 0); another existing file needs --force.
expect_exit 0 fedseg-train ex/rounds/0/global.h5 site.h5 --federation ex/federation.json --site a -o update.h5
expect_stderr_has "nothing to do"
cp site.h5 other.h5
expect_exit 73 fedseg-train ex/rounds/0/global.h5 site.h5 --federation ex/federation.json --site a -o other.h5
expect_stderr_has "other.h5"
