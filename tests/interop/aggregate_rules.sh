. "$FEDSEG_SOURCE/tests/cli/lib.sh"
# Acceptance 1 of the fedseg-aggregate issue: each rule matches an independent numpy
# reference (tests/interop/aggregate_reference.py) on random updates, relative
# tolerance 1e-6 (and within 1 ulp of the float64 result rounded to float32); the
# report's weights, norms, cosines, clip factors, Krum scores and flags agree; the
# stateful rules (fedavgm, fedadam, fedyogi, fedadagrad) carry their server state into
# a second round; central DP adds noise of the right scale and reports the epsilon of
# lib/fed/rules.h; partial sums then --combine equal direct aggregation.
need_python_module h5py numpy
export HDF5_PLUGIN_PATH="$FEDSEG_PLUGIN_DIR"
REF="$FEDSEG_SOURCE/tests/interop/aggregate_reference.py"
SITES="s1 s2 s3 s4 s5"

fedseg-keygen -q -o agg >/dev/null 2>&1 || fail "keygen agg"
site_opts=()
for s in $SITES; do
  fedseg-keygen -q -o "id-$s" --site "$s" >/dev/null 2>&1 || fail "keygen $s"
  site_opts+=(--site "$s=id-$s")
done

# name|rule[:key=value,...]|rounds|model options. Norms of the round-0 updates are
# s1 0.5, s2 0.6, s3 0.4 (float16), s4 3.0 (outlier, pointing away), s5 0.55, with
# 3, 7, 1, 10, 4 examples: clip_norm=0.52 clips s2, s4, s5; the 0.5 and 0.6 quantiles
# (0.55, and 0.57 interpolated) clip s2 and s4; max_weight=0.3 caps s4, then s2.
CONFIGS=(
  "fedavg|fedavg|1"
  "maxw|fedavg:max_weight=0.3|1"
  "clip|fedavg:clip_norm=0.52|1"
  "clipq50|fedavg:clip_quantile=0.5|1"
  "clipq60|fedavg:clip_quantile=0.6|1"
  "fedavgm|fedavgm:server_lr=1,momentum=0.9|2"
  "fedadam|fedadam|2"
  "fedyogi|fedyogi|2"
  "fedadagrad|fedadagrad|2"
  "median|median|1"
  "trimmed|trimmed-mean:beta=0.2|1"
  "krum|krum:f=1|1"
  "multikrum|multi-krum:f=1,m=3|1"
  "dp|fedavg:clip_norm=0.52,dp_noise_multiplier=1.0,dp_delta=1e-5|1|--base-filters 4 --depth 2"
)

# One federation per configuration, the same seed (the same round-0 weights).
names=()
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r name cfg rounds model <<<"$c"
  rule=${cfg%%:*}
  params=()
  if [ "$cfg" != "$rule" ]; then
    IFS=',' read -ra kvs <<<"${cfg#*:}"
    for kv in "${kvs[@]}"; do params+=(--rule-param "$kv"); done
  fi
  # shellcheck disable=SC2086
  expect_exit 0 fedseg-init --federation aggrules --key agg "${site_opts[@]}" --preset small \
    ${model:---base-filters 2 --depth 1} --rule "$rule" "${params[@]}" --seed 11 -o "ex-$name" -q
  names+=("ex-$name")
done

# pack_round EX R: packs EX/upd-R/<site>.h5 (written by the reference) into EX/rounds/R/updates/.
pack_round() {
  local ex=$1 r=$2 s
  mkdir -p "$ex/rounds/$r/updates"
  for s in $SITES; do
    expect_exit 0 fedseg-pack "$ex/upd-$r/$s.h5" --key "id-$s" --to agg -o "$ex/rounds/$r/updates/$s.age" -q
  done
}
aggregate() {  # EX NAME: one round, checked to be published
  expect_exit 0 fedseg-aggregate "$1" --key agg --state "st-$2" --json
  expect_json
  "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["status"] == "aggregated" and len(j["accepted"]) == 5 and j["rejected"] == [], j' \
    "$TMP/stdout" || fail "$1: aggregate output: $(head -c 1000 "$TMP/stdout")"
}

"$PY" "$REF" make-updates 0 101 "${names[@]}" || fail "cannot write the round-0 updates"
for ex in "${names[@]}"; do pack_round "$ex" 0; done

