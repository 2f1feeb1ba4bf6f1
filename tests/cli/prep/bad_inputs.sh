. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (issue 3): each bad case is skipped with a one-line reason while the
# other cases are written, with a non-zero exit and a summary.
need_python_module h5py numpy nibabel
fedseg-synth -q -o cohort --cases 7 --shape 32,32,24 --seed 5
fedseg-synth -q -o other --cases 1 --shape 30,32,24 --seed 6
ids=($(ls cohort))
# 1: truncated .nii.gz
f=cohort/${ids[1]}/${ids[1]}_t2.nii.gz
head -c $(( $(stat -c %s "$f") / 2 )) "$f" >t && mv t "$f"
# 2: garbage header (the NIfTI regression corpus's rand.hdr, or random text)
if [ -f "$FEDSEG_TESTDATA/nifti-regress/rand.hdr" ]; then
  cp "$FEDSEG_TESTDATA/nifti-regress/rand.hdr" "cohort/${ids[2]}/${ids[2]}_t1.nii"
else
  head -c 801 /dev/urandom | base64 >"cohort/${ids[2]}/${ids[2]}_t1.nii"
fi
rm "cohort/${ids[2]}/${ids[2]}_t1.nii.gz"
# 3: mismatched grids
cp "other/$(ls other)/$(ls other)_flair.nii.gz" "cohort/${ids[3]}/${ids[3]}_flair.nii.gz"
# 4: missing modality
rm "cohort/${ids[4]}/${ids[4]}_t1ce.nii.gz"
# 5: label 3 under brats2021
"$PY" - "cohort/${ids[5]}/${ids[5]}_seg.nii.gz" <<'PYEOF'
import sys, nibabel as nib, numpy as np
im = nib.load(sys.argv[1])
d = np.asanyarray(im.dataobj).copy()
d[d.shape[0] // 2, d.shape[1] // 2, d.shape[2] // 2] = 3
nib.save(nib.Nifti1Image(d, im.affine, im.header), sys.argv[1])
PYEOF
expect_exit 65 fedseg-prep cohort -o ds.h5 --json
expect_json
expect_stderr_has "case ${ids[1]}: "
expect_stderr_has "${ids[1]}_t2.nii.gz'"
expect_stderr_has "case ${ids[2]}: "
expect_stderr_has "case ${ids[3]}: grid differs from t1's"
expect_stderr_has "case ${ids[4]}: missing modality t1ce"
expect_stderr_has "case ${ids[5]}: bad label"
expect_stderr_has "value 3 is not in the brats2021 scheme"
[ "$(grep -c '^fedseg-prep: error: ' "$TMP/stderr")" -eq 5 ] || fail "expected 5 error lines: $(cat "$TMP/stderr")"
"$PY" - "$TMP/stdout" "${ids[0]}" "${ids[6]}" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["written"] == 2 and d["skipped"] == 5, d
st = {c["id"]: c["status"] for c in d["cases"]}
assert st[sys.argv[2]] == "written" and st[sys.argv[3]] == "written", st
assert all(c.get("reason") for c in d["cases"] if c["status"] == "skipped")
PYEOF
expect_exit 0 fedseg-inspect --check ds.h5
expect_stdout_has "cases/${ids[0]}/image"
expect_stdout_has "cases/${ids[6]}/image"
# A cohort where every case is bad writes nothing.
mkdir allbad
cp -r "cohort/${ids[4]}" allbad/
expect_exit 65 fedseg-prep allbad -o none.h5
[ ! -e none.h5 ] || fail "a dataset was written with no usable case"
