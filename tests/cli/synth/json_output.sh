# --json: one document on stdout with per-case status and tumour volumes; --profile list.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 0 fedseg-synth -o c --cases 2 --shape 32,32,24 --seed 5 --json
expect_json
"$PY" - "$TMP/stdout" <<'PY' || fail "bad --json document: $(cat "$TMP/stdout")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["tool"] == "fedseg-synth" and d["written"] == 2 and d["skipped"] == 0 and d["failed"] == 0, d
assert d["shape"] == [32, 32, 24] and d["seed"] == 5 and d["profile"] == "standard", d
assert [c["id"] for c in d["cases"]] == ["SYNTH_00000", "SYNTH_00001"]
for c in d["cases"]:
    assert c["status"] == "written" and len(c["files"]) == 5
    assert set(c["tumour_voxels"]) == {"1", "2", "4"} and all(v > 0 for v in c["tumour_voxels"].values()), c
PY
expect_exit 0 fedseg-synth -o c --cases 2 --shape 32,32,24 --seed 5 --json
expect_json
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["written"]==0 and d["skipped"]==2 and d["cases"][0]["status"]=="skipped", d' "$TMP/stdout" ||
  fail "rerun --json: $(cat "$TMP/stdout")"

expect_exit 0 fedseg-synth --profile list
for p in standard lowfield highres smalltumour largetumour pediatric; do expect_stdout_has "$p"; done
expect_exit 0 fedseg-synth --profile list --json
expect_json
expect_stdout_has '"lowfield"'
