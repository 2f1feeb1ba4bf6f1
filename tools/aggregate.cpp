// fedseg-aggregate: verifies a round's packages and combines them into the next
// global model (DESIGN.md §4, §5), with a signed report, a ledger entry and LATEST.
#include <sodium.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <variant>

#include "core/atomic_file.h"
#include "core/buffer.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/tool.h"
#include "crypto/age.h"
#include "fed/exchange.h"
#include "fed/ledger.h"
#include "fed/plan.h"
#include "fed/published.h"
#include "fed/rules.h"
#include "h5/tensor_file.h"
#include "package/package.h"

namespace fedseg::tools {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string exchange, key, state, password_file, password_env, from, out;
  std::vector<std::string> packages, combine;
  int64_t round = -1, now = -1;
  bool partial = false, verify_ledger = false, keep = false;
};

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One accepted input: a site's update (or, when combining, a partial sum).
struct Input {
  std::string site, package, plain, nonce;
  std::string h5path;  // the decrypted update on disk, or "" when it is `image`
  double examples = 0;
  std::unique_ptr<RawVector<uint8_t>> image;  // the decrypted update in memory (before `file`: outlives it)
  h5::File file;               // closed once a streamed update was added in
  nlohmann::json train = nullptr;  // what the site's fedseg-train recorded, or null
  double norm2 = 0, clip = 1;  // clip: the update-major pass's clip factor
  std::vector<float> sketch;  // every `stride`-th value of the delta, for the cosine estimate
};

// What the site's fedseg-train recorded in its update (absent from updates made by
// other tools): the report's "train" member, or null.
nlohmann::json train_record(const h5::File& f) {
  nlohmann::json train = nlohmann::json::object();
  for (const char* name : {"epoch_loss", "train_dice", "train_dice_first_epoch"})
    if (f.has_attr("/", name)) {
      const h5::Attr v = f.attr("/", name);
      if (const auto* vec = std::get_if<std::vector<double>>(&v)) train[name] = *vec;
      else if (const auto* x = std::get_if<double>(&v)) train[name] = std::vector<double>{*x};
    }
  if (f.has_attr("/", "epochs")) train["epochs"] = f.attr_int("/", "epochs");
  return train.empty() ? nlohmann::json(nullptr) : train;
}

struct Rejected {
  std::string site, package, cls, reason;
};

// The global model's parameter names and shapes.
std::vector<h5::TensorInfo> params_of(const h5::File& g) {
  std::vector<h5::TensorInfo> v = g.tensors("params");
  if (v.empty()) throw Error(kExitDataErr, "no parameters in", g.path(), "not a model file");
  return v;
}

// Checks that a file's tensors under `group` are exactly the model's; "" or why not.
std::string tensors_mismatch(const h5::File& f, const std::string& group, const std::vector<h5::TensorInfo>& params) {
  std::vector<h5::TensorInfo> t = f.exists(group) ? f.tensors(group) : std::vector<h5::TensorInfo>{};
  std::map<std::string, const h5::TensorInfo*> have;
  for (const auto& ti : t) have[ti.name.substr(group.size() + 1)] = &ti;
  for (const auto& p : params) {
    const std::string n = p.name.substr(7);  // "params/"
    auto it = have.find(n);
    if (it == have.end()) return "no tensor '" + group + "/" + n + "'";
    if (it->second->shape != p.shape)
      return "'" + group + "/" + n + "' has shape " + h5::shape_str(it->second->shape) + ", the model " + h5::shape_str(p.shape);
    if (!it->second->dtype || !h5::dtype_is_float(*it->second->dtype)) return "'" + group + "/" + n + "' is not a float tensor";
    have.erase(it);
  }
  if (!have.empty()) return "'" + group + "/" + have.begin()->first + "' is not a tensor of the model";
  return {};
}

bool all_finite(const float* x, size_t n) {
  float acc = 0;
  for (size_t i = 0; i < n; ++i) acc += x[i] * 0.f;  // NaN or Inf make it NaN
  return acc == 0.f;
}

struct Context {
  const Options& o;
  const ToolContext& ctx;
  fed::Plan plan;
  fed::RuleConfig rule;
  crypto::MinisignSecretKey key;
  std::string state;
  int64_t R = 0;
};

// ---------------------------------------------------------------- the streaming pass

// Appends every `stride`-th value of x[0, len) to out, as float (the cosine sketches):
// one resize, not a push_back per value.
template <class T>
void append_strided(std::vector<float>& out, const T* x, size_t len, size_t stride) {
  const size_t at = out.size();
  out.resize(at + (len + stride - 1) / stride);
  float* o = out.data() + at;
  for (size_t i = 0; i < len; i += stride) *o++ = float(x[i]);
}

