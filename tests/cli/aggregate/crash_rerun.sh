. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/aggregate/fixture.bash"
# fedseg-aggregate killed with SIGKILL at many points (acceptance item 3, crash idempotence),
# then rerun: the outcome is that of an uninterrupted run; the ledger's hash chain.
#
# A 3-site federation with a model of 1.4 M parameters (small preset, base 16, depth 3), so
# that a round takes about a second. An uninterrupted reference run in one copy of the
# exchange; then
#   A. a fresh copy: the aggregator started in the background (the tool itself is $!), killed
#      with kill -9 after random delays spread over the reference run's duration;
#   B. a fresh copy: killed as soon as each of the publication steps shows (report.json,
#      its signature, rounds/1/global.h5, its signature, the ledger).
# After every kill the exchange must be consistent: LATEST verifies (Debian's minisign) and
# names round 0 with the round-0 global, or round 1 with a rounds/1/global.h5 that verifies;
# every aggregator signature present verifies its file; every HDF5 file under a final name
# (no .fedseg-tmp- marker) reads whole with h5py and every report.json parses. The rerun
# without a kill exits 0, rounds/1/global.h5 has the reference's parameters bit for bit, the
# report accepts the same packages, the ledger has exactly one entry (round 0), and
# --verify-ledger exits 0.
# Then, on a tiny federation with two rounds in its ledger: a character edited in the first
# entry (the chain breaks at the second) or in the last entry's global_sha256 (which no longer
# matches the exchange) → --verify-ledger 65; a torn last line (a crash mid-append, before
# LATEST moved) → the rerun ignores it, records the round again and the chain verifies.
make_ids a b c
make_fed pristine fedc a,b,c --preset small --base-filters 16 --depth 3 --seed 5
"$PY" - <<'PYEOF'
import numpy as np
from aggtest import params, flat, unflat, write_update
g = "pristine/rounds/0/global.h5"
g0 = params(g)
rng = np.random.default_rng(99)
for k, s in enumerate("abc"):
    write_update(s + ".h5", g, s, 10 * (k + 1), unflat(0.01 * rng.standard_normal(flat(g0).size), g0))
PYEOF
for s in a b c; do pack_update pristine 0 "$s" "$s.h5"; done
rm -f a.h5 b.h5 c.h5
fresh() { # NAME: exchange NAME and aggregator identity agg-NAME (its own default state)
  cp -a pristine "$1"
  cp -a agg "agg-$1"
}

# The reference.
fresh ref
t0=$(date +%s%N)
expect_exit 0 fedseg-aggregate ref --key agg-ref
T_MS=$((($(date +%s%N) - t0) / 1000000))
[ -s agg-ref/state/fedc/ledger.jsonl ] || fail "no ledger after the reference run"

published() { # EX: what is there, for the log
  (cd "$1" && echo "LATEST round $(sed -n 's/.*"round": *\([0-9]*\).*/\1/p' LATEST);" \
    "$(find rounds -path '*/updates' -prune -o -type f ! -name '*.fedseg-tmp-*' -newer federation.json -print | sort | tr '\n' ' ')" \
    "temp files: $(find . -name '*.fedseg-tmp-*' | wc -l)")
}

consistent() { # EX WHEN
  local ex=$1 f
  agg_verifies "$ex/LATEST" || fail "$2: $ex/LATEST does not verify: $(cat "$ex/LATEST")"
  while IFS= read -r f; do
    minisign -Vq -m "${f%.minisig}" -x "$f" -p agg/minisign.pub >/dev/null 2>&1 ||
      fail "$2: ${f#"$ex"/} does not verify its file"
  done < <(find "$ex" -name '*.minisig' ! -name '*.fedseg-tmp-*' ! -path '*/updates/*')
  "$PY" - "$ex" "$2" <<'PYEOF' || fail "$2: the exchange is inconsistent"
import json, os, sys
import h5py
from aggtest import sha256
ex, when = sys.argv[1], sys.argv[2]
latest = json.load(open(ex + "/LATEST"))
r = latest["round"]
assert r in (0, 1), latest
g = "%s/rounds/%d/global.h5" % (ex, r)
assert latest["global"] == "rounds/%d/global.h5" % r and latest["global_sha256"] == sha256(g), (when, latest)
if r == 1:
    assert os.path.exists(g + ".minisig"), "LATEST names an unsigned global"
for d, _, files in os.walk(ex):
    for f in files:
        p = os.path.join(d, f)
        if ".fedseg-tmp-" in f:
            continue
        if f.endswith(".h5"):
            with h5py.File(p, "r") as h:
                n = [0]
                h["params"].visititems(lambda k, o: n.__setitem__(0, n[0] + o[()].size) if isinstance(o, h5py.Dataset) else None)
                assert n[0] == 1424163, (p, n[0])
        if f.endswith(".json") or f == "LATEST":
            json.load(open(p))
PYEOF
}

