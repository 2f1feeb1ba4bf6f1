. "$FEDSEG_SOURCE/tests/cli/lib.sh"
head -c 5000 /dev/urandom >junk.h5
expect_exit 65 fedseg-inspect junk.h5
expect_stderr_has "cannot read 'junk.h5': not an HDF5 file"
expect_stderr_lines 1
# HDF5 signature followed by garbage.
{ printf '\211HDF\r\n\032\n'; head -c 5000 /dev/urandom; } >sig.h5
expect_exit 65 fedseg-inspect sig.h5
expect_stderr_has "'sig.h5'"
: >empty.h5
expect_exit 65 fedseg-inspect empty.h5