// Σ x_i² in float64 with four partial sums (no dependency chain from one value to
// the next), summed in a fixed order: the same result on any thread.
template <class T>
double sum_squares(const T* x, size_t len) {
  double s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= len; i += 4)
    for (size_t j = 0; j < 4; ++j) s[j] += double(x[i + j]) * double(x[i + j]);
  for (; i < len; ++i) s[0] += double(x[i]) * double(x[i]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

struct PassResult {
  std::vector<double> dot;   // Δ · d_k (exact from the Gram matrix, else from sketches)
  double delta_norm2 = 0;
  double clip_threshold = 0;
  std::vector<double> clip, weight;
  std::vector<double> krum_scores;
  std::vector<size_t> krum_selected;
  bool cosine_exact = false;
  size_t stride = 1;
};

// Where Δ goes, tensor after tensor, in both passes: DP noise added, Δ's norm and
// sketch taken, then written as a partial sum, or through the server step into the
// next global model (and the server state).
struct Emit {
  // threaded_: compress the new global's tensors on a worker thread too.
  Emit(const fed::RuleConfig& r_, const h5::File& global_, h5::File* out_global_, h5::File* out_partial_,
       const h5::File* state_in_, h5::File* state_out_, uint64_t dp_seed, size_t n_inputs, size_t largest, size_t stride_,
       bool threaded_)
      : r(r_), global(global_), out_global(out_global_), out_partial(out_partial_),
        threaded(threaded_ && out_global_), largest_(largest), state_in(state_in_),
        state_out(state_out_), noise_rng(dp_seed),
        sigma(r_.dp_noise_multiplier > 0 ? r_.dp_noise_multiplier * r_.clip_norm / double(n_inputs) : 0),
        m(r_.stateful() ? largest : 0), v(r_.adaptive() ? largest : 0), stride(stride_) {}

  // `preloaded`: the global's values of this tensor, read beforehand (the server step
  // then works on them in place), or null to read them here.
  void tensor(const h5::TensorInfo& p, double* delta, float* preloaded = nullptr) {
    const size_t len = h5::numel(p.shape);
    const std::string pname = p.name.substr(7);
    if (sigma > 0)
      for (size_t i = 0; i < len; ++i) {
        // Box-Muller from the round's seeded generator (reproducible on a rerun).
        double u1 = double(noise_rng() >> 11) * (1.0 / 9007199254740992.0);
        double u2 = double(noise_rng() >> 11) * (1.0 / 9007199254740992.0);
        delta[i] += sigma * std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(6.283185307179586 * u2);
      }
    append_strided(delta_sketch, delta, len, stride);
    delta_norm2 += sum_squares(delta, len);
    if (out_partial) {
      out_partial->write("sum/" + pname, h5::DType::f64, p.shape, delta, h5::DType::f64, {true, 1, {}});
      return;
    }
    if (!preloaded && w.empty()) {
      // The global's values read here, a tensor at a time (the largest's room, twice
      // when compressing on the worker: its tensor and the next one).
      w.resize(largest_);
      if (threaded) w_pending.resize(largest_);
    }
    float* wp = preloaded ? preloaded : w.data();
    if (!preloaded) global.read(p.name, h5::DType::f32, wp, len * 4);
    if (r.stateful()) {
      const bool have = state_in && state_in->exists("m/" + pname);
      if (have) {
        state_in->read("m/" + pname, h5::DType::f64, m.data(), len * 8);
        if (r.adaptive()) state_in->read("v/" + pname, h5::DType::f64, v.data(), len * 8);
      } else {
        std::fill(m.begin(), m.begin() + long(len), 0.0);
        if (r.adaptive()) std::fill(v.begin(), v.begin() + long(len), r.tau * r.tau);
      }
    }
    fed::server_step(r, wp, delta, m.data(), v.data(), len);
    if (threaded && (!pending.valid() || pending.wait_for(std::chrono::seconds(0)) == std::future_status::ready)) {
      // Shuffled and compressed on the worker, idle now, while the next tensor is
      // worked out here.
      flush();
      if (!preloaded) {
        std::swap(w, w_pending);
        wp = w_pending.data();
      }
      pending_name = p.name;
      pending = std::async(std::launch::async, [this, wp, shape = p.shape] {
        h5::encode(h5::DType::f32, shape, wp, {true, 1, {}}, encoded);
      });
    } else if (threaded) {
      // The worker is busy: compressed here; written after the worker's (file order
      // is tensor order).
      h5::encode(h5::DType::f32, p.shape, wp, {true, 1, {}}, encoded_here);
      flush();
      out_global->write(p.name, encoded_here);
    } else {
      out_global->write(p.name, h5::DType::f32, p.shape, wp, h5::DType::f32, {true, 1, {}});
    }
    if (r.stateful() && state_out) {
      state_out->write("m/" + pname, h5::DType::f64, p.shape, m.data(), h5::DType::f64, {false, 0, {}});
      if (r.adaptive()) state_out->write("v/" + pname, h5::DType::f64, p.shape, v.data(), h5::DType::f64, {false, 0, {}});
    }
  }

  // Writes the tensor being compressed, if any: after the last tensor, and before
  // anything else reads or writes the files.
  void flush() {
    if (!pending.valid()) return;
    pending.get();
    out_global->write(pending_name, encoded);
  }
  ~Emit() {
    if (pending.valid()) pending.wait();  // an error unwinding: the worker still reads its tensor
  }

  const fed::RuleConfig& r;
  const h5::File& global;
  h5::File *out_global, *out_partial;
  bool threaded;
  size_t largest_;
  RawVector<float> w_pending;  // only without preloaded global values
  std::string pending_name;
  h5::EncodedTensor encoded, encoded_here;
  std::future<void> pending;
  const h5::File* state_in;
  h5::File* state_out;
  std::mt19937_64 noise_rng;
  double sigma;
  RawVector<float> w;
  std::vector<double> m, v;
  size_t stride;
  std::vector<float> delta_sketch;
  double delta_norm2 = 0;
};

// Site k's Δ·d_k from the sketches (the cosine estimate; exact at stride 1).
void sketch_dots(const std::vector<Input>& in, const std::vector<float>& delta_sketch, PassResult& res) {
  for (size_t k = 0; k < in.size(); ++k) {
    double d = 0;
    for (size_t i = 0; i < in[k].sketch.size(); ++i) d += double(in[k].sketch[i]) * delta_sketch[i];
    res.dot[k] = d;
  }
  res.cosine_exact = res.stride == 1;
}

// Aggregates `in` (all finite so far) into out_global (and the server state into
// out_state). Returns false with `bad` set when an input holds a non-finite value
// (the caller rejects it and runs again).
bool aggregate_pass(Context& c, const h5::File& global, const std::vector<h5::TensorInfo>& params,
                    std::vector<Input>& in, const std::string& group, h5::File* out_global, h5::File* out_partial,
                    const h5::File* state_in, h5::File* state_out, uint64_t dp_seed, PassResult& res, size_t& bad,
                    Progress* progress) {
  const fed::RuleConfig& r = c.rule;
  const size_t N = in.size();
  uint64_t total = 0, largest = 0;
  for (const auto& p : params) {
    total += h5::numel(p.shape);
    largest = std::max<uint64_t>(largest, h5::numel(p.shape));
  }
  res.stride = std::max<uint64_t>(1, (total * N) / (uint64_t(16) << 20) + 1);  // ≤ 16 M sketch values in all
  for (auto& x : in) {
    x.norm2 = 0;
    x.sketch.clear();
  }
  const bool per_site = r.rule == "median" || r.rule == "trimmed-mean";  // needs all N at once
  std::vector<std::vector<float>> bufs(per_site || r.krum() ? N : 1, std::vector<float>(largest));
  std::vector<double> delta(largest), dbuf(group == "sum" ? largest : 0);

  // First pass when clip factors or Krum distances need whole-model norms.
  std::vector<std::vector<double>> gram;
  res.clip.assign(N, 1.0);
  const bool combining = group == "sum";
  if (r.needs_norms_first() && !combining) {
    gram.assign(N, std::vector<double>(N, 0));
    for (const auto& p : params) {
      const size_t len = h5::numel(p.shape);
      const std::string name = group + "/" + p.name.substr(7);
      for (size_t k = 0; k < N; ++k) {
        float* b = bufs[r.krum() ? k : 0].data();
        in[k].file.read(name, h5::DType::f32, b, len * 4);
        if (!all_finite(b, len)) {
          bad = k;
          return false;
        }
        double s = 0;
        for (size_t i = 0; i < len; ++i) s += double(b[i]) * b[i];
        gram[k][k] += s;
        if (r.krum())
          for (size_t j = 0; j < k; ++j) {
            const float* a = bufs[j].data();
            double d = 0;
            for (size_t i = 0; i < len; ++i) d += double(a[i]) * b[i];
            gram[k][j] += d;
            gram[j][k] += d;
          }
      }
      if (progress) progress->add(len * N);
    }
    std::vector<double> norms(N);
    for (size_t k = 0; k < N; ++k) norms[k] = std::sqrt(gram[k][k]);
    res.clip = fed::clip_factors(norms, r, &res.clip_threshold);
  }

  // Weights.
  std::vector<double> ex(N);
  for (size_t k = 0; k < N; ++k) ex[k] = in[k].examples;
  if (out_partial) {
    res.weight = ex;  // raw example counts: the combiner divides by the total
  } else if (combining) {
    double tw = 0;  // partial sums already carry their example counts: Δ = Σ S_i / Σ T_i
    for (double e : ex) tw += e;
    res.weight.assign(N, 1.0 / tw);
  } else if (r.dp_noise_multiplier > 0) {
    res.weight.assign(N, 1.0 / double(N));
  } else if (r.krum()) {
    const int64_t need = 2 * r.f + 3;
    if (int64_t(N) < need)
      throw Error(kExitTempFail, r.rule + " needs at least 2f+3 = " + std::to_string(need) + " valid updates", {},
                  std::to_string(N) + " are here (f = " + std::to_string(r.f) + ")");
    std::vector<std::vector<double>> d2(N, std::vector<double>(N, 0));
    for (size_t i = 0; i < N; ++i)
      for (size_t j = 0; j < N; ++j)
        d2[i][j] = res.clip[i] * res.clip[i] * gram[i][i] + res.clip[j] * res.clip[j] * gram[j][j] -
                   2 * res.clip[i] * res.clip[j] * gram[i][j];
    res.krum_scores = fed::krum_scores(d2, r.f);
    const size_t keep = r.rule == "krum" ? 1 : size_t(r.m > 0 ? r.m : int64_t(N) - r.f);
    res.krum_selected = fed::krum_selected(res.krum_scores, keep);
    std::vector<double> sel(N, 0.0), w_all = fed::example_weights(ex, 0);
    double s = 0;
    for (size_t k : res.krum_selected) s += (r.rule == "krum" ? 1.0 : w_all[k]);
    for (size_t k : res.krum_selected) sel[k] = (r.rule == "krum" ? 1.0 : w_all[k]) / s;
    res.weight = sel;
  } else {
    res.weight = fed::example_weights(ex, r.max_weight);
  }

  Emit emit(r, global, out_global, out_partial, state_in, state_out, dp_seed, N, largest, res.stride,
            c.ctx.threads() > 1);
  res.dot.assign(N, 0);
  for (const auto& p : params) {
    const size_t len = h5::numel(p.shape);
    const std::string name = group + "/" + p.name.substr(7);
    if (per_site) {
      std::vector<const float*> x(N);
      for (size_t k = 0; k < N; ++k) {
        in[k].file.read(name, h5::DType::f32, bufs[k].data(), len * 4);
        if (!all_finite(bufs[k].data(), len)) {
          bad = k;
          return false;
        }
        x[k] = bufs[k].data();
      }
      fed::combine(r, x, res.clip, res.weight, len, nullptr, delta.data());
      for (size_t k = 0; k < N; ++k) {
        double s = 0, d = 0;
        for (size_t i = 0; i < len; ++i) {
          s += double(x[k][i]) * x[k][i];
          d += double(x[k][i]) * delta[i];
        }
        in[k].norm2 += s;
        res.dot[k] += d;
      }
      res.cosine_exact = true;
    } else {
      // Weighted sums, one input at a time: memory flat in N.
      std::fill(delta.begin(), delta.begin() + long(len), 0.0);
      for (size_t k = 0; k < N && combining; ++k) {  // partial sums: float64 as stored
        in[k].file.read(name, h5::DType::f64, dbuf.data(), len * 8);
        double s = 0;
        for (size_t i = 0; i < len; ++i) {
          if (!std::isfinite(dbuf[i])) {
            bad = k;
            return false;
          }
          s += dbuf[i] * dbuf[i];
          delta[i] += res.weight[k] * dbuf[i];
        }
        in[k].norm2 += s;
        append_strided(in[k].sketch, dbuf.data(), len, res.stride);
      }
      for (size_t k = 0; k < N && !combining; ++k) {
        float* b = bufs[r.krum() ? k : 0].data();
        in[k].file.read(name, h5::DType::f32, b, len * 4);
        if (!all_finite(b, len)) {
          bad = k;
          return false;
        }
        const double a = res.weight[k] * res.clip[k];
        double s = 0;
        for (size_t i = 0; i < len; ++i) {
          s += double(b[i]) * b[i];
          if (a != 0) delta[i] += a * double(b[i]);
        }
        in[k].norm2 += s;
        append_strided(in[k].sketch, b, len, res.stride);
        if (progress) progress->add(len);
      }
    }
    emit.tensor(p, delta.data());
  }
  if (!res.cosine_exact) {
    if (r.krum() && !gram.empty()) {  // exact: Δ·d_k = Σ_j a_j G_kj
      for (size_t k = 0; k < N; ++k) {
        double d = 0;
        for (size_t j = 0; j < N; ++j) d += res.weight[j] * res.clip[j] * gram[k][j];
        res.dot[k] = d;
      }
      res.cosine_exact = true;
    } else {
      sketch_dots(in, emit.delta_sketch, res);
    }
  }
  emit.flush();
  res.delta_norm2 = emit.delta_norm2;
  return true;
}

// ---------------------------------------------------------------- verifying ahead

// Runs check(site_hint, path) on the packages on `workers` threads of their own, at
// most `workers` packages beyond the one the caller of next() has: the next packages
// are verified and decrypted (their hashes on both cores) while the caller adds the
// last one in. Outcomes come out in the packages' order. With no worker (--threads 1)
// next() checks the package itself.
class Verifier {
 public:
  struct Outcome {
    std::string site_hint, path;
    std::optional<Input> input;  // accepted so far, or why not:
    std::string cls, why;
    bool classed = false;  // a package::PackageError (cls is its failure class)
  };
  using Check = std::function<Input(const std::string&, const std::string&)>;

  Verifier(std::vector<std::pair<std::string, std::string>> packages, Check check, size_t workers)
      : packages_(std::move(packages)), check_(std::move(check)), ahead_(workers), ready_(packages_.size()) {
    for (size_t k = 0; k < std::min(workers, packages_.size()); ++k) threads_.emplace_back([this] { loop(); });
  }
  ~Verifier() {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // The next package's outcome, in order; false after the last. Rethrows an error
  // that is not the package's fault (I/O, a full disk, a bad identity) when its
  // package's turn comes.
  bool next(Outcome& out) {
    if (next_ == packages_.size()) return false;
    if (threads_.empty()) {
      out = run_one(next_++);
      return true;
    }
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return ready_[next_].has_value() || (error_ && error_at_ == next_); });
    if (!ready_[next_]) std::rethrow_exception(error_);
    out = std::move(*ready_[next_]);
    ready_[next_].reset();
    ++next_;
    cv_.notify_all();
    return true;
  }
  // Seconds spent verifying (on the threads: overlapping the caller's work).
  double busy_seconds() {
    std::lock_guard<std::mutex> l(m_);
    return busy_;
  }

 private:
  Outcome run_one(size_t i) {
    auto t = Clock::now();
    Outcome out;
    out.site_hint = packages_[i].first;
    out.path = packages_[i].second;
    try {
      out.input = check_(out.site_hint, out.path);
    } catch (const package::PackageError& e) {
      out.cls = e.class_name();
      out.why = e.why();
      out.classed = true;
    } catch (const Error& e) {
      if (e.code() != kExitDataErr && e.code() != kExitNoInput) throw;
      out.cls = e.code() == kExitNoInput ? "missing" : "inner";
      out.why = e.message();
    }
    std::lock_guard<std::mutex> l(m_);
    busy_ += since(t);
    return out;
  }
  void loop() {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return stop_ || error_ || started_ == packages_.size() || started_ < next_ + ahead_; });
        if (stop_ || error_ || started_ == packages_.size()) return;
        i = started_++;
      }
      try {
        Outcome o = run_one(i);
        std::lock_guard<std::mutex> l(m_);
        ready_[i] = std::move(o);
      } catch (...) {
        std::lock_guard<std::mutex> l(m_);
        if (!error_ || i < error_at_) {
          error_ = std::current_exception();
          error_at_ = i;
        }
      }
      cv_.notify_all();
    }
  }

  std::vector<std::pair<std::string, std::string>> packages_;
  Check check_;
  size_t ahead_;
  std::vector<std::optional<Outcome>> ready_;  // by package index, until next() takes it
  size_t next_ = 0, started_ = 0;
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::exception_ptr error_;
  size_t error_at_ = 0;
  double busy_ = 0;
};

