# Shared by the transfer tests (sourced after lib.sh; not a test case itself): a real
# nginx (Debian nginx-light) on 127.0.0.1, started and stopped by the test with its own
# config, prefix and temp folders under $TMP and a free port; works as root or not.
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || skip "nginx not installed (apt-get install nginx-light)"
"$NGINX" -V 2>&1 | grep -q -- --with-http_dav_module || skip "$NGINX lacks the dav module (use nginx-light)"
NGX=$TMP/ngx
WWW=$NGX/www
mkdir -p "$NGX"/{body,proxy,fcgi,uwsgi,scgi,logs} "$WWW"/files "$WWW"/dav "$WWW"/basic "$WWW"/bearer
NGINX_PID=
trap 'nginx_stop; rm -rf "$TMP"' EXIT

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT

# nginx_conf HTTP_BODY: the whole nginx.conf around the given http{} content.
nginx_conf() {
  cat >"$NGX/nginx.conf" <<NGXEOF
user $(id -un) $(id -gn);
worker_processes 1;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log info;
events { worker_connections 64; }
http {
    access_log $NGX/logs/access.log;
    client_body_temp_path $NGX/body;
    proxy_temp_path $NGX/proxy;
    fastcgi_temp_path $NGX/fcgi;
    uwsgi_temp_path $NGX/uwsgi;
    scgi_temp_path $NGX/scgi;
    default_type application/octet-stream;
    sendfile on;
$1
}
NGXEOF
}

# The plain-HTTP server of the tests: /files/ static (Range, ETag), /slow/ and
# /crawl/ rate-limited, /flaky/ 503 while $NGX/fail503 exists, /forbidden/ 403,
# /dav/ write-once WebDAV PUT, /basic/ the same behind basic auth (user site-a,
# password pw-a), /bearer/ the same behind a bearer token.
plain_server() {
  local slow=${SLOW_RATE:-20k} after=${CRAWL_AFTER:-1m} crawl=${CRAWL_RATE:-200k}
  openssl passwd -6 pw-a | sed 's/^/site-a:/' >"$NGX/htpasswd"
  nginx_conf "
    server {
        listen 127.0.0.1:$PORT;
        root $WWW;
        client_max_body_size 2g;
        location /files/ { }
        location /slow/ { alias $WWW/files/; limit_rate $slow; }
        location /crawl/ { alias $WWW/files/; limit_rate_after $after; limit_rate $crawl; }
        location /flaky/ {
            if (-f $NGX/fail503) { return 503; }
            alias $WWW/files/;
        }
        location /forbidden/ { return 403; }
        location /dav/ {
            set \$exists \"\";
            if (-f \$request_filename) { set \$exists 1; }
            set \$put_exists \"\$request_method\$exists\";
            if (\$put_exists = PUT1) { return 409; }
            dav_methods PUT;
            create_full_put_path on;
            limit_except GET PUT { deny all; }
        }
        location /basic/ {
            auth_basic fedseg-test;
            auth_basic_user_file $NGX/htpasswd;
            dav_methods PUT;
            create_full_put_path on;
            limit_except GET PUT { deny all; }
        }
        location /bearer/ {
            if (\$http_authorization != \"Bearer s3cret-token\") { return 401; }
            dav_methods PUT;
            create_full_put_path on;
            limit_except GET PUT { deny all; }
        }
    }"
}

# nginx_start: runs nginx on $NGX/nginx.conf in the background and waits for $PORT.
nginx_start() {
  "$NGINX" -t -q -p "$NGX" -c "$NGX/nginx.conf" 2>"$NGX/t.log" || fail "nginx config rejected: $(cat "$NGX/t.log")"
  "$NGINX" -p "$NGX" -c "$NGX/nginx.conf" 2>>"$NGX/logs/stderr.log" &
  NGINX_PID=$!
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited: $(tail -5 "$NGX/logs/error.log")"
    sleep 0.05
  done
  fail "nginx did not listen on $PORT"
}

# nginx_stop [SIGNAL]: stops the nginx this test started (TERM: fast shutdown, open
# connections are cut; KILL: the master and its worker die at once).
nginx_stop() {
  [ -n "$NGINX_PID" ] || return 0
  local sig=${1:-TERM}
  if [ "$sig" = KILL ]; then
    # Stop the master first so that it cannot start a new worker between the two kills
    # (a worker left behind holds ctest's output pipe open); then kill its workers and it.
    kill -STOP "$NGINX_PID" 2>/dev/null || true
    pkill -KILL -P "$NGINX_PID" 2>/dev/null || true  # the workers, children of our master only
  fi
  kill "-$sig" "$NGINX_PID" 2>/dev/null || true
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=
}

# json_field NAME: a field of the last expect_exit's --json document.
json_field() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$TMP/stdout" "$1"; }

# no_part_files DIR: no part or temp file left in DIR.
no_part_files() {
  local left
  left=$(find "${1:-.}" -maxdepth 1 -name '.*fedseg-*' | head -3)
  [ -z "$left" ] || fail "temp/part files left behind: $left"
}
