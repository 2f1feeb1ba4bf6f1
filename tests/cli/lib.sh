# Shared helpers for fedseg's shell tests (tests/cli/<tool>/<case>.sh, tests/interop/*.sh).
# Source it first: `. "$FEDSEG_SOURCE/tests/cli/lib.sh"`. Each case runs in its own
# temp folder ($TMP, removed at exit), with the built tools first on PATH.
# Conventions (git's t/README, zstd's cli-tests): check exact exit codes with
# expect_exit, never `! cmd`; exit 77 skips the case with a reason.
set -euo pipefail

: "${FEDSEG_BUILD:?FEDSEG_BUILD must name the build folder}"
: "${FEDSEG_SOURCE:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${FEDSEG_TESTDATA:=$FEDSEG_SOURCE/../shared/testdata}"
: "${FEDSEG_PLUGIN_DIR:=$FEDSEG_BUILD/hdf5-plugins}"
export FEDSEG_BUILD FEDSEG_SOURCE FEDSEG_TESTDATA FEDSEG_PLUGIN_DIR
export PATH="$FEDSEG_BUILD/bin:$PATH"
PY=/usr/bin/python3   # Debian's python3-* packages are seen by this interpreter only

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fedseg-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

skip() {
  echo "SKIP: $*"
  exit 77
}

# expect_exit CODE CMD...: runs CMD with stdout in $TMP/stdout and stderr in
# $TMP/stderr, and fails unless it exits with exactly CODE.
expect_exit() {
  local want=$1
  shift
  local got=0
  "$@" >"$TMP/stdout" 2>"$TMP/stderr" || got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: expected exit $want, got $got: $*" >&2
    echo "--- stdout" >&2
    head -c 4000 "$TMP/stdout" >&2 || true
    echo "--- stderr" >&2
    head -c 4000 "$TMP/stderr" >&2 || true
    exit 1
  fi
}

# expect_stdout_has TEXT / expect_stderr_has TEXT: fixed-string search in the last
# expect_exit's output.
expect_stdout_has() { grep -qF -- "$1" "$TMP/stdout" || fail "stdout lacks '$1': $(head -c 2000 "$TMP/stdout")"; }
expect_stderr_has() { grep -qF -- "$1" "$TMP/stderr" || fail "stderr lacks '$1': $(head -c 2000 "$TMP/stderr")"; }
expect_stdout_empty() { [ ! -s "$TMP/stdout" ] || fail "stdout not empty: $(head -c 2000 "$TMP/stdout")"; }
expect_stderr_empty() { [ ! -s "$TMP/stderr" ] || fail "stderr not empty: $(head -c 2000 "$TMP/stderr")"; }
# expect_stderr_lines N: exactly N lines on stderr (one-line errors).
expect_stderr_lines() {
  local n
  n=$(wc -l <"$TMP/stderr")
  [ "$n" -eq "$1" ] || fail "expected $1 stderr lines, got $n: $(cat "$TMP/stderr")"
}
# expect_json: stdout of the last expect_exit is one valid JSON document.
expect_json() { "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$TMP/stdout" || fail "stdout is not JSON"; }

# need_python_module MOD...: skip unless /usr/bin/python3 imports them.
need_python_module() {
  local m
  for m in "$@"; do
    "$PY" -c "import $m" 2>/dev/null || skip "/usr/bin/python3 cannot import $m (apt-get install python3-$m)"
  done
}