// ---------------------------------------------------------------- the update-major pass

// Faults in the pages of [p, p + bytes) by writing one byte of each (the kernel zeroes a
// fresh page anyway: no need to write all of it again).
void touch_pages(void* p, size_t bytes) {
  auto* b = static_cast<volatile unsigned char*>(p);
  for (size_t i = 0; i < bytes; i += 4096) b[i] = 0;
}

// The fedavg family without a weight cap or a clip quantile (DP included), update
// after update, so that it overlaps the verification of the next package: each update
// is found finite as a whole (by its norm: float32 values squared cannot overflow a
// float64 sum), scaled by its own clip factor and added into the whole-model sum
// Σ a_k d_k (float64), a_k = n_k s_k, or s_k under DP. finish() divides by Σ n_k (N
// under DP; nothing for a partial sum). Memory: the sum, and one update's tensors when
// they are compressed (read into a buffer; plain ones are used where they lie in the
// decrypted image), whatever N.
class Stream {
 public:
  Stream(const fed::RuleConfig& r, const std::vector<h5::TensorInfo>& params, size_t stride)
      : r_(r), params_(params), stride_(stride) {
    size_t total = 0;
    for (const auto& p : params_) {
      offset_.push_back(total);
      total += h5::numel(p.shape);
    }
    sum_.resize(total);  // written by the first add()
  }

  // Touches the sum's pages on a worker (its page faults off the critical path, while
  // the first package is verified); add() waits for it.
  void prefault() {
    faulted_ = std::async(std::launch::async, [this] { touch_pages(sum_.data(), sum_.size() * sizeof(double)); });
  }

  // Adds `in` (read from in.file, then closed): false, with nothing added, when it
  // holds a non-finite value. Tensors stored plainly in a decrypted image are used in
  // place; the others are read (decompressed, converted) into one buffer.
  bool add(Input& in) {
    if (faulted_.valid()) faulted_.get();
    const size_t T = params_.size();
    std::vector<const float*> src(T);
    for (size_t t = 0; t < T; ++t) {
      const std::string name = "delta/" + params_[t].name.substr(7);
      src[t] = in.file.f32_in_image(name);
      if (src[t]) continue;
      if (buf_.size() != sum_.size()) buf_.resize(sum_.size());
      const size_t len = h5::numel(params_[t].shape);
      in.file.read(name, h5::DType::f32, buf_.data() + offset_[t], len * 4);
      src[t] = buf_.data() + offset_[t];
    }
    in.norm2 = 0;
    for (size_t t = 0; t < T; ++t) in.norm2 += sum_squares(src[t], h5::numel(params_[t].shape));
    if (!std::isfinite(in.norm2)) {
      in.file.close();
      return false;
    }
    in.clip = fed::clip_factors({std::sqrt(in.norm2)}, r_, nullptr)[0];
    in.sketch.clear();
    const double a = (r_.dp_noise_multiplier > 0 ? 1.0 : in.examples) * in.clip;
    for (size_t t = 0; t < T; ++t) {
      const float* b = src[t];
      const size_t len = h5::numel(params_[t].shape);
      append_strided(in.sketch, b, len, stride_);
      double* acc = sum_.data() + offset_[t];
      if (first_)
        for (size_t k = 0; k < len; ++k) acc[k] = a * double(b[k]);
      else
        for (size_t k = 0; k < len; ++k) acc[k] += a * double(b[k]);
    }
    first_ = false;
    in.file.close();
    return true;
  }

  // Reads the global model's tensors now (while the first package is verified) rather
  // than in finish().
  void preload(const h5::File& global) {
    global_.resize(sum_.size());
    for (size_t t = 0; t < params_.size(); ++t)
      global.read(params_[t].name, h5::DType::f32, global_.data() + offset_[t], h5::numel(params_[t].shape) * 4);
  }

  // Δ of every tensor, in turn, to emit (the sum divided in place).
  void finish(double divisor, Emit& emit) {
    size_t sketch = 0;
    for (const auto& p : params_) sketch += (h5::numel(p.shape) + stride_ - 1) / stride_;
    emit.delta_sketch.reserve(emit.delta_sketch.size() + sketch);
    for (size_t t = 0; t < params_.size(); ++t) {
      double* d = sum_.data() + offset_[t];
      const size_t len = h5::numel(params_[t].shape);
      if (divisor != 1)
        for (size_t k = 0; k < len; ++k) d[k] /= divisor;
      emit.tensor(params_[t], d, global_.empty() ? nullptr : global_.data() + offset_[t]);
    }
  }

 private:
  const fed::RuleConfig& r_;
  const std::vector<h5::TensorInfo>& params_;
  size_t stride_;
  std::vector<size_t> offset_;
  RawVector<double> sum_;
  RawVector<float> buf_, global_;
  bool first_ = true;
  std::future<void> faulted_;
};

