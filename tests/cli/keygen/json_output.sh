. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 0 fedseg-keygen -o agg --json
expect_json
expect_stderr_empty
"$PY" - "$TMP/stdout" <<'PYEOF'
import json, os, sys
j = json.load(open(sys.argv[1]))
assert j["tool"] == "fedseg-keygen" and j["created"] is True and j["site"] is None, j
assert sorted(os.path.basename(f) for f in j["files"]) == ["age.key", "age.pub", "minisign.key", "minisign.pub"], j
assert j["age_recipient"] == [l for l in open("agg/age.pub").read().split("\n") if l and not l.startswith("#")][0]
assert j["minisign_public_key"] == open("agg/minisign.pub").read().split("\n")[1]
PYEOF
