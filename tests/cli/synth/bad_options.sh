# Bad options exit 64 with one error line and write nothing.
. "$FEDSEG_SOURCE/tests/cli/lib.sh"
expect_exit 64 fedseg-synth -o out --cases 2 --shape 0,1,2
expect_stderr_has "fedseg-synth: error: bad --shape '0x1x2'"
expect_stderr_lines 1
expect_exit 64 fedseg-synth -o out --cases 2 --shape 32,32
expect_exit 64 fedseg-synth -o out --cases 2 --shape 32,32,2000
expect_exit 64 fedseg-synth -o out --cases 2 --shape 32,x,24
expect_exit 64 fedseg-synth -o out --cases 2 --shape 32,32,24 --profile nosuch
expect_stderr_has "fedseg-synth: error: unknown profile 'nosuch'"
expect_stderr_has "standard"
expect_exit 64 fedseg-synth -o out --cases 0 --shape 32,32,24
expect_exit 64 fedseg-synth -o out --shape 32,32,24
expect_exit 64 fedseg-synth --cases 1 --shape 32,32,24
expect_exit 64 fedseg-synth -o out --cases 1 --shape 32,32,24 --naming brats2019
expect_exit 64 fedseg-synth -o out --cases 1 --shape 32,32,24 --prefix a/b
expect_exit 64 fedseg-synth -o out --cases 2 --shape 32,32,24 --first-index 99999
expect_exit 64 fedseg-synth -o out --cases 1 --shape 32,32,24 --seed -1
expect_exit 64 fedseg-synth -o out --cases 1 --bogus
[ ! -e out ] || fail "bad options created output"
