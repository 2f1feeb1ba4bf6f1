. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Same inputs and options give the same bytes, whatever the thread count.
export SOURCE_DATE_EPOCH=1700000000
fedseg-synth -q -o cohort --cases 4 --shape 32,32,24 --seed 3
expect_exit 0 fedseg-prep cohort -o one.h5 --threads 1
expect_exit 0 fedseg-prep cohort -o two.h5 --threads 2
cmp one.h5 two.h5 || fail "output depends on the thread count"
# Resampling (0.8 mm target) and the BraTS 2023 naming with its scheme.
fedseg-synth -q -o c23 --cases 2 --shape 32,32,24 --seed 4 --naming brats2023
expect_exit 0 fedseg-prep c23 -o r.h5 --spacing 0.8,0.8,1.2 --json
"$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["written"] == 2, d
' "$TMP/stdout"
expect_exit 0 fedseg-inspect --json r.h5
"$PY" -c '
import json, sys
f = json.load(open(sys.argv[1]))["files"][0]
assert f["attributes"]["label_scheme"] == "brats2023"
' "$TMP/stdout"
