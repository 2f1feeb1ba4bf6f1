// fedseg::fed rules: the arithmetic of aggregation, on plain arrays (no HDF5, no
// LibTorch), one tensor at a time, so that the aggregator streams a model tensor by
// tensor whatever the number of sites. d_k is site k's delta (update minus global),
// n_k its example count, w the global weights. All sums in double.
//
// Per-site preprocessing (optional, before any rule):
//   clipping   s_k = min(1, C / ||d_k||), C = clip_norm, or the clip_quantile-th
//              quantile of this round's norms (numpy's linear interpolation);
//   weights    p_k = n_k / Σ n (fedavg family), capped at max_weight (excess shared
//              out in proportion among the others, repeatedly) when max_weight > 0.
// Rules, giving the aggregated delta Δ:
//   fedavg, fedavgm, fedadam, fedyogi, fedadagrad   Δ = Σ p_k s_k d_k
//   median         coordinate-wise median of s_k d_k (even count: mean of the middle two)
//   trimmed-mean   coordinate-wise mean of s_k d_k without the floor(beta·N) largest and
//                  smallest values (beta < 0.5)
//   krum           Δ = s_j d_j of the site j with the lowest score, score_k = sum of the
//                  N - f - 2 smallest squared distances ||s_k d_k - s_i d_i||², i ≠ k
//   multi-krum     Δ = Σ p'_k s_k d_k over the m lowest scores (m default N - f),
//                  p' the example weights renormalised over them
//   central DP (dp_noise_multiplier z > 0, needs clip_norm C): Δ = (1/N) Σ s_k d_k +
//                  N(0, (z C / N)²) per coordinate: uniform weights, as DP-FedAvg.
// Server step, w' = w + ...:
//   fedavg, median, trimmed-mean, krum, multi-krum   server_lr · Δ (server_lr default 1)
//   fedavgm     v = momentum · v + Δ;  server_lr · v
//   fedadam     m = β1 m + (1-β1) Δ;  v = β2 v + (1-β2) Δ²;  server_lr · m / (√v + τ)
//   fedyogi     v = v - (1-β2) Δ² sign(v - Δ²);  the rest as fedadam
//   fedadagrad  v = v + Δ²;  the rest as fedadam
//   with m₀ = 0, v₀ = τ², defaults server_lr 1 (0.01 for the adaptive three),
//   momentum 0.9, β1 0.9, β2 0.99, τ 1e-3 (Reddi et al., "Adaptive Federated Optimization").
// Privacy accountant: the Gaussian mechanism's Rényi DP, α/(2 z²) per round with every
// site taking part (no subsampling amplification claimed), composed over rounds and
// converted with ε = min_α [T α / (2 z²) + log(1/δ) / (α - 1)] over α in (1, 256].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fedseg::fed {

struct RuleConfig {
  std::string rule = "fedavg";
  double server_lr = 1;
  double momentum = 0.9;
  double beta1 = 0.9, beta2 = 0.99, tau = 1e-3;
  double trim_beta = 0.1;
  int64_t f = 1;          // krum: sites assumed Byzantine
  int64_t m = 0;          // multi-krum: sites kept (0: N - f)
  double max_weight = 0;  // cap on one site's weight (0: none)
  double clip_norm = 0;
  double clip_quantile = 0;
  double dp_noise_multiplier = 0;
  double dp_delta = 1e-5;

  // From the plan's "aggregation" object; Error 78 naming `name` on an unknown
  // member or a value out of range.
  static RuleConfig from_json(const nlohmann::json& j, const std::string& name);
  nlohmann::json to_json() const;
  bool linear() const;          // a weighted sum: partial sums can be combined
  bool needs_norms_first() const;  // krum family, clipping, DP: a first pass over all tensors
  bool krum() const { return rule == "krum" || rule == "multi-krum"; }
  bool adaptive() const { return rule == "fedadam" || rule == "fedyogi" || rule == "fedadagrad"; }
  bool stateful() const { return rule == "fedavgm" || adaptive(); }
};

// p_k = n_k / Σ n, capped (see above). Error 65 when Σ n is 0.
std::vector<double> example_weights(const std::vector<double>& n, double max_weight);
// numpy.quantile(v, q) with linear interpolation.
double quantile(std::vector<double> v, double q);
// Clip factors from the norms (1 when clipping is off).
std::vector<double> clip_factors(const std::vector<double>& norms, const RuleConfig& c, double* threshold);
// Krum scores from the squared-distance matrix and the sites chosen (ascending score, ties by index).
std::vector<double> krum_scores(const std::vector<std::vector<double>>& d2, int64_t f);
std::vector<size_t> krum_selected(const std::vector<double>& scores, size_t keep);

// Δ for one tensor of `len` values. x[k] points at site k's delta, s[k] its clip
// factor, p[k] its weight (ignored by median/trimmed-mean/krum; for multi-krum the
// caller passes the renormalised weights of the selected sites, 0 for the others).
// `noise` (DP): len Gaussian draws of σ already, or null.
void combine(const RuleConfig& c, const std::vector<const float*>& x, const std::vector<double>& s,
             const std::vector<double>& p, size_t len, const double* noise, double* out);

// The server step for one tensor: w (in/out, float32) from Δ; m, v the rule's state
// (len values each, used by the stateful rules).
void server_step(const RuleConfig& c, float* w, const double* delta, double* m, double* v, size_t len);

double dp_epsilon(int64_t rounds, double noise_multiplier, double delta);

}  // namespace fedseg::fed
