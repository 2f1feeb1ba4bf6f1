#!/usr/bin/python3
# numpy side of tests/interop/aggregate_rules.sh: random site updates written with
# h5py, and an independent float64 re-computation of every aggregation rule of
# lib/fed/rules.h (weights, clipping, median, trimmed mean, Krum, FedAvgM, FedAdam,
# FedYogi, FedAdagrad, central DP) checked against what fedseg-aggregate published.
# Run with HDF5_PLUGIN_PATH naming the zstd plugin (the global models are compressed).
#
#   make-updates ROUND SEED EX...        EX/upd-<ROUND>/<site>.h5 against EX/rounds/ROUND/global.h5
#   check EX CONFIG ROUNDS [EX CONFIG ROUNDS...]  rounds 0..ROUNDS-1 of each EX against the reference
#   check-dp EX CONFIG                   the DP round: epsilon, clipped mean, noise scale
#   check-partial EX CONFIG P1 P2 SITES1 SITES2  the partial sums hold Σ n_k s_k d_k and Σ n_k
#   same-global A B                      rounds/1/global.h5 of A and B agree (rtol 1e-6, 1 ulp)
# CONFIG is RULE[:key=value,...] as given to fedseg-init's --rule and --rule-param.
import hashlib
import json
import math
import sys

import h5py
import numpy as np

SITES = ["s1", "s2", "s3", "s4", "s5"]
EXAMPLES = {"s1": 3, "s2": 7, "s3": 1, "s4": 10, "s5": 4}
# Whole-update L2 norms of round 0: s4 is the outlier (far larger, pointing away from
# the others), so that clip_norm=0.5 and clip_quantile=0.5 clip, Krum drops it and the
# report flags it. s3's update is stored as float16.
NORMS = {"s1": 0.5, "s2": 0.6, "s3": 0.4, "s4": 3.0, "s5": 0.55}
FLOAT16_SITE = "s3"
RTOL = 1e-6

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("MISMATCH:", what, file=sys.stderr)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def read_group(path, group):
    out = {}
    with h5py.File(path, "r") as f:
        f[group].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out, attrs


def global_params(ex, r):
    return read_group("%s/rounds/%d/global.h5" % (ex, r), "params")[0]


def flat(tensors, names):
    return np.concatenate([np.asarray(tensors[n], dtype=np.float64).reshape(-1) for n in names])


def unflat(vec, like, names):
    out, i = {}, 0
    for n in names:
        k = like[n].size
        out[n] = vec[i:i + k].reshape(like[n].shape)
        i += k
    return out


# ---------------------------------------------------------------- writing updates

def make_updates(r, seed, exs):
    for ex in exs:
        gpath = "%s/rounds/%d/global.h5" % (ex, r)
        params, gattrs = read_group(gpath, "params")
        names = sorted(params)
        total = sum(params[n].size for n in names)
        rng = np.random.default_rng(seed)
        common = rng.standard_normal(total)
        base = sha256(gpath)
        import os
        os.makedirs("%s/upd-%d" % (ex, r), exist_ok=True)
        for k, s in enumerate(SITES):
            raw = common + 1.5 * rng.standard_normal(total)
            if s == "s4":
                raw = -2 * common + rng.standard_normal(total)
            norm = NORMS[s] * (1 if r == 0 else 0.7 + 0.2 * k)
            d = raw * (norm / np.linalg.norm(raw))
            dt = np.float16 if s == FLOAT16_SITE else np.float32
            with h5py.File("%s/upd-%d/%s.h5" % (ex, r, s), "w") as f:
                f.attrs["fedseg_format"] = np.int64(1)
                f.attrs["kind"] = "update"
                f.attrs["created"] = "2026-01-01T00:00:00Z"
                f.attrs["tool"] = "aggregate_reference.py"
                f.attrs["provenance"] = json.dumps({"seed": seed, "site": s})
                f.attrs["federation"] = gattrs["federation"]
                f.attrs["round"] = np.int64(r)
                f.attrs["site"] = s
                f.attrs["base_sha256"] = base
                f.attrs["num_examples"] = np.int64(EXAMPLES[s] + (r * (k + 1)) % 5)
                for n, t in unflat(d, params, names).items():
                    f.create_dataset("delta/" + n, data=t.astype(dt))


