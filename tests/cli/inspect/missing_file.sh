. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 66 fedseg-inspect nope.h5
expect_stderr_has "fedseg-inspect: error: cannot open 'nope.h5': No such file or directory"
expect_stderr_lines 1
expect_stdout_empty