# Partial then combine: a copy of a federation (same global, same packages), sums of
# {s1, s2} and {s3, s4, s5} made there and combined there, later compared with the
# direct aggregation of the original. With fedavg, and with fedavg and a fixed
# clip_norm (each site's clip factor needs no other update, so partial sums clip too).
status=0
partial_combine() {  # NAME CONFIG
  local ex=ex-$1-combine U
  cp -a "ex-$1" "$ex"
  U=$ex/rounds/0/updates
  expect_exit 0 fedseg-aggregate "$ex" --key agg --state "st-$1-p1" --partial -o "$1-p1.h5" --packages "$U/s1.age" "$U/s2.age" --json
  expect_json
  expect_exit 0 fedseg-aggregate "$ex" --key agg --state "st-$1-p2" --partial -o "$1-p2.h5" --packages "$U/s3.age" "$U/s4.age" "$U/s5.age"
  [ ! -e "$ex/rounds/1" ] || fail "--partial published a round"
  "$PY" "$REF" check-partial "$ex" "$2" "$1-p1.h5" "$1-p2.h5" s1,s2 s3,s4,s5 || status=1
  expect_exit 0 fedseg-aggregate "$ex" --key agg --state "st-$1-combine" --combine "$1-p1.h5" "$1-p2.h5" --json
  expect_json
}
partial_combine fedavg fedavg
partial_combine clip fedavg:clip_norm=0.52
# The same with --threads 1 (no verifying thread ahead, no compressing worker): the
# same global model, bit for bit (the updates are added in the same order).
for name in fedavg clip dp; do cp -a "ex-$name" "ex-$name-t1"; done

# Round 0 of every federation.
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r name cfg rounds model <<<"$c"
  aggregate "ex-$name" "$name"
done
for name in fedavg clip dp; do
  mkdir -p "st-$name-t1"
  if [ "$name" = dp ]; then cp st-dp/round-0.dp-seed st-dp-t1/; fi  # the same noise
  expect_exit 0 fedseg-aggregate "ex-$name-t1" --key agg --state "st-$name-t1" --threads 1 -q
  # The decrypted updates are gone once the round is published.
  [ ! -e "st-$name/round-0" ] && [ ! -e "st-$name-t1/round-0" ] || fail "$name: decrypted updates left in the state folder"
done
# A rerun after success does nothing.
expect_exit 0 fedseg-aggregate ex-fedadam --key agg --state st-fedadam --round 0 --json
expect_stdout_has '"done"'

# Round 1 of the stateful rules: new updates against rounds/1/global.h5.
two=()
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r name cfg rounds model <<<"$c"
  [ "$rounds" = 2 ] && two+=("ex-$name")
done
"$PY" "$REF" make-updates 1 202 "${two[@]}" || fail "cannot write the round-1 updates"
for ex in "${two[@]}"; do
  pack_round "$ex" 1
  aggregate "$ex" "${ex#ex-}"
  [ -e "st-${ex#ex-}/server-2.h5" ] || fail "$ex: no server state for round 2"
done

# The numpy reference, rule by rule (every mismatch is listed before it fails).
checks=()
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r name cfg rounds model <<<"$c"
  [ "$name" = dp ] || checks+=("ex-$name" "$cfg" "$rounds")
done
"$PY" "$REF" check "${checks[@]}" || status=1
"$PY" "$REF" check-dp ex-dp "fedavg:clip_norm=0.52,dp_noise_multiplier=1.0,dp_delta=1e-5" || status=1
echo "partial sums + combine vs direct aggregation:"
"$PY" "$REF" same-global ex-fedavg ex-fedavg-combine || status=1
"$PY" "$REF" same-global ex-clip ex-clip-combine || status=1
echo "--threads 1 vs the default:"
for name in fedavg clip dp; do
  "$PY" "$REF" same-global "ex-$name" "ex-$name-t1" || status=1
  cmp -s "ex-$name/rounds/1/global.h5" "ex-$name-t1/rounds/1/global.h5" ||
    "$PY" -c 'import h5py, numpy as np, sys
a, b = (h5py.File(p, "r")["params"] for p in sys.argv[1:])
sys.exit(0 if all(np.array_equal(a[k][()], b[k][()]) for k in a) else "%s: not the same bits" % sys.argv[2])' \
      "ex-$name/rounds/1/global.h5" "ex-$name-t1/rounds/1/global.h5" || status=1
done
[ "$status" = 0 ] || fail "fedseg-aggregate differs from the numpy reference (see MISMATCH lines above)"
