. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/rounds/fixture.bash"
# The round scripts over a shared folder (issue 9, acceptance 1, folder half): 2 sites,
# 2 rounds, a tiny model. Checks the exit codes, the silence of reruns, the lock, the
# receipts, and that each round's report holds both sites' updates and metrics.
need_python_module h5py numpy
rounds_setup north south
for s in north south; do site_conf "$s" "$TMP/ex"; done
agg_conf "$TMP/ex"

for r in 0 1; do
  expect_exit 0 "$SHARE/site-round" site-north.conf
  expect_stdout_empty
  expect_stderr_empty
  # A rerun of a finished round: nothing to do, silent.
  expect_exit 0 "$SHARE/site-round" site-north.conf
  expect_stdout_empty
  expect_stderr_empty
  # Only north reported: the aggregator waits (75), silently.
  expect_exit 75 "$SHARE/aggregator-round" agg.conf
  expect_stdout_empty
  expect_stderr_empty
  [ "$(latest_round ex)" = "$r" ] || fail "LATEST moved without south"
  expect_exit 0 "$SHARE/site-round" site-south.conf
  expect_exit 0 "$SHARE/aggregator-round" agg.conf
  expect_stdout_empty
  expect_stderr_empty
  [ "$(latest_round ex)" = "$((r + 1))" ] || fail "LATEST is not round $((r + 1)) after aggregating round $r"
  for s in north south; do
    [ -s "ex/rounds/$r/updates/$s.age.minisig" ] || fail "no update of $s in round $r"
    [ -s "ex/rounds/$r/metrics/$s.age.minisig" ] || fail "no metrics of $s in round $r"
    [ -s "ex/rounds/$r/receipts/$s.json" ] || fail "no receipt of $s in round $r"
  done
done
# The aggregator again: round 2 waits for both sites.
expect_exit 75 "$SHARE/aggregator-round" agg.conf
expect_stderr_empty

"$PY" - <<'PYEOF'
import json
for r in (0, 1):
    rep = json.load(open("ex/rounds/%d/report.json" % r))
    assert sorted(a["site"] for a in rep["accepted"]) == ["north", "south"], rep["accepted"]
    assert rep["rejected"] == [], rep["rejected"]
    m = rep["metrics"]
    assert [s["site"] for s in m["sites"]] == ["north", "south"] and m["missing"] == [] and m["rejected"] == [], m
    assert m["federation"]["num_cases"] == sum(s["num_cases"] for s in m["sites"]) > 0, m["federation"]
    assert all(a["train"] and len(a["train"]["epoch_loss"]) == 1 for a in rep["accepted"]), rep["accepted"]
    for s in ("north", "south"):
        rc = json.load(open("ex/rounds/%d/receipts/%s.json" % (r, s)))
        assert rc["fedseg_receipt"] == 1 and rc["status"] == "done" and rc["exit_code"] == 0 and rc["round"] == r, rc
        assert rc["site"] == s and rc["federation"] == "rt" and set(rc["timings"]) >= {"fetch", "verify", "eval", "train", "pack", "push"}, rc
PYEOF
# The aggregator's own receipts.
[ -s agg/state/rt/receipts/round-1.json ] || fail "no aggregator receipt for round 1"
grep -q '"status": "done"' agg/state/rt/receipts/round-1.json || fail "aggregator receipt: $(cat agg/state/rt/receipts/round-1.json)"

# A site killed while pushing round 1's metrics signature, after which the aggregator closed
# round 1 without them: the next run (round 2) pushes them late and the copy's temp file,
# left by a dead process, goes.
rm ex/rounds/1/metrics/south.age.minisig work-south/rounds/rt/1/done
deadpid=$(sh -c 'echo $$')
stale="ex/rounds/1/metrics/.south.age.minisig.fedseg-tmp-$(uname -n | sed 's/[^A-Za-z0-9-]/_/g')-$deadpid-0badf00d"
printf 'half a sig' >"$stale"
expect_exit 0 "$SHARE/site-round" site-south.conf
expect_stderr_empty
[ ! -e "$stale" ] || fail "the dead copy's temp file is still in the exchange"
cmp -s ex/rounds/1/metrics/south.age.minisig work-south/rounds/rt/1/metrics.age.minisig || fail "round 1 metrics signature not pushed late"
[ -e work-south/rounds/rt/1/done ] || fail "round 1 not marked done after the late push"
grep -q "round 1: its packages pushed late" work-south/site-round.log || fail "no log line for the late push"
[ -s ex/rounds/2/updates/south.age.minisig ] || fail "south did not do round 2"

