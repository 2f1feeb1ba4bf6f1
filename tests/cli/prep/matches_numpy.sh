. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (issue 3): on a synthetic cohort, numpy + nibabel recompute each case's
# crop box, normalisation statistics, z-scores, labels and affines, and match.
need_python_module h5py numpy nibabel
export HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR"
fedseg-synth -q -o cohort --cases 3 --shape 48,56,40 --seed 11
expect_exit 0 fedseg-prep cohort -o ds.h5 --val-fraction 0.34
"$PY" "$FEDSEG_SOURCE/tests/cli/prep/reference_check.py" cohort ds.h5 2
# Also with a wider margin and float32 storage.
expect_exit 0 fedseg-prep cohort -o ds32.h5 --margin 5 --dtype float32
"$PY" "$FEDSEG_SOURCE/tests/cli/prep/reference_check.py" cohort ds32.h5 5