# ---------------------------------------------------------------- the reference

def parse_config(text):
    rule, _, rest = text.partition(":")
    c = {"rule": rule, "server_lr": 0.01 if rule in ("fedadam", "fedyogi", "fedadagrad") else 1.0,
         "momentum": 0.9, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3, "beta": 0.1, "f": 1, "m": 0,
         "max_weight": 0.0, "clip_norm": 0.0, "clip_quantile": 0.0, "dp_noise_multiplier": 0.0, "dp_delta": 1e-5}
    given = {}
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=")
        given[k] = float(v)
        c[k] = float(v)
    return c, given


def example_weights(n, cap):
    """p_k = n_k / Σn; with a cap, capped sites get exactly `cap` and the others share
    the rest in proportion to n_k (water filling, until no share exceeds the cap)."""
    n = np.asarray(n, dtype=np.float64)
    p = n / n.sum()
    if cap <= 0 or cap * len(n) < 1:
        return p
    capped = np.zeros(len(n), bool)
    while True:
        free = ~capped
        p = np.where(capped, cap, n * (1 - cap * capped.sum()) / n[free].sum())
        over = free & (p > cap * (1 + 1e-15))
        if not over.any():
            return p
        capped |= over


def reference_round(c, w, D, n):
    """w: float64 global (flat); D: rows = sites' deltas (float64); n: example counts.
    Returns Δ (before the server step) and per-site details."""
    N = len(D)
    norms = np.linalg.norm(D, axis=1)
    C = c["clip_norm"] if c["clip_norm"] > 0 else (np.quantile(norms, c["clip_quantile"]) if c["clip_quantile"] > 0 else 0.0)
    s = np.where((C > 0) & (norms > C), C / np.where(norms > 0, norms, 1), 1.0)
    X = D * s[:, None]
    info = {"norms": norms, "clip": s, "threshold": C, "weights": None, "krum_scores": None, "selected": None}
    rule = c["rule"]
    if rule == "median":
        delta = np.median(X, axis=0)
    elif rule == "trimmed-mean":
        t = int(math.floor(c["beta"] * N))
        delta = np.sort(X, axis=0)[t:N - t].mean(axis=0)
    elif rule in ("krum", "multi-krum"):
        f = int(c["f"])
        d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=2)
        nb = N - f - 2
        scores = np.array([np.sort(np.delete(d2[k], k))[:nb].sum() for k in range(N)])
        keep = 1 if rule == "krum" else (int(c["m"]) if c["m"] > 0 else N - f)
        order = sorted(range(N), key=lambda k: (scores[k], k))
        sel = sorted(order[:keep])
        p = np.zeros(N)
        if rule == "krum":
            p[sel[0]] = 1.0
        else:
            nn = np.asarray(n, dtype=np.float64)
            p[sel] = nn[sel] / nn[sel].sum()
        delta = p @ X
        info.update(krum_scores=scores, selected=sel, weights=p)
    elif c["dp_noise_multiplier"] > 0:
        p = np.full(N, 1.0 / N)
        delta = p @ X  # plus noise, which the DP check estimates separately
        info["weights"] = p
    else:
        p = example_weights(n, c["max_weight"])
        delta = p @ X
        info["weights"] = p
    return delta, info


def server_step(c, w, delta, state):
    rule, lr = c["rule"], c["server_lr"]
    if rule == "fedavgm":
        state["m"] = c["momentum"] * state.get("m", np.zeros_like(w)) + delta
        return w + lr * state["m"]
    if rule in ("fedadam", "fedyogi", "fedadagrad"):
        m = state.get("m", np.zeros_like(w))
        v = state.get("v", np.full_like(w, c["tau"] ** 2))
        m = c["beta1"] * m + (1 - c["beta1"]) * delta
        d2 = delta * delta
        if rule == "fedadam":
            v = c["beta2"] * v + (1 - c["beta2"]) * d2
        elif rule == "fedyogi":
            v = v - (1 - c["beta2"]) * d2 * np.sign(v - d2)
        else:
            v = v + d2
        state["m"], state["v"] = m, v
        return w + lr * m / (np.sqrt(v) + c["tau"])
    return w + lr * delta


