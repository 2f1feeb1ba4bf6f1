. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance 1 of issue 7 (lib/metrics): Dice and HD95, both conventions (pooled
# MedPy/BraTS <= 2021, max-directed MONAI/BraTS 2023), plus sensitivity, specificity,
# volumes and surface sizes, agree to 1e-6 with a scipy.ndimage rewrite of the MedPy
# algorithm (tests/interop/metrics_scipy.py) on 240 random mask pairs: empty,
# single-voxel, touching the border, flat and thin grids, anisotropic spacing, blobs
# and noise; and per BraTS region on brats2021/brats2023/region-coded label volumes.
# The same values come from the whole grid (--full-grid) and with 3 threads.
need_python_module numpy scipy
command -v fedseg-metricstool >/dev/null || fail "fedseg-metricstool not built in $FEDSEG_BUILD/bin"

"$PY" "$FEDSEG_SOURCE/tests/interop/metrics_scipy.py" "$TMP" || fail "fedseg::metrics differs from the scipy reference"

# A label value the coding does not declare is bad data (65), naming the value.
"$PY" - "$TMP" <<'PYEOF'
import json, sys
d = sys.argv[1]
open(d + "/bad.u8", "wb").write(bytes([0, 4, 3, 0, 0, 1, 2, 4]))
json.dump({"raw": "bad.u8", "cases": [{"shape": [1, 1, 4], "spacing": [1, 1, 1], "pred_offset": 0,
           "ref_offset": 4, "pred_coding": "brats2021", "ref_coding": "brats2021"}]}, open(d + "/bad.json", "w"))
PYEOF
expect_exit 65 fedseg-metricstool "$TMP/bad.json"
expect_stderr_has "undeclared label value"
expect_stderr_has "3 in the prediction (brats2021 declares 0, 1, 2, 4)"
expect_stderr_lines 1
echo "OK: metrics agree with scipy"
