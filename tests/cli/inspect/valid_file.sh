. "$FEDSEG_SOURCE/tests/cli/lib.sh"
fedseg-testwrite -o m.h5 --tensors 2 --shape 3,4
expect_exit 0 fedseg-inspect m.h5
expect_stdout_has "m.h5: fedseg global file, format 1"
expect_stdout_has "params/t0"
expect_stdout_has "float32"
expect_stdout_has "[3,4]"
expect_stdout_has "federation"
expect_stderr_empty
expect_exit 0 fedseg-inspect --check m.h5
expect_stdout_has "check: ok"
