. "$FEDSEG_SOURCE/tests/cli/lib.sh"
fedseg-testwrite -o m.h5 --tensors 4 --shape 100,100
size=$(stat -c %s m.h5)
for cut in 8 512 $((size / 2)) $((size - 1)); do
  head -c "$cut" m.h5 >cut.h5
  expect_exit 65 fedseg-inspect --check cut.h5
  expect_stderr_has "fedseg-inspect: error: "
  expect_stderr_has "'cut.h5'"
done
