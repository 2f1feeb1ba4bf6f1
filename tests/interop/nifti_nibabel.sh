. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (NIfTI issue, 1): for every NIfTI file in the nifti_clib regression data
# ($FEDSEG_TESTDATA/nifti-regress), python3-nibabel's tests/data and mricron-data's
# templates, fedseg's data (after scaling) and affine equal nibabel's (relative 1e-5),
# or both reject the file. Corpora that are absent are reported and skipped; the case
# is skipped only when none is present. Comparison: tests/interop/nifti_compare.py.
need_python_module nibabel numpy
command -v fedseg-niftidump >/dev/null || fail "fedseg-niftidump not built in $FEDSEG_BUILD/bin"

corpora=()
for d in "$FEDSEG_TESTDATA/nifti-regress" \
         "$("$PY" -c 'import nibabel, os; print(os.path.join(os.path.dirname(nibabel.__file__), "tests", "data"))')" \
         /usr/share/mricron/templates; do
  if [ -d "$d" ]; then
    corpora+=("$d")
  else
    echo "SKIP corpus $d: not present (FEDSEG_TESTDATA, apt-get install python3-nibabel mricron-data)"
  fi
done
[ "${#corpora[@]}" -gt 0 ] || skip "no NIfTI corpus present"

mkdir work
rc=0
"$PY" "$FEDSEG_SOURCE/tests/interop/nifti_compare.py" corpus "$(command -v fedseg-niftidump)" work "${corpora[@]}" || rc=$?
[ "$rc" -eq 0 ] || fail "fedseg and nibabel disagree on some files (see MISMATCH lines above), exit $rc"

# Exact exit codes of the reader's failures, through the tool.
expect_exit 66 fedseg-niftidump "$TMP/no-such.nii" --out x
expect_stderr_has "no-such.nii"
if [ -f "$FEDSEG_TESTDATA/nifti-regress/rand.hdr" ]; then
  expect_exit 65 fedseg-niftidump "$FEDSEG_TESTDATA/nifti-regress/rand.hdr" --out x
  expect_stderr_has "not a NIfTI file"
fi
head -c 1000 /dev/urandom | gzip >garbage.nii.gz
expect_exit 65 fedseg-niftidump garbage.nii.gz --out x
: >empty.nii
expect_exit 65 fedseg-niftidump empty.nii --out x
expect_stderr_has "empty file"
echo "nifti corpus comparison passed"