same_as_ref() { # EX
  local ex=$1
  consistent "$ex" "after the rerun"
  expect_exit 0 fedseg-aggregate "$ex" --key "agg-$ex" --verify-ledger
  minisign -Vq -m "$ex/rounds/1/global.h5" -p agg/minisign.pub >/dev/null 2>&1 || fail "$ex/rounds/1/global.h5 does not verify"
  "$PY" - "$ex" <<'PYEOF' || fail "$ex differs from the uninterrupted run"
import json, sys
import h5py
import numpy as np
from aggtest import params, report, sha256
ex = sys.argv[1]
want, got = params("ref/rounds/1/global.h5"), params(ex + "/rounds/1/global.h5")
assert sorted(want) == sorted(got), "tensor names"
bad = [k for k in want if want[k].dtype != got[k].dtype or want[k].tobytes() != got[k].tobytes()]
assert not bad, "parameters differ from the reference: %s" % bad[:5]
with h5py.File("ref/rounds/1/global.h5") as a, h5py.File(ex + "/rounds/1/global.h5") as b:
    assert a.attrs["parents"] == b.attrs["parents"] and int(b.attrs["round"]) == 1
key = lambda r: [(a["site"], a["plain"], a["nonce"], a["weight"], a["norm"]) for a in r["accepted"]]
assert key(report("ref")) == key(report(ex)) and report(ex)["rejected"] == [], report(ex)
text = open("agg-%s/state/fedc/ledger.jsonl" % ex).read()
assert text.endswith("\n"), "torn ledger"
lines = text.splitlines()
assert len(lines) == 1, "ledger entries: %d" % len(lines)
e = json.loads(lines[0])
assert e["round"] == 0 and e["global_sha256"] == sha256(ex + "/rounds/1/global.h5"), e
assert e["accepted"] == [{"site": a["site"], "plain": a["plain"], "nonce": a["nonce"]} for a in report(ex)["accepted"]], e
latest = json.load(open(ex + "/LATEST"))
assert latest["round"] == 1 and latest["global_sha256"] == e["global_sha256"], latest
PYEOF
}

# A. Random delays, spread over the reference duration (each in its own slice, so that early
# and late points are both hit), on one copy: each run starts over from what the last left.
fresh A
attempts=6
killed=0
for i in $(seq 1 $attempts); do
  lo=$((50 + (T_MS - 50) * (i - 1) / attempts))
  hi=$((50 + (T_MS * 11 / 10 - 50) * i / attempts))
  d_ms=$((lo + RANDOM % (hi - lo + 1)))
  fedseg-aggregate A --key agg-A -q >"$TMP/bg.out" 2>&1 &
  pid=$!
  sleep "$(printf '%d.%03d' $((d_ms / 1000)) $((d_ms % 1000)))"
  kill -9 "$pid" 2>/dev/null || true
  rc=0
  { wait "$pid"; } 2>/dev/null || rc=$?
  echo "A: attempt $i: kill after $d_ms ms (reference $T_MS ms): exit $rc; $(published A)"
  case $rc in
  137) killed=$((killed + 1)) ;;
  0 | 75) ;; # finished before the kill (75: round 0 was done, round 1 waits)
  *) fail "attempt $i (kill after $d_ms ms): exit $rc: $(cat "$TMP/bg.out")" ;;
  esac
  consistent A "attempt $i (killed after $d_ms ms of a $T_MS ms round, exit $rc)"
done
[ "$killed" -ge 1 ] || fail "no attempt was killed mid-run (reference run: $T_MS ms)"
expect_exit 0 fedseg-aggregate A --key agg-A --round 0
same_as_ref A

# B. Killed as each publication step appears (polling: the kill lands within a few ms).
kill_when() { # EX PATH
  fedseg-aggregate "$1" --key "agg-$1" -q >"$TMP/bg.out" 2>&1 &
  local pid=$! end=$((SECONDS + 60)) rc=0
  while [ ! -e "$2" ] && kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do :; done
  kill -9 "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || rc=$?
  echo "B: killed as $2 appeared: exit $rc; $(published "$1")"
  case $rc in
  137 | 0) ;;
  *) fail "killed at $2: exit $rc: $(cat "$TMP/bg.out")" ;;
  esac
  consistent "$1" "killed as $2 appeared (exit $rc)"
}
fresh B
kill_when B B/rounds/1
kill_when B B/rounds/0/report.json
kill_when B B/rounds/0/report.json.minisig
kill_when B B/rounds/1/global.h5
kill_when B B/rounds/1/global.h5.minisig
kill_when B agg-B/state/fedc/ledger.jsonl
expect_exit 0 fedseg-aggregate B --key agg-B --round 0
same_as_ref B

