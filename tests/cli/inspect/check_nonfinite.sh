. "$FEDSEG_SOURCE/tests/cli/lib.sh"
fedseg-testwrite -o nan.h5 --nan
expect_exit 0 fedseg-inspect nan.h5
expect_exit 65 fedseg-inspect --check nan.h5
expect_stderr_has "check failed 'nan.h5': tensor 'params/t0' has 1 non-finite values"
