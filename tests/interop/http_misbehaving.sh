. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# fedseg-fetch and fedseg-push against an HTTP server that misbehaves in ways nginx does
# not (a Python http.server on 127.0.0.1; the first path segment picks the fault). Each case
# was a bug: a 2xx the tool cannot use exited 0; a 206 starting elsewhere than asked was
# written at the wrong offset; a resume without a validator spliced two versions of a file;
# a retried read-back was hashed on top of the cut-off attempt (a false "differs"); a fetch
# that lost the part-file lock removed the part file of the fetch holding it.
[ -x "$PY" ] || skip "$PY not found"
cat >srv.py <<'PYEOF'
import os, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
DATA = bytes(range(256)) * 4096  # 1 MiB
NEW = b"A" * len(DATA)
count = {}
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        sys.stderr.write("%s %s range=%s if-range=%s\n" % (self.command, self.path, self.headers.get("Range"), self.headers.get("If-Range")))
    def n(self):
        with lock:
            count[(self.command, self.path)] = count.get((self.command, self.path), 0) + 1
            return count[(self.command, self.path)]
    def send(self, status, body=b"", headers=(), cut=False):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:  # half the body, then the connection drops
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif self.command != "HEAD":
            self.wfile.write(body)
    def do_HEAD(self):
        self.n()
        if self.path.startswith("/readback/"):
            return self.send(200, DATA)
        self.send(404)
    def do_GET(self):
        n, mode = self.n(), self.path.split("/")[1]
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if mode == "204":
            self.send_response(204)
            self.end_headers()
        elif mode == "readback":  # the first read-back is cut off, the retry is whole
            self.send(200, DATA, cut=(n == 1))
        elif mode == "novalidator":  # no ETag, no Last-Modified; the file changes after the cut
            body = DATA if n == 1 else NEW
            if rng:
                self.send(206, body[start:], [("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))])
            else:
                self.send(200, body, cut=(n == 1))
        elif mode == "badrange":  # answers a range with one starting 1000 bytes earlier
            if rng:
                s, e = start - 1000, len(DATA) - 1 - 1000
                self.send(206, DATA[s : e + 1], [("ETag", '"x"'), ("Content-Range", "bytes %d-%d/%d" % (s, e, len(DATA)))])
            else:
                self.send(200, DATA, [("ETag", '"x"')], cut=True)
        elif mode == "slow":  # headers held back for a while
            time.sleep(float(self.path.split("/")[2]))
            self.send(200, DATA, [("ETag", '"s"')])
        else:
            self.send(404)
    def do_PUT(self):
        self.n()
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send(202 if self.path.startswith("/put202/") else 201)

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
with open("port.tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.replace("port.tmp", "port")
srv.serve_forever()
PYEOF
"$PY" srv.py 2>server.log &
SPID=$!
trap 'kill $SPID 2>/dev/null || true; wait $SPID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 200); do [ -s port ] && break; sleep 0.05; done
[ -s port ] || fail "the test server did not start: $(cat server.log)"
U=http://127.0.0.1:$(cat port)
"$PY" -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)' >data.bin
FAST=(--retries 2 --retry-delay 0.01)
mkdir a b c d e

# A 204 to a GET, a 202 to a PUT: protocol errors (76), nothing written.
expect_exit 76 fedseg-fetch "$U/204/f.bin" a/ --retries 0
expect_stderr_has "HTTP 204"
[ -z "$(ls -A a)" ] || fail "a 204 left files: $(ls -A a)"
expect_exit 76 fedseg-push data.bin "$U/put202/f.bin" --retries 0
expect_stderr_has "HTTP 202"

# A 206 that does not start at the byte asked for: 76, the part file keeps only good bytes.
expect_exit 76 fedseg-fetch "$U/badrange/f.bin" b/ "${FAST[@]}"
expect_stderr_has "Content-Range"
[ ! -e b/f.bin ] || fail "a bad range was published"
if [ -e b/.f.bin.fedseg-part ]; then
  cmp -s b/.f.bin.fedseg-part <(head -c "$(stat -c %s b/.f.bin.fedseg-part)" data.bin) || fail "wrong bytes in the part file"
fi

# No validator: the cut-off download is not resumed but fetched whole again, so the
# result is the new version, not the old first half spliced to the new second half.
expect_exit 0 fedseg-fetch "$U/novalidator/f.bin" c/ "${FAST[@]}" --json
cmp -s c/f.bin <("$PY" -c 'import sys; sys.stdout.buffer.write(b"A" * 1048576)') || fail "spliced: $(head -c 8 c/f.bin | od -An -tx1)"
grep -q "GET /novalidator/f.bin range=None" server.log || fail "no whole GET after the cut"
if grep "GET /novalidator/f.bin range=bytes" server.log; then fail "resumed without a validator"; fi

# A read-back that is cut off and retried compares the whole second body: unchanged (0).
expect_exit 0 fedseg-push data.bin "$U/readback/same.bin" "${FAST[@]}" --json
expect_stdout_has '"action": "unchanged"'

# Two fetches of one name: the second gets 75 and leaves the first one's part file alone.
fedseg-fetch "$U/slow/3/f.bin" d/ -q --retries 0 &
FPID=$!
for _ in $(seq 100); do [ -e d/.f.bin.fedseg-part ] && break; sleep 0.05; done
[ -e d/.f.bin.fedseg-part ] || fail "the first fetch made no part file"
expect_exit 75 fedseg-fetch "$U/slow/3/f.bin" d/ --retries 0
expect_stderr_has "another fetch is writing"
[ -e d/.f.bin.fedseg-part ] || fail "the second fetch removed the first one's part file"
wait $FPID || fail "the first fetch failed ($?)"
cmp -s d/f.bin data.bin || fail "the first fetch's file differs"
