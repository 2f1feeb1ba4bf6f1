# Shared set-up of the fedseg-train / fedseg-init tests: a tiny synthetic site
# dataset, an aggregator and two site identities, and a federation with a tiny
# model (base 4, depth 2, patch 16) so that a step takes well under a second.
#   make_site_dataset [CASES]    -> site.h5 (all cases in the train split)
#   make_tiny_federation [init options...] -> ex/ (federation.json, rounds/0/global.h5, LATEST)
make_site_dataset() {
  local cases=${1:-4}
  fedseg-synth -o cohort --cases "$cases" --shape 32,32,24 --seed 5 -q
  fedseg-prep cohort -o site.h5 --val-fraction 0 -q
}

make_tiny_federation() {
  fedseg-keygen -o agg >/dev/null 2>&1
  fedseg-keygen -o site-a --site a >/dev/null 2>&1
  fedseg-keygen -o site-b --site b >/dev/null 2>&1
  # defaults for the options the caller does not give
  local defaults=() opt
  for opt in "--base-filters 4" "--depth 2" "--patch 16" "--epochs 1" "--lr 3e-3" "--seed 3"; do
    case " $* " in *" ${opt%% *} "*) ;; *) defaults+=($opt) ;; esac
  done
  fedseg-init --federation fedtest --key agg --site a=site-a --site b=site-b --preset small \
    "${defaults[@]}" -o ex -q "$@"
}
