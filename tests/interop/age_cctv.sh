. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance (crypto issue, item 1): every applicable age CCTV vector
# ($FEDSEG_TESTDATA/age-cctv, C2SP/CCTV age/testdata) passes through
# fedseg::crypto: success vectors decrypt to the payload hash; failure vectors
# fail in the expected class (header, hmac, no_match, payload), and the plaintext
# released before a failure matches the vector's payload hash. Vectors for
# features fedseg does not implement (ASCII armor, scrypt passphrases,
# post-quantum recipients) are skipped and listed by kind.
V="$FEDSEG_TESTDATA/age-cctv"
[ -d "$V" ] || skip "age CCTV vectors not found in '$V' (set FEDSEG_TESTDATA)"
command -v fedseg-agetool >/dev/null || fail "fedseg-agetool not built in $FEDSEG_BUILD/bin"

passed=0
failed=0
declare -A skipped=()
for f in "$V"/*; do
  name=$(basename "$f")
  [ "$name" = README.upstream.md ] && continue
  rc=0
  out=$(fedseg-agetool --cctv "$f" 2>&1) || rc=$?
  case $rc in
    0) passed=$((passed + 1)) ;;
    77)
      kind=${out#skip }
      skipped[$kind]="${skipped[$kind]:-} $name"
      ;;
    *)
      echo "FAIL $name (exit $rc): $out" >&2
      failed=$((failed + 1))
      ;;
  esac
done

nskipped=0
for kind in "${!skipped[@]}"; do
  n=$(wc -w <<<"${skipped[$kind]}")
  nskipped=$((nskipped + n))
  echo "skipped ($kind, $n):${skipped[$kind]}"
done
echo "age CCTV: $passed passed, $failed failed, $nskipped skipped"
[ "$failed" -eq 0 ] || fail "$failed age CCTV vectors did not give the expected result"
[ "$passed" -gt 0 ] || fail "no age CCTV vector was run"
