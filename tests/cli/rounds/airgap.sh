. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/rounds/fixture.bash"
# Air-gapped sites (issue 9, docs/rounds.md "Air-gapped sites"): the aggregator's exchange
# (ex/) and a removable disk (usb/) are kept in step only by copying files, as an operator
# carries a USB stick. North works on ex/ directly; south only ever sees usb/. Round 0 is
# carried with plain cp both ways; round 1's outward trip uses aggregator-round's PUBLISH
# (fedseg-push to a second folder). Both rounds must end with both sites accepted.
need_python_module h5py numpy
rounds_setup north south
mkdir usb
site_conf north "$TMP/ex"
site_conf south "$TMP/usb"
agg_conf "$TMP/ex"

carry_out() { # R: what a site needs for round R, ex -> usb (plain cp, LATEST last)
  mkdir -p "usb/rounds/$1"
  cp ex/federation.json ex/federation.json.minisig usb/
  cp "ex/rounds/$1/global.h5" "ex/rounds/$1/global.h5.minisig" "usb/rounds/$1/"
  cp ex/LATEST usb/LATEST.new && cp ex/LATEST.minisig usb/LATEST.minisig.new
  mv usb/LATEST.new usb/LATEST && mv usb/LATEST.minisig.new usb/LATEST.minisig
}
carry_back() { # R: what the site left on the stick, usb -> ex (packages before signatures)
  local d
  for d in updates metrics receipts; do
    [ -d "usb/rounds/$1/$d" ] || continue
    mkdir -p "ex/rounds/$1/$d"
    for f in "usb/rounds/$1/$d"/*; do case $f in *.minisig) ;; *) cp "$f" "ex/rounds/$1/$d/" ;; esac; done
    for f in "usb/rounds/$1/$d"/*.minisig; do [ -e "$f" ] && cp "$f" "ex/rounds/$1/$d/"; done
  done
  return 0
}

# Round 0: south's stick is empty: nothing to do yet (75, no LATEST).
expect_exit 75 "$SHARE/site-round" site-south.conf
expect_stderr_empty
carry_out 0
expect_exit 0 "$SHARE/site-round" site-north.conf
expect_exit 0 "$SHARE/site-round" site-south.conf
[ -s usb/rounds/0/updates/south.age.minisig ] || fail "south did not write its update to the stick"
expect_exit 75 "$SHARE/aggregator-round" agg.conf   # south's package is still on the stick
carry_back 0
expect_exit 0 "$SHARE/aggregator-round" agg.conf
[ "$(latest_round ex)" = 1 ] || fail "round 0 was not aggregated"

# Round 1: the aggregator publishes to the stick itself (PUBLISH), then the stick travels.
agg_conf "$TMP/ex" "PUBLISH=$TMP/usb"
expect_exit 75 "$SHARE/aggregator-round" agg.conf   # round 1 waits; round 1's files go to usb/
[ "$(latest_round usb)" = 1 ] || fail "PUBLISH did not put round 1 on the stick"
cmp ex/rounds/1/global.h5 usb/rounds/1/global.h5 || fail "the stick's global model differs"
expect_exit 0 "$SHARE/site-round" site-north.conf
expect_exit 0 "$SHARE/site-round" site-south.conf
carry_back 1
expect_exit 0 "$SHARE/aggregator-round" agg.conf
[ "$(latest_round ex)" = 2 ] && [ "$(latest_round usb)" = 2 ] || fail "round 1 was not aggregated and published to the stick"
"$PY" - <<'PYEOF'
import json
for r in (0, 1):
    rep = json.load(open("ex/rounds/%d/report.json" % r))
    assert sorted(a["site"] for a in rep["accepted"]) == ["north", "south"], (r, rep["accepted"], rep["rejected"])
    assert [s["site"] for s in rep["metrics"]["sites"]] == ["north", "south"], rep["metrics"]
PYEOF
