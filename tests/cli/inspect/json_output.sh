. "$FEDSEG_SOURCE/tests/cli/lib.sh"
fedseg-testwrite -o a.h5 --tensors 2 --shape 5
expect_exit 66 fedseg-inspect --check --json a.h5 missing.h5
expect_json
"$PY" - "$TMP/stdout" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["tool"] == "fedseg-inspect", d
assert d["ok"] == 1 and d["failed"] == 1, d
a, m = d["files"]
assert a["ok"] and a["kind"] == "global" and a["format"] == 1
assert a["attributes"]["federation"] == "test-fed" and a["attributes"]["round"] == 3
assert [t["name"] for t in a["tensors"]] == ["params/t0", "params/t1"]
assert a["tensors"][0]["shape"] == [5] and a["tensors"][0]["dtype"] == "float32"
assert len(a["tensors"][0]["sha256"]) == 64 and a["check"]["ok"]
assert not m["ok"] and m["error"]["code"] == 66
PYEOF
