. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# fedseg-init: the exchange folder it creates, checked with Debian's minisign and
# h5py; deterministic weights for a seed; never overwrites a federation.
need_python_module h5py
command -v minisign >/dev/null || skip "minisign is not installed (apt-get install minisign)"
fedseg-keygen -o agg >/dev/null 2>&1
fedseg-keygen -o a --site a >/dev/null 2>&1
fedseg-keygen -o b --site b >/dev/null 2>&1
expect_exit 0 fedseg-init --help
expect_stdout_has "--rule"

expect_exit 0 fedseg-init --federation fed1 --key agg --site a=a --site b=b --preset small --patch 32 \
  --epochs 2 --fedprox-mu 0.01 --rule fedadam --rule-param server_lr=0.01 --min-sites 1 --deadline 600 \
  --after-deadline aggregate --seed 7 -o ex --json
expect_json
for f in federation.json rounds/0/global.h5 LATEST; do
  minisign -Vm "ex/$f" -p agg/minisign.pub >"$TMP/m" 2>&1 || fail "minisign rejects ex/$f: $(cat "$TMP/m")"
done
grep -q "trusted comment: fedseg1 fed=fed1 round=0 site=- kind=global base=- plain=$(sha256sum ex/rounds/0/global.h5 | cut -d' ' -f1) enc=none" \
  ex/rounds/0/global.h5.minisig || fail "global.h5.minisig comment: $(cat ex/rounds/0/global.h5.minisig)"
grep -q "kind=federation" ex/federation.json.minisig || fail "federation.json.minisig kind"
grep -q "kind=latest" ex/LATEST.minisig || fail "LATEST.minisig kind"

HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR" "$PY" - "$(sha256sum ex/rounds/0/global.h5 | cut -d' ' -f1)" "$(sed -n 2p a/minisign.pub)" "$(cat a/age.pub | grep ^age1)" <<'PYEOF'
import json, sys, h5py, numpy as np
plan = json.load(open("ex/federation.json"))
assert plan["fedseg_federation"] == 1 and plan["federation"] == "fed1"
assert [s["id"] for s in plan["sites"]] == ["a", "b"]
assert plan["sites"][0]["minisign_public_key"] == sys.argv[2] and plan["sites"][0]["age_recipient"] == sys.argv[3]
m = plan["model"]
assert (m["name"], m["base_filters"], m["depth"], m["in_channels"], m["out_channels"]) == ("resunet3d", 8, 3, 4, 3), m
assert m["regions"] == ["ET", "TC", "WT"] and m["channels"] == ["t1", "t1ce", "t2", "flair"]
t = plan["training"]
assert t["patch"] == [32, 32, 32] and t["epochs"] == 2 and t["fedprox_mu"] == 0.01 and t["optimizer"] == "adam", t
assert plan["aggregation"] == {"rule": "fedadam", "server_lr": 0.01}, plan["aggregation"]
assert plan["quorum"] == {"expected": ["a", "b"], "min_sites": 1, "deadline_seconds": 600, "after_deadline": "aggregate"}
latest = json.load(open("ex/LATEST"))
assert latest["round"] == 0 and latest["global"] == "rounds/0/global.h5" and latest["global_sha256"] == sys.argv[1]
g = h5py.File("ex/rounds/0/global.h5", "r")
a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
assert a["kind"] == "global" and a["federation"] == "fed1" and a["round"] == 0 and json.loads(a["parents"]) == []
assert json.loads(a["architecture"]) == m
assert "enc.0.conv1.weight" in g["params"] and "head.bias" in g["params"] and "up.2.weight" in g["params"]
assert g["params"]["enc.0.conv1.weight"].shape == (8, 4, 3, 3, 3) and g["params"]["enc.3.conv1.weight"].shape == (64, 32, 3, 3, 3)
assert all(np.isfinite(g["params"][n][()]).all() for n in g["params"])
PYEOF

# A federation is created once: 73, even with --force, and nothing changes.
before=$(sha256sum ex/federation.json ex/rounds/0/global.h5 ex/LATEST)
expect_exit 73 fedseg-init --federation fed1 --key agg --site a=a -o ex
expect_exit 73 fedseg-init --federation fed1 --key agg --site a=a -o ex --force
expect_stderr_has "ex"
[ "$before" = "$(sha256sum ex/federation.json ex/rounds/0/global.h5 ex/LATEST)" ] || fail "files changed"

# Deterministic for --seed: the same weights (same tensor hashes), another seed others.
fedseg-init --federation fed1 --key agg --site a=a --site b=b --preset small --seed 7 -o ex2 -q >/dev/null
fedseg-init --federation fed1 --key agg --site a=a --site b=b --preset small --seed 8 -o ex3 -q >/dev/null
h() { fedseg-inspect --check --json "$1" | "$PY" -c 'import json,sys; print(sorted((t["name"], t["sha256"]) for t in json.load(sys.stdin)["files"][0]["tensors"]))'; }
[ "$(h ex/rounds/0/global.h5)" = "$(h ex2/rounds/0/global.h5)" ] || fail "same seed, different weights"
[ "$(h ex/rounds/0/global.h5)" != "$(h ex3/rounds/0/global.h5)" ] || fail "another seed, same weights"

# Bad options: 64; missing inputs: 66; out-of-range plan values: 78. Nothing written.
expect_exit 64 fedseg-init --federation fed1 --key agg -o x1                           # no --site
expect_exit 64 fedseg-init --federation 'bad id' --key agg --site a=a -o x1
expect_exit 64 fedseg-init --federation f --key agg --site a=a --preset huge -o x1
expect_exit 64 fedseg-init --federation f --key agg --site a=a --preset small --patch 30 -o x1
expect_stderr_has "multiple of 8"
expect_exit 64 fedseg-init --federation f --key agg --site a -o x1
expect_exit 66 fedseg-init --federation f --key agg --site a=nowhere -o x1
expect_exit 66 fedseg-init --federation f --key nokey --site a=a -o x1
expect_exit 78 fedseg-init --federation f --key agg --site a=a --lr -1 -o x1
expect_stderr_has "learning_rate"
expect_exit 78 fedseg-init --federation f --key agg --site a=a --rule fedmagic -o x1
expect_exit 78 fedseg-init --federation f --key agg --site a=a --min-sites 3 -o x1
expect_exit 78 fedseg-init --federation f --key agg --site a=a --expect c -o x1
expect_exit 65 fedseg-init --federation f --key agg --site a=a --site b=a -o x1           # one key, two sites
[ ! -e x1/federation.json.minisig ] || fail "a plan was signed despite errors"
