. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# The train/val split comes from a hash of each case ID, so a small cohort can fall wholly
# into one split. With two or more usable cases each split then gets the case nearest the
# boundary (hashlib recomputes which); 0 and 1 still give one split, as asked.
need_python_module h5py
fedseg-synth -q -o cohort --cases 3 --shape 24,24,16 --seed 5
check() { # VAL_FRACTION EXPECTED: "min" (one val, the smallest hash), "max" (one train, the largest), "train", "val"
  expect_exit 0 fedseg-prep cohort -o "ds-$1.h5" --val-fraction "$1" --json -q
  "$PY" - "$TMP/stdout" "ds-$1.h5" "$1" "$2" <<'PYEOF'
import hashlib, json, sys
import h5py
out, ds, f, want = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[3]), sys.argv[4]
split = {c["id"]: c["split"] for c in out["cases"]}
frac = {i: int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") / 2.0**64 for i in split}
hashed = {i: "val" if frac[i] < f else "train" for i in split}
if want in ("min", "max"):
    lone = "val" if want == "min" else "train"
    assert all(v != lone for v in hashed.values()), ("the seed no longer makes the cohort fall into one split", hashed)
    pick = (min if want == "min" else max)(split, key=frac.get)
    expect = {i: lone if i == pick else hashed[i] for i in split}
else:
    expect = {i: want for i in split}
assert split == expect, (split, expect)
with h5py.File(ds, "r") as h:
    stored = {i: h["cases"][i].attrs["split"] for i in h["cases"]}
    stored = {i: s.decode() if isinstance(s, bytes) else s for i, s in stored.items()}
assert stored == split, (stored, split)
assert out["val"] == sum(v == "val" for v in split.values()) and out["train"] == sum(v == "train" for v in split.values()), out
PYEOF
  [ $? = 0 ] || fail "--val-fraction $1: split not as expected"
}
check 0.001 min
check 0.999 max
check 0 train
check 1 val
# A site of these three cases evaluates and trains.
expect_exit 0 fedseg-inspect --check ds-0.001.h5
