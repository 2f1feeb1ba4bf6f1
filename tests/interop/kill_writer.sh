. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (issue 2): a writer killed with SIGKILL at many different moments
# never leaves a broken file under the final name, and a rerun leaves no temp file.
runs=${FEDSEG_KILL_RUNS:-40}
for i in $(seq 1 "$runs"); do
  # Alternate between a fresh output and replacing an existing one with --force.
  force=()
  if [ $((i % 2)) -eq 0 ] && [ -f out.h5 ]; then force=(--force); fi
  fedseg-testwrite -o out.h5 "${force[@]}" --tensors 12 --shape 64,64,16 --slow-ms 5 &
  pid=$!
  # Spread the kill over the writer's life (about 60-150 ms), including before start.
  sleep "0.$(printf '%03d' $(( (i * 37) % 160 )))"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -e out.h5 ]; then
    expect_exit 0 fedseg-inspect --check out.h5
  fi
done
# A rerun completes and removes the temp files the killed writers left behind.
fedseg-testwrite -o out.h5 --force --tensors 12 --shape 64,64,16
expect_exit 0 fedseg-inspect --check out.h5
left=$(find . -name '.out.h5.fedseg-tmp-*' | wc -l)
[ "$left" -eq 0 ] || fail "$left temp files left after rerun: $(ls -a)"
# SIGTERM and SIGINT are caught: the temp file goes at once.
fedseg-testwrite -o term.h5 --tensors 50 --shape 8 --slow-ms 20 &
pid=$!
sleep 0.3
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
[ ! -e term.h5 ] || fail "term.h5 exists after SIGTERM"
left=$(find . -name '.term.h5.fedseg-tmp-*' | wc -l)
[ "$left" -eq 0 ] || fail "SIGTERM left a temp file"
