. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (NIfTI issue, 2): round trips both ways. fedseg writes (every datatype,
# NIfTI-1 and -2, .nii and .nii.gz, scaled, oblique and left-handed affines) and
# nibabel reads equal data and affine; nibabel writes (little- and big-endian, v1/v2,
# .nii/.nii.gz/.hdr+.img/.hdr.gz+.img.gz, scaled, multi-member gzip, qform-only, no
# transform) and fedseg reads equal data and affine. tests/interop/nifti_compare.py.
need_python_module nibabel numpy
command -v fedseg-niftidump >/dev/null || fail "fedseg-niftidump not built in $FEDSEG_BUILD/bin"
mkdir work
rc=0
"$PY" "$FEDSEG_SOURCE/tests/interop/nifti_compare.py" roundtrip "$(command -v fedseg-niftidump)" work || rc=$?
[ "$rc" -eq 0 ] || fail "round trips failed (see FAIL lines above), exit $rc"

# An existing output is kept unless --force (exit 73), then replaced atomically.
"$PY" -c 'import numpy as np; np.arange(24, dtype="<i2").tofile("v.raw")'
echo '{"shape":[2,3,4],"dtype":"int16","affine":[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}' >v.json
expect_exit 0 fedseg-niftidump --write out.nii --raw v.raw --meta v.json
expect_exit 73 fedseg-niftidump --write out.nii --raw v.raw --meta v.json
expect_exit 0 fedseg-niftidump --force --write out.nii --raw v.raw --meta v.json
echo "nifti round trips passed"