def dp_epsilon(rounds, z, delta):
    best, a = math.inf, 1.01
    while a <= 256:
        best = min(best, rounds * a / (2 * z * z) + math.log(1 / delta) / (a - 1))
        a *= 1.01
    return best


def close(a, b, rtol=RTOL, atol=0.0):
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol))


def compare_global(label, got32, ref64):
    """got32: the published float32 values; ref64: the float64 reference. rtol 1e-6,
    and at most 1 ulp from the reference rounded to float32."""
    ref32 = ref64.astype(np.float32)
    ulp = np.maximum(np.spacing(np.abs(ref32)), np.spacing(np.abs(got32.astype(np.float32))))
    ulps = np.abs(got32.astype(np.float64) - ref32.astype(np.float64)) / ulp.astype(np.float64)
    rel = np.abs(got32 - ref64) / np.maximum(np.abs(ref64), 1e-30)
    worst = int(np.argmax(ulps))
    print("  %s: %d values, max %.3g ulp, max rel err %.3g (worst index %d: got %.9g, want %.9g)"
          % (label, got32.size, ulps.max(), rel.max(), worst, got32[worst], ref64[worst]))
    check(ulps.max() <= 1.0 and close(got32, ref64, RTOL, 1e-9),
          "%s: published global differs from the reference: max %.3g ulp, max rel err %.3g, worst index %d got %.9g want %.9g"
          % (label, ulps.max(), rel.max(), worst, got32[worst], ref64[worst]))


def check_report(label, ex, r, c, given, info, delta, sites, n, exact_cosine=True):
    rep = json.load(open("%s/rounds/%d/report.json" % (ex, r)))
    check(rep["fedseg_report"] == 1 and rep["round"] == r, "%s: report header %s" % (label, rep.get("round")))
    check(rep["rule"]["rule"] == c["rule"], "%s: report rule %s" % (label, rep["rule"]))
    for k, v in given.items():
        check(k in rep["rule"] and close(rep["rule"][k], v, 1e-12), "%s: report rule lacks %s=%s: %s" % (label, k, v, rep["rule"]))
    acc = {a["site"]: a for a in rep["accepted"]}
    check(sorted(acc) == sorted(sites) and rep["rejected"] == [], "%s: accepted %s rejected %s" % (label, sorted(acc), rep["rejected"]))
    dn = np.linalg.norm(delta)
    if exact_cosine:
        check(close(rep["update_norm"], dn), "%s: update_norm %r, numpy %r" % (label, rep["update_norm"], dn))
        check(rep["cosine"] == "exact", "%s: cosine %r" % (label, rep["cosine"]))
    check(close(rep["clip_threshold"], info["threshold"]), "%s: clip_threshold %r, numpy %r" % (label, rep["clip_threshold"], info["threshold"]))
    med = np.quantile(info["norms"], 0.5)
    for k, s in enumerate(sites):
        a = acc.get(s)
        if a is None:
            continue
        d = D_CACHE[(ex, r)][k]
        cos = float(d @ delta / (np.linalg.norm(d) * dn))
        check(a["num_examples"] == n[k], "%s %s: num_examples %r, want %r" % (label, s, a["num_examples"], n[k]))
        check(close(a["norm"], info["norms"][k]), "%s %s: norm %r, numpy %r" % (label, s, a["norm"], info["norms"][k]))
        check(close(a["clip_factor"], info["clip"][k]), "%s %s: clip_factor %r, numpy %r" % (label, s, a["clip_factor"], info["clip"][k]))
        if info["weights"] is not None:
            check(close(a["weight"], info["weights"][k], RTOL, 1e-15), "%s %s: weight %r, numpy %r" % (label, s, a["weight"], info["weights"][k]))
        if exact_cosine:
            check(close(a["cosine"], cos, RTOL, 1e-12), "%s %s: cosine %r, numpy %r" % (label, s, a["cosine"], cos))
        if info["krum_scores"] is not None:
            check("krum_score" in a and close(a["krum_score"], info["krum_scores"][k]),
                  "%s %s: krum_score %r, numpy %r" % (label, s, a.get("krum_score"), info["krum_scores"][k]))
        flags = []
        N = len(sites)
        if N >= 3 and info["norms"][k] > 3 * med:
            flags.append("norm %sx the median" % ("%f" % (info["norms"][k] / med))[:5])
        if exact_cosine and N >= 3 and cos < 0:
            flags.append("points away from the aggregate (cosine < 0)")
        if info["selected"] is not None and k not in info["selected"]:
            flags.append("not selected by " + c["rule"])
        if info["clip"][k] < 1:
            flags.append("clipped")
        got_flags = a["flags"]
        if not exact_cosine:  # the sign of an estimated cosine is not checked
            got_flags = [x for x in got_flags if not x.startswith("points away")]
        check(got_flags == flags, "%s %s: flags %r, want %r" % (label, s, a["flags"], flags))
    return rep


