. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/transfer/nginx.bash"
# Faults on a real nginx: server down (75 after the retries), 503 then 200, a stalled
# (rate-limited) server, the server killed mid-transfer and restarted (the same fetch
# resumes), a truncated response. No partial file ever appears under its final name.
R=(--retry-delay 0.05 --retry-max-delay 0.2)
head -c 3000000 /dev/urandom >"$WWW/files/big"
head -c 400000 /dev/urandom >"$WWW/files/trunc"
CRAWL_AFTER=1m CRAWL_RATE=100k plain_server
nginx_start
mkdir out

# 1. Server down: connection refused, retried, then 75; nothing left behind.
DOWN=http://127.0.0.1:$(free_port)
expect_exit 75 fedseg-fetch "$DOWN/files/big" out/ "${R[@]}" --retries 3 --json
expect_json
[ "$(json_field retries)" = 3 ] || fail "retries: $(cat stdout)"
expect_stderr_has "gave up after 3 retries"
expect_exit 75 fedseg-push "$WWW/files/trunc" "$DOWN/dav/x" "${R[@]}" --retries 1
[ -z "$(ls -A out)" ] || fail "server down left files: $(ls -A out)"

# 2. 503 then 200: retried until the server recovers.
touch "$NGX/fail503"
expect_exit 75 fedseg-fetch "$BASE/flaky/big" out/ "${R[@]}" --retries 2
expect_stderr_has "HTTP 503"
(sleep 0.6; rm -f "$NGX/fail503") &
spid=$!
expect_exit 0 fedseg-fetch "$BASE/flaky/big" out/ "${R[@]}" --retries 50 --json
wait "$spid"
[ "$(json_field retries)" -ge 1 ] || fail "no retry seen: $(cat stdout)"
cmp out/big "$WWW/files/big" || fail "503 then 200: bytes differ"
rm out/big

# 3. A stalled server (limit_rate 20k, below --stall-speed): retried, then 75.
expect_exit 75 fedseg-fetch "$BASE/slow/trunc" out/slow "${R[@]}" --retries 1 --stall-speed 100000 --stall-time 1
expect_stderr_has "Operation too slow"
[ ! -e out/slow ] || fail "a stalled fetch published a file"
[ -s out/.slow.fedseg-part ] || fail "a stalled fetch kept no part file to resume"
rm -f out/.slow.fedseg-part out/.slow.fedseg-part.meta

# 4. nginx killed (SIGKILL) mid-transfer and restarted: the same fetch resumes.
fedseg-fetch "$BASE/crawl/big" out/killed "${R[@]}" --retries 100 --json >killed.json 2>killed.err &
fpid=$!
for _ in $(seq 200); do
  [ "$(stat -c %s out/.killed.fedseg-part 2>/dev/null || echo 0)" -ge 1000000 ] && break
  sleep 0.05
done
[ -e out/killed ] && fail "final name present before the end"
nginx_stop KILL
sleep 0.3
[ ! -e out/killed ] || fail "final name present while the server is down"
CRAWL_RATE=0 plain_server
nginx_start
wait "$fpid" || fail "fetch after restart failed: $(cat killed.err)"
cmp out/killed "$WWW/files/big" || fail "resumed bytes differ"
"$PY" - killed.json <<'PYEOF' || fail "not resumed: $(cat killed.json)"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["retries"] >= 1, j
assert j["bytes"] == j["size"] == 3000000, j   # every byte once: resumed, not restarted
PYEOF
grep -q '"GET /crawl/big HTTP/1.1" 206' "$NGX/logs/access.log" || fail "no 206 in the access log"
no_part_files out

# 5. A truncated response: the file shrinks on disk while nginx sends it (nginx cuts
# the connection short of its Content-Length). Without retries: 75, nothing published.
CRAWL_AFTER=100k CRAWL_RATE=100k plain_server
nginx_stop
nginx_start
cp "$WWW/files/trunc" trunc.orig
fedseg-fetch "$BASE/crawl/trunc" out/t0 "${R[@]}" --retries 0 --stall-time 2 --stall-speed 1000 2>t0.err &
fpid=$!
for _ in $(seq 200); do
  [ "$(stat -c %s out/.t0.fedseg-part 2>/dev/null || echo 0)" -ge 100000 ] && break
  sleep 0.05
done
truncate -s 250000 "$WWW/files/trunc"
rc=0
wait "$fpid" || rc=$?
# 75 is expected; 0 only if nginx had sent the whole file before the truncation (a
# race on a loaded machine), and then the published file must be the whole original.
if [ "$rc" -eq 0 ]; then
  cmp out/t0 trunc.orig || fail "a truncated response was published"
  rm out/t0
else
  [ "$rc" -eq 75 ] || fail "truncated response: expected 75, got $rc: $(cat t0.err)"
  [ ! -e out/t0 ] || fail "a truncated response was published"
fi
rm -f out/.t0.fedseg-part out/.t0.fedseg-part.meta
# With retries: the next attempt sees the changed file (If-Range), takes it whole.
cp trunc.orig "$WWW/files/trunc"
fedseg-fetch "$BASE/crawl/trunc" out/t1 "${R[@]}" --retries 5 --stall-time 2 --stall-speed 1000 --json >t1.json 2>t1.err &
fpid=$!
for _ in $(seq 200); do
  [ "$(stat -c %s out/.t1.fedseg-part 2>/dev/null || echo 0)" -ge 100000 ] && break
  sleep 0.05
done
truncate -s 250000 "$WWW/files/trunc"
wait "$fpid" || fail "fetch with retries after truncation failed: $(cat t1.err)"
cmp out/t1 "$WWW/files/trunc" || cmp out/t1 trunc.orig || fail "after truncation: not the server's current file"
no_part_files out
