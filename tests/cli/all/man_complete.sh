. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Every installed tool's manual page has a description, at least one example and an EXIT
# STATUS section (issue 9: man pages complete for every tool), and so does man/fedseg.1.
for t in $(cat "$FEDSEG_BUILD/tools.txt") ""; do
  page=$FEDSEG_SOURCE/man/fedseg${t:+-$t}.1
  [ -s "$page" ] || fail "no manual page $page"
  for sec in NAME SYNOPSIS DESCRIPTION EXAMPLES "EXIT STATUS"; do
    grep -q "^\.SH $sec" "$page" || fail "$page has no $sec section"
  done
  n=$(sed -n '/^\.SH EXAMPLES/,/^\.SH /p' "$page" | grep -c '^\.nf' || true)
  [ "$n" -ge 1 ] || fail "$page has no example"
done
