# Shared by share/fedseg/site-round and share/fedseg/aggregator-round (sourced, not run).
# Reads the configuration without executing it, holds the cron lock, runs the tools with
# their output in the log, and writes the per-run receipt (docs/formats.md, Round receipts).
# Callers set PROG, verbose, LOG before start_run.

TIMINGS=()        # "step seconds" pairs, in order
TOOL_ERR=$(mktemp "${TMPDIR:-/tmp}/fedseg-round-err.XXXXXX") || exit 70  # stderr of the last tool run
trap 'rm -f "$TOOL_ERR"' EXIT
# A stop (systemd's SIGTERM, Ctrl-C, a hang-up) exits through the EXIT trap too; the step
# under way is taken up again by the next run.
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
TOOL_ERR_TEXT=""  # or a message set by the script itself
RUN_STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

ts() { date -u +%Y-%m-%dT%H:%M:%SZ; }
log() {
  [ -n "${LOG:-}" ] && printf '%s %s[%d] %s\n' "$(ts)" "$PROG" "$$" "$*" >>"$LOG" 2>/dev/null
  [ "${verbose:-0}" = 1 ] && printf '%s %s: %s\n' "$(ts)" "$PROG" "$*" >&2
  return 0
}
# An error line: always on stderr (cron mails it), and in the log.
err() {
  [ -n "${LOG:-}" ] && printf '%s %s[%d] error: %s\n' "$(ts)" "$PROG" "$$" "$*" >>"$LOG" 2>/dev/null
  printf '%s %s: error: %s\n' "$(ts)" "$PROG" "$*" >&2
}
die() { local code=$1; shift; err "$*"; exit "$code"; }

# read_config FILE KEY...: sets the listed KEYs from KEY=VALUE lines. Blank lines and
# '#' comments are ignored (also after an unquoted value, from the blank before the '#'); a
# value may be quoted with "..." or '...' to keep a ' #'; ~ is not expanded
# and nothing is executed. An unknown key is a configuration error (78).
read_config() {
  local file=$1
  shift
  local allowed=" $* " line key val n=0
  [ -r "$file" ] || { echo "$PROG: cannot read the configuration $file" >&2; return 66; }
  # Only the file counts: a variable of the same name in the environment is not a setting.
  for key in "$@"; do unset "$key"; done
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
    if [[ ! $line =~ ^[[:space:]]*([A-Z_][A-Z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]]; then
      echo "$PROG: $file:$n: not KEY=VALUE: $line" >&2
      return 78
    fi
    key=${BASH_REMATCH[1]}
    val=${BASH_REMATCH[2]}
    val=${val%"${val##*[![:space:]]}"}
    if [[ $val =~ ^\"(.*)\"$ ]] || [[ $val =~ ^\'(.*)\'$ ]]; then
      val=${BASH_REMATCH[1]}
    elif [[ $val =~ ^(#.*)$ ]]; then
      val=""  # KEY=  # a comment
    elif [[ $val =~ ^(.*[^[:space:]])[[:space:]]+#.*$ ]]; then
      val=${BASH_REMATCH[1]}  # an unquoted value ends where " # a comment" starts
    fi
    if [[ $allowed != *" $key "* ]]; then
      echo "$PROG: $file:$n: unknown setting $key (known:$allowed)" >&2
      return 78
    fi
    printf -v "$key" '%s' "$val"
  done <"$file"
  for key in "$@"; do [ -n "${!key+x}" ] || printf -v "$key" '%s' ""; done
}
# need_numbers KEY...: each listed setting, when set, is a decimal integer (else 78), so that
# no setting ever reaches arithmetic expansion as anything but digits.
need_numbers() {
  local k
  for k in "$@"; do
    [ -z "${!k}" ] || [[ ${!k} =~ ^[0-9]{1,9}$ ]] || { echo "$PROG: $CONFIG: $k must be a whole number, not '${!k}'" >&2; return 78; }
  done
}
need_settings() {
  local k
  for k in "$@"; do
    [ -n "${!k}" ] || { echo "$PROG: $CONFIG: $k is not set" >&2; return 78; }
  done
}
use_bin() { [ -n "$1" ] && PATH="$1:$PATH"; export PATH; }

# start_run LOCKFILE: one run at a time on this host (flock; busy -> 75).
start_run() {
  exec 9>>"$1" || { echo "$PROG: cannot open the lock $1" >&2; return 73; }
  if ! flock -n 9; then
    log "another run holds $1; exiting (75)"
    return 75
  fi
  log "start ($CONFIG)"
}
# end_run CODE: exit, logging the outcome. Silent on stderr unless it failed.
end_run() {
  log "end: exit $1 ($(exit_class "$1"))"
  exit "$1"
}

exit_class() {
  case $1 in
    0) echo ok ;; 64) echo usage ;; 65) echo data ;; 66) echo noinput ;; 69) echo unavailable ;;
    70) echo software ;; 73) echo cantcreat ;; 74) echo ioerr ;; 75) echo tempfail ;;
    77) echo noperm ;; 78) echo config ;; *) echo other ;;
  esac
}

