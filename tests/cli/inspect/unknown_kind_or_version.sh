. "$FEDSEG_SOURCE/tests/cli/lib.sh"
fedseg-testwrite -o k.h5 --kind frobnicator
expect_exit 65 fedseg-inspect k.h5
expect_stderr_has "unknown kind 'frobnicator'"
fedseg-testwrite -o v.h5 --format 99
expect_exit 65 fedseg-inspect v.h5
expect_stderr_has "format version 99 is newer than this fedseg reads"
fedseg-testwrite -o n.h5 --no-schema
expect_exit 65 fedseg-inspect n.h5
expect_stderr_has "'n.h5'"