# The cron lock: a second run while one holds it exits 75 at once, silently.
exec 8>>work-north/site-round.lock
flock -n 8 || fail "cannot take the site lock"
expect_exit 75 "$SHARE/site-round" site-north.conf
expect_stderr_empty
exec 8>&-

# A failing step: the receipt says where and why, pushed for the aggregator; exit code kept.
site_conf north "$TMP/ex" "DATASET=$TMP/missing.h5"
expect_exit 66 "$SHARE/site-round" site-north.conf
expect_stderr_lines 1
expect_stderr_has "step eval failed (exit 66"
"$PY" -c '
import json
rc = json.load(open("ex/rounds/2/receipts/north.json"))
assert rc["status"] == "failed" and rc["step"] == "eval" and rc["exit_code"] == 66 and rc["exit_class"] == "noinput", rc
assert "missing.h5" in rc["message"], rc
'
# Configuration errors: an unknown key (78), a missing file (66), no argument (64).
echo "COLOUR=blue" >>site-south.conf
expect_exit 78 "$SHARE/site-round" site-south.conf
expect_stderr_has "unknown setting COLOUR"
expect_exit 66 "$SHARE/site-round" nosuch.conf
expect_exit 64 "$SHARE/site-round"
# The dispatcher runs the same scripts.
expect_exit 75 fedseg aggregator-round agg.conf

# Settings reach arithmetic only as digits (a subscript in SEED once ran a command).
site_conf north "$TMP/ex" 'SEED=PATH[$(touch pwned)]'
expect_exit 78 "$SHARE/site-round" site-north.conf
expect_stderr_has "SEED must be a whole number"
[ ! -e pwned ] || fail "a setting was executed"
# Only the file counts: variables of the same names in the environment are not settings.
site_conf north "$TMP/ex"
PUSH=$TMP/elsewhere EVAL=no LOG=$TMP/env.log expect_exit 0 "$SHARE/site-round" site-north.conf
expect_stderr_empty
[ ! -e elsewhere ] && [ ! -e env.log ] || fail "the environment changed the settings"
[ -s ex/rounds/2/metrics/north.age.minisig ] || fail "north's round 2 metrics not pushed"
# -n changes nothing, not even WORK. (A comment after a value is not part of it.)
site_conf north "$TMP/ex  # the shared folder" "WORK=$TMP/work-dry"
expect_exit 0 "$SHARE/site-round" -n site-north.conf
expect_stdout_has "would fetch $TMP/ex/LATEST and"
[ ! -e work-dry ] || fail "-n created $(ls -A work-dry)"
# A folder exchange that is not there is an error (66), not "try later".
site_conf north "$TMP/nosuch/ex"
expect_exit 66 "$SHARE/site-round" site-north.conf
expect_stderr_has "not a folder"
# The wrong pinned key: LATEST does not verify. Once is "retry later" (75, silent: it may be
# being replaced); twice in a row is an error (65) that cron mails.
site_conf north "$TMP/ex" "WORK=$TMP/work-pin" "AGGREGATOR_PUB=$TMP/id-south"
expect_exit 75 "$SHARE/site-round" site-north.conf
expect_stderr_empty
expect_exit 65 "$SHARE/site-round" site-north.conf
expect_stderr_has "two runs in a row"
# A federation made again (new id, same sites, same WORK): its round 0 is not taken as done.
fedseg-init --federation rt2 --key agg --site north=id-north --site south=id-south --preset small --base-filters 2 \
  --depth 1 --patch 16 --epochs 1 --seed 2 -o ex2 -q >/dev/null 2>&1 || fail "fedseg-init rt2"
site_conf north "$TMP/ex2"
expect_exit 0 "$SHARE/site-round" site-north.conf
[ -s ex2/rounds/0/updates/north.age.minisig ] || fail "the new federation's round 0 was taken as done"
