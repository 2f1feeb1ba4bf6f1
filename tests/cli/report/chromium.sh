. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# The HTML report in a real browser (headless Chromium, Debian package `chromium`): it loads
# from file:// without errors or console messages (the page has no scripts and fetches
# nothing), the DOM Chromium built holds the six plots with their points, and a screenshot
# renders. Chromium is installed when absent and possible; the case skips only if it is not.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >"$TMP/apt.log" 2>&1 || true
  elif sudo -n true 2>/dev/null; then
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >"$TMP/apt.log" 2>&1 || true
  fi
  command -v chromium >/dev/null || skip "chromium is not installed and cannot be (apt-get install chromium)"
fi
. "$FEDSEG_SOURCE/tests/cli/report/fixture.bash"
expect_exit 0 fedseg-report ex -o report.html --aggregator-pub pub

chrome() {
  HOME="$TMP/home" timeout 120 chromium --headless --disable-gpu --no-sandbox --no-first-run --disable-extensions \
    --user-data-dir="$TMP/profile" --enable-logging=stderr --v=0 "$@"
}
expect_exit 0 chrome --dump-dom "file://$TMP/report.html"
cp "$TMP/stdout" dom.html
cp "$TMP/stderr" dom.log
expect_exit 0 chrome --screenshot="$TMP/shot.png" --window-size=1200,2000 "file://$TMP/report.html"
cat "$TMP/stderr" >>dom.log
# Chromium's own noise (no D-Bus in a container, GPU flags) is fine; anything the page
# caused is not: console messages, script errors, resources it tried to load.
if grep -E 'CONSOLE|Uncaught|Failed to load resource|net::ERR_|Refused to' dom.log >bad.log; then
  fail "the page caused browser errors: $(head -c 2000 bad.log)"
fi

"$PY" - <<'PYEOF'
import struct
from html.parser import HTMLParser

class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.plots, self.cur, self.points = {}, None, {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and "plot" in (a.get("class") or "").split():
            self.cur = a.get("id")
            self.points[self.cur] = set()
        elif tag == "circle" and self.cur and a.get("class") == "pt":
            self.points[self.cur].add((a["data-site"], int(a["data-round"])))
        elif tag == "g" and self.cur == "participation" and a.get("class") == "cell":
            self.points[self.cur].add((a["data-site"], int(a["data-round"])))
    def handle_endtag(self, tag):
        if tag == "svg":
            self.cur = None

d = Dom()
d.feed(open("dom.html", encoding="utf-8").read())
want = {"dice-WT", "dice-TC", "dice-ET", "norms", "loss", "participation"}
assert want <= set(d.points), sorted(d.points)
assert len(d.points["participation"]) == 12, d.points["participation"]
# north and south have Dice, norms and losses in rounds 0-2, plus the federation line.
for i in ("dice-WT", "dice-TC", "dice-ET", "norms", "loss"):
    for s in ("north", "south"):
        for r in range(3):
            assert (s, r) in d.points[i], (i, s, r, sorted(d.points[i]))

png = open("shot.png", "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", png[16:24])
assert (w, h) == (1200, 2000), (w, h)
# A blank page compresses to a few kilobytes; the report's plots and tables do not.
assert len(png) > 40000, len(png)
PYEOF
