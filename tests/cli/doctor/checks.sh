. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# fedseg-doctor (issue 9): each check passes on a good set-up and fails, naming the problem,
# when it is broken; exit 0 when nothing failed, 69 otherwise.
fedseg-keygen -q -o agg --site aggregator
fedseg-keygen -q -o other --site aggregator
fedseg-keygen -q -o id --site a
fedseg-init --federation d --key agg --site a=id --preset small --base-filters 2 --depth 1 -o ex -q
fedseg-synth -o cohort --cases 3 --shape 24,24,16 --seed 1 -q
fedseg-prep cohort -o ds.h5 --val-fraction 0.34 -q
cat >site.conf <<CONF
# a site-round configuration
EXCHANGE=$TMP/ex
SITE=a
IDENTITY=$TMP/id
AGGREGATOR_PUB=$TMP/agg
DATASET=$TMP/ds.h5
WORK=$TMP/work
CONF
status_of() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print([c["status"] for c in d["checks"] if c["check"]==sys.argv[2]][0])' "$TMP/stdout" "$1"; }
expect_exit 0 fedseg-doctor site.conf --json
expect_json
for c in device memory "disk work" keys "exchange read" "exchange write" clock dataset; do
  s=$(status_of "$c")
  [ "$s" = ok ] || [ "$s" = warn ] || fail "check '$c' is $s on a good set-up: $(cat "$TMP/stdout")"
done
[ "$(status_of "exchange read")" = ok ] || fail "LATEST was not verified"
# Human output: one line per check, then a verdict.
expect_exit 0 fedseg-doctor site.conf
expect_stdout_has "keys: "
expect_stdout_has "ready"

# A key readable by others.
chmod 644 id/age.key
expect_exit 69 fedseg-doctor site.conf --json
[ "$(status_of keys)" = fail ] || fail "a 0644 age.key passed"
grep -q "chmod 600" "$TMP/stdout" || fail "the keys check does not say what to do: $(cat "$TMP/stdout")"
chmod 600 id/age.key
# The wrong aggregator key pinned: LATEST does not verify.
expect_exit 69 fedseg-doctor site.conf --aggregator-pub other --json
[ "$(status_of "exchange read")" = fail ] || fail "LATEST verified with another key"
# A missing dataset, a missing exchange.
expect_exit 69 fedseg-doctor site.conf --dataset "$TMP/nope.h5" --json
[ "$(status_of dataset)" = fail ] || fail "a missing dataset passed"
expect_exit 69 fedseg-doctor site.conf --exchange "$TMP/no-exchange" --json
[ "$(status_of "exchange read")" = fail ] || fail "a missing exchange passed"
# -q: only the failures, on stderr.
chmod 640 id/minisign.key
expect_exit 69 fedseg-doctor site.conf -q
expect_stdout_empty
expect_stderr_lines 1
expect_stderr_has "minisign.key has mode 640"
# Configuration errors.
echo "not a setting" >bad.conf
expect_exit 78 fedseg-doctor bad.conf
expect_exit 66 fedseg-doctor nosuch.conf
# A WORK that cannot be created is a failed check in the list, not the end of the run.
# (A comment after a value is not part of it.)
printf 'EXCHANGE=%s\nWORK=/proc/nonexistent/work   # not writable\n' "$TMP" >badwork.conf
expect_exit 69 fedseg-doctor badwork.conf
expect_stdout_has "FAIL  exchange read: cannot stage LATEST in /proc/nonexistent/work/.doctor"
expect_stdout_has "dataset"
