. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# The front door: `fedseg help` lists every installed tool with the summary its own
# --help-json gives; `fedseg VERB ARGS` runs fedseg-VERB ARGS and passes its status on.
expect_exit 0 fedseg help
for t in $(cat "$FEDSEG_BUILD/tools.txt"); do
  want=$("fedseg-$t" --help-json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["summary"])')
  line=$(grep -E "^  $t +" "$TMP/stdout" || true)
  [ -n "$line" ] || fail "fedseg help does not list $t"
  got=$(printf '%s' "$line" | sed -E "s/^  $t +//")
  [ "$got" = "$want" ] || fail "fedseg help says '$got' for $t, fedseg-$t says '$want' (update tools/fedseg.cpp)"
done
expect_stdout_has "site-round"
expect_stdout_has "aggregator-round"
expect_exit 64 fedseg
expect_exit 64 fedseg no-such-verb
expect_stderr_has "'no-such-verb' is not a fedseg tool"
expect_exit 64 fedseg ../bin/fedseg-verify
expect_exit 0 fedseg help verify
expect_stdout_has "Usage: fedseg-verify"
expect_exit 0 fedseg --version
expect_stdout_has "fedseg 0."
# Arguments and exit status pass through.
expect_exit 66 fedseg inspect "$TMP/missing.h5"
expect_exit 0 fedseg keygen -q -o id --site x
[ -s id/minisign.pub ] || fail "fedseg keygen did not run fedseg-keygen"
# The round scripts through the front door (from the source tree in a build folder).
expect_exit 64 fedseg site-round
expect_stderr_has "usage: site-round"
# The round scripts find the tools beside the front door even when they are not on PATH.
expect_exit 0 env PATH=/usr/bin:/bin "$FEDSEG_BUILD/bin/fedseg" site-round --version
expect_stdout_has "site-round (fedseg) $(fedseg-verify --version | awk '{print $NF; exit}')"