D_CACHE = {}


def load_round(ex, r):
    w = global_params(ex, r)
    names = sorted(w)
    D, n = [], []
    for s in SITES:
        d, attrs = read_group("%s/upd-%d/%s.h5" % (ex, r, s), "delta")
        check(sorted(d) == names, "%s: update %s tensor names" % (ex, s))
        D.append(flat(d, names))
        n.append(int(attrs["num_examples"]))
    D = np.array(D)
    D_CACHE[(ex, r)] = D
    return w, names, D, n


def cmd_check(ex, config, rounds):
    c, given = parse_config(config)
    plan = json.load(open(ex + "/federation.json"))["aggregation"]
    check(plan["rule"] == c["rule"], "%s: plan rule %r" % (ex, plan))
    for k, v in given.items():
        check(close(plan.get(k, float("nan")), v, 1e-12), "%s: plan lacks %s=%s: %s" % (ex, k, v, plan))
    state = {}
    for r in range(rounds):
        w, names, D, n = load_round(ex, r)
        w64 = flat(w, names)
        delta, info = reference_round(c, w64, D, n)
        ref = server_step(c, w64, delta, state)
        got = flat(global_params(ex, r + 1), names)
        label = "%s round %d (%s)" % (ex, r, config)
        compare_global(label, got, ref)
        check_report(label, ex, r, c, given, info, delta, SITES, n)
        if info["selected"] is not None:
            print("  krum scores", np.round(info["krum_scores"], 4).tolist(), "selected", [SITES[k] for k in info["selected"]])
        if info["weights"] is not None:
            print("  weights", np.round(info["weights"], 6).tolist(), "clip", np.round(info["clip"], 4).tolist())


def cmd_check_dp(ex, config):
    c, given = parse_config(config)
    w, names, D, n = load_round(ex, 0)
    w64 = flat(w, names)
    mean, info = reference_round(c, w64, D, n)
    got = flat(global_params(ex, 1), names).astype(np.float64)
    N = len(SITES)
    sigma = c["dp_noise_multiplier"] * c["clip_norm"] / N
    resid = got - (w64 + c["server_lr"] * mean)
    P = resid.size
    sd, mu = resid.std(), resid.mean()
    print("  %s: %d values, residual std %.6g (sigma %.6g, ratio %.4f), mean %.3g" % (ex, P, sd, sigma, sd / sigma, mu))
    # the std of a sample std is about sigma/sqrt(2P): 5% is over 10 of them here
    check(abs(sd / sigma - 1) < 0.05, "%s: noise std %.6g, want sigma = z C / N = %.6g" % (ex, sd, sigma))
    check(abs(mu) < 5 * sigma / math.sqrt(P), "%s: noise mean %.3g is not ~0" % (ex, mu))
    # Noise, not a wrong mean: the residual is uncorrelated with the clipped mean.
    corr = float(np.corrcoef(resid, mean)[0, 1])
    check(abs(corr) < 5 / math.sqrt(P), "%s: residual correlates with the clipped mean (r = %.3g)" % (ex, corr))
    rep = check_report(ex + " (dp)", ex, 0, c, given, info, mean, SITES, n, exact_cosine=False)
    pv = rep["privacy"]
    eps = dp_epsilon(1, c["dp_noise_multiplier"], c["dp_delta"])
    print("  privacy", {k: pv[k] for k in ("noise_multiplier", "clip_norm", "delta", "rounds", "epsilon")}, "numpy epsilon", eps)
    check(pv is not None and pv["rounds"] == 1 and close(pv["noise_multiplier"], c["dp_noise_multiplier"], 1e-12)
          and close(pv["clip_norm"], c["clip_norm"], 1e-12) and close(pv["delta"], c["dp_delta"], 1e-12),
          "%s: privacy %r" % (ex, pv))
    check(close(pv["epsilon"], eps, 1e-9), "%s: epsilon %r, numpy %r" % (ex, pv["epsilon"], eps))
    # update_norm includes the noise: |Δ| ≈ sqrt(|mean|² + P σ²)
    want = math.sqrt(float(mean @ mean) + P * sigma * sigma)
    check(abs(rep["update_norm"] / want - 1) < 0.05, "%s: update_norm %r, expected about %r" % (ex, rep["update_norm"], want))


