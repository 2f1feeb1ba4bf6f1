. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/transfer/nginx.bash"
# fedseg-doctor against an HTTP exchange (real nginx on 127.0.0.1): LATEST fetched and
# verified, the clock compared with the server's Date header; the server down fails the
# exchange check.
fedseg-keygen -q -o agg --site aggregator
fedseg-keygen -q -o id --site a
fedseg-init --federation d --key agg --site a=id --preset small --base-filters 2 --depth 1 -o ex -q
nginx_conf "
    server {
        listen 127.0.0.1:$PORT;
        root $TMP/ex;
        location / { limit_except GET { deny all; } }
    }"
nginx_start
status_of() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print([c["status"] for c in d["checks"] if c["check"]==sys.argv[2]][0])' "$TMP/stdout" "$1"; }
expect_exit 0 fedseg-doctor --exchange "$BASE" --aggregator-pub agg --identity id --work "$TMP/w" --json
[ "$(status_of "exchange read")" = ok ] || fail "LATEST over HTTP: $(cat "$TMP/stdout")"
[ "$(status_of clock)" = ok ] || fail "clock against the HTTP Date header: $(cat "$TMP/stdout")"
grep -q "HTTP Date" "$TMP/stdout" || fail "the clock check does not say what it compared: $(cat "$TMP/stdout")"
nginx_stop
expect_exit 69 fedseg-doctor --exchange "$BASE" --aggregator-pub agg --retries 0 --json
[ "$(status_of "exchange read")" = fail ] || fail "a stopped server passed: $(cat "$TMP/stdout")"
# FETCH_OPTS of the site's config are applied as site-round applies them (here --https-only
# refuses the plain http:// exchange); an option fedseg-fetch does not know is 78.
printf 'EXCHANGE=%s\nWORK=%s/w\nFETCH_OPTS=--https-only --retries 0\n' "$BASE" "$TMP" >https.conf
expect_exit 69 fedseg-doctor https.conf --json
[ "$(status_of "exchange read")" = fail ] && grep -q "https-only" "$TMP/stdout" || fail "FETCH_OPTS not applied: $(cat "$TMP/stdout")"
printf 'EXCHANGE=%s\nFETCH_OPTS=--no-such-option\n' "$BASE" >badopts.conf
expect_exit 78 fedseg-doctor badopts.conf
expect_stderr_has "FETCH_OPTS"
