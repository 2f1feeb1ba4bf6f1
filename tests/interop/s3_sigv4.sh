. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# S3 without an S3 server (Debian 12 ships none): fedseg-push and fedseg-fetch talk to a
# tiny fake S3 in /usr/bin/python3 (http.server on 127.0.0.1, a free port) that records
# every request (method, path, query, headers, body) in s3/requests.json and answers like
# S3: PUT 200 + ETag, PUT with If-None-Match: * on an existing key 412, HEAD/GET 200 with
# the body and the x-amz-meta-* stored at PUT (Range/If-Range: 206/416), unknown key 404,
# a wrong signature 403 SignatureDoesNotMatch, forbidden/* 403 AccessDenied, the first two
# requests of each method to flaky/* 503 SlowDown.
# The signatures are then recomputed here, independently of libcurl, from the recorded
# requests with AWS Signature Version 4 as AWS documents it (hashlib/hmac only); that
# implementation is first checked against AWS's published S3 examples.
[ -x "$PY" ] || skip "$PY not found"
for v in $(env | sed -n 's/^\(AWS_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
export HOME=$TMP/home   # no ~/.aws of the user running the tests
mkdir -p "$HOME" s3 out

# ---------------------------------------------------------------- SigV4 reference
cat >sigv4.py <<'PYEOF'
"""AWS Signature Version 4 for S3 (header auth), from AWS's description only."""
import hashlib, hmac, re, urllib.parse

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

def uri_encode(data, keep_slash):
    if isinstance(data, str):
        data = data.encode()
    return "".join(chr(c) if c in UNRESERVED or (keep_slash and c == 0x2F) else "%%%02X" % c for c in data)

def canonical_uri(raw_path):
    # S3: the path decoded, then each byte except '/' and unreserved ones %XX (once).
    return uri_encode(urllib.parse.unquote_to_bytes(raw_path or "/"), True) or "/"

def canonical_query(raw_query):
    pairs = []
    for part in (raw_query or "").split("&"):
        if part == "":
            continue
        k, _, v = part.partition("=")
        pairs.append((uri_encode(urllib.parse.unquote_to_bytes(k), False),
                      uri_encode(urllib.parse.unquote_to_bytes(v), False)))
    return "&".join(k + "=" + v for k, v in sorted(pairs))

def trimall(v):
    return re.sub(r"\s+", " ", v.strip())

def canonical_request(method, raw_path, raw_query, headers, signed, payload_hash):
    """headers: list of (name, value) as received; signed: lower-case names."""
    lines = []
    for name in signed:
        vals = [trimall(v) for n, v in headers if n.lower() == name]
        lines.append(name + ":" + ",".join(vals) + "\n")
    return "\n".join([method, canonical_uri(raw_path), canonical_query(raw_query), "".join(lines),
                      ";".join(signed), payload_hash])

def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()

def signing_key(secret, date, region, service):
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")

def string_to_sign(amz_date, scope, creq):
    return "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + hashlib.sha256(creq.encode()).hexdigest()

def signature(secret, amz_date, region, service, creq):
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    sts = string_to_sign(amz_date, scope, creq)
    return hmac.new(signing_key(secret, amz_date[:8], region, service), sts.encode(), hashlib.sha256).hexdigest()

def parse_authorization(value):
    algo, _, rest = value.partition(" ")
    fields = {}
    for item in rest.split(","):
        k, _, v = item.strip().partition("=")
        fields[k] = v
    return algo, fields

def header(headers, name):
    vals = [v for n, v in headers if n.lower() == name]
    return vals[-1] if vals else None

def check(rec, secrets, region, now=None):
    """Returns (ok, reason, expected_signature) for a recorded request."""
    h = rec["headers"]
    auth = header(h, "authorization")
    if not auth:
        return False, "AccessDenied: no Authorization header", None
    algo, f = parse_authorization(auth)
    if algo != "AWS4-HMAC-SHA256" or not {"Credential", "SignedHeaders", "Signature"} <= f.keys():
        return False, "AuthorizationHeaderMalformed: " + auth, None
    cred = f["Credential"].split("/")
    amz_date = header(h, "x-amz-date") or ""
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        return False, "AccessDenied: bad or no x-amz-date: %r" % amz_date, None
    if len(cred) != 5 or cred[1:] != [amz_date[:8], region, "s3", "aws4_request"]:
        return False, "AuthorizationHeaderMalformed: credential scope %s" % f["Credential"], None
    if cred[0] not in secrets:
        return False, "InvalidAccessKeyId: " + cred[0], None
    signed = f["SignedHeaders"].split(";")
    if signed != sorted(signed) or any(s != s.lower() or s.strip() != s for s in signed):
        return False, "AuthorizationHeaderMalformed: SignedHeaders %s" % f["SignedHeaders"], None
    for must in ("host", "x-amz-date", "x-amz-content-sha256"):
        if must not in signed:
            return False, "AccessDenied: %s is not signed" % must, None
    # S3: Content-Type and every x-amz-* header sent must be signed.
    for n, _ in h:
        n = n.lower()
        if (n == "content-type" or n.startswith("x-amz-")) and n not in signed:
            return False, "AccessDenied: header %s is sent but not signed" % n, None
    for s in signed:
        if header(h, s) is None:
            return False, "AccessDenied: signed header %s is missing" % s, None
    payload = header(h, "x-amz-content-sha256")
    if payload is None:
        return False, "InvalidRequest: no x-amz-content-sha256", None
    if payload != "UNSIGNED-PAYLOAD" and payload != rec["body_sha256"]:
        return False, "XAmzContentSHA256Mismatch", None
    if now is not None:
        import calendar, time
        t = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        if abs(t - now) > 900:
            return False, "RequestTimeTooSkewed", None
    creq = canonical_request(rec["method"], rec["path"], rec["query"], h, signed, payload)
    want = signature(secrets[cred[0]], amz_date, region, "s3", creq)
    if not hmac.compare_digest(want, f["Signature"]):
        return False, "SignatureDoesNotMatch", want
    return True, "", want

def selftest():
    """AWS's published S3 SigV4 examples (Authenticating Requests: Using the Authorization
    Header, 'Examples of signature calculations'): access key AKIAIOSFODNN7EXAMPLE."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    empty = hashlib.sha256(b"").hexdigest()
    assert empty == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    host = ("Host", "examplebucket.s3.amazonaws.com")
    date = ("x-amz-date", "20130524T000000Z")
    # GET Object with Range.
    creq = canonical_request("GET", "/test.txt", "", [host, ("Range", "bytes=0-9"), ("x-amz-content-sha256", empty), date],
                             ["host", "range", "x-amz-content-sha256", "x-amz-date"], empty)
    assert creq == ("GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                    "x-amz-content-sha256:" + empty + "\nx-amz-date:20130524T000000Z\n\n"
                    "host;range;x-amz-content-sha256;x-amz-date\n" + empty), creq
    sts = string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", creq)
    assert sts.endswith("\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"), sts
    got = signature(secret, "20130524T000000Z", "us-east-1", "s3", creq)
    assert got == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", got
    # The same example through check(), as a recorded request.
    auth = ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=" + got)
    rec = {"method": "GET", "path": "/test.txt", "query": "", "body_sha256": empty,
           "headers": [list(host), ["Range", "bytes=0-9"], ["x-amz-content-sha256", empty], list(date),
                       ["Authorization", auth]]}
    ok, why, _ = check(rec, {"AKIAIOSFODNN7EXAMPLE": secret}, "us-east-1")
    assert ok, why
    ok, why, _ = check(rec, {"AKIAIOSFODNN7EXAMPLE": secret + "x"}, "us-east-1")
    assert not ok and why == "SignatureDoesNotMatch", why
    # PUT Object: a '$' in the key, a signed body.
    body = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    assert body == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    creq = canonical_request("PUT", "/test%24file.text", "",
                             [("Date", "Fri, 24 May 2013 00:00:00 GMT"), host, ("x-amz-content-sha256", body), date,
                              ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                             ["date", "host", "x-amz-content-sha256", "x-amz-date", "x-amz-storage-class"], body)
    got = signature(secret, "20130524T000000Z", "us-east-1", "s3", creq)
    assert got == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd", got
    # GET Bucket lifecycle (a query parameter without a value).
    sig_h = ["host", "x-amz-content-sha256", "x-amz-date"]
    hs = [host, ("x-amz-content-sha256", empty), date]
    got = signature(secret, "20130524T000000Z", "us-east-1", "s3",
                    canonical_request("GET", "/", "lifecycle", hs, sig_h, empty))
    assert got == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543", got
    # GET Bucket (list objects): query parameters sorted.
    got = signature(secret, "20130524T000000Z", "us-east-1", "s3",
                    canonical_request("GET", "/", "prefix=J&max-keys=2", hs, sig_h, empty))
    assert got == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7", got

if __name__ == "__main__":
    selftest()
    print("sigv4 reference matches AWS's published examples")
PYEOF
"$PY" sigv4.py || fail "the SigV4 reference does not reproduce AWS's published examples"

# ---------------------------------------------------------------- fake S3
cat >s3fake.py <<'PYEOF'
import base64, hashlib, json, os, sys, threading, time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import sigv4

DIR, REGION, BUCKET = sys.argv[1], sys.argv[2], sys.argv[3]
SECRETS = json.loads(sys.argv[4])     # what the server believes: key id -> secret
lock = threading.Lock()
records, objects, flaky = [], {}, {}

def xml_error(code, msg):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>\n'
            % (code, msg)).encode()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, Expect: 100-continue

    def log_message(self, *a):
        pass

    def handle_one(self):
        path, _, query = self.path.partition("?")
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"time": time.time(), "method": self.command, "path": path, "query": query,
               "headers": [[k, v] for k, v in self.headers.items()],
               "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
               "body_b64": base64.b64encode(body).decode()}
        with lock:
            status, hdrs, out, note = self.answer(rec, path, body)
            rec.update(status=status, note=note)
            records.append(rec)
            tmp = os.path.join(DIR, "requests.json.tmp")
            with open(tmp, "w") as f:
                json.dump(records, f, indent=1)
            os.replace(tmp, os.path.join(DIR, "requests.json"))
        self.send_response(status)
        for k, v in hdrs:
            self.send_header(k, v)
        self.send_header("x-amz-request-id", "%016X" % len(records))
        if status >= 400 and self.command != "HEAD":
            self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_HEAD = do_PUT = handle_one

    def answer(self, rec, path, body):
        ok, why, _ = sigv4.check(rec, SECRETS, REGION, now=time.time())
        if not ok:
            code = why.split(":")[0]
            return (400 if code in ("AuthorizationHeaderMalformed", "XAmzContentSHA256Mismatch", "InvalidRequest")
                    else 403), [], xml_error(code, why), why
        parts = path.split("/", 2)
        if len(parts) < 3 or parts[1] != BUCKET:
            return 404, [], xml_error("NoSuchBucket", "no such bucket"), "NoSuchBucket"
        key = parts[2]
        if key.startswith("forbidden/"):
            return 403, [], xml_error("AccessDenied", "Access Denied"), "AccessDenied"
        if key.startswith("flaky/"):
            n = flaky[(self.command, key)] = flaky.get((self.command, key), 0) + 1
            if n <= 2:
                return 503, [], xml_error("SlowDown", "Please reduce your request rate."), "SlowDown"
        if self.command == "PUT":
            if self.headers.get("If-None-Match") == "*" and key in objects:
                return 412, [], xml_error("PreconditionFailed", "At least one of the pre-conditions you "
                                          "specified did not hold"), "PreconditionFailed"
            etag = '"%s"' % hashlib.md5(body).hexdigest()
            meta = [(k.lower(), v) for k, v in self.headers.items() if k.lower().startswith("x-amz-meta-")]
            ctype = self.headers.get("Content-Type") or "binary/octet-stream"
            objects[key] = {"body": body, "etag": etag, "meta": meta, "type": ctype,
                            "mtime": formatdate(time.time(), usegmt=True)}
            return 200, [("ETag", etag)], b"", "stored"
        obj = objects.get(key)
        if obj is None:
            return 404, [], xml_error("NoSuchKey", "The specified key does not exist."), "NoSuchKey"
        data = obj["body"]
        hdrs = [("ETag", obj["etag"]), ("Last-Modified", obj["mtime"]), ("Accept-Ranges", "bytes"),
                ("Content-Type", obj["type"])] + obj["meta"]
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and self.command == "GET" and (if_range is None or if_range == obj["etag"]):
            a = rng.strip()
            if not (a.startswith("bytes=") and a.endswith("-") and a[6:-1].isdigit()):
                return 400, [], xml_error("InvalidArgument", "unsupported Range " + a), "InvalidArgument"
            start = int(a[6:-1])
            if start >= len(data):
                return 416, [("Content-Range", "bytes */%d" % len(data))], xml_error(
                    "InvalidRange", "The requested range is not satisfiable"), "InvalidRange"
            return 206, hdrs + [("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))], \
                data[start:], "range"
        if self.command == "HEAD":
            # Content-Length of the object, no body (handle_one sends len(out)).
            return 200, hdrs, data, "head"
        return 200, hdrs, data, "get"

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(os.path.join(DIR, "port.tmp"), "w") as f:
    f.write(str(srv.server_address[1]))
os.replace(os.path.join(DIR, "port.tmp"), os.path.join(DIR, "port"))
srv.serve_forever()
PYEOF

BUCKET=fedseg-bkt
REGION=eu-west-1
KEY1=AKIDFEDSEGENV0000001
SECRET1='k7MDENG/bPxRfiCY+envSECRET=0001'
KEY2=AKIDFEDSEGFILE000002
SECRET2='fileSECRET/0002+abcdefghijklmnop'
KEY3=AKIDFEDSEGWRONG00003   # the client signs with a secret the server does not hold
SERVER_SECRETS="{\"$KEY1\": \"$SECRET1\", \"$KEY2\": \"$SECRET2\", \"$KEY3\": \"not-what-the-client-has\"}"
CLIENT_SECRETS="{\"$KEY1\": \"$SECRET1\", \"$KEY2\": \"$SECRET2\", \"$KEY3\": \"client-side-wrong-secret\"}"
"$PY" s3fake.py "$TMP/s3" "$REGION" "$BUCKET" "$SERVER_SECRETS" 2>s3/server.err &
SPID=$!
trap 'kill $SPID 2>/dev/null || true; wait $SPID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 200); do [ -s s3/port ] && break; sleep 0.05; done
[ -s s3/port ] || fail "the fake S3 did not start: $(cat s3/server.err)"
EP=http://127.0.0.1:$(cat s3/port)
S3=(--s3-endpoint "$EP" --s3-region "$REGION" --retry-delay 0.05 --retry-max-delay 0.2)
json_field() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$TMP/stdout" "$1"; }
# last_request METHOD: the last recorded request with that method, as JSON on stdout.
last_request() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
r = [x for x in json.load(open("s3/requests.json")) if x["method"] == sys.argv[1]]
print(json.dumps(r[-1]))
PYEOF
}
# req_assert METHOD PYTHON-EXPR: the expression holds for the last METHOD request
# (r: the record; h(name): a header's value or None).
req_assert() {
  last_request "$1" | "$PY" -c '
import json, sys
r = json.load(sys.stdin)
h = lambda n: ([v for k, v in r["headers"] if k.lower() == n.lower()] or [None])[-1]
ok = eval(sys.argv[1])
if not ok:
    print(json.dumps({k: r[k] for k in ("method", "path", "query", "headers", "status", "note")}, indent=1))
    sys.exit(1)
' "$2" || fail "last $1 request: $2"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

export AWS_ACCESS_KEY_ID=$KEY1 AWS_SECRET_ACCESS_KEY=$SECRET1
head -c 300000 /dev/urandom >a.bin
head -c 300000 /dev/urandom >b.bin
OBJ="rounds/7/site a+b=1.bin"          # a space, '+' and '=' in the key: %-encoded
URL="s3://$BUCKET/$OBJ"

# 1. Write-once push: PUT with If-None-Match: *, the sha256 as x-amz-meta-sha256.
expect_exit 0 fedseg-push a.bin "$URL" "${S3[@]}" --json
[ "$(json_field action)" = pushed ] || fail "action: $(cat stdout)"
req_assert PUT "r['path'] == '/$BUCKET/rounds/7/site%20a%2Bb%3D1.bin' and r['status'] == 200"
req_assert PUT "h('If-None-Match') == '*'"
req_assert PUT "h('x-amz-meta-sha256') == '$(sha a.bin)' and r['body_sha256'] == '$(sha a.bin)'"
req_assert PUT "h('x-amz-content-sha256') in ('UNSIGNED-PAYLOAD', '$(sha a.bin)')"

# 2. The same bytes again: 412, then HEAD and compare the stored sha256: nothing to do.
expect_exit 0 fedseg-push a.bin "$URL" "${S3[@]}" --json
[ "$(json_field action)" = unchanged ] && [ "$(json_field compared)" = sha256 ] || fail "identical: $(cat stdout)"
req_assert PUT "r['status'] == 412 and h('If-None-Match') == '*'"
req_assert HEAD "r['status'] == 200"

# 3. Different bytes under the same key: 73, the stored object is untouched.
expect_exit 73 fedseg-push b.bin "$URL" "${S3[@]}"
expect_stderr_has "output exists"
req_assert PUT "r['status'] == 412"

# 4. Fetch it back; a missing key is 66.
expect_exit 0 fedseg-fetch "$URL" out/ "${S3[@]}" --json
cmp "out/site a+b=1.bin" a.bin || fail "fetched bytes differ"
req_assert GET "r['status'] == 200 and r['path'] == '/$BUCKET/rounds/7/site%20a%2Bb%3D1.bin'"
expect_exit 66 fedseg-fetch "s3://$BUCKET/rounds/7/missing.bin" out/ "${S3[@]}"
req_assert GET "r['status'] == 404 and r['note'] == 'NoSuchKey'"
[ ! -e out/missing.bin ] || fail "a missing key left a file"

# 5. Resume: a part file with the first 100000 bytes and the ETag: Range + If-Range (signed).
mkdir out2
head -c 100000 a.bin >"out2/.site a+b=1.bin.fedseg-part"
ETAG=\"$(md5sum a.bin | cut -d' ' -f1)\"
"$PY" -c 'import json,sys; json.dump({"url": sys.argv[1], "validator": sys.argv[2]}, open(sys.argv[3], "w"))' \
  "$EP/$BUCKET/rounds/7/site%20a%2Bb%3D1.bin" "$ETAG" "out2/.site a+b=1.bin.fedseg-part.meta"
expect_exit 0 fedseg-fetch "$URL" out2/ "${S3[@]}" --json
[ "$(json_field resumed_from)" = 100000 ] && [ "$(json_field bytes)" = 200000 ] || fail "not resumed: $(cat stdout)"
cmp "out2/site a+b=1.bin" a.bin || fail "resumed bytes differ"
req_assert GET "r['status'] == 206 and h('Range') == 'bytes=100000-' and h('If-Range') == '$ETAG'"

# 5b. Keys are sent exactly as given: UTF-8 %-encoded, and a '..' or '.' segment (a
# valid S3 key) is not collapsed by the client into another key.
expect_exit 0 fedseg-push a.bin "s3://$BUCKET/odd/../x/./é~(1).bin" "${S3[@]}"
req_assert PUT "r['path'] == '/$BUCKET/odd/../x/./%C3%A9~%281%29.bin' and r['status'] == 200"
expect_exit 0 fedseg-fetch "s3://$BUCKET/odd/../x/./é~(1).bin" out/ "${S3[@]}"
req_assert GET "r['path'] == '/$BUCKET/odd/../x/./%C3%A9~%281%29.bin' and r['status'] == 200"
cmp "out/é~(1).bin" a.bin || fail "odd key: bytes differ"
expect_exit 66 fedseg-fetch "s3://$BUCKET/x/é~(1).bin" out/ "${S3[@]}"

# 6. 403: a forbidden key (AccessDenied) and a wrong secret (SignatureDoesNotMatch) are 77.
expect_exit 77 fedseg-fetch "s3://$BUCKET/forbidden/x.bin" out/ "${S3[@]}"
expect_stderr_has "AccessDenied"
expect_exit 77 fedseg-push a.bin "s3://$BUCKET/forbidden/x.bin" "${S3[@]}"
AWS_ACCESS_KEY_ID=$KEY3 AWS_SECRET_ACCESS_KEY=client-side-wrong-secret \
  expect_exit 77 fedseg-fetch "$URL" out/wrong.bin "${S3[@]}"
expect_stderr_has "SignatureDoesNotMatch"
req_assert GET "r['status'] == 403 and r['note'] == 'SignatureDoesNotMatch'"
AWS_ACCESS_KEY_ID=$KEY3 AWS_SECRET_ACCESS_KEY=client-side-wrong-secret \
  expect_exit 77 fedseg-push b.bin "s3://$BUCKET/rounds/7/new.bin" "${S3[@]}"
[ ! -e out/wrong.bin ] && [ ! -e out/x.bin ] || fail "a refused fetch left a file"

# 7. 503 SlowDown twice, then 200: retried (PUT and GET); too few retries: 75.
expect_exit 0 fedseg-push a.bin "s3://$BUCKET/flaky/p.bin" "${S3[@]}" --retries 5 --json
[ "$(json_field retries)" = 2 ] || fail "push retries: $(cat stdout)"
expect_exit 0 fedseg-fetch "s3://$BUCKET/flaky/p.bin" out/ "${S3[@]}" --retries 5 --json
[ "$(json_field retries)" = 2 ] || fail "fetch retries: $(cat stdout)"
cmp out/p.bin a.bin || fail "flaky fetch: bytes differ"
expect_exit 75 fedseg-push a.bin "s3://$BUCKET/flaky/q.bin" "${S3[@]}" --retries 1
expect_stderr_has "HTTP 503"

# 8. --force: a plain PUT (no If-None-Match) replaces the object.
expect_exit 0 fedseg-push b.bin "$URL" "${S3[@]}" --force
req_assert PUT "r['status'] == 200 and h('If-None-Match') is None and r['body_sha256'] == '$(sha b.bin)'"
expect_exit 0 fedseg-fetch "$URL" out/ "${S3[@]}" --force
cmp "out/site a+b=1.bin" b.bin || fail "after --force: bytes differ"

# 9. A session token is sent as x-amz-security-token and signed.
AWS_SESSION_TOKEN='FQoGZXIvYXdzE+token/with=chars' expect_exit 0 fedseg-fetch "$URL" out/tok.bin "${S3[@]}"
req_assert GET "h('x-amz-security-token') == 'FQoGZXIvYXdzE+token/with=chars'"

# 10. Credentials from a file (AWS_* unset): --s3-credentials and --s3-profile.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
expect_exit 78 fedseg-fetch "$URL" out/none.bin "${S3[@]}"
expect_stderr_has "no S3 credentials"
cat >creds <<EOF
[default]
aws_access_key_id = AKIDNOTTHISONE000000
aws_secret_access_key = not-this-one

[fedseg]
aws_access_key_id = $KEY2
aws_secret_access_key = $SECRET2
EOF
expect_exit 0 fedseg-push a.bin "s3://$BUCKET/rounds/8/from-file.bin" "${S3[@]}" --s3-credentials creds --s3-profile fedseg
req_assert PUT "'Credential=$KEY2/' in h('Authorization') and r['status'] == 200"
expect_exit 0 fedseg-fetch "s3://$BUCKET/rounds/8/from-file.bin" out/ "${S3[@]}" --s3-credentials creds --s3-profile fedseg
req_assert GET "'Credential=$KEY2/' in h('Authorization') and r['status'] == 200"
cmp out/from-file.bin a.bin || fail "credentials file: bytes differ"
expect_exit 77 fedseg-fetch "s3://$BUCKET/rounds/8/from-file.bin" out/dflt.bin "${S3[@]}" --s3-credentials creds
expect_stderr_has "InvalidAccessKeyId"
no_parts=$(find out out2 -name '.*fedseg-*' | head -3)
[ -z "$no_parts" ] || fail "part files left: $no_parts"

# 11. Every recorded request, recomputed independently: the signature, the credential
# scope, host and x-amz-date signed, x-amz-content-sha256 present (and the body's sha256
# unless UNSIGNED-PAYLOAD). The requests signed with a key the server does not know
# (AKIDNOTTHISONE...) are left out; KEY3's are checked with the client's (wrong) secret.
"$PY" - "$CLIENT_SECRETS" "$REGION" <<'PYEOF' || fail "SigV4 check of the recorded requests failed"
import json, sys, sigv4
secrets, region = json.loads(sys.argv[1]), sys.argv[2]
recs = json.load(open("s3/requests.json"))
seen, bad = set(), []
for r in recs:
    auth = sigv4.header(r["headers"], "authorization") or ""
    if "Credential=AKIDNOTTHISONE" in auth:
        continue
    ok, why, _ = sigv4.check(r, secrets, region, now=r["time"])
    if not ok:
        bad.append((r["method"], r["path"], why, r["headers"]))
    seen.add(r["method"])
    if r["method"] == "PUT":
        # the x-amz-meta-* sent must be signed too (checked in check()); and the body is the file
        assert r["body_len"] in (300000,), r["body_len"]
for b in bad:
    print("BAD", json.dumps(b, indent=1))
assert not bad, "%d of %d requests failed the SigV4 check" % (len(bad), len(recs))
assert seen == {"GET", "HEAD", "PUT"}, seen
assert len(recs) >= 25, len(recs)
print("%d requests: SigV4 signatures recomputed and equal" % len(recs))
PYEOF
if [ -n "${FEDSEG_S3_LOG:-}" ]; then cp s3/requests.json "$FEDSEG_S3_LOG"; fi   # to look at the requests
