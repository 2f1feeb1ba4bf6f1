. "$FEDSEG_SOURCE/tests/cli/lib.sh"
fedseg-testwrite -o a.h5
# --quiet keeps stdout (data) but no progress or chatter on stderr.
expect_exit 0 fedseg-inspect -q --check a.h5
expect_stderr_empty
printf 'check = true\n' >ok.ini
expect_exit 0 fedseg-inspect --config ok.ini a.h5
expect_stdout_has "check: ok"
printf 'no_such = 1\n' >bad.ini
expect_exit 78 fedseg-inspect --config bad.ini a.h5
expect_exit 66 fedseg-inspect --config missing.ini a.h5
