. "$FEDSEG_SOURCE/tests/cli/lib.sh"
fedseg-synth -q -o cohort --cases 2 --shape 32,32,24 --seed 9
a=$(ls cohort | head -1)
b=$(ls cohort | tail -1)
{
  echo "id,t1,t1ce,t2,flair,seg"
  for c in $a $b; do
    echo "$c,cohort/$c/${c}_t1.nii.gz,cohort/$c/${c}_t1ce.nii.gz,cohort/$c/${c}_t2.nii.gz,cohort/$c/${c}_flair.nii.gz,cohort/$c/${c}_seg.nii.gz"
  done
} >list.csv
expect_exit 0 fedseg-prep list.csv -o csv.h5
expect_exit 0 fedseg-prep cohort -o dir.h5
# Same cases from a CSV or a folder: same tensors.
fedseg-inspect --check --json csv.h5 >csv.json
fedseg-inspect --check --json dir.h5 >dir.json
"$PY" -c '
import json
a, b = (json.load(open(p))["files"][0]["tensors"] for p in ("csv.json", "dir.json"))
assert [t["sha256"] for t in a] == [t["sha256"] for t in b]
'
expect_exit 66 fedseg-prep missing_dir -o x.h5
expect_stderr_has "cannot open cohort 'missing_dir'"
printf 'id,t1\nx,y\n' >bad.csv
expect_exit 65 fedseg-prep bad.csv -o x.h5
expect_stderr_has "no 't1ce' column"
expect_exit 64 fedseg-prep cohort -o x.h5 --scheme brats1999
expect_exit 64 fedseg-prep cohort -o x.h5 --spacing 1,1
expect_exit 64 fedseg-prep cohort
[ ! -e x.h5 ] || fail "x.h5 written on a usage error"
