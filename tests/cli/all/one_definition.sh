. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# --help, --help-man and --help-json come from one definition: every option that
# --help-json lists appears in --help and in the man page, and every tool takes the
# standard options and documents the sysexits codes.
for t in $FEDSEG_TOOLS; do
  fedseg-$t --help >help.txt
  fedseg-$t --help-man >page.1
  fedseg-$t --help-json >help.json
  "$PY" - "$t" <<'PYEOF'
import json, re, sys
t = sys.argv[1]
j = json.load(open("help.json"))
help_txt = open("help.txt").read()
man = open("page.1").read().replace("\\-", "-")
assert j["tool"] == "fedseg-" + t
names = [o["name"] for o in j["options"]]
for std in ["--quiet", "--verbose", "--json", "--config", "--force", "--threads", "--progress", "--no-progress"]:
    assert any(std in n for n in names), (t, std, names)
for o in j["options"]:
    for flag in re.findall(r"--[a-z0-9-]+", o["name"]):
        assert flag in help_txt, (t, flag, "not in --help")
        assert flag in man, (t, flag, "not in man page")
    if o["description"]:
        assert o["description"].replace("-", "-") in man, (t, o["description"])
codes = [c["code"] for c in j["exit_codes"]]
assert codes == [0, 64, 65, 66, 69, 70, 73, 74, 75, 76, 77, 78], codes
for c in codes:
    assert ".B %d\n" % c in man, (t, c)
PYEOF
done
