. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/aggregate/fixture.bash"
# fedseg-aggregate against one Byzantine site out of five (acceptance item 2).
#
# Five sites h1..h4 (honest) and x (the attacker), a tiny model (small preset, base 2,
# depth 1: 1427 parameters). Honest deltas d_k = u + e_k: a common random direction u
# (N(0, 0.01²) per coordinate) plus per-site noise e_k (N(0, 0.001²)); example counts
# 10, 20, 30, 40 and 50 for x. The attacker sends, in turn:
#   scaled  100·(u + e_x)           flip1  −1·d_h1          flip10  −10·d_h1
#   nan     u + e_x with one NaN in the last tensor          inf     u + e_x with +Inf in a middle tensor
# For each rule (fedavg; median; trimmed-mean beta=0.2; krum f=1; multi-krum f=1 m=3) and
# each attack, a separate exchange and aggregator state: one fedseg-init per rule (same
# seed, so the same round-0 weights for all) with the honest packages, copied per attack
# (each copy a fresh, unaggregated federation with its own --state; fedseg-init takes
# over a second, so one per rule and attack would cost half a minute more).
# min_sites is 4 so that four valid updates make a quorum before the deadline.
#
# What is asserted, with m = the unweighted mean of the four honest deltas and Δ = the new
# global minus the old (read back with h5py):
#   * Every published global equals numpy's aggregate of the accepted updates
#     (float64 arithmetic, float32 result, within 2 ulps).
#   * nan / inf: the package is rejected (class "values"), x is not accepted, and the global
#     is the aggregate of h1..h4 only. For krum and multi-krum four valid updates are fewer
#     than 2f+3 = 5, which the spec answers with exit 75 and nothing published.
#   * median and trimmed-mean (scaled, flip1, flip10): with 1 Byzantine value out of 5, in each
#     coordinate the median is the 3rd of 5 sorted values and the trimmed mean (1 cut at each
#     end) averages the 2nd..4th; both lie between the smallest and the largest honest value
#     of that coordinate, whatever x sends. Asserted per coordinate, and as a consequence
#     ||Δ − m|| ≤ sqrt(Σ_k ||d_k − m||²) (honest k), which for this noise level is about
#     0.17·||m||; the test asserts the stated bound ||Δ − m|| ≤ 0.5·||m||.
#   * krum (scaled, flips): the attacker's squared distance to every honest delta is at least
#     (99||u||)² (scaled) or about (2||u||)² (flips), while honest pairs are about 2·||e||²
#     ≈ 0.02·||u||² apart, so x has the largest score and Krum picks an honest delta d_j:
#     Δ = d_j exactly, and ||Δ − m|| ≤ max_k ||d_k − m|| ≈ 0.09·||m|| ≤ 0.5·||m||. The data's
#     premise (x's score is the largest) is checked in numpy too.
#   * multi-krum (m=3): the three lowest scores are honest, Δ is their example-weighted mean,
#     a convex combination of honest deltas: ||Δ − m|| ≤ max_k ||d_k − m|| ≤ 0.5·||m||.
#   * fedavg (scaled): x's weight is 1/3, Δ ≈ 34·u: ||Δ − m|| > 10·||m|| (the attack bites,
#     so the bounds above could fail).
#   * Report: the attacker's entry has non-empty flags: "norm ...x the median" (scaled,
#     flip10), "points away from the aggregate (cosine < 0)" (flip1), and under krum and
#     multi-krum "not selected by krum/multi-krum"; honest entries have no flags under median
#     and trimmed-mean. The report's norms, cosines and krum scores match numpy.
#   * Once a round is published, no decrypted update is left in STATE/round-0 (the tool's
#     help: removed afterwards unless --keep-updates), the rejected one included.
make_ids h1 h2 h3 h4 x
RULES="fedavg median trimmed-mean krum multi-krum"
ATTACKS="scaled flip1 flip10 nan inf"
rule_params() {
  case $1 in
  trimmed-mean) echo "--rule-param beta=0.2" ;;
  krum) echo "--rule-param f=1" ;;
  multi-krum) echo "--rule-param f=1 --rule-param m=3" ;;
  esac
}
for rule in $RULES; do
  # shellcheck disable=SC2046
  make_fed "init-$rule" byz h1,h2,h3,h4,x --preset small --base-filters 2 --depth 1 --rule "$rule" \
    $(rule_params "$rule") --min-sites 4 --seed 11
done

# The updates (per rule: the base_sha256 is each rule's own round-0 global).
# shellcheck disable=SC2086
"$PY" - $RULES <<'PYEOF'
import sys
import numpy as np
from aggtest import params, flat, unflat, write_update
rules = sys.argv[1:]
g0 = params("init-%s/rounds/0/global.h5" % rules[0])
for r in rules[1:]:
    assert all(np.array_equal(g0[k], v) for k, v in params("init-%s/rounds/0/global.h5" % r).items()), "same seed, other weights"