// Plaintext buffers handed from one package to the next: after the first few (one
// per package in flight), no allocation and no page faults per package.
class BufferPool {
 public:
  std::unique_ptr<RawVector<uint8_t>> take() {
    std::lock_guard<std::mutex> l(m_);
    if (free_.empty()) return std::make_unique<RawVector<uint8_t>>();
    std::unique_ptr<RawVector<uint8_t>> b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void give(std::unique_ptr<RawVector<uint8_t>> b) {
    if (!b) return;
    std::lock_guard<std::mutex> l(m_);
    free_.push_back(std::move(b));
  }
  // Adds `count` buffers of `bytes`, their pages touched (faulted in) here.
  void prefill(size_t count, size_t bytes) {
    for (size_t i = 0; i < count; ++i) {
      auto b = std::make_unique<RawVector<uint8_t>>(bytes);
      touch_pages(b->data(), bytes);
      b->clear();  // the capacity and its pages stay
      give(std::move(b));
    }
  }

 private:
  std::mutex m_;
  std::vector<std::unique_ptr<RawVector<uint8_t>>> free_;
};

// ---------------------------------------------------------------- round steps


std::string state_dir_default(const std::string& key, const std::string& fed) {
  return (is_directory(key) ? key : dirname_of(key)) + "/state/" + fed;
}

int verify_ledger(const Options& o, const ToolContext& ctx) {
  crypto::MinisignPublicKey pub = fed::load_signing_key(o.key, {o.password_file, o.password_env}).public_key();
  fed::Plan plan = fed::Plan::load(fed::federation_path(o.exchange), pub);
  const std::string state = o.state.empty() ? state_dir_default(o.key, plan.federation()) : o.state;
  fed::Ledger l = fed::Ledger::load(state + "/ledger.jsonl");
  json checked = json::array();
  for (const auto& e : l.entries()) {
    const int64_t r = e.doc["round"].get<int64_t>();
    const std::string g = fed::global_path(o.exchange, r + 1);
    json c{{"index", e.doc["index"]}, {"round", r}, {"sha256", e.sha256}};
    if (path_exists(g)) {
      package::Fields f = fed::verify_published(pub, g, {plan.federation(), r + 1, "global"});
      if (f.plain != e.doc.value("global_sha256", ""))
        throw Error(kExitDataErr, "ledger does not match the exchange", g,
                    "its sha256 is " + f.plain + ", ledger entry " + std::to_string(e.doc["index"].get<int64_t>()) + " says " +
                        e.doc.value("global_sha256", ""));
      c["global"] = "verified";
    } else {
      c["global"] = "absent";
    }
    const std::string rep = fed::report_path(o.exchange, r);
    if (path_exists(rep)) {
      fed::verify_published(pub, rep, {plan.federation(), r, "report"});
      if (sha256_file(rep) != e.doc.value("report_sha256", ""))
        throw Error(kExitDataErr, "ledger does not match the exchange", rep, "the report's sha256 differs from the ledger's");
      json report = json::parse(read_file(rep, 64 << 20), nullptr, false);
      const json want = report.is_object() ? report.value("packages", json::array()) : json::array();
      if (want != e.doc.value("accepted", json::array()))
        throw Error(kExitDataErr, "ledger does not match the exchange", rep,
                    "the accepted packages of ledger entry " + std::to_string(e.doc["index"].get<int64_t>()) +
                        " differ from the signed report's");
      c["report"] = "verified";
    }
    checked.push_back(c);
  }
  if (ctx.json()) ctx.emit_json({{"ledger", l.path()}, {"entries", checked}, {"status", "intact"}});
  else std::cout << l.path() << ": " << l.entries().size() << " entries, chain intact\n";
  return kExitOk;
}

// Removes the decrypted updates of a round (and the folder).
void remove_work(const std::string& work) {
  if (DIR* d = ::opendir(work.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") std::remove((work + "/" + n).c_str());
    }
    ::closedir(d);
  }
  ::rmdir(work.c_str());
}

// mean, median and (population) std of the finite values; count of them.
json describe(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return {{"n", 0}, {"mean", nullptr}, {"median", nullptr}, {"std", nullptr}};
  double m = 0;
  for (double x : v) m += x;
  m /= double(v.size());
  double s2 = 0;
  for (double x : v) s2 += (x - m) * (x - m);
  return {{"n", v.size()}, {"mean", m}, {"median", fed::quantile(v, 0.5)}, {"std", std::sqrt(s2 / double(v.size()))}};
}

// The sites' evaluations of round R's global model (rounds/R/metrics/<site>.age, made
// by fedseg-eval -o M.h5 and fedseg-pack): each verified like an update (signature,
// fields, base = this global model) and decrypted into the work folder; then pooled
// case by case, so the federation-wide mean is the case-weighted mean of the sites'.
// Metrics never hold up a round: missing or rejected ones are only listed.
json combine_metrics(Context& c, const std::string& base, const std::vector<crypto::AgeIdentity>& ids,
                     const std::string& work) {
  const int64_t R = c.R;
  static const char* kMetrics[] = {"dice", "hd95", "sensitivity", "specificity", "volume_pred_ml", "volume_ref_ml"};
  json sites = json::array(), rejected = json::array(), missing = json::array();
  std::map<std::string, std::vector<double>> pooled;  // "<metric>/<region>" -> cases
  std::string region_order, hd95_convention;
  int64_t total_cases = 0;
  for (const auto& s : c.plan.quorum.expected) {
    const std::string p = fed::metrics_path(c.o.exchange, R, s);
    if (!path_exists(p) || !path_exists(p + ".minisig")) {
      missing.push_back(s);
      continue;
    }
    try {
      package::Expect ex;
      ex.federation = c.plan.federation();
      ex.round = R;
      ex.site = s;
      ex.kind = "metrics";
      ex.base = base;
      fed::make_dirs(work);
      const std::string out = work + "/metrics-" + s + ".h5";
      package::verify_and_unpack(p, c.plan.roster, ids, ex, out, true, 1);
      h5::File f = h5::File::open(out, {"metrics", true});
      auto bad = [&](const std::string& why) { return package::PackageError(package::FailClass::inner, p, why); };
      if (f.attr_string("/", "site") != s) throw bad("its site attribute is '" + f.attr_string("/", "site") + "'");
      const int64_t n = f.attr_int("/", "num_cases");
      const std::string order = f.attr_string("/", "region_order");
      std::string conv = "pooled";
      try {
        conv = json::parse(f.attr_string("/", "provenance")).value("hd95", "pooled");
      } catch (const json::exception&) {
      }
      if (n < 0 || n > 1000000) throw bad("num_cases " + std::to_string(n) + " out of range");
      if (!region_order.empty() && order != region_order) throw bad("region order " + order + ", the others " + region_order);
      if (!hd95_convention.empty() && conv != hd95_convention)
        throw bad("HD95 convention '" + conv + "', the others '" + hd95_convention + "'");
      json regions = json::parse(order);
      if (!regions.is_array() || regions.size() != 3) throw bad("region_order is not three names");
      std::map<std::string, std::vector<double>> mine;
      for (const char* m : kMetrics) {
        std::vector<double> v(size_t(n) * 3);
        if (n > 0) {
          h5::TensorInfo ti = f.info(std::string("cases/") + m);
          if (ti.shape != h5::Shape{uint64_t(n), 3}) throw bad(std::string("cases/") + m + " has shape " + h5::shape_str(ti.shape));
          f.read(std::string("cases/") + m, h5::DType::f64, v.data(), v.size() * 8);
        }
        for (size_t r = 0; r < 3; ++r)
          for (int64_t i = 0; i < n; ++i) mine[std::string(m) + "/" + regions[r].get<std::string>()].push_back(v[size_t(i) * 3 + r]);
      }
      region_order = order;
      hd95_convention = conv;
      json site{{"site", s}, {"num_cases", n}};
      for (const auto& [k, v] : mine) {
        const std::string metric = k.substr(0, k.find('/')), region = k.substr(k.find('/') + 1);
        site[metric][region] = describe(v)["mean"];
        auto& pv = pooled[k];
        pv.insert(pv.end(), v.begin(), v.end());
      }
      total_cases += n;
      sites.push_back(site);
      f.close();
      std::remove(out.c_str());
    } catch (const package::PackageError& e) {
      rejected.push_back({{"site", s}, {"package", p}, {"class", e.class_name()}, {"reason", e.why()}});
      log::warn("metrics " + p + " rejected (" + e.class_name() + "): " + e.why());
    } catch (const Error& e) {
      if (e.code() != kExitDataErr && e.code() != kExitNoInput) throw;
      rejected.push_back({{"site", s}, {"package", p}, {"class", "inner"}, {"reason", e.message()}});
      log::warn("metrics " + p + " rejected: " + e.message());
    }
  }
  json federation{{"num_cases", total_cases}, {"sites", sites.size()}};
  for (const auto& [k, v] : pooled) {
    const std::string metric = k.substr(0, k.find('/')), region = k.substr(k.find('/') + 1);
    federation[metric][region] = describe(v);
  }
  return {{"model", "rounds/" + std::to_string(R) + "/global.h5"},
          {"region_order", region_order.empty() ? json(nullptr) : json::parse(region_order)},
          {"hd95", hd95_convention.empty() ? json(nullptr) : json(hd95_convention)},
          {"federation", federation},
          {"sites", sites},
          {"rejected", rejected},
          {"missing", missing}};
}

// Finishes a round whose global model is already written (a rerun after a crash):
// ledger entry and LATEST from the signed files.
int finish_round(Context& c, const crypto::MinisignPublicKey& pub, fed::Ledger& ledger) {
  const int64_t R = c.R;
  const std::string g = fed::global_path(c.o.exchange, R + 1), rep = fed::report_path(c.o.exchange, R);
  package::Fields gf = fed::verify_published(pub, g, {c.plan.federation(), R + 1, "global"});
  fed::verify_published(pub, rep, {c.plan.federation(), R, "report"});
  json report = json::parse(read_file(rep, 64 << 20));
  if (!ledger.for_round(R)) {
    json acc = json::array();
    for (const auto& a : report["packages"]) acc.push_back(a);
    ledger.append({{"federation", c.plan.federation()}, {"round", R}, {"global", "rounds/" + std::to_string(R + 1) + "/global.h5"},
                   {"global_sha256", gf.plain}, {"report_sha256", sha256_file(rep)}, {"accepted", acc},
                   {"time", fed::utc_now_iso()}});
  }
  fed::write_latest(c.o.exchange, {c.plan.federation(), R + 1, "rounds/" + std::to_string(R + 1) + "/global.h5", gf.plain,
                                   fed::utc_now_iso()},
                    c.key);
  if (!c.o.keep) remove_work(c.state + "/round-" + std::to_string(R));
  log::info("round " + std::to_string(R) + " completed: rounds/" + std::to_string(R + 1) + "/global.h5 published");
  if (c.ctx.json())
    c.ctx.emit_json({{"federation", c.plan.federation()}, {"round", R}, {"status", "completed"}, {"global", g},
                     {"global_sha256", gf.plain}, {"report", rep}});
  return kExitOk;
}

// Rewrites LATEST from the ledger (its last round + 1, or 0) and that round's signed
// global model.
fed::Latest recover_latest(const Options& o, const crypto::MinisignPublicKey& pub, const std::string& fed_id,
                           const crypto::MinisignSecretKey& key) {
  const std::string state = o.state.empty() ? state_dir_default(o.key, fed_id) : o.state;
  fed::Ledger l = fed::Ledger::load(state + "/ledger.jsonl");
  const int64_t r = l.entries().empty() ? 0 : l.entries().back().doc["round"].get<int64_t>() + 1;
  package::Fields gf = fed::verify_published(pub, fed::global_path(o.exchange, r), {fed_id, r, "global"});
  fed::Latest latest{fed_id, r, "rounds/" + std::to_string(r) + "/global.h5", gf.plain, fed::utc_now_iso()};
  fed::write_latest(o.exchange, latest, key);
  log::warn("LATEST did not match its signature (an interrupted update): rewritten for round " + std::to_string(r));
  return latest;
}

int run(const Options& o, const ToolContext& ctx) {
  if (o.verify_ledger) return verify_ledger(o, ctx);
  if (o.partial && o.out.empty()) throw Error(kExitUsage, "--partial needs -o PARTIAL.h5");
  if (!o.partial && !o.out.empty()) throw Error(kExitUsage, "-o goes with --partial");
  if (o.partial && !o.combine.empty()) throw Error(kExitUsage, "--partial and --combine exclude each other");
  if (!o.combine.empty() && (!o.packages.empty() || !o.from.empty()))
    throw Error(kExitUsage, "--combine takes partial files, not packages");
  auto t0 = Clock::now();
  crypto::MinisignSecretKey key = fed::load_signing_key(o.key, {o.password_file, o.password_env});
  const crypto::MinisignPublicKey pub = key.public_key();
  Context c{o, ctx, fed::Plan::load(fed::federation_path(o.exchange), pub), {}, key, {}, 0};
  c.rule = fed::RuleConfig::from_json(c.plan.aggregation, fed::federation_path(o.exchange));
  const std::string fed_id = c.plan.federation();
  if ((o.partial || !o.combine.empty()) &&
      (!c.rule.linear() || c.rule.clip_quantile > 0 || c.rule.dp_noise_multiplier > 0 || c.rule.max_weight > 0))
    throw Error(kExitConfig, "partial sums do not combine under this rule", fed::federation_path(o.exchange),
                "--partial/--combine need the fedavg family without clip_quantile, dp_noise_multiplier or max_weight "
                "(they need every update at once)");
  fed::Latest latest;
  try {
    latest = fed::read_latest(o.exchange, pub, fed_id);
  } catch (const package::PackageError& e) {
    // LATEST and LATEST.minisig out of step: a run killed between their two renames.
    // The ledger and the signed global models say where the federation is.
    if (e.fail_class() != package::FailClass::signature) throw;
    latest = recover_latest(o, pub, fed_id, key);
    // The interrupted run is finished now; the next run takes the open round.
    if (ctx.json())
      ctx.emit_json({{"federation", fed_id}, {"round", latest.round - 1}, {"status", "completed"},
                     {"latest_round", latest.round}});
    return kExitOk;
  }
  c.R = o.round >= 0 ? o.round : latest.round;
  const int64_t R = c.R;
  if (R < latest.round) {
    log::info("round " + std::to_string(R) + " is already aggregated (LATEST is round " + std::to_string(latest.round) + ")");
    // A run killed after publishing LATEST but before removing the round's decrypted
    // updates leaves them: they go now.
    if (!o.keep && o.combine.empty())
      remove_work((o.state.empty() ? state_dir_default(o.key, fed_id) : o.state) + "/round-" + std::to_string(R));
    if (ctx.json()) ctx.emit_json({{"federation", fed_id}, {"round", R}, {"status", "done"}});
    return kExitOk;
  }
  if (R > latest.round)
    throw Error(kExitUsage, "round " + std::to_string(R) + " is not open", fed::latest_path(o.exchange),
                "LATEST is at round " + std::to_string(latest.round));
  c.state = o.state.empty() ? state_dir_default(o.key, fed_id) : o.state;
  fed::make_dirs(c.state);
  ::chmod(c.state.c_str(), 0700);
  fed::Ledger ledger = fed::Ledger::load(c.state + "/ledger.jsonl");

  // A crash after the next global model was published: finish the round.
  const std::string next = fed::global_path(o.exchange, R + 1);
  if (!o.partial && path_exists(next + ".minisig") && path_exists(fed::report_path(o.exchange, R) + ".minisig"))
    return finish_round(c, pub, ledger);

  // The global model's signed fields now; its bytes (100 MB and more) are hashed once
  // the verifiers have started on the packages, and opened only then. The verifiers
  // wait for it (global_ready) only for the checks that need its tensors.
  const std::string gpath = fed::global_path(o.exchange, R);
  const fed::PublishedSignature gsig = fed::open_published(pub, gpath, {fed_id, R, "global"});
  const package::Fields& gf = gsig.fields;
  if (gf.plain != latest.global_sha256)
    throw Error(kExitDataErr, "global model is not the one LATEST names", gpath,
                "sha256 " + gf.plain + ", LATEST says " + latest.global_sha256);
  h5::File global;
  std::vector<h5::TensorInfo> params;
  size_t largest = 0, total_params = 0;
  std::promise<void> global_promise;
  std::shared_future<void> global_ready = global_promise.get_future().share();
  bool global_open = false;
  auto open_global = [&] {
    fed::check_published(pub, gsig);
    global = h5::File::open(gpath, {"global", true});
    params = params_of(global);
    for (const auto& p : params) {
      largest = std::max<size_t>(largest, h5::numel(p.shape));
      total_params += h5::numel(p.shape);
    }
    global_open = true;
    global_promise.set_value();
  };
  // Verifiers still waiting when the run fails (the global model, or anything after
  // they started): released with an error that stops them.
  struct ReleaseWaiting {
    std::promise<void>& p;
    bool& done;
    ~ReleaseWaiting() {
      if (!done) p.set_exception(std::make_exception_ptr(Error(kExitSoftware, "stopped: the run failed")));
    }
  };

  bool passed = true;  // the round's deadline (set from the quorum below)
  std::vector<Input> inputs;
  std::vector<Rejected> rejected;
  std::vector<std::string> missing;
  json quorum;
  const std::string work = c.state + "/round-" + std::to_string(R);
  // Rejected packages are not valid updates: too few valid ones wait like missing sites.
  auto require_valid_quorum = [&]() {
    const int64_t ok = int64_t(inputs.size());
    if (!o.partial && ok < c.plan.quorum.min_sites && (!passed || c.plan.quorum.after_deadline == "wait"))
      throw Error(kExitTempFail, "round " + std::to_string(R) + " has " + std::to_string(ok) + " valid updates", {},
                  "fewer than " + std::to_string(c.plan.quorum.min_sites) + " (" + std::to_string(rejected.size()) +
                      " rejected); waiting");
    if (ok == 0)
      throw Error(kExitTempFail, "round " + std::to_string(R) + " has no valid update", {},
                  std::to_string(rejected.size()) + " rejected");
  };
  // The fedavg family without a weight cap or a clip quantile goes update after update
  // (Stream), overlapping the verification of the next package; the other rules need
  // every update at once and read them tensor after tensor once all are verified.
  const bool update_major = o.combine.empty() && c.rule.linear() && c.rule.max_weight == 0 && c.rule.clip_quantile == 0;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<h5::Output> out_global, out_partial, out_state;
  PassResult res;
  uint64_t dp_seed = 0;
  if (c.rule.dp_noise_multiplier > 0) {
    const std::string seed_path = c.state + "/round-" + std::to_string(R) + ".dp-seed";
    if (!path_exists(seed_path)) {
      uint8_t b[8];
      randombytes_buf(b, sizeof b);
      write_file_atomic(seed_path, to_hex(b, sizeof b) + "\n", false, 0600);
    }
    dp_seed = std::stoull(read_file(seed_path, 64), nullptr, 16);
  }
  std::unique_ptr<h5::File> state_in;
  const std::string state_in_path = c.state + "/server-" + std::to_string(R) + ".h5";
  if (c.rule.stateful() && path_exists(state_in_path)) state_in = std::make_unique<h5::File>(h5::File::open(state_in_path, {"checkpoint", true}));
  else if (c.rule.stateful() && R > 0) log::warn("no server optimizer state " + state_in_path + ": starting it afresh");
  double verify_s = 0, agg_s = 0;
  if (o.combine.empty()) {
    // Which packages are here: explicit paths, or <dir>/<site>.age of the expected sites.
    std::vector<std::pair<std::string, std::string>> present;  // site (or ""), path
    if (!o.packages.empty()) {
      for (const auto& p : o.packages) present.push_back({"", p});
    } else {
      const std::string dir = o.from.empty() ? fed::round_dir(o.exchange, R) + "/updates" : o.from;
      for (const auto& s : c.plan.quorum.expected) {
        const std::string p = dir + "/" + s + ".age";
        if (path_exists(p + ".minisig") && path_exists(p)) present.push_back({s, p});  // signature last: complete
        else missing.push_back(s);
      }
    }
    // Quorum: all expected sites, or min_sites once the deadline has passed.
    const int64_t now = o.now >= 0 ? o.now : int64_t(std::time(nullptr));
    const int64_t deadline = gf.ts + c.plan.quorum.deadline_seconds;
    passed = now >= deadline;
    const int64_t min_sites = c.plan.quorum.min_sites;
    quorum = {{"expected", c.plan.quorum.expected}, {"min_sites", min_sites}, {"reported", int64_t(present.size())},
              {"missing", missing}, {"deadline", deadline}, {"deadline_passed", passed},
              {"after_deadline", c.plan.quorum.after_deadline}};
    auto missing_list = [&]() {
      std::string s;
      for (const auto& m : missing) s += (s.empty() ? "" : ", ") + m;
      return s;
    };
    if (!o.partial && !missing.empty()) {
      const std::string counts = std::to_string(present.size()) + " of " + std::to_string(c.plan.quorum.expected.size()) + " reported";
      if (!passed)
        throw Error(kExitTempFail, "round " + std::to_string(R) + " waits for " + missing_list(), {},
                    counts + ", deadline in " + human_duration(double(deadline - now)));
      if (int64_t(present.size()) < min_sites && c.plan.quorum.after_deadline == "wait")
        throw Error(kExitTempFail, "round " + std::to_string(R) + " waits for " + missing_list(), {},
                    counts + ", fewer than " + std::to_string(min_sites) + " after the deadline (policy: wait)");
      if (present.empty())
        throw Error(kExitTempFail, "round " + std::to_string(R) + " has no package", {}, "nothing to aggregate yet");
    }

    // Verify and decrypt the packages on two threads, ahead of the caller: into memory
    // for the fedavg family (unless --keep-updates), else into the private work folder.
    const bool in_memory = update_major && !o.keep;
    BufferPool pool;
    // Done with a decrypted update: its file closed, its buffer back in the pool or its
    // copy on disk removed (unless --keep-updates).
    auto release = [&](Input& in) {
      in.file.close();
      pool.give(std::move(in.image));
      if (!in.h5path.empty() && !o.keep) std::remove(in.h5path.c_str());
    };
    fed::make_dirs(work);
    ::chmod(work.c_str(), 0700);
    std::vector<crypto::AgeIdentity> ids =
        crypto::load_identity_file(is_directory(o.key) ? o.key + "/age.key" : dirname_of(o.key) + "/age.key");
    auto check = [&](const std::string& site_hint, const std::string& path) {
      package::Expect ex;
      ex.federation = fed_id;
      ex.round = R;
      ex.site = site_hint;
      ex.kind = "update";
      ex.base = gf.plain;
      ex.accepted = ledger.accepted();
      ex.nonces = ledger.nonces();
      const std::string label = site_hint.empty() ? basename_of(path) : site_hint;
      const int threads = ctx.threads() > 1 ? 0 : 1;
      Input in;
      in.h5path = in_memory ? "" : work + "/" + label + ".h5";
      try {
        package::Checked ck;
        if (in_memory) {
          in.image = pool.take();
          ck = package::verify_and_unpack(path, c.plan.roster, ids, ex, *in.image, threads);
        } else {
          ck = package::verify_and_unpack(path, c.plan.roster, ids, ex, in.h5path, true, threads);
        }
        std::shared_future<void>(global_ready).get();  // its tensors: the global model verified and open
        in.file = in_memory ? h5::File::open_image(in.image->data(), in.image->size(), path, {"update", true})
                            : h5::File::open(in.h5path, {"update", true});
        in.site = ck.fields.site;
        in.package = path;
        in.plain = ck.fields.plain;
        in.nonce = ck.fields.nonce;
        std::string why = tensors_mismatch(in.file, "delta", params);
        if (!why.empty()) throw package::PackageError(package::FailClass::inner, path, "tensors: " + why);
        in.examples = double(in.file.attr_int("/", "num_examples"));
        if (!(in.examples >= 1)) throw package::PackageError(package::FailClass::inner, path, "num_examples is below 1");
        in.train = train_record(in.file);
      } catch (...) {
        release(in);
        throw;
      }
      return in;
    };
    // Page faults on the other core while the first package is verified: a second
    // plaintext buffer as large as the largest package (the first one the verifier
    // makes itself); the sum's pages too, once the global model gives its size.
    std::future<void> prefilled;
    if (update_major && ctx.threads() > 1 && in_memory && present.size() > 1) {
      uint64_t largest_pkg = 0;
      struct stat st {};
      for (const auto& p : present)
        if (::stat(p.second.c_str(), &st) == 0) largest_pkg = std::max<uint64_t>(largest_pkg, uint64_t(st.st_size));
      if (largest_pkg <= (uint64_t(1) << 32)) prefilled = std::async(std::launch::async, [&pool, largest_pkg] { pool.prefill(1, largest_pkg); });
    }
    Progress progress(update_major ? "aggregating" : "verifying", present.size());
    std::set<std::string> seen;  // sites with an authentic package (even one rejected for its values)
    // Threads call HDF5 at the same time (the inner checks, the reads here): only with a
    // thread-safe HDF5.
    const bool parallel = ctx.threads() > 1 && h5::library_thread_safe();
    Verifier ver(present, check, parallel ? 2 : 0);
    ReleaseWaiting waiting{global_promise, global_open};
    open_global();  // hashed while the first packages are verified
    if (update_major) {
      res.stride = std::max<uint64_t>(1, (total_params * present.size()) / (uint64_t(16) << 20) + 1);  // ≤ 16 M sketch values
      stream = std::make_unique<Stream>(c.rule, params, res.stride);
      if (ctx.threads() > 1) stream->prefault();
      if (parallel && !o.partial) stream->preload(global);  // while the first is verified
    }
    Verifier::Outcome oc;
    while (ver.next(oc)) {
      progress.add();
      if (oc.input && !seen.insert(oc.input->site).second) {
        oc.why = "a second package of site '" + oc.input->site + "'";
        oc.cls = package::fail_class_name(package::FailClass::fields);
        oc.classed = true;
        release(*oc.input);
        oc.input.reset();
      }
      if (!oc.input) {
        rejected.push_back({oc.site_hint, oc.path, oc.cls, oc.why});
        log::warn("rejected " + oc.path + (oc.classed ? " (" + oc.cls + ")" : "") + ": " + oc.why);
        continue;
      }
      Input in = std::move(*oc.input);
      if (update_major) {
        auto t = Clock::now();
        const bool finite = stream->add(in);
        agg_s += since(t);
        release(in);  // the decrypted update is not needed any more
        if (!finite) {
          rejected.push_back({in.site, in.package, "values", "NaN or infinite values in the update"});
          log::warn("rejected " + in.package + " (values): NaN or infinite values");
          continue;
        }
      }
      inputs.push_back(std::move(in));
    }
    verify_s = ver.busy_seconds();
    std::sort(inputs.begin(), inputs.end(), [](const Input& a, const Input& b) { return a.site < b.site; });
    require_valid_quorum();
  } else {
    // Combining partial sums made with --partial (one per region or machine).
    open_global();
    for (const auto& p : o.combine) {
      Input in;
      in.package = p;
      in.h5path = p;
      in.file = h5::File::open(p, {"partial", true});
      auto bad = [&](const std::string& why) { return Error(kExitDataErr, "partial sum does not fit", p, why); };
      if (in.file.attr_string("/", "federation") != fed_id || in.file.attr_int("/", "round") != R ||
          in.file.attr_string("/", "base_sha256") != gf.plain)
        throw bad("made for another federation, round or global model");
      std::string why = tensors_mismatch(in.file, "sum", params);
      if (!why.empty()) throw bad(why);
      in.examples = in.file.attr_double("/", "total_weight");
      in.site = "partial:" + basename_of(p);
      inputs.push_back(std::move(in));
    }
  }

  // Aggregate.
  auto ta = Clock::now();
  auto open_outputs = [&] {
    if (o.partial) {
      out_partial = std::make_unique<h5::Output>(o.out, "partial", "fedseg-aggregate", json{{"round", R}}.dump(), ctx.force());
    } else {
      fed::make_dirs(fed::round_dir(o.exchange, R + 1));
      out_global = std::make_unique<h5::Output>(next, "global", "fedseg-aggregate", json{{"round", R}, {"rule", c.rule.to_json()}}.dump(), true);
      if (c.rule.stateful())
        out_state = std::make_unique<h5::Output>(c.state + "/server-" + std::to_string(R + 1) + ".h5", "checkpoint",
                                                 "fedseg-aggregate", "{}", true);
    }
  };
  if (update_major) {
    // Δ = the sum over Σ n_k (N under DP; a partial sum keeps the raw sum).
    open_outputs();
    const size_t n = inputs.size();
    std::vector<double> ex(n);
    for (size_t k = 0; k < n; ++k) ex[k] = inputs[k].examples;
    const bool dp = c.rule.dp_noise_multiplier > 0;
    res.weight = o.partial ? ex : dp ? std::vector<double>(n, 1.0 / double(n)) : fed::example_weights(ex, 0);
    res.clip.resize(n);
    for (size_t k = 0; k < n; ++k) res.clip[k] = inputs[k].clip;
    res.clip_threshold = c.rule.clip_norm;
    double total_examples = 0;
    for (double e : ex) total_examples += e;
    Emit emit(c.rule, global, out_global ? &out_global->file() : nullptr, out_partial ? &out_partial->file() : nullptr,
              state_in.get(), out_state ? &out_state->file() : nullptr, dp_seed, n, largest, res.stride,
              ctx.threads() > 1);
    stream->finish(o.partial ? 1.0 : dp ? double(n) : total_examples, emit);
    emit.flush();
    stream.reset();
    res.dot.assign(n, 0);
    sketch_dots(inputs, emit.delta_sketch, res);
    res.delta_norm2 = emit.delta_norm2;
    agg_s += since(ta);
  } else {
    // Tensor after tensor (again without an input found to hold non-finite values).
    for (;;) {
      open_outputs();
      size_t bad = 0;
      uint64_t work_total = 0;
      for (const auto& p : params) work_total += h5::numel(p.shape) * inputs.size();
      Progress progress("aggregating", work_total * (c.rule.needs_norms_first() ? 2 : 1));
      bool ok = aggregate_pass(c, global, params, inputs, o.combine.empty() ? "delta" : "sum",
                               out_global ? &out_global->file() : nullptr, out_partial ? &out_partial->file() : nullptr,
                               state_in.get(), out_state ? &out_state->file() : nullptr, dp_seed, res, bad, &progress);
      if (ok) break;
      if (!o.combine.empty()) throw Error(kExitDataErr, "partial sum holds NaN or infinite values", inputs[bad].package);
      rejected.push_back({inputs[bad].site, inputs[bad].package, "values", "NaN or infinite values in the update"});
      log::warn("rejected " + inputs[bad].package + " (values): NaN or infinite values");
      inputs.erase(inputs.begin() + long(bad));
      out_global.reset();
      out_partial.reset();
      out_state.reset();
      if (o.combine.empty()) require_valid_quorum();
    }
    agg_s = since(ta);
  }

  // Per-input statistics and flags.
  const size_t N = inputs.size();
  std::vector<double> norms(N);
  for (size_t k = 0; k < N; ++k) norms[k] = std::sqrt(inputs[k].norm2);
  const double med = fed::quantile(norms, 0.5);
  const double dn = std::sqrt(res.delta_norm2);
  json accepted = json::array(), ledger_acc = json::array(), parents = json::array();
  for (size_t k = 0; k < N; ++k) {
    const Input& in = inputs[k];
    const double cosv = norms[k] > 0 && dn > 0 ? res.dot[k] / (norms[k] * dn) : 0;
    json flags = json::array();
    if (N >= 3 && med > 0 && norms[k] > 3 * med) flags.push_back("norm " + std::to_string(norms[k] / med).substr(0, 5) + "x the median");
    if (N >= 3 && cosv < 0) flags.push_back("points away from the aggregate (cosine < 0)");
    if (!res.krum_selected.empty() && !std::binary_search(res.krum_selected.begin(), res.krum_selected.end(), k))
      flags.push_back("not selected by " + c.rule.rule);
    if (res.clip[k] < 1) flags.push_back("clipped");
    json a{{"site", in.site}, {"num_examples", in.examples}, {"weight", res.weight[k]}, {"norm", norms[k]},
           {"cosine", cosv}, {"clip_factor", res.clip[k]}, {"flags", flags}, {"plain", in.plain}, {"nonce", in.nonce},
           {"package", in.package}};
    if (!res.krum_scores.empty()) a["krum_score"] = res.krum_scores[k];
    a["train"] = in.train;
    accepted.push_back(a);
    if (o.combine.empty()) {
      ledger_acc.push_back({{"site", in.site}, {"plain", in.plain}, {"nonce", in.nonce}});
      parents.push_back(in.plain);
    } else {
      json sites = json::parse(in.file.attr_string("/", "sites"));
      for (const auto& s : sites) {
        ledger_acc.push_back({{"site", s["site"]}, {"plain", s["plain"]}, {"nonce", s["nonce"]}});
        parents.push_back(s["plain"]);
      }
    }
  }
  json rej = json::array();
  for (const auto& r : rejected) rej.push_back({{"site", r.site}, {"package", r.package}, {"class", r.cls}, {"reason", r.reason}});

  if (o.partial) {
    h5::File& f = out_partial->file();
    f.set_attr("/", "federation", fed_id);
    f.set_attr("/", "round", R);
    f.set_attr("/", "base_sha256", gf.plain);
    double tw = 0;
    for (const auto& in : inputs) tw += in.examples;
    f.set_attr("/", "total_weight", tw);
    f.set_attr("/", "sites", ledger_acc.dump());
    f.set_attr("/", "rule", c.rule.to_json().dump());
    out_partial->commit();
    const size_t n_inputs = inputs.size();
    inputs.clear();
    if (!o.keep) remove_work(work);
    log::info(o.out + ": partial sum of " + std::to_string(n_inputs) + " updates (total weight " + std::to_string(int64_t(tw)) + "), " +
              std::to_string(rejected.size()) + " rejected");
    if (ctx.json()) ctx.emit_json({{"partial", o.out}, {"round", R}, {"accepted", accepted}, {"rejected", rej}, {"total_weight", tw}});
    return rejected.empty() ? kExitOk : kExitDataErr;
  }

  // Publish: report, server state, global model, ledger, LATEST (last).
  json site_metrics = nullptr;
  if (o.combine.empty()) {
    std::vector<crypto::AgeIdentity> ids =
        crypto::load_identity_file(is_directory(o.key) ? o.key + "/age.key" : dirname_of(o.key) + "/age.key");
    site_metrics = combine_metrics(c, gf.plain, ids, work);
  }
  h5::File& g = out_global->file();
  g.set_attr("/", "federation", fed_id);
  g.set_attr("/", "round", R + 1);
  g.set_attr("/", "architecture", global.attr_string("/", "architecture"));
  g.set_attr("/", "parents", parents.dump());
  if (global.has_attr("/", "num_parameters")) g.set_attr("/", "num_parameters", global.attr_int("/", "num_parameters"));
  json privacy = nullptr;
  int64_t dp_rounds = 0;
  if (c.rule.dp_noise_multiplier > 0) {
    for (const auto& e : ledger.entries()) dp_rounds += e.doc.value("dp", false) ? 1 : 0;
    dp_rounds += 1;
    privacy = {{"mechanism", "Gaussian, central, every site each round (no subsampling amplification)"},
               {"noise_multiplier", c.rule.dp_noise_multiplier},
               {"clip_norm", c.rule.clip_norm},
               {"delta", c.rule.dp_delta},
               {"rounds", dp_rounds},
               {"epsilon", fed::dp_epsilon(dp_rounds, c.rule.dp_noise_multiplier, c.rule.dp_delta)}};
  }
  json report{{"fedseg_report", 1},
              {"federation", fed_id},
              {"round", R},
              {"global_in", {{"path", "rounds/" + std::to_string(R) + "/global.h5"}, {"sha256", gf.plain}}},
              {"global_out", "rounds/" + std::to_string(R + 1) + "/global.h5"},
              {"rule", c.rule.to_json()},
              {"quorum", quorum},
              {"accepted", accepted},
              {"rejected", rej},
              {"packages", ledger_acc},
              {"update_norm", dn},
              {"clip_threshold", res.clip_threshold},
              {"cosine", res.cosine_exact ? "exact" : "estimated on every " + std::to_string(res.stride) + "th coordinate"},
              {"privacy", privacy},
              {"metrics", site_metrics},
              {"timings", {{"verify_seconds", verify_s}, {"aggregate_seconds", agg_s}, {"total_seconds", since(t0)}}},
              {"created", fed::utc_now_iso()}};
  const std::string rep = fed::report_path(o.exchange, R);
  fed::publish_signed(key, rep, report.dump(2) + "\n", fed_id, R, "report");
  if (out_state) {
    out_state->file().set_attr("/", "rule", c.rule.to_json().dump());
    out_state->file().set_attr("/", "round", R + 1);
    out_state->commit();
  }
  // The new global model's hashes for its signature while it is synced to disk; renamed
  // into place only then, and signed after (a signature never names a missing file).
  out_global->close();
  auto synced = std::async(std::launch::async, [&] { out_global->sync(); });
  fed::PublishedHashes nh;
  try {
    nh = fed::hash_published(out_global->temp_path());
  } catch (...) {
    synced.wait();
    throw;
  }
  synced.get();
  out_global->commit();
  package::Fields nf = fed::sign_published(key, next, fed_id, R + 1, "global", true, nh);
  json entry{{"federation", fed_id}, {"round", R}, {"global", "rounds/" + std::to_string(R + 1) + "/global.h5"},
             {"global_sha256", nf.plain}, {"report_sha256", sha256_file(rep)}, {"accepted", ledger_acc},
             {"time", fed::utc_now_iso()}};
  if (c.rule.dp_noise_multiplier > 0) entry["dp"] = true;
  if (!ledger.for_round(R)) ledger.append(entry);
  fed::write_latest(o.exchange, {fed_id, R + 1, "rounds/" + std::to_string(R + 1) + "/global.h5", nf.plain, fed::utc_now_iso()}, key);
  inputs.clear();  // close the files
  if (!o.keep && o.combine.empty()) remove_work(work);
  log::info("round " + std::to_string(R) + ": " + std::to_string(N) + " accepted, " + std::to_string(rejected.size()) +
            " rejected, " + std::to_string(missing.size()) + " missing; rounds/" + std::to_string(R + 1) +
            "/global.h5 published (" + c.rule.rule + ")");
  if (ctx.json())
    ctx.emit_json({{"federation", fed_id}, {"round", R}, {"status", "aggregated"}, {"global", next},
                   {"global_sha256", nf.plain}, {"report", rep}, {"accepted", accepted}, {"rejected", rej},
                   {"missing", missing}, {"privacy", privacy}});
  return kExitOk;
}

}  // namespace

