. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# fedseg-push into a folder: write-once publish (temp + fsync + rename without
# replacing + fsync of the folder), an identical re-push is nothing to do.
mkdir -p exchange/rounds/3/updates
head -c 100000 /dev/urandom >update.age
expect_exit 0 fedseg-push update.age exchange/rounds/3/updates/site-a.age
expect_stderr_empty
cmp update.age exchange/rounds/3/updates/site-a.age || fail "copy differs"
expect_exit 0 fedseg-push update.age exchange/rounds/3/updates/site-a.age
head -c 100000 /dev/urandom >other.age
expect_exit 73 fedseg-push other.age exchange/rounds/3/updates/site-a.age
cmp update.age exchange/rounds/3/updates/site-a.age || fail "73 changed the file"
expect_exit 0 fedseg-push other.age exchange/rounds/3/updates/
cmp other.age exchange/rounds/3/updates/other.age || fail "folder destination"
expect_exit 73 fedseg-push update.age exchange/rounds/9/updates/x.age
expect_exit 66 fedseg-push missing.age exchange/
[ -z "$(find exchange -name '.*')" ] || fail "temp files left"