def cmd_check_partial(ex, config, p1, p2, sites1, sites2):
    c, _ = parse_config(config)
    w, names, D, n = load_round(ex, 0)
    # s_k from a fixed clip_norm needs no other site's update: partial sums clip too
    norms = np.linalg.norm(D, axis=1)
    s = np.where((c["clip_norm"] > 0) & (norms > c["clip_norm"]), c["clip_norm"] / norms, 1.0)
    want_total = 0
    for path, sites in ((p1, sites1.split(",")), (p2, sites2.split(","))):
        sums, attrs = read_group(path, "sum")
        check(attrs["kind"] == "partial" and attrs["round"] == 0 and attrs["base_sha256"] == sha256(ex + "/rounds/0/global.h5"),
              "%s: attributes %r" % (path, attrs))
        idx = [SITES.index(s) for s in sites]
        tw = sum(n[k] for k in idx)
        want_total += tw
        check(close(attrs["total_weight"], tw, 1e-15), "%s: total_weight %r, want %r" % (path, attrs["total_weight"], tw))
        check(all(sums[k].dtype == np.float64 for k in names), "%s: sums are not float64" % path)
        got = flat(sums, names)
        ref = (np.asarray(n, dtype=np.float64) * s)[idx] @ D[idx]
        err = np.abs(got - ref).max() / np.abs(ref).max()
        print("  %s: Σ n_k s_k d_k over %s (s_k %s), total weight %r, max rel err %.3g"
              % (path, sites, np.round(s[idx], 4).tolist(), attrs["total_weight"], err))
        check(close(got, ref, 1e-12, 1e-15), "%s (%s): /sum differs from Σ n_k s_k d_k (max rel err %.3g)" % (path, config, err))
        check(sorted(s["site"] for s in json.loads(attrs["sites"])) == sorted(sites), "%s: sites %r" % (path, attrs["sites"]))


def cmd_same_global(a, b):
    if not __import__("os").path.exists(b + "/rounds/1/global.h5"):
        check(False, "%s: no rounds/1/global.h5" % b)
        return
    ga, gb = global_params(a, 1), global_params(b, 1)
    names = sorted(ga)
    check(sorted(gb) == names, "tensor names differ")
    x, y = flat(ga, names), flat(gb, names)
    compare_global("%s vs %s" % (b, a), y.astype(np.float32), x)
    print("  identical bits:", bool(np.array_equal(x, y)))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-updates":
        make_updates(int(args[0]), int(args[1]), args[2:])
    elif cmd == "check":
        for i in range(0, len(args), 3):  # EX CONFIG ROUNDS, repeated
            cmd_check(args[i], args[i + 1], int(args[i + 2]))
    elif cmd == "check-dp":
        cmd_check_dp(args[0], args[1])
    elif cmd == "check-partial":
        cmd_check_partial(*args)
    elif cmd == "same-global":
        cmd_same_global(args[0], args[1])
    else:
        sys.exit("unknown command " + cmd)
    if failures:
        print("FAILED: %d mismatches in %s %s" % (len(failures), cmd, " ".join(args)), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
