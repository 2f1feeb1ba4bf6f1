. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# shellcheck disable=SC2086
[ -n "${FEDSEG_TOOLS:-}" ] || fail "FEDSEG_TOOLS lists no tools"
expect_exit 0 "$FEDSEG_SOURCE/scripts/check-man-pages" "$FEDSEG_SOURCE/man" "$FEDSEG_BUILD/bin" $FEDSEG_TOOLS
# Every committed page belongs to a tool that exists.
for page in "$FEDSEG_SOURCE"/man/fedseg-*.1; do
  t=$(basename "$page" .1)
  t=${t#fedseg-}
  case " $FEDSEG_TOOLS " in *" $t "*) ;; *) fail "man page $page has no tool";; esac
done