# run_tool CMD...: runs a fedseg tool, stdout and stderr to the log, times it under the
# current STEP. Returns its status; its stderr stays in $TOOL_ERR for first_error_line.
run_tool() {
  local t0 t1 rc
  TOOL_ERR_TEXT=""
  log "run: $*"
  t0=$(date +%s.%N)
  "$@" >>"${LOG:-/dev/null}" 2>"$TOOL_ERR"
  rc=$?
  t1=$(date +%s.%N)
  cat "$TOOL_ERR" >>"${LOG:-/dev/null}" 2>/dev/null
  TIMINGS+=("${STEP:-run} $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
  [ $rc = 0 ] || log "exit $rc from $1"
  return $rc
}
# run_tool_out CMD...: the same for a tool whose stdout is wanted (value=$(run_tool_out ...));
# it runs in a subshell, so $TOOL_ERR is a fixed per-run file both can see.
run_tool_out() {
  local out rc
  out=$(mktemp "${TMPDIR:-/tmp}/$PROG-out.XXXXXX")
  log "run: $*"
  "$@" >"$out" 2>"$TOOL_ERR"
  rc=$?
  cat "$TOOL_ERR" >>"${LOG:-/dev/null}" 2>/dev/null
  [ $rc = 0 ] && cat "$out"
  [ $rc = 0 ] || log "exit $rc from $1"
  rm -f "$out"
  return $rc
}
# cut300 TEXT: at most 300 characters, never half of a UTF-8 one (cron runs in the C locale).
cut300() { LC_ALL=C.UTF-8 bash -c 'printf "%s" "${1:0:300}"' cut300 "$1" 2>/dev/null || printf '%s' "${1:0:300}"; }
first_error_line() {
  if [ -n "$TOOL_ERR_TEXT" ]; then cut300 "$TOOL_ERR_TEXT"; return; fi
  local l=""
  [ -n "$TOOL_ERR" ] && [ -r "$TOOL_ERR" ] && l=$(grep -m1 -v '^[[:space:]]*$' "$TOOL_ERR")
  cut300 "$l"
}

json_str() { # a JSON string literal
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/\\r}
  s=$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')
  printf '"%s"' "$s"
}

# write_receipt FILE FEDERATION SITE ROUND STATUS STEP CODE MESSAGE (atomically).
write_receipt() {
  local f=$1 fed=$2 site=$3 round=$4 status=$5 step=$6 code=$7 msg=$8
  local timings os ver
  # Seconds per step, summed over the tools the step ran, in first-seen order.
  timings=$(printf '%s\n' "${TIMINGS[@]}" | awk 'NF == 2 { if (!($1 in t)) o[n++] = $1; t[$1] += $2 }
    END { for (i = 0; i < n; i++) printf "%s\"%s\": %.3f", (i ? ", " : ""), o[i], t[o[i]] }')
  os=$(. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-unknown}")
  ver=$(fedseg-verify --version 2>/dev/null | awk '{print $NF; exit}')
  local rnum=$round
  [[ $rnum =~ ^[0-9]+$ ]] || rnum=null
  {
    printf '{"fedseg_receipt": 1, "federation": %s, "site": %s, "round": %s, "status": %s, "step": %s, ' \
      "$(json_str "$fed")" "$(json_str "$site")" "$rnum" "$(json_str "$status")" "$(json_str "$step")"
    printf '"exit_code": %d, "exit_class": %s, "message": %s, "started": %s, "finished": %s, ' \
      "$code" "$(json_str "$(exit_class "$code")")" "$(json_str "$msg")" "$(json_str "$RUN_STARTED")" "$(json_str "$(ts)")"
    printf '"timings": {%s}, "versions": {"fedseg": %s, "host_os": %s}}\n' "$timings" "$(json_str "${ver:-unknown}")" \
      "$(json_str "$os")"
  } >"$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"
}

join_url() { printf '%s/%s' "${1%/}" "$2"; }
# make_parent DEST: for a shared-folder destination, create the folders above it (a web
# server or object store makes them itself).
make_parent() {
  case $1 in
    http://*|https://*|s3://*) ;;
    *) mkdir -p "$(dirname "$1")" 2>/dev/null ;;
  esac
  return 0
}