const ToolDef& aggregate() {
  static const ToolDef def{
      {
          "aggregate",
          "verify a round's packages and publish the next global model",
          "EXCHANGE_DIR --key AGG_ID_DIR [--round R] [--packages PKG.age... | --from DIR] [--partial -o PARTIAL.h5 | "
          "--combine PARTIAL.h5...] | --verify-ledger",
          "Run by the aggregator operator, by hand or from cron. For the open round R (LATEST's, or --round) it "
          "reads federation.json (its signature must verify with the key in AGG_ID_DIR), the rule and the quorum, "
          "and the packages rounds/R/updates/<site>.age of the expected sites (a package counts once its "
          ".age.minisig exists; --from DIR or --packages name others).\n\n"
          "Quorum: it aggregates when every expected site has reported, or when the deadline (the plan's "
          "deadline_seconds after round R's global model was signed) has passed and at least min_sites have. "
          "Otherwise it exits 75 with one line naming who is missing. Past the deadline with fewer than "
          "min_sites, the plan's after_deadline decides: wait (exit 75) or aggregate what is there.\n\n"
          "Each package goes through the fail-closed order of fedseg-verify (size, signature by the site's key in "
          "the roster, signed fields: federation, round R, site, kind update, base = round R's global sha256, not "
          "already in the ledger, nonce unseen; decryption into the private state folder; sha256; inner "
          "attributes); then its tensor names and shapes must be the global model's and all values finite. A "
          "package that fails is rejected with its class and reason and the others proceed. Round R's global "
          "model is checked the same way (signature by the aggregator key, fields, sha256 = LATEST's) while the "
          "first packages are verified; a bad one stops the run (exit 65, naming it) before anything is "
          "written.\n\n"
          "Rules (the plan's aggregation.rule, parameters beside it): fedavg (weighted by num_examples, "
          "max_weight caps one site's weight), fedavgm (server momentum), fedadam, fedyogi, fedadagrad (server "
          "optimizer state kept in the state folder per round, so reruns and restarts continue it), median, "
          "trimmed-mean (beta), krum and multi-krum (f, m); clip_norm or clip_quantile clip each update's L2 "
          "norm first; dp_noise_multiplier adds central Gaussian noise (with clip_norm) and the report gives the "
          "privacy spent so far (epsilon at dp_delta, Renyi accounting). The formulas are in lib/fed/rules.h.\n\n"
          "Outputs, each signed by the aggregator and written atomically, in this order: rounds/R/report.json "
          "(accepted sites with example counts, weights, update norms, cosine to the aggregate and flags for "
          "outliers; rejected packages with class and reason; missing sites; the rule; privacy; and the sites' "
          "evaluations of round R's model, rounds/R/metrics/SITE.age from fedseg-eval -o M.h5 and fedseg-pack, "
          "verified like updates and pooled case by case into a federation-wide mean, median and std per region: "
          "they never hold up a round, a missing or bad one is only listed), the server "
          "state, rounds/R+1/global.h5 (its parents attribute lists the accepted packages' signed plaintext "
          "sha256), a ledger entry appended to STATE/ledger.jsonl (a hash chain: each entry holds the sha256 of "
          "the previous one, the new global model's and the accepted packages'), and LATEST, last. A crash at any "
          "point leaves the previous round intact; rerunning completes the round; a rerun after success does "
          "nothing and exits 0. --verify-ledger rechecks the whole chain against the exchange.\n\n"
          "Speed and memory: the fedavg family (fedavg without max_weight, fedavgm, the FedOpt rules; with "
          "clip_norm and DP too, not with clip_quantile) adds one update after the other into a float64 sum of "
          "the whole model while two more threads verify and decrypt the next packages into memory (no "
          "decrypted update is written to disk): up to about seven times the model's float32 size in memory "
          "(the float64 sum, the global model, up to four decrypted updates, one more when updates are "
          "compressed), whatever the number of sites. max_weight, clip_quantile, median, trimmed-mean and the Krum rules need every update at "
          "once: all packages are verified first, then the updates are read one tensor at a time (one tensor "
          "per input in memory). --threads 1 does it all on one thread, with the same result bit for bit. "
          "--partial -o PARTIAL.h5 writes the "
          "example-weighted sum of the given packages and its total weight instead; --combine PARTIAL.h5... "
          "finishes the round from such partial sums (fedavg family), with the same result as aggregating all "
          "packages at once.\n\n"
          "STATE (--state, default AGG_ID_DIR/state/FEDERATION, mode 0700) holds the ledger, the server state "
          "and, while a round runs, the decrypted updates (removed as soon as they are not needed, unless "
          "--keep-updates, which also makes the fedavg family decrypt into it). report.json's timings: "
          "verify_seconds, the time spent verifying and decrypting (on threads of their own, overlapping aggregate_seconds for the fedavg family), aggregate_seconds, total_seconds.",
          {{"fedseg-aggregate /srv/exchange --key /etc/fedseg/aggregator", "Aggregate the open round when its quorum is met."},
           {"fedseg-aggregate /srv/exchange --key agg --partial -o east.h5 --packages a.age b.age",
            "A partial sum of two packages, for hierarchical aggregation."},
           {"fedseg-aggregate /srv/exchange --key agg --combine east.h5 west.h5", "Finish the round from partial sums."},
           {"fedseg-aggregate /srv/exchange --key agg --verify-ledger", "Recheck the ledger's hash chain."}},
          {},
          {{0, "the round was aggregated, or already was (nothing to do)"},
           {64, "invalid options, or --round names a round that is not open"},
           {65, "a partial sum or the ledger is bad; with --partial, some package was rejected"},
           {66, "the exchange, the plan or the key is missing"},
           {73, "an output cannot be written"},
           {75, "quorum not met (sites missing before the deadline, or too few valid updates): run again later"},
           {77, "the aggregator's secret key is readable by group or others"},
           {78, "the plan's rule or quorum is invalid"}},
          "A document {\"tool\", \"version\", \"federation\", \"round\", \"status\" (aggregated | completed | done), "
          "\"global\", \"global_sha256\", \"report\", \"accepted\" [{site, num_examples, weight, norm, cosine, "
          "clip_factor, flags, plain, nonce, package}], \"rejected\" [{site, package, class, reason}], \"missing\", "
          "\"privacy\"}; --partial: {\"partial\", \"round\", \"accepted\", \"rejected\", \"total_weight\"}; "
          "--verify-ledger: {\"ledger\", \"entries\", \"status\"}.",
          {"fedseg-init", "fedseg-train", "fedseg-pack", "fedseg-verify"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("EXCHANGE_DIR", o->exchange, "the exchange folder")->required()->type_name("EXCHANGE_DIR");
        app.add_option("--key", o->key, "the aggregator's identity folder")->required()->type_name("AGG_ID_DIR");
        app.add_option("--round", o->round, "the round to aggregate (default: LATEST's)")->type_name("R");
        app.add_option("--state", o->state, "the aggregator's private state folder")->type_name("STATE");
        app.add_option("--packages", o->packages, "these packages instead of the round's updates folder")->type_name("PKG.age");
        app.add_option("--from", o->from, "read <site>.age from this folder")->type_name("DIR");
        app.add_flag("--partial", o->partial, "write a partial weighted sum (-o) instead of publishing");
        app.add_option("-o,--output", o->out, "the partial sum file (with --partial)")->type_name("PARTIAL.h5");
        app.add_option("--combine", o->combine, "finish the round from partial sums")->type_name("PARTIAL.h5");
        app.add_flag("--verify-ledger", o->verify_ledger, "recheck the ledger's hash chain against the exchange");
        app.add_flag("--keep-updates", o->keep, "keep the decrypted updates in the state folder");
        app.add_option("--now", o->now, "the current time as a Unix timestamp (for tests and dry runs of the quorum)")
            ->type_name("UNIX");
        app.add_option("--password-file", o->password_file, "password of a password-protected minisign key (first line)")
            ->type_name("FILE");
        app.add_option("--password-env", o->password_env, "environment variable holding that password")->type_name("VAR");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
