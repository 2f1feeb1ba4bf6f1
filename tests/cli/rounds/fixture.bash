# Shared by the round-script tests (sourced after lib.sh; not a test case itself).
#   rounds_setup SITES...   -> agg/ (aggregator identity), pub-agg/ (its public half, as sites
#                              pin it), id-S/, ds-S.h5 (a tiny synthetic dataset with a val case)
#                              per site, and ex/: a federation of those sites (tiny model, one
#                              epoch, SOURCE_DATE_EPOCH=1 so that reruns compare)
#   site_conf S EX [K=V...] -> site-S.conf for share/fedseg/site-round with exchange EX
#   agg_conf EX [K=V...]    -> agg.conf for share/fedseg/aggregator-round
#   latest_round EX         -> the round LATEST names (verified)
SHARE=$FEDSEG_SOURCE/share/fedseg
export SOURCE_DATE_EPOCH=1
export HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR"   # h5py reads our zstd-compressed models
rounds_setup() {
  fedseg-keygen -q -o agg --site aggregator >/dev/null 2>&1 || fail "keygen agg"
  mkdir -p pub-agg && cp agg/age.pub agg/minisign.pub pub-agg/
  local s args=() i=0
  for s in "$@"; do
    i=$((i + 1))
    fedseg-keygen -q -o "id-$s" --site "$s" >/dev/null 2>&1 || fail "keygen $s"
    fedseg-synth -o "cohort-$s" --cases 6 --shape 32,32,24 --seed "$i" --profile standard -q || fail "synth $s"
    fedseg-prep "cohort-$s" -o "ds-$s.h5" --val-fraction 0.34 -q || fail "prep $s"
    args+=(--site "$s=id-$s")
  done
  fedseg-init --federation rt --key agg "${args[@]}" --preset small --base-filters 2 --depth 1 --patch 16 \
    --epochs 1 --seed 1 -o ex -q >"$TMP/init.out" 2>&1 || fail "fedseg-init: $(cat "$TMP/init.out")"
}
site_conf() {
  local s=$1 ex=$2
  shift 2
  {
    echo "EXCHANGE=$ex"
    echo "SITE=$s"
    echo "IDENTITY=$TMP/id-$s"
    echo "AGGREGATOR_PUB=$TMP/pub-agg"
    echo "DATASET=$TMP/ds-$s.h5"
    echo "WORK=$TMP/work-$s"
    echo "THREADS=1"
    echo "FEDSEG_BIN=$FEDSEG_BUILD/bin"
    printf '%s\n' "$@"
  } >"site-$s.conf"
}
agg_conf() {
  local ex=$1
  shift
  { echo "EXCHANGE=$ex"; echo "KEY=$TMP/agg"; echo "FEDSEG_BIN=$FEDSEG_BUILD/bin"; printf '%s\n' "$@"; } >agg.conf
}
latest_round() { fedseg-verify "$1/LATEST" --aggregator-pub pub-agg --field round; }
