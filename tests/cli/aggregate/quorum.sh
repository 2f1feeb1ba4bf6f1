. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/aggregate/fixture.bash"
# fedseg-aggregate's quorum and deadline (acceptance item 3): three sites north, south, west;
# the deadline is deadline_seconds after the signed ts of rounds/R/global.h5.minisig, and
# --now simulates the time. Exit 75 with one line naming who is missing; 0 once the quorum
# is met; a rejected package is not a valid update; a rerun after success changes nothing.
make_ids north south west
tiny=(--preset small --base-filters 2 --depth 1 --seed 3)
make_fed q1 fedq north,south,west "${tiny[@]}" --min-sites 2 --deadline 3600 --after-deadline wait
make_fed q2 fedq2 north,south,west "${tiny[@]}" --min-sites 2 --deadline 3600 --after-deadline aggregate
make_fed q3 fedq3 north,south,west "${tiny[@]}" --deadline 3600   # min_sites: all 3

"$PY" - <<'PYEOF'
import numpy as np
from aggtest import params, flat, unflat, write_update
rng = np.random.default_rng(7)
for ex in ("q1", "q2", "q3"):
    g = ex + "/rounds/0/global.h5"
    g0 = params(g)
    for k, s in enumerate(("north", "south", "west")):
        write_update("%s-%s.h5" % (ex, s), g, s, 10 + k, unflat(0.01 * rng.standard_normal(flat(g0).size), g0))
    d = 0.01 * rng.standard_normal(flat(g0).size)
    d[d.size // 2] = np.nan
    write_update("%s-west-nan.h5" % ex, g, "west", 12, unflat(d, g0))
PYEOF

# q1: min 2, wait. The deadline counts from the signed ts, not from file times: the files are
# backdated by two hours (so a tool using mtime would think the deadline long past).
ts=$(signed_ts q1/rounds/0/global.h5)
[ -n "$ts" ] || fail "no ts= in q1/rounds/0/global.h5.minisig: $(cat q1/rounds/0/global.h5.minisig)"
find q1 -type f -exec touch -d "@$((ts - 7200))" {} +
before=$((ts + 3599))
after=$((ts + 3601))
state0=$(sha256sum q1/LATEST q1/LATEST.minisig)
unchanged() { # EX STATE: LATEST unchanged, no report, no next global
  [ "$(sha256sum "$1/LATEST" "$1/LATEST.minisig")" = "$2" ] || fail "$1/LATEST changed"
  [ ! -e "$1/rounds/0/report.json" ] || fail "$1: a report was written"
  [ ! -e "$1/rounds/1/global.h5" ] || fail "$1: a global for round 1 was written"
}
lacks() { if grep -qF -- "$1" "$TMP/stderr"; then fail "stderr names '$1': $(cat "$TMP/stderr")"; fi; }

pack_update q1 0 north q1-north.h5
# 1 of 3 before the deadline: 75, one line naming south and west (not north).
expect_exit 75 fedseg-aggregate q1 --key agg --now "$before"
expect_stderr_lines 1
expect_stderr_has "south"
expect_stderr_has "west"
lacks "north"
unchanged q1 "$state0"
# 1 of 3 after the deadline, min 2, policy wait: still 75.
expect_exit 75 fedseg-aggregate q1 --key agg --now "$after"
expect_stderr_lines 1
expect_stderr_has "south"
expect_stderr_has "west"
lacks "north"
unchanged q1 "$state0"

pack_update q1 0 south q1-south.h5
# 2 of 3 before the deadline: 75 naming west only.
expect_exit 75 fedseg-aggregate q1 --key agg --now "$before"
expect_stderr_lines 1
expect_stderr_has "west"
lacks "south"
lacks "north"
unchanged q1 "$state0"
# Without --now the real clock is a few seconds past ts: well before the deadline.
expect_exit 75 fedseg-aggregate q1 --key agg
expect_stderr_has "west"
unchanged q1 "$state0"
# 2 of 3 after the deadline: aggregated; the report lists west as missing.
expect_exit 0 fedseg-aggregate q1 --key agg --now "$after" --json
expect_json
"$PY" - "$ts" "$TMP/stdout" <<'PYEOF'
import json, sys
from aggtest import report, sha256
ts = int(sys.argv[1])
r = report("q1", 0)
q = r["quorum"]
assert q["missing"] == ["west"], q
assert q["deadline"] == ts + 3600 and q["deadline_passed"] is True, q
assert q["min_sites"] == 2 and q["after_deadline"] == "wait" and q["expected"] == ["north", "south", "west"], q
assert sorted(a["site"] for a in r["accepted"]) == ["north", "south"] and r["rejected"] == [], r
out = json.load(open(sys.argv[2]))
assert out["status"] == "aggregated" and out["missing"] == ["west"] and out["round"] == 0, out
latest = json.load(open("q1/LATEST"))
assert latest["round"] == 1 and latest["global_sha256"] == sha256("q1/rounds/1/global.h5"), latest
PYEOF
ledger=agg/state/fedq/ledger.jsonl
[ "$(wc -l <"$ledger")" -eq 1 ] || fail "ledger: $(cat "$ledger")"
done1=$(sha256sum q1/LATEST q1/LATEST.minisig q1/rounds/1/global.h5 q1/rounds/1/global.h5.minisig q1/rounds/0/report.json "$ledger")

# A rerun of round 0 after success: 0, status done, nothing changes.
expect_exit 0 fedseg-aggregate q1 --key agg --round 0 --now "$after" --json
expect_json
expect_stdout_has '"status": "done"'
[ "$done1" = "$(sha256sum q1/LATEST q1/LATEST.minisig q1/rounds/1/global.h5 q1/rounds/1/global.h5.minisig q1/rounds/0/report.json "$ledger")" ] ||
  fail "a rerun after success changed the exchange or the ledger"
# The same command as before (no --round) now looks at round 1, which nobody has reported
# to: 75 naming all three sites, and nothing changes either.
expect_exit 75 fedseg-aggregate q1 --key agg --now "$after"
expect_stderr_lines 1
expect_stderr_has "north"
expect_stderr_has "south"
expect_stderr_has "west"
[ "$done1" = "$(sha256sum q1/LATEST q1/LATEST.minisig q1/rounds/1/global.h5 q1/rounds/1/global.h5.minisig q1/rounds/0/report.json "$ledger")" ] ||
  fail "a rerun after success changed the exchange or the ledger"
# A round that is not open: 64.
expect_exit 64 fedseg-aggregate q1 --key agg --round 5
expect_stderr_has "round 5"

# q2: min 2, after_deadline aggregate: 1 of 3 is 75 before the deadline, aggregated after it.
ts2=$(signed_ts q2/rounds/0/global.h5)
pack_update q2 0 north q2-north.h5
expect_exit 75 fedseg-aggregate q2 --key agg --now $((ts2 + 3599))
expect_stderr_lines 1
expect_stderr_has "south"
expect_stderr_has "west"
expect_exit 0 fedseg-aggregate q2 --key agg --now $((ts2 + 3601))
"$PY" - <<'PYEOF'
from aggtest import report
r = report("q2", 0)
assert [a["site"] for a in r["accepted"]] == ["north"] and r["quorum"]["missing"] == ["south", "west"], r
PYEOF

# q3: min 3 (all), all three present but west's package tampered with (one byte of the
# .age flipped): 2 valid updates < 3 before the deadline (and after it, policy wait): 75
# ("valid updates"), no report, nothing published.
ts3=$(signed_ts q3/rounds/0/global.h5)
state3=$(sha256sum q3/LATEST q3/LATEST.minisig)
for s in north south west; do pack_update q3 0 "$s" "q3-$s.h5"; done
"$PY" - <<'PYEOF'
p = "q3/rounds/0/updates/west.age"
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(bytes(b))
PYEOF
expect_exit 75 fedseg-aggregate q3 --key agg --now $((ts3 + 10))
expect_stderr_has "valid updates"
expect_stderr_has "west"
unchanged q3 "$state3"
expect_exit 75 fedseg-aggregate q3 --key agg --now $((ts3 + 3601))
expect_stderr_has "valid updates"
unchanged q3 "$state3"
# The same with a package that verifies but holds a NaN (rejected, class "values"): not a
# valid update either, so still 75 before the deadline.
rm -f q3/rounds/0/updates/west.age q3/rounds/0/updates/west.age.minisig
pack_update q3 0 west q3-west-nan.h5
expect_exit 75 fedseg-aggregate q3 --key agg --now $((ts3 + 10))
expect_stderr_has "valid updates"
unchanged q3 "$state3"
