# Output errors exit 73; an interrupted case (some files missing) is completed on rerun.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
touch afile
expect_exit 73 fedseg-synth -o afile/cohort --cases 1 --shape 32,32,24
expect_stderr_has "afile"
expect_exit 73 fedseg-synth -o afile --cases 1 --shape 32,32,24

expect_exit 0 fedseg-synth -o c --cases 2 --shape 32,32,24 --seed 4
cp c/SYNTH_00001/SYNTH_00001_t2.nii.gz t2.orig
rm c/SYNTH_00001/SYNTH_00001_t2.nii.gz c/SYNTH_00001/SYNTH_00001_seg.nii.gz
expect_exit 0 fedseg-synth -o c --cases 2 --shape 32,32,24 --seed 4
expect_stderr_has "wrote 1 case"
cmp t2.orig c/SYNTH_00001/SYNTH_00001_t2.nii.gz || fail "completed case differs"
[ -f c/SYNTH_00001/SYNTH_00001_seg.nii.gz ] || fail "seg not rewritten"
# A case folder that cannot be created fails that case only; the others are written.
rm -r c/SYNTH_00000
touch c/SYNTH_00000
expect_exit 73 fedseg-synth -o c --cases 3 --shape 32,32,24 --seed 4
expect_stderr_has "SYNTH_00000"
[ -f c/SYNTH_00002/SYNTH_00002_seg.nii.gz ] || fail "the batch stopped at the bad case"
