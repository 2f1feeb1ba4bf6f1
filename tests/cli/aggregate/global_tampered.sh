. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/aggregate/fixture.bash"
# The round's global model is hashed while the packages are already being verified (on two
# threads; the verifiers wait for it before they open an update). A global model whose bytes
# or trusted comment were changed after signing: exit 65, one line naming the global model,
# nothing published, the packages and LATEST untouched, no decrypted update left in the state
# folder, no hang (the waiting verifiers are released) -- for the fedavg family (updates in
# memory) and for median (updates decrypted into the state folder), on 2 threads and on 1.
# Put back, the same exchange aggregates (exit 0).
make_ids north south
tiny=(--preset small --base-filters 2 --depth 1 --seed 5)
make_fed ga fedga north,south "${tiny[@]}"
make_fed gm fedgm north,south "${tiny[@]}" --rule median

"$PY" - <<'PYEOF'
import numpy as np
from aggtest import params, flat, unflat, write_update
rng = np.random.default_rng(11)
for ex in ("ga", "gm"):
    g = ex + "/rounds/0/global.h5"
    g0 = params(g)
    for k, s in enumerate(("north", "south")):
        write_update("%s-%s.h5" % (ex, s), g, s, 10 + k, unflat(0.01 * rng.standard_normal(flat(g0).size), g0))
PYEOF
for ex in ga gm; do
  pack_update "$ex" 0 north "$ex-north.h5"
  pack_update "$ex" 0 south "$ex-south.h5"
done

state_of() { sha256sum "$1/LATEST" "$1/LATEST.minisig" "$1"/rounds/0/updates/*; }
untouched() { # EX STATE
  [ "$(state_of "$1")" = "$2" ] || fail "$1: LATEST or a package changed"
  [ ! -e "$1/rounds/0/report.json" ] || fail "$1: a report was written"
  [ ! -e "$1/rounds/1" ] || fail "$1: rounds/1 was made: $(ls -la "$1/rounds/1")"
  if [ -d "st-$1" ] && find "st-$1" -name '*.h5' | grep -q .; then
    fail "$1: decrypted updates left: $(find "st-$1" -name '*.h5')"
  fi
}

for ex in ga gm; do
  g=$ex/rounds/0/global.h5
  cp "$g" "$TMP/global.h5"
  cp "$g.minisig" "$TMP/global.h5.minisig"
  s0=$(state_of "$ex")
  # A byte in the middle of the file: its BLAKE2b no longer matches the signature.
  size=$(stat -c %s "$g")
  printf '\x5a' | dd of="$g" bs=1 seek=$((size / 2)) conv=notrunc status=none
  cmp -s "$g" "$TMP/global.h5" && fail "$g: the byte flip changed nothing"
  for threads in 2 1; do
    expect_exit 65 timeout 120 fedseg-aggregate "$ex" --key agg --state "st-$ex" --threads "$threads"
    expect_stderr_lines 1
    expect_stderr_has "$g"
    expect_stderr_has "global model rejected (signature)"
    untouched "$ex" "$s0"
  done
  cp "$TMP/global.h5" "$g"
  # The trusted comment's ts changed: its own (global) signature fails, before any pass
  # over the file.
  sed -i 's/^\(trusted comment: fedseg1 .* ts=[0-9]*\)[0-9] /\19 /' "$g.minisig"
  cmp -s "$g.minisig" "$TMP/global.h5.minisig" && fail "$g.minisig: the edit changed nothing"
  expect_exit 65 timeout 120 fedseg-aggregate "$ex" --key agg --state "st-$ex"
  expect_stderr_lines 1
  expect_stderr_has "$g"
  expect_stderr_has "global model rejected (signature)"
  untouched "$ex" "$s0"
  cp "$TMP/global.h5.minisig" "$g.minisig"
  # Put back: the round aggregates.
  expect_exit 0 fedseg-aggregate "$ex" --key agg --state "st-$ex"
  [ -s "$ex/rounds/1/global.h5" ] || fail "$ex: no rounds/1/global.h5"
  agg_verifies "$ex/rounds/1/global.h5" || fail "$ex/rounds/1/global.h5 does not verify with minisign"
done
