. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 0 fedseg-inspect --help
expect_stdout_has "Usage: fedseg-inspect"
expect_stdout_has "--check"
expect_stderr_empty
expect_exit 0 fedseg-inspect --version
expect_stdout_has "fedseg-inspect "
expect_exit 64 fedseg-inspect --no-such-flag x.h5
expect_stderr_has "fedseg-inspect: error:"
expect_stderr_has "Try 'fedseg-inspect --help'"
expect_stdout_empty
expect_exit 64 fedseg-inspect
expect_exit 64 fedseg-inspect --threads many x.h5
