#!/usr/bin/env bash
# bench/transfer.sh [BUILD_DIR] [MB] — fedseg-fetch and fedseg-push of an MB-MiB file
# (default 1024) against the curl command-line tool on the same nginx (127.0.0.1,
# its own config and port, sendfile on), warm page cache:
#   fetch:  fedseg-fetch URL OUT -q --force            vs  curl -sS -o OUT URL
#   push:   fedseg-push FILE URL -q --force            vs  curl -sS -T FILE URL
# fedseg-fetch also fsyncs the file and renames it into place (curl does neither), so
# "curl + sync" (curl, then sync OUT) is shown too, for information. Best of REPEAT
# runs (default 3). Target: ratio = curl wall / fedseg wall >= 0.9. A MISS does not
# fail: benchmarks are not tests.
set -euo pipefail
BUILD=${1:-build}
MB=${2:-1024}
REPEAT=${REPEAT:-3}
BIN=$(cd "$BUILD/bin" && pwd)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for t in curl "$NGINX" python3; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 69; }; done
W=${FEDSEG_BENCH_DIR:-/tmp/fedseg-bench}/transfer
rm -rf "$W" && mkdir -p "$W"/ngx/{www,body,logs} "$W/out"
cd "$W"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
head -c $((MB * 1024 * 1024)) /dev/urandom >ngx/www/big.bin 2>/dev/null || true
cat >ngx/nginx.conf <<NGXEOF
user $(id -un) $(id -gn);
worker_processes 1;
daemon off;
pid $W/ngx/nginx.pid;
error_log $W/ngx/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $W/ngx/body;
    client_max_body_size 8g;
    sendfile on;
    server {
        listen 127.0.0.1:$PORT;
        root $W/ngx/www;
        location /up/ { dav_methods PUT; create_full_put_path on; }
    }
}
NGXEOF
"$NGINX" -p "$W/ngx" -c "$W/ngx/nginx.conf" &
NPID=$!
trap 'kill $NPID 2>/dev/null; wait $NPID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
URL=http://127.0.0.1:$PORT
cat ngx/www/big.bin >/dev/null

best() {  # best WALL over REPEAT runs of sh -c "$1", each after sh -c "$2"
  local bw="" w
  for _ in $(seq "$REPEAT"); do
    sh -c "$2"
    local t0 t1
    t0=$(date +%s.%N)
    sh -c "$1" >/dev/null
    t1=$(date +%s.%N)
    w=$(awk "BEGIN{print $t1 - $t0}")
    if [ -z "$bw" ] || awk "BEGIN{exit !($w < $bw)}"; then bw=$w; fi
  done
  echo "$bw"
}
clean_out='rm -f out/*; rm -f ngx/www/up/*; sync'
echo "machine: $(nproc) cores; load at start:$(uptime | sed 's/.*load average://')"
echo "file: $MB MiB; nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'); $(curl --version | head -1 | cut -d' ' -f1-2)"
ff=$(best "$BIN/fedseg-fetch $URL/big.bin out/f.bin -q --force" "$clean_out")
cf=$(best "curl -sS -o out/c.bin $URL/big.bin" "$clean_out")
cfs=$(best "curl -sS -o out/c.bin $URL/big.bin && sync out/c.bin" "$clean_out")
"$BIN/fedseg-fetch" "$URL/big.bin" out/check.bin -q --force
cmp out/check.bin ngx/www/big.bin || { echo "fetched file differs" >&2; exit 1; }
fp=$(best "$BIN/fedseg-push ngx/www/big.bin $URL/up/f.bin -q --force" "$clean_out")
cp_=$(best "curl -sS -T ngx/www/big.bin $URL/up/c.bin" "$clean_out")
cmp ngx/www/up/c.bin ngx/www/big.bin || { echo "pushed file differs" >&2; exit 1; }
awk -v mb="$MB" -v ff="$ff" -v cf="$cf" -v cfs="$cfs" -v fp="$fp" -v cp="$cp_" 'BEGIN {
  printf "%-8s %12s %10s %12s %10s %18s %8s\n", "", "fedseg s", "MB/s", "curl s", "MB/s", "curl+sync s", "ratio"
  printf "%-8s %12.2f %10.0f %12.2f %10.0f %18.2f %8.2f  %s\n", "fetch", ff, mb*1.048576/ff, cf, mb*1.048576/cf, cfs, cf/ff, (cf/ff >= 0.9 ? "OK" : "MISS")
  printf "%-8s %12.2f %10.0f %12.2f %10.0f %18s %8.2f  %s\n", "push", fp, mb*1.048576/fp, cp, mb*1.048576/cp, "-", cp/fp, (cp/fp >= 0.9 ? "OK" : "MISS")
  print "ratio = curl wall / fedseg wall (target >= 0.9); fetch vs curl + sync: " sprintf("%.2f", cfs/ff)
}'
