. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/transfer/nginx.bash"
# The shipped aggregator drop (share/fedseg/nginx/fedseg-drop.conf) on a real nginx
# with TLS: a CA, a server certificate and client certificates made here with openssl.
# Sites push their own names of the exchange layout (write-once), not another site's (77);
# the aggregator fetches them; everyone reads what the aggregator publishes; a wrong pin or
# an untrusted server is 69.
command -v openssl >/dev/null || skip "openssl not installed"
mkdir pki && cd pki
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=fed1 test CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=rogue CA" -keyout rogue.key -out rogue.pem 2>/dev/null
issue() {  # issue NAME CN [CA] [SAN]
  local ca=${3:-ca}
  openssl req "${ec[@]}" -subj "/CN=$2/O=fed1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "${4:-DNS:$2}" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 2 -extfile "$1.ext" \
    -out "$1.pem" 2>/dev/null
}
issue server localhost ca "DNS:localhost,IP:127.0.0.1"
issue site-a site-a
issue site-b site-b
issue agg aggregator
issue fake site-a rogue
cd ..
PIN=sha256//$(openssl x509 -in pki/server.pem -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
DROP=$NGX/drop
mkdir -p "$DROP/exchange/rounds/1" "$NGX/body_tmp"
sed -e "s|listen 443 ssl;|listen 127.0.0.1:$PORT ssl;|" \
  -e "s|/etc/nginx/fedseg/|$TMP/pki/|g" \
  -e "s|/srv/fedseg/body_tmp|$NGX/body_tmp|; s|root /srv/fedseg;|root $DROP;|" \
  "$FEDSEG_SOURCE/share/fedseg/nginx/fedseg-drop.conf" >drop.conf
grep -q "$TMP/pki/server.pem" drop.conf || fail "the shipped config's paths changed: update this test"
nginx_conf "include $TMP/drop.conf;"
nginx_start
B=https://127.0.0.1:$PORT
R=(--retries 1 --retry-delay 0.05 --cacert pki/ca.pem)
A=(--cert pki/site-a.pem --key pki/site-a.key)
G=(--cert pki/agg.pem --key pki/agg.key)
head -c 500000 /dev/urandom >update.age
head -c 500000 /dev/urandom >other.age

expect_exit 0 fedseg-push update.age "$B/exchange/rounds/1/updates/site-a.age" "${R[@]}" "${A[@]}" --pin "$PIN" --https-only
expect_stderr_empty
cmp update.age "$DROP/exchange/rounds/1/updates/site-a.age" || fail "pushed bytes differ"
expect_exit 0 fedseg-push update.age "$B/exchange/rounds/1/updates/site-a.age" "${R[@]}" "${A[@]}" --json
expect_json
[ "$(json_field action)" = unchanged ] && [ "$(json_field compared)" = sha256 ] || fail "re-push: $(cat stdout)"
mkdir o && cp other.age o/update.age
expect_exit 73 fedseg-push o/update.age "$B/exchange/rounds/1/updates/site-a.age" "${R[@]}" "${A[@]}"
cmp update.age "$DROP/exchange/rounds/1/updates/site-a.age" || fail "73 changed the server's file"
# The server's own write-once answer (409) is checked the same way.
expect_exit 0 fedseg-push update.age "$B/exchange/rounds/1/updates/site-a.age" "${R[@]}" "${A[@]}" --force --json
[ "$(json_field http_status)" = 200 ] || [ "$(json_field action)" = unchanged ] || fail "409 path: $(cat stdout)"
# Another site's name: 403 -> 77. A client certificate from another CA: 400 -> 76.
expect_exit 77 fedseg-push other.age "$B/exchange/rounds/1/updates/site-b.age" "${R[@]}" "${A[@]}"
[ ! -e "$DROP/exchange/rounds/1/updates/site-b.age" ] || fail "site-a wrote site-b's update"
expect_exit 76 fedseg-push other.age "$B/exchange/rounds/1/updates/site-a.age" "${R[@]}" --cert pki/fake.pem --key pki/fake.key
# The aggregator reads every site's files; a site cannot read another's.
mkdir got
expect_exit 0 fedseg-fetch "$B/exchange/rounds/1/updates/site-a.age" got/ "${R[@]}" "${G[@]}" --pin "$PIN"
cmp update.age got/site-a.age || fail "aggregator fetch"
expect_exit 77 fedseg-fetch "$B/exchange/rounds/1/updates/site-a.age" b.age "${R[@]}" --cert pki/site-b.pem --key pki/site-b.key
# A receipt is replaced by each run; only the aggregator writes what it publishes.
printf '{"run": 1}\n' >r1.json
printf '{"run": 2}\n' >r2.json
expect_exit 0 fedseg-push r1.json "$B/exchange/rounds/1/receipts/site-a.json" "${R[@]}" "${A[@]}"
expect_exit 0 fedseg-push r2.json "$B/exchange/rounds/1/receipts/site-a.json" "${R[@]}" "${A[@]}" --force
cmp r2.json "$DROP/exchange/rounds/1/receipts/site-a.json" || fail "the receipt was not replaced"
expect_exit 77 fedseg-push r1.json "$B/exchange/rounds/1/receipts/site-b.json" "${R[@]}" "${A[@]}"
expect_exit 77 fedseg-push other.age "$B/exchange/rounds/1/global.h5" "${R[@]}" "${A[@]}"
expect_exit 77 fedseg-push other.age "$B/exchange/LATEST" "${R[@]}" "${A[@]}" --force
[ ! -e "$DROP/exchange/LATEST" ] || fail "a site wrote LATEST"
# Everyone reads the exchange; a missing file is 66.
cp other.age "$DROP/exchange/rounds/1/global.h5"
expect_exit 0 fedseg-fetch "$B/exchange/rounds/1/global.h5" g.h5 "${R[@]}" "${A[@]}" --https-only
cmp other.age g.h5 || fail "exchange fetch"
expect_exit 66 fedseg-fetch "$B/exchange/rounds/2/global.h5" g2.h5 "${R[@]}" "${A[@]}"
# TLS failures are 69 and are not retried: a wrong pin, a server not signed by --cacert.
BADPIN=sha256//$(printf 'x%.0s' $(seq 32) | openssl dgst -sha256 -binary | base64)
expect_exit 69 fedseg-fetch "$B/exchange/rounds/1/global.h5" p.h5 "${R[@]}" "${A[@]}" --pin "$BADPIN" --json
[ "$(json_field retries)" = 0 ] || fail "pin mismatch was retried"
expect_exit 69 fedseg-push update.age "$B/exchange/rounds/1/metrics/site-a.age" "${R[@]}" "${A[@]}" --pin "$BADPIN"
expect_exit 69 fedseg-fetch "$B/exchange/rounds/1/global.h5" p.h5 --retries 1 --cacert pki/rogue.pem "${A[@]}"
[ ! -e p.h5 ] && [ ! -e "$DROP/exchange/rounds/1/metrics/site-a.age" ] || fail "output after a TLS failure"
no_part_files .