P = flat(g0).size
rng = np.random.default_rng(2024)
u = (0.01 * rng.standard_normal(P)).astype(np.float32)
honest = [(u + 0.001 * rng.standard_normal(P)).astype(np.float32) for _ in range(4)]
xh = (u + 0.001 * rng.standard_normal(P)).astype(np.float32)
names = sorted(g0)
sizes = [g0[k].size for k in names]
offs = np.cumsum([0] + sizes)
nan = xh.copy(); nan[offs[-2] + sizes[-1] // 2] = np.nan          # the last tensor
mid = len(names) // 2
inf = xh.copy(); inf[offs[mid] + sizes[mid] // 3] = np.inf         # a middle tensor
attacks = {"scaled": 100 * xh, "flip1": -1 * honest[0], "flip10": -10 * honest[0], "nan": nan, "inf": inf}
np.savez("deltas.npz", honest=np.stack(honest), **attacks)
for r in rules:
    g = "init-%s/rounds/0/global.h5" % r
    for k, d in enumerate(honest):
        write_update("%s-h%d.h5" % (r, k + 1), g, "h%d" % (k + 1), 10 * (k + 1), unflat(d, g0))
    for a, d in attacks.items():
        write_update("%s-x-%s.h5" % (r, a), g, "x", 50, unflat(d, g0))
PYEOF

# The honest packages once per rule (copied with the exchange), the attacker's per attack.
for rule in $RULES; do
  for s in h1 h2 h3 h4; do pack_update "init-$rule" 0 "$s" "$rule-$s.h5"; done
  for attack in $ATTACKS; do
    ex="ex-$rule-$attack"
    cp -a "init-$rule" "$ex"
    pack_update "$ex" 0 x "$rule-x-$attack.h5"
    want=0
    case "$rule/$attack" in krum/nan | krum/inf | multi-krum/nan | multi-krum/inf) want=75 ;; esac
    expect_exit "$want" fedseg-aggregate "$ex" --key agg --state "st-$rule-$attack" --json
    if [ "$want" = 75 ]; then
      expect_stderr_has "2f+3"
      expect_stderr_has "(values)"
    else
      expect_json
      expect_stdout_has '"status": "aggregated"'
    fi
    cp "$TMP/stdout" "$ex.stdout"
    cp "$TMP/stderr" "$ex.stderr"
    echo "$rule $attack $want" >>runs.txt
  done
done

"$PY" - <<'PYEOF'
import json, os
import numpy as np
from aggtest import params, flat, report, sha256, f32_close

D = np.load("deltas.npz")
H = D["honest"].astype(np.float64)            # 4 x P
n_all = np.array([10., 20., 30., 40., 50.])
m = H.mean(0)
mn = np.linalg.norm(m)
spread = np.sqrt(sum(np.linalg.norm(h - m) ** 2 for h in H))   # sqrt(sum_k ||d_k - m||^2)
worst = max(np.linalg.norm(h - m) for h in H)
assert spread <= 0.5 * mn and worst <= 0.5 * mn, (spread, worst, mn)

def krum_scores(X, f):
    N = len(X)
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.array([np.sort(np.delete(d2[k], k))[: N - f - 2].sum() for k in range(N)])

def aggregate(rule, X, n):
    if rule == "fedavg":
        return (n / n.sum()) @ X, None
    if rule == "median":
        return np.median(X, axis=0), None
    if rule == "trimmed-mean":
        t = int(np.floor(0.2 * len(X)))
        S = np.sort(X, axis=0)
        return S[t:len(X) - t].mean(0), None
    sc = krum_scores(X, 1)
    keep = 1 if rule == "krum" else 3
    sel = sorted(np.argsort(sc, kind="stable")[:keep])
    if rule == "krum":
        return X[sel[0]], (sc, sel)
    w = n[sel] / n[sel].sum()
    return w @ X[sel], (sc, sel)

failures = []
for line in open("runs.txt"):
    rule, attack, want = line.split()
    ex = "ex-%s-%s" % (rule, attack)
    where = "%s/%s: " % (rule, attack)
    def check(cond, msg):
        if not cond:
            failures.append(where + msg)
        return cond
    g0p = params(ex + "/rounds/0/global.h5")
    g0 = flat(g0p)
    latest = json.load(open(ex + "/LATEST"))
    if want == "75":
        check(latest["round"] == 0, "LATEST moved on a 75")
        check(not os.path.exists(ex + "/rounds/1/global.h5"), "a global was published on a 75")
        check(not os.path.exists(ex + "/rounds/0/report.json"), "a report was published on a 75")
        continue
    work = "st-%s-%s/round-0" % (rule, attack)
    left = sorted(os.listdir(work)) if os.path.isdir(work) else []
    check(left == [], "decrypted updates left in %s after the round was published: %s" % (work, left))
    xd = D[attack].astype(np.float64)
    g1 = flat(params(ex + "/rounds/1/global.h5"))
    rep = report(ex, 0)
    check(latest["round"] == 1 and latest["global_sha256"] == sha256(ex + "/rounds/1/global.h5"), "LATEST")
    acc = {a["site"]: a for a in rep["accepted"]}
    byzantine_in = attack in ("scaled", "flip1", "flip10")
    if byzantine_in:
        X, n, sites = np.vstack([H, xd[None]]), n_all, ["h1", "h2", "h3", "h4", "x"]
        check(sorted(acc) == sites and rep["rejected"] == [], "accepted %s rejected %s" % (sorted(acc), rep["rejected"]))
    else:
        X, n, sites = H, n_all[:4], ["h1", "h2", "h3", "h4"]
        rj = [r for r in rep["rejected"] if r["site"] == "x"]
        check(sorted(acc) == sites, "x accepted despite non-finite values: %s" % sorted(acc))
        check(len(rj) == 1 and rj[0]["class"] == "values", "x's rejection: %s" % rep["rejected"])
    want_delta, kinfo = aggregate(rule, X, n)
    if not check(f32_close(g1, g0 + want_delta), "global is not numpy's %s of %s (max diff %g)" %
                 (rule, sites, np.abs(g1 - (g0 + want_delta)).max())):
        continue
    delta = g1 - g0
    dist = np.linalg.norm(delta - m)
    tol = 1e-6  # float32 rounding of w + Δ, relative to the weights (|w| <= ~1)
    if byzantine_in and rule in ("median", "trimmed-mean"):
        lo, hi = H.min(0), H.max(0)
        slack = 2 * np.spacing(np.abs(g1).astype(np.float32)).astype(np.float64)
        check(np.all(delta >= lo - slack) and np.all(delta <= hi + slack), "a coordinate outside the honest range")
        check(dist <= spread + tol and dist <= 0.5 * mn, "||Δ − m|| = %g > 0.5·||m|| = %g" % (dist, 0.5 * mn))
    if byzantine_in and rule in ("krum", "multi-krum"):
        sc, sel = kinfo
        check(sc[4] > sc[:4].max(), "premise: x's krum score is not the largest")
        check(4 not in sel, "krum selected the attacker")
        check(dist <= worst + tol and dist <= 0.5 * mn, "||Δ − m|| = %g > 0.5·||m|| = %g" % (dist, 0.5 * mn))
        for k, s in enumerate(sites):
            check(abs(acc[s].get("krum_score", -1) - sc[k]) <= 1e-6 * sc[k], "krum_score of %s: %s, numpy %g" %
                  (s, acc[s].get("krum_score"), sc[k]))
            w = (1.0 if rule == "krum" else n[k] / n[sel].sum()) if k in sel else 0.0
            check(abs(acc[s]["weight"] - w) <= 1e-12, "weight of %s: %s, want %g" % (s, acc[s]["weight"], w))
    if rule == "fedavg" and attack == "scaled":
        check(dist > 10 * mn, "fedavg resisted the scaled attack (||Δ − m|| = %g)" % dist)
    # Norms and cosines to the aggregate, as in the report.
    for k, s in enumerate(sites):
        nk = np.linalg.norm(X[k])
        ck = X[k] @ want_delta / (nk * np.linalg.norm(want_delta))
        check(abs(acc[s]["norm"] - nk) <= 1e-6 * nk, "norm of %s: %s, numpy %g" % (s, acc[s]["norm"], nk))
        check(abs(acc[s]["cosine"] - ck) <= 1e-6, "cosine of %s: %s, numpy %g" % (s, acc[s]["cosine"], ck))
    check(rep["cosine"] == "exact", "cosine is %s" % rep["cosine"])
    if byzantine_in:
        fl = acc["x"]["flags"]
        check(fl != [], "the attacker has no flags")
        if attack in ("scaled", "flip10"):
            check(any(f.startswith("norm ") and f.endswith("x the median") for f in fl), "no norm flag: %s" % fl)
        if attack == "flip1":
            check("points away from the aggregate (cosine < 0)" in fl, "no cosine flag: %s" % fl)
        if rule in ("krum", "multi-krum"):
            check("not selected by " + rule in fl, "no krum flag: %s" % fl)
        for s in sites[:4]:
            if rule in ("median", "trimmed-mean"):
                check(acc[s]["flags"] == [], "honest %s flagged: %s" % (s, acc[s]["flags"]))
            if rule in ("krum", "multi-krum"):
                check(set(acc[s]["flags"]) <= {"not selected by " + rule}, "honest %s flagged: %s" % (s, acc[s]["flags"]))
if failures:
    raise SystemExit("FAIL:\n  " + "\n  ".join(failures))
PYEOF
