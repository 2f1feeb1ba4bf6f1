#include "fed/rules.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "core/error.h"

namespace fedseg::fed {

using nlohmann::json;

namespace {
[[noreturn]] void bad(const std::string& name, const std::string& key, const std::string& why) {
  throw Error(kExitConfig, "bad aggregation rule", name, "aggregation." + key + ": " + why);
}
}  // namespace

RuleConfig RuleConfig::from_json(const json& j, const std::string& name) {
  static const std::set<std::string> rules{"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
                                           "median", "trimmed-mean", "krum", "multi-krum"};
  RuleConfig c;
  if (!j.is_object() || !j.contains("rule") || !j["rule"].is_string()) bad(name, "rule", "missing");
  c.rule = j["rule"].get<std::string>();
  if (!rules.count(c.rule)) bad(name, "rule", "unknown rule '" + c.rule + "'");
  if (c.adaptive()) c.server_lr = 0.01;
  auto num = [&](const char* k, double& v, double lo, double hi) {
    if (!j.contains(k)) return;
    if (!j[k].is_number()) bad(name, k, "not a number");
    v = j[k].get<double>();
    if (!(v >= lo && v <= hi)) bad(name, k, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    static const std::set<std::string> keys{"rule", "server_lr", "momentum", "beta1", "beta2", "tau", "beta", "f", "m",
                                            "max_weight", "clip_norm", "clip_quantile", "dp_noise_multiplier", "dp_delta"};
    if (!keys.count(it.key())) bad(name, it.key(), "unknown parameter");
  }
  num("server_lr", c.server_lr, 1e-12, 1e6);
  num("momentum", c.momentum, 0, 0.9999);
  num("beta1", c.beta1, 0, 0.9999);
  num("beta2", c.beta2, 0, 0.999999);
  num("tau", c.tau, 1e-12, 1);
  num("beta", c.trim_beta, 0, 0.4999);
  double f = double(c.f), m = double(c.m);
  num("f", f, 0, 1e6);
  num("m", m, 0, 1e6);
  if (f != std::floor(f) || m != std::floor(m)) bad(name, "f", "f and m are whole numbers");
  c.f = int64_t(f);
  c.m = int64_t(m);
  num("max_weight", c.max_weight, 0, 1);
  num("clip_norm", c.clip_norm, 0, 1e12);
  num("clip_quantile", c.clip_quantile, 0, 1);
  num("dp_noise_multiplier", c.dp_noise_multiplier, 0, 1e6);
  num("dp_delta", c.dp_delta, 1e-300, 0.5);
  if (c.clip_norm > 0 && c.clip_quantile > 0) bad(name, "clip_quantile", "give clip_norm or clip_quantile, not both");
  if (c.dp_noise_multiplier > 0) {
    if (c.clip_norm <= 0) bad(name, "dp_noise_multiplier", "central DP needs a fixed clip_norm (its sensitivity)");
    if (!c.linear()) bad(name, "dp_noise_multiplier", "central DP works with the fedavg family, not " + c.rule);
  }
  return c;
}

json RuleConfig::to_json() const {
  json j{{"rule", rule}, {"server_lr", server_lr}};
  if (rule == "fedavgm") j["momentum"] = momentum;
  if (adaptive()) {
    j["beta1"] = beta1;
    j["beta2"] = beta2;
    j["tau"] = tau;
  }
  if (rule == "trimmed-mean") j["beta"] = trim_beta;
  if (krum()) j["f"] = f;
  if (rule == "multi-krum") j["m"] = m;
  if (max_weight > 0) j["max_weight"] = max_weight;
  if (clip_norm > 0) j["clip_norm"] = clip_norm;
  if (clip_quantile > 0) j["clip_quantile"] = clip_quantile;
  if (dp_noise_multiplier > 0) {
    j["dp_noise_multiplier"] = dp_noise_multiplier;
    j["dp_delta"] = dp_delta;
  }
  return j;
}

bool RuleConfig::linear() const {
  return rule == "fedavg" || rule == "fedavgm" || adaptive();
}

bool RuleConfig::needs_norms_first() const {
  return krum() || clip_norm > 0 || clip_quantile > 0 || dp_noise_multiplier > 0;
}

std::vector<double> example_weights(const std::vector<double>& n, double max_weight) {
  double total = std::accumulate(n.begin(), n.end(), 0.0);
  if (!(total > 0)) throw Error(kExitDataErr, "no examples", {}, "the accepted updates report 0 training examples");
  std::vector<double> p(n.size());
  for (size_t k = 0; k < n.size(); ++k) p[k] = n[k] / total;
  if (max_weight <= 0 || max_weight * double(n.size()) < 1) return p;  // a cap below 1/N cannot hold
  std::vector<bool> capped(n.size(), false);
  for (size_t iter = 0; iter < n.size(); ++iter) {
    double excess = 0, free = 0;
    for (size_t k = 0; k < p.size(); ++k)
      if (!capped[k] && p[k] > max_weight) {
        excess += p[k] - max_weight;
        p[k] = max_weight;
        capped[k] = true;
      }
    if (excess == 0) break;
    for (size_t k = 0; k < p.size(); ++k)
      if (!capped[k]) free += p[k];
    if (free == 0) break;
    for (size_t k = 0; k < p.size(); ++k)
      if (!capped[k]) p[k] += excess * p[k] / free;
  }
  return p;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = q * double(v.size() - 1);
  size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

std::vector<double> clip_factors(const std::vector<double>& norms, const RuleConfig& c, double* threshold) {
  double C = c.clip_norm > 0 ? c.clip_norm : c.clip_quantile > 0 ? quantile(norms, c.clip_quantile) : 0;
  if (threshold) *threshold = C;
  std::vector<double> s(norms.size(), 1.0);
  if (C > 0)
    for (size_t k = 0; k < norms.size(); ++k)
      if (norms[k] > C) s[k] = C / norms[k];
  return s;
}

std::vector<double> krum_scores(const std::vector<std::vector<double>>& d2, int64_t f) {
  const size_t N = d2.size();
  std::vector<double> scores(N, 0);
  const int64_t nb = int64_t(N) - f - 2;
  for (size_t k = 0; k < N; ++k) {
    std::vector<double> row;
    for (size_t i = 0; i < N; ++i)
      if (i != k) row.push_back(d2[k][i]);
    std::sort(row.begin(), row.end());
    for (int64_t i = 0; i < nb && i < int64_t(row.size()); ++i) scores[k] += row[size_t(i)];
  }
  return scores;
}

std::vector<size_t> krum_selected(const std::vector<double>& scores, size_t keep) {
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  idx.resize(std::min(keep, idx.size()));
  std::sort(idx.begin(), idx.end());
  return idx;
}

void combine(const RuleConfig& c, const std::vector<const float*>& x, const std::vector<double>& s,
             const std::vector<double>& p, size_t len, const double* noise, double* out) {
  const size_t N = x.size();
  if (c.rule == "median" || c.rule == "trimmed-mean") {
    std::vector<double> col(N);
    const size_t trim = c.rule == "trimmed-mean" ? size_t(std::floor(c.trim_beta * double(N))) : 0;
    for (size_t i = 0; i < len; ++i) {
      for (size_t k = 0; k < N; ++k) col[k] = s[k] * double(x[k][i]);
      if (c.rule == "median") {
        const size_t h = N / 2;
        std::nth_element(col.begin(), col.begin() + long(h), col.end());
        double hi = col[h];
        if (N % 2 == 1) {
          out[i] = hi;
        } else {
          double lo = *std::max_element(col.begin(), col.begin() + long(h));
          out[i] = 0.5 * (lo + hi);
        }
      } else {
        std::sort(col.begin(), col.end());
        double sum = 0;
        for (size_t k = trim; k < N - trim; ++k) sum += col[k];
        out[i] = sum / double(N - 2 * trim);
      }
    }
    return;
  }
  // Weighted sums: fedavg family, krum (one weight 1), multi-krum, DP (uniform).
  std::fill(out, out + len, 0.0);
  for (size_t k = 0; k < N; ++k) {
    const double a = p[k] * s[k];
    if (a == 0) continue;
    const float* xk = x[k];
    for (size_t i = 0; i < len; ++i) out[i] += a * double(xk[i]);
  }
  if (noise)
    for (size_t i = 0; i < len; ++i) out[i] += noise[i];
}

void server_step(const RuleConfig& c, float* w, const double* d, double* m, double* v, size_t len) {
  if (c.rule == "fedavgm") {
    for (size_t i = 0; i < len; ++i) {
      m[i] = c.momentum * m[i] + d[i];
      w[i] = float(double(w[i]) + c.server_lr * m[i]);
    }
    return;
  }
  if (c.adaptive()) {
    for (size_t i = 0; i < len; ++i) {
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * d[i];
      const double d2 = d[i] * d[i];
      if (c.rule == "fedadam") v[i] = c.beta2 * v[i] + (1 - c.beta2) * d2;
      else if (c.rule == "fedyogi") v[i] = v[i] - (1 - c.beta2) * d2 * double((v[i] - d2 > 0) - (v[i] - d2 < 0));
      else v[i] = v[i] + d2;
      w[i] = float(double(w[i]) + c.server_lr * m[i] / (std::sqrt(v[i]) + c.tau));
    }
    return;
  }
  for (size_t i = 0; i < len; ++i) w[i] = float(double(w[i]) + c.server_lr * d[i]);
}

double dp_epsilon(int64_t rounds, double z, double delta) {
  if (rounds <= 0 || z <= 0) return 0;
  double best = INFINITY;
  for (double a = 1.01; a <= 256; a *= 1.01) {
    double eps = double(rounds) * a / (2 * z * z) + std::log(1 / delta) / (a - 1);
    best = std::min(best, eps);
  }
  return best;
}

}  // namespace fedseg::fed
