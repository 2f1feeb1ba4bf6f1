. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# A rerun processes only new or changed cases; with nothing changed it writes
# nothing and exits 0; other options need --force.
fedseg-synth -q -o cohort --cases 3 --shape 32,32,24 --seed 7
expect_exit 0 fedseg-prep cohort -o ds.h5
cp ds.h5 first.h5
expect_exit 0 fedseg-prep cohort -o ds.h5 --json
expect_stdout_has '"written": 0'
cmp -s ds.h5 first.h5 || fail "an up-to-date dataset was rewritten"
fedseg-synth -q -o cohort --cases 1 --first-index 3 --shape 32,32,24 --seed 8
expect_exit 0 fedseg-prep cohort -o ds.h5 --json
"$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["written"] == 1 and d["unchanged"] == 3, d
' "$TMP/stdout"
expect_exit 73 fedseg-prep cohort -o ds.h5 --margin 4
expect_stderr_has "made with other options; use --force"
expect_exit 0 fedseg-prep cohort -o ds.h5 --margin 4 --force
expect_exit 0 fedseg-inspect --check ds.h5
