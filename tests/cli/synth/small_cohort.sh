# A small cohort has the BraTS 2021 layout; rerunning is a no-op; --force rewrites the same bytes.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 0 fedseg-synth -o cohort --cases 3 --shape 32,32,24 --seed 7
expect_stdout_empty
expect_stderr_has "wrote 3 cases"
for i in 00000 00001 00002; do
  for m in t1 t1ce t2 flair seg; do
    [ -s "cohort/SYNTH_$i/SYNTH_${i}_$m.nii.gz" ] || fail "missing cohort/SYNTH_$i/SYNTH_${i}_$m.nii.gz"
  done
done
[ "$(find cohort -type f | wc -l)" -eq 15 ] || fail "unexpected files: $(find cohort -type f)"
[ "$(find cohort -mindepth 1 -maxdepth 1 | wc -l)" -eq 3 ] || fail "unexpected entries: $(ls -a cohort)"
# gzip headers carry no timestamp (bytes 4-7 are the mtime).
[ "$(head -c 8 cohort/SYNTH_00000/SYNTH_00000_t1.nii.gz | od -An -tx1 | tr -d ' \n')" = "1f8b080000000000" ] ||
  fail "gzip header: $(head -c 10 cohort/SYNTH_00000/SYNTH_00000_t1.nii.gz | od -An -tx1)"

cp -a cohort before
inodes=$(stat -c %i cohort/*/*)
sleep 1
expect_exit 0 fedseg-synth -o cohort --cases 3 --shape 32,32,24 --seed 7
expect_stderr_has "nothing to do"
expect_stdout_empty
[ "$(stat -c %i cohort/*/*)" = "$inodes" ] || fail "rerun rewrote files"

# Growing the cohort writes only the new cases.
expect_exit 0 fedseg-synth -o cohort --cases 4 --shape 32,32,24 --seed 7
expect_stderr_has "wrote 1 case"
expect_stderr_has "skipped 3 already complete"

expect_exit 0 fedseg-synth -o cohort --cases 3 --shape 32,32,24 --seed 7 --force
expect_stderr_has "wrote 3 cases"
for f in $(cd before && find . -type f); do cmp "before/$f" "cohort/$f" || fail "--force changed $f"; done
[ -z "$(find cohort -name '*fedseg-tmp*')" ] || fail "temp files left: $(find cohort -name '*fedseg-tmp*')"
