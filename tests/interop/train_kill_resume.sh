. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/train/fixture.bash"
# Acceptance 2 of issue 5: fedseg-train killed with SIGKILL mid-run and rerun with
# the same command completes from its checkpoint, and its update equals that of an
# uninterrupted run. Two uninterrupted runs are compared too: if a CPU kernel were
# not deterministic, the resumed run may differ no more than they differ.
need_python_module h5py numpy
make_site_dataset 3
make_tiny_federation --epochs 4 --patches-per-case 2 --foreground-fraction 0.5
G=ex/rounds/0/global.h5
run_train() {  # OUT [extra options]
  local out=$1
  shift
  fedseg-train "$G" site.h5 --federation ex/federation.json --site a --threads 2 --seed 11 \
    --checkpoint-every 2 -o "$out" "$@"
}
expect_exit 0 run_train a.h5
expect_exit 0 run_train b.h5

# Kill at a random moment after a checkpoint was written; retry (from scratch) if
# the run finished before the kill landed.
killed=0
for attempt in 1 2 3 4 5; do
  rm -f r.h5 r.h5.checkpoint
  # directly, not through the function: $! must be fedseg-train itself
  fedseg-train "$G" site.h5 --federation ex/federation.json --site a --threads 2 --seed 11 --checkpoint-every 2 \
    -o r.h5 -q >/dev/null 2>&1 &
  pid=$!
  n=0
  while [ ! -e r.h5.checkpoint ] && kill -0 $pid 2>/dev/null && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
  sleep "0.$((RANDOM % 5))"
  if kill -9 $pid 2>/dev/null; then
    wait $pid 2>/dev/null || true
    if [ ! -e r.h5 ]; then killed=1; break; fi
  else
    wait $pid 2>/dev/null || true
  fi
done
[ "$killed" -ge 1 ] || fail "fedseg-train finished before it could be killed"
[ ! -e r.h5 ] || fail "a killed run left r.h5"
[ -e r.h5.checkpoint ] || fail "no checkpoint after the kill"
expect_exit 0 run_train r.h5 --json
expect_json
"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["resumed_from_step"] and j["resumed_from_step"] > 0, j; print("resumed at step", j["resumed_from_step"], "of", j["steps"])' "$TMP/stdout"
[ ! -e r.h5.checkpoint ] || fail "checkpoint left after completion"

HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR" "$PY" - <<'PYEOF'
import h5py, numpy as np
def load(p):
    with h5py.File(p, "r") as f:
        return {k: f["delta"][k][()] for k in f["delta"]}, list(f.attrs["loss_curve"])
a, la = load("a.h5"); b, lb = load("b.h5"); r, lr = load("r.h5")
def diff(x, y):
    return max(float(np.abs(x[k] - y[k]).max()) for k in x)
dab, dar = diff(a, b), diff(a, r)
print("max |a-b| (two uninterrupted runs) =", dab, " max |a-r| (resumed) =", dar)
assert set(a) == set(r)
assert dar <= dab, "the resumed run differs more than two uninterrupted runs"
if dab == 0:
    assert la == lr, "loss curves differ"
PYEOF
