. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# One bad member is reported and skipped; the others are still inspected; the
# exit status is the first failure's.
fedseg-testwrite -o a.h5
fedseg-testwrite -o b.h5
echo junk >bad.h5
expect_exit 65 fedseg-inspect a.h5 bad.h5 b.h5 missing.h5
expect_stdout_has "a.h5: fedseg global file"
expect_stdout_has "b.h5: fedseg global file"
expect_stderr_has "'bad.h5'"
expect_stderr_has "'missing.h5'"
expect_stderr_lines 2
