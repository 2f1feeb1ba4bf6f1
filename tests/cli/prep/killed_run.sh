. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# No partial dataset is left if the run is killed; a rerun finishes and cleans up.
fedseg-synth -q -o cohort --cases 6 --shape 64,64,48 --seed 2
for delay in 0.05 0.2 0.4 0.7 1.0; do
  fedseg-prep cohort -o ds.h5 --threads 1 &
  pid=$!
  sleep "$delay"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -e ds.h5 ]; then
    expect_exit 0 fedseg-inspect --check ds.h5
    rm ds.h5
  fi
done
expect_exit 0 fedseg-prep cohort -o ds.h5
expect_exit 0 fedseg-inspect --check ds.h5
left=$(find . -maxdepth 1 -name '.ds.h5.fedseg-tmp-*' | wc -l)
[ "$left" -eq 0 ] || fail "temp files left: $(ls -a)"
