. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/rounds/fixture.bash"
# Issue 9, acceptance 1, HTTP half: the same short federation as tests/cli/rounds/folder.sh
# (2 sites, 2 rounds, a tiny model), but the sites reach the exchange only through a real
# nginx on 127.0.0.1 serving the aggregator's exchange folder: GET for everything, WebDAV PUT
# for a site's own packages (write-once: 409 when the name exists) and receipts. The
# aggregator works on its folder. Checks the rounds complete, a re-push of an identical
# package is a no-op, and that nginx saw the sites' GETs and PUTs.
need_python_module h5py numpy
. "$FEDSEG_SOURCE/tests/cli/transfer/nginx.bash"
rounds_setup north south
nginx_conf "
    server {
        listen 127.0.0.1:$PORT;
        root $TMP/ex;
        client_max_body_size 1g;
        create_full_put_path on;
        dav_access user:rw group:r all:r;
        location ~ ^/rounds/[0-9]+/(updates|metrics)/[A-Za-z0-9_-]+\.age(\.minisig)?\$ {
            dav_methods PUT;
            if (-f \$request_filename) { set \$exists 1; }
            set \$put_exists \"\$request_method\$exists\";
            if (\$put_exists = PUT1) { return 409; }
        }
        location ~ ^/rounds/[0-9]+/receipts/[A-Za-z0-9_-]+\.json\$ { dav_methods PUT; }
        location / { limit_except GET { deny all; } }
    }"
nginx_start
for s in north south; do site_conf "$s" "$BASE"; done
agg_conf "$TMP/ex"

for r in 0 1; do
  for s in north south; do
    expect_exit 0 "$SHARE/site-round" "site-$s.conf"
    expect_stderr_empty
  done
  expect_exit 0 "$SHARE/aggregator-round" agg.conf
  [ "$(latest_round ex)" = "$((r + 1))" ] || fail "round $r was not aggregated"
done
# A finished round: silent no-op over HTTP too.
expect_exit 0 "$SHARE/site-round" site-north.conf
expect_stdout_empty
expect_stderr_empty
# Re-pushing an identical package is nothing to do; a different file under that name is refused.
expect_exit 0 fedseg-push work-north/rounds/rt/1/update.age "$BASE/rounds/1/updates/north.age"
expect_exit 73 fedseg-push work-north/rounds/rt/1/metrics.age "$BASE/rounds/1/updates/north.age"
"$PY" - <<'PYEOF'
import json
for r in (0, 1):
    rep = json.load(open("ex/rounds/%d/report.json" % r))
    assert sorted(a["site"] for a in rep["accepted"]) == ["north", "south"], rep
    assert [s["site"] for s in rep["metrics"]["sites"]] == ["north", "south"], rep["metrics"]
PYEOF
grep -q '"PUT /rounds/1/updates/south.age.minisig' "$NGX/logs/access.log" || fail "nginx saw no PUT of south's round-1 signature"
grep -q '"GET /rounds/1/global.h5 ' "$NGX/logs/access.log" || fail "nginx saw no GET of the round-1 global model"
# The server down: the site run exits 75 (try again later) after its retries, silently for
# cron, and says so in its log.
nginx_stop
site_conf north "$BASE" "FETCH_OPTS=--retries 1 --retry-delay 0.05 --connect-timeout 2"
expect_exit 75 "$SHARE/site-round" site-north.conf
expect_stderr_empty
grep -q "try again later (exit 75)" work-north/site-round.log || fail "the log does not say why: $(tail -3 work-north/site-round.log)"