# The ledger: a tiny federation with two rounds.
make_fed tl fedl a,b --preset small --base-filters 2 --depth 1 --seed 1
round_updates() { # R
  "$PY" - "$1" <<'PYEOF'
import sys
import numpy as np
from aggtest import params, flat, unflat, write_update
r = int(sys.argv[1])
g = "tl/rounds/%d/global.h5" % r
g0 = params(g)
rng = np.random.default_rng(r)
for s in "ab":
    write_update("tl-%d-%s.h5" % (r, s), g, s, 5, unflat(0.01 * rng.standard_normal(flat(g0).size), g0))
PYEOF
  for s in a b; do pack_update tl "$1" "$s" "tl-$1-$s.h5"; done
}
L=agg/state/fedl/ledger.jsonl
round_updates 0
expect_exit 0 fedseg-aggregate tl --key agg
round_updates 1
cp tl/LATEST latest1
cp tl/LATEST.minisig latest1.minisig
expect_exit 0 fedseg-aggregate tl --key agg
[ "$(wc -l <"$L")" -eq 2 ] || fail "ledger: $(cat "$L")"
expect_exit 0 fedseg-aggregate tl --key agg --verify-ledger
cp "$L" ledger.good
edit_ledger() { # OFFSET: replace the hex digit or digit at OFFSET (or the next one) by another
  "$PY" - "$L" "$1" <<'PYEOF'
import sys
p, i = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
while chr(b[i]) not in "0123456789abcdef":
    i += 1
b[i] = ord("1" if chr(b[i]) != "1" else "2")
open(p, "wb").write(bytes(b))
PYEOF
}
# A character in the middle of the first entry: the second entry's prev no longer matches.
edit_ledger $(($(head -1 "$L" | wc -c) / 2))
expect_exit 65 fedseg-aggregate tl --key agg --verify-ledger
expect_stderr_has "ledger"
# The same edit also stops the next aggregation from trusting the ledger.
expect_exit 65 fedseg-aggregate tl --key agg
cp ledger.good "$L"
# A character of the last entry's global_sha256: no longer the exchange's rounds/2/global.h5.
edit_ledger $(($(head -1 "$L" | wc -c) + $(sed -n 2p "$L" | grep -bo '"global_sha256":"' | cut -d: -f1) + 20))
expect_exit 65 fedseg-aggregate tl --key agg --verify-ledger
cp ledger.good "$L"
expect_exit 0 fedseg-aggregate tl --key agg --verify-ledger

# A torn append: the crash came mid-append of round 1's entry, so LATEST still names round 1.
cp latest1 tl/LATEST
cp latest1.minisig tl/LATEST.minisig
first=$(head -1 "$L")
"$PY" - "$L" <<'PYEOF'
import sys
p = sys.argv[1]
t = open(p, "rb").read()
cut = t.rindex(b"\n", 0, len(t) - 1) + 1          # start of the last line
open(p, "wb").write(t[: cut + (len(t) - cut) // 2])  # half of it, no newline
PYEOF
expect_exit 0 fedseg-aggregate tl --key agg
"$PY" - "$L" "$first" <<'PYEOF'
import json, sys
from aggtest import sha256
text = open(sys.argv[1]).read()
assert text.endswith("\n"), "still torn"
lines = text.splitlines()
assert len(lines) == 2 and lines[0] == sys.argv[2], lines
e = json.loads(lines[1])
assert e["round"] == 1 and e["index"] == 1 and e["global_sha256"] == sha256("tl/rounds/2/global.h5"), e
latest = json.load(open("tl/LATEST"))
assert latest["round"] == 2 and latest["global_sha256"] == e["global_sha256"], latest
PYEOF
agg_verifies tl/LATEST || fail "tl/LATEST does not verify"
expect_exit 0 fedseg-aggregate tl --key agg --verify-ledger

# Two crash points checked without a race, last (each is reported, then the case fails):
#  1. LATEST renamed into place but LATEST.minisig not yet (fed::write_latest writes the two
#     files one after the other): rebuilt from a finished copy by putting back round 0's
#     LATEST.minisig. The rerun must complete the round: exit 0 and a LATEST that verifies.
#  2. The decrypted updates in STATE/round-0 are removed once a round is published (unless
#     --keep-updates), also when the rerun finishes a round whose global was already signed
#     (copy B above ended that way).
problems=()
cp -a ref C
cp -a agg-ref agg-C
cp pristine/LATEST.minisig C/LATEST.minisig
rc=0
fedseg-aggregate C --key agg-C >"$TMP/c.out" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
  problems+=("killed between LATEST and LATEST.minisig: the rerun exits $rc, want 0: $(cat "$TMP/c.out")")
elif ! agg_verifies C/LATEST; then
  problems+=("killed between LATEST and LATEST.minisig: LATEST still does not verify after the rerun")
fi
for s in A B; do
  left=$(find "agg-$s/state/fedc" -mindepth 1 -path '*/round-*' 2>/dev/null | sort | tr '\n' ' ')
  [ -z "$left" ] || problems+=("copy $s: decrypted updates left in the state folder after the round was published: $left")
done
[ ${#problems[@]} -eq 0 ] || fail "$(printf '\n  %s' "${problems[@]}")"
