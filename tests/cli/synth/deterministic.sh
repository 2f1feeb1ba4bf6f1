# Same seed: the same bytes whatever the thread count, run time or batch; another seed: other data.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 0 fedseg-synth -o a --cases 3 --shape 32,32,24 --seed 11 --threads 1
sleep 1
expect_exit 0 fedseg-synth -o b --cases 3 --shape 32,32,24 --seed 11 --threads 3
for f in $(cd a && find . -type f); do cmp "a/$f" "b/$f" || fail "$f differs between runs"; done
# A case does not depend on the other cases of the batch.
expect_exit 0 fedseg-synth -o c --cases 1 --first-index 2 --shape 32,32,24 --seed 11
for m in t1 t1ce t2 flair seg; do
  cmp "a/SYNTH_00002/SYNTH_00002_$m.nii.gz" "c/SYNTH_00002/SYNTH_00002_$m.nii.gz" || fail "case 2 depends on the batch"
done
expect_exit 0 fedseg-synth -o d --cases 1 --shape 32,32,24 --seed 12
for m in t1 t1ce t2 flair seg; do
  if cmp -s "a/SYNTH_00000/SYNTH_00000_$m.nii.gz" "d/SYNTH_00000/SYNTH_00000_$m.nii.gz"; then
    fail "seeds 11 and 12 gave the same $m"
  fi
done
# Profiles change the images.
expect_exit 0 fedseg-synth -o e --cases 1 --shape 32,32,24 --seed 11 --profile lowfield
if cmp -s a/SYNTH_00000/SYNTH_00000_t1.nii.gz e/SYNTH_00000/SYNTH_00000_t1.nii.gz; then
  fail "profiles standard and lowfield gave the same T1"
fi
