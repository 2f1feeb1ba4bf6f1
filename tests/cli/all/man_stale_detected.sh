. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# The freshness check must fail when a committed page is edited by hand.
mkdir man
cp "$FEDSEG_SOURCE"/man/fedseg-*.1 man/
# shellcheck disable=SC2086
expect_exit 0 "$FEDSEG_SOURCE/scripts/check-man-pages" man "$FEDSEG_BUILD/bin" $FEDSEG_TOOLS
sed -i 's/read every value back/read every value back (hand edit)/' man/fedseg-inspect.1
expect_exit 1 "$FEDSEG_SOURCE/scripts/check-man-pages" man "$FEDSEG_BUILD/bin" inspect
expect_stderr_has "stale man page: man/fedseg-inspect.1"
rm man/fedseg-inspect.1
expect_exit 1 "$FEDSEG_SOURCE/scripts/check-man-pages" man "$FEDSEG_BUILD/bin" inspect
expect_stderr_has "missing man page"
