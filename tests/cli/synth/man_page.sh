# man/fedseg-synth.1 is generated from the tool's definition and kept up to date.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 0 fedseg-synth --help-man
diff -u "$FEDSEG_SOURCE/man/fedseg-synth.1" "$TMP/stdout" >&2 ||
  fail "man/fedseg-synth.1 is stale: regenerate with fedseg-synth --help-man > man/fedseg-synth.1"
expect_exit 0 fedseg-synth --help
expect_stdout_has "--anatomy"
expect_stdout_has "--profile"
