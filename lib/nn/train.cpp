#include "nn/train.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "h5/tensor_file.h"
#include "nn/model_io.h"

namespace fedseg::nn {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Optimiser state we own: Adam's m and v, or SGD's momentum buffer in m.
struct OptimState {
  std::vector<torch::Tensor> m, v;
  int64_t t = 0;
};

void adam_step(std::vector<torch::Tensor>& params, OptimState& s, const fed::Recipe& r) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  ++s.t;
  const double bc1 = 1 - std::pow(b1, double(s.t)), bc2 = 1 - std::pow(b2, double(s.t));
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor& p = params[i];
    if (!p.grad().defined()) continue;
    torch::Tensor g = p.grad();
    if (r.weight_decay > 0) g = g.add(p, r.weight_decay);
    s.m[i].mul_(b1).add_(g, 1 - b1);
    s.v[i].mul_(b2).addcmul_(g, g, 1 - b2);
    torch::Tensor denom = (s.v[i].sqrt() / std::sqrt(bc2)).add_(eps);
    p.addcdiv_(s.m[i], denom, -r.learning_rate / bc1);
  }
}

void sgd_step(std::vector<torch::Tensor>& params, OptimState& s, const fed::Recipe& r) {
  ++s.t;
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor& p = params[i];
    if (!p.grad().defined()) continue;
    torch::Tensor g = p.grad();
    if (r.weight_decay > 0) g = g.add(p, r.weight_decay);
    s.m[i].mul_(r.momentum).add_(g);
    p.add_(g.add(s.m[i], r.momentum), -r.learning_rate);  // Nesterov
  }
}

struct Running {
  int64_t step = 0;
  std::vector<double> step_loss, epoch_loss, epoch_dice_flat;
  // Accumulators of the epoch in progress: loss sum and, per region, Σ hard·g, Σ hard, Σ g.
  double loss_sum = 0;
  int64_t loss_n = 0;
  std::vector<double> inter, psum, gsum;
  double data_s = 0, compute_s = 0;
  double loss_scale = 65536;
};

void save_checkpoint(const std::string& path, const TrainConfig& cfg, const NamedTensors& params,
                     const OptimState& os, const Running& run) {
  h5::Output out(path, "checkpoint", "fedseg-train", nlohmann::json{{"run_key", cfg.run_key}}.dump(), true);
  h5::File& f = out.file();
  f.set_attr("/", "run_key", cfg.run_key);
  f.set_attr("/", "step", run.step);
  f.set_attr("/", "optimizer_steps", os.t);
  f.set_attr("/", "step_loss", run.step_loss);
  f.set_attr("/", "epoch_loss", run.epoch_loss);
  f.set_attr("/", "epoch_dice", run.epoch_dice_flat);
  f.set_attr("/", "acc_loss", std::vector<double>{run.loss_sum, double(run.loss_n)});
  f.set_attr("/", "acc_inter", run.inter);
  f.set_attr("/", "acc_psum", run.psum);
  f.set_attr("/", "acc_gsum", run.gsum);
  f.set_attr("/", "seconds", std::vector<double>{run.data_s, run.compute_s});
  f.set_attr("/", "loss_scale", run.loss_scale);
  write_tensors(f, "params", params, h5::DType::f32, 0);
  NamedTensors m, v;
  for (size_t i = 0; i < params.size(); ++i) {
    m.emplace_back(params[i].first, os.m[i]);
    if (!os.v.empty()) v.emplace_back(params[i].first, os.v[i]);
  }
  write_tensors(f, "optim/m", m, h5::DType::f32, 0);
  if (!v.empty()) write_tensors(f, "optim/v", v, h5::DType::f32, 0);
  out.commit();
}

std::vector<double> vec_attr(const h5::File& f, const char* name) {
  h5::Attr a = f.attr("/", name);
  if (auto* v = std::get_if<std::vector<double>>(&a)) return *v;
  if (auto* d = std::get_if<double>(&a)) return {*d};
  return {};
}

// Loads a checkpoint of this run; false (with a warning) when there is none of this run.
bool load_checkpoint(const std::string& path, const TrainConfig& cfg, NamedTensors& params, OptimState& os,
                     Running& run, int64_t regions) {
  if (path.empty() || !path_exists(path)) return false;
  try {
    h5::File f = h5::File::open(path, {"checkpoint", true});
    if (f.attr_string("/", "run_key") != cfg.run_key) {
      log::warn("checkpoint " + path + " belongs to another run (other global model, dataset, recipe or seed): starting afresh");
      return false;
    }
    NamedTensors p = read_tensors_like(f, "params", params);
    NamedTensors m = read_tensors_like(f, "optim/m", params);
    NamedTensors v;
    if (!os.v.empty()) v = read_tensors_like(f, "optim/v", params);
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].second.copy_(p[i].second);
      os.m[i].copy_(m[i].second);
      if (!os.v.empty()) os.v[i].copy_(v[i].second);
    }
    os.t = f.attr_int("/", "optimizer_steps");
    run.step = f.attr_int("/", "step");
    run.step_loss = vec_attr(f, "step_loss");
    run.epoch_loss = vec_attr(f, "epoch_loss");
    run.epoch_dice_flat = vec_attr(f, "epoch_dice");
    std::vector<double> acc = vec_attr(f, "acc_loss");
    run.inter = vec_attr(f, "acc_inter");
    run.psum = vec_attr(f, "acc_psum");
    run.gsum = vec_attr(f, "acc_gsum");
    std::vector<double> secs = vec_attr(f, "seconds");
    run.loss_scale = f.attr_double("/", "loss_scale");
    if (acc.size() != 2 || secs.size() != 2 || int64_t(run.inter.size()) != regions ||
        int64_t(run.psum.size()) != regions || int64_t(run.gsum.size()) != regions ||
        int64_t(run.step_loss.size()) != run.step)
      throw Error(kExitDataErr, "malformed checkpoint", path, "inconsistent running metrics");
    run.loss_sum = acc[0];
    run.loss_n = int64_t(acc[1]);
    run.data_s = secs[0];
    run.compute_s = secs[1];
    return true;
  } catch (const Error& e) {
    log::warn("cannot resume from checkpoint " + path + " (" + e.message() + "): starting afresh");
    return false;
  }
}

}  // namespace

torch::Device parse_device(const std::string& s) {
  if (s == "cpu") return torch::Device(torch::kCPU);
  if (s == "cuda" || s.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (s.size() > 5) {
      const std::string n = s.substr(5);
      if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
        throw Error(kExitUsage, "invalid --device", s, "use cpu, cuda or cuda:N");
      index = std::stoi(n);
    }
    if (!torch::cuda::is_available())
      throw Error(kExitUnavailable, "CUDA is not available", s,
                  "this LibTorch build has no CUDA or no GPU is visible (Debian's libtorch is CPU-only: build "
                  "against an upstream CUDA LibTorch with CMAKE_PREFIX_PATH, or use --device cpu)");
    if (index >= int(torch::cuda::device_count()))
      throw Error(kExitUnavailable, "no such GPU", s, std::to_string(torch::cuda::device_count()) + " visible");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error(kExitUsage, "invalid --device", s, "use cpu, cuda or cuda:N");
}

TrainResult train(ResUNet& model, const std::vector<Case>& cases, const TrainConfig& cfg,
                  const std::function<void(const StepInfo&)>& on_step) {
  const fed::Recipe& r = cfg.recipe;
  const Architecture& a = model->architecture();
  const int64_t C = a.in_channels, R = a.out_channels;
  for (int64_t p : r.patch)
    if (p % a.divisor() != 0)
      throw Error(kExitConfig, "patch size " + std::to_string(p) + " is not a multiple of " + std::to_string(a.divisor()),
                  {}, "the model downsamples " + std::to_string(a.depth) + " times");
  const torch::Device dev = parse_device(cfg.device);
  const bool amp = cfg.amp && dev.is_cuda();
  model->to(dev);
  model->train();

  NamedTensors named = named_parameters(model);
  std::vector<torch::Tensor> params;
  std::vector<torch::Tensor> global;  // w_global for FedProx
  OptimState os;
  for (auto& [n, p] : named) {
    params.push_back(p);
    if (r.fedprox_mu > 0) global.push_back(p.detach().clone());
    os.m.push_back(torch::zeros_like(p));
    if (r.optimizer == "adam") os.v.push_back(torch::zeros_like(p));
  }

  TrainResult res;
  const int64_t visits = int64_t(cases.size()) * r.patches_per_case;
  res.steps_per_epoch = (visits + r.batch_size - 1) / r.batch_size;
  int64_t total = res.steps_per_epoch * r.epochs;
  if (cfg.max_steps > 0) total = std::min(total, cfg.max_steps);
  res.examples = int64_t(cases.size());

  Running run;
  run.inter.assign(size_t(R), 0);
  run.psum.assign(size_t(R), 0);
  run.gsum.assign(size_t(R), 0);
  if (load_checkpoint(cfg.checkpoint, cfg, named, os, run, R)) {
    res.resumed_from = run.step;
    log::info("resuming from " + cfg.checkpoint + " at step " + std::to_string(run.step) + " of " + std::to_string(total));
  }

  SamplerOptions so;
  so.patch = {r.patch[0], r.patch[1], r.patch[2]};
  so.foreground_fraction = r.foreground_fraction;
  so.augment = r.augment;
  const int64_t pn = r.patch[0] * r.patch[1] * r.patch[2];
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  auto last_ckpt = Clock::now();
  const std::vector<int64_t> dims{0, 2, 3, 4};

  for (; run.step < total; ++run.step) {
    const int64_t step = run.step, epoch = step / res.steps_per_epoch, within = step % res.steps_per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(int64_t(cases.size()), r.patches_per_case, cfg.seed, epoch);
      order_epoch = epoch;
    }
    auto t0 = Clock::now();
    const int64_t b0 = within * r.batch_size, b1 = std::min<int64_t>(b0 + r.batch_size, int64_t(order.size()));
    const int64_t B = b1 - b0;
    torch::Tensor x = torch::empty({B, C, r.patch[0], r.patch[1], r.patch[2]}, torch::kFloat32);
    torch::Tensor y = torch::empty({B, R, r.patch[0], r.patch[1], r.patch[2]}, torch::kFloat32);
    for (int64_t b = 0; b < B; ++b)
      sample_patch(cases[size_t(order[size_t(b0 + b)])], C, R, so, mix_seed(cfg.seed, uint64_t(step), uint64_t(b)),
                   x.data_ptr<float>() + b * C * pn, y.data_ptr<float>() + b * R * pn);
    if (dev.is_cuda()) {
      x = x.to(dev, /*non_blocking=*/false);
      y = y.to(dev, false);
    }
    auto t1 = Clock::now();

    torch::manual_seed(mix_seed(cfg.seed, 0x64726f70ull, uint64_t(step)));  // dropout
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    torch::Tensor logits;
    if (amp) {
      at::autocast::set_enabled(true);
      logits = model->forward(x).to(torch::kFloat32);
      at::autocast::set_enabled(false);
      at::autocast::clear_cache();
    } else {
      logits = model->forward(x);
    }
    torch::Tensor prob = torch::sigmoid(logits);
    torch::Tensor inter = (prob * y).sum(dims);
    torch::Tensor denom = prob.sum(dims) + y.sum(dims);
    torch::Tensor loss = 1 - ((2 * inter + 1) / (denom + 1)).mean();
    if (r.loss == "dice+bce") loss = loss + torch::binary_cross_entropy_with_logits(logits, y);
    double prox = 0;
    if (amp) (loss * run.loss_scale).backward();
    else loss.backward();

    bool finite = true;
    {
      torch::NoGradGuard ng;
      if (amp) {
        for (auto& p : params)
          if (p.grad().defined()) p.mutable_grad().div_(run.loss_scale);
        for (auto& p : params)
          if (p.grad().defined() && !torch::isfinite(p.grad()).all().item<bool>()) {
            finite = false;
            break;
          }
      }
      if (r.fedprox_mu > 0)
        for (size_t i = 0; i < params.size(); ++i) {
          torch::Tensor d = params[i] - global[i];
          prox += 0.5 * r.fedprox_mu * d.pow(2).sum().item<double>();
          if (params[i].grad().defined()) params[i].mutable_grad().add_(d, r.fedprox_mu);
        }
      if (finite) {
        if (r.grad_clip > 0) torch::nn::utils::clip_grad_norm_(params, r.grad_clip);
        if (r.optimizer == "adam") adam_step(params, os, r);
        else sgd_step(params, os, r);
      } else {
        run.loss_scale /= 2;  // skip the step, as a gradient scaler does
      }
      if (amp && finite && os.t % 2000 == 0) run.loss_scale *= 2;
      torch::Tensor hard = (logits > 0).to(torch::kFloat32);
      torch::Tensor hi = (hard * y).sum(dims).to(torch::kCPU, torch::kFloat64);
      torch::Tensor hp = hard.sum(dims).to(torch::kCPU, torch::kFloat64);
      torch::Tensor hg = y.sum(dims).to(torch::kCPU, torch::kFloat64);
      for (int64_t k = 0; k < R; ++k) {
        run.inter[size_t(k)] += hi[k].item<double>();
        run.psum[size_t(k)] += hp[k].item<double>();
        run.gsum[size_t(k)] += hg[k].item<double>();
      }
    }
    const double lv = loss.item<double>() + prox;
    if (!std::isfinite(lv) && !amp)
      throw Error(kExitDataErr, "training diverged", {}, "the loss is " + std::to_string(lv) + " at step " + std::to_string(step) +
                                                          " (lower the learning rate)");
    run.step_loss.push_back(lv);
    run.loss_sum += lv;
    run.loss_n++;
    auto t2 = Clock::now();
    const double ds = std::chrono::duration<double>(t1 - t0).count(), cs = std::chrono::duration<double>(t2 - t1).count();
    run.data_s += ds;
    run.compute_s += cs;
    res.step_seconds.push_back(ds + cs);

    const bool epoch_end = within == res.steps_per_epoch - 1 || step + 1 == total;
    if (epoch_end) {
      run.epoch_loss.push_back(run.loss_sum / double(std::max<int64_t>(1, run.loss_n)));
      for (int64_t k = 0; k < R; ++k) {
        const double den = run.psum[size_t(k)] + run.gsum[size_t(k)];
        run.epoch_dice_flat.push_back(den == 0 ? 1.0 : 2 * run.inter[size_t(k)] / den);
      }
      run.loss_sum = 0;
      run.loss_n = 0;
      std::fill(run.inter.begin(), run.inter.end(), 0);
      std::fill(run.psum.begin(), run.psum.end(), 0);
      std::fill(run.gsum.begin(), run.gsum.end(), 0);
    }
    if (on_step) on_step({step + 1, total, epoch, lv, ds, cs});
    const bool due = (cfg.checkpoint_steps > 0 && (step + 1) % cfg.checkpoint_steps == 0) ||
                     (cfg.checkpoint_seconds > 0 && since(last_ckpt) >= cfg.checkpoint_seconds);
    if (!cfg.checkpoint.empty() && due && step + 1 < total) {
      auto tc = Clock::now();
      Running saved = run;
      saved.step = step + 1;
      save_checkpoint(cfg.checkpoint, cfg, named, os, saved);
      res.checkpoint_seconds += since(tc);
      res.checkpoints_written++;
      last_ckpt = Clock::now();
    }
  }
  model->to(torch::kCPU);
  res.steps = run.step;
  res.epochs = int64_t(run.epoch_loss.size());
  res.step_loss = run.step_loss;
  res.epoch_loss = run.epoch_loss;
  for (size_t e = 0; e + size_t(R) <= run.epoch_dice_flat.size(); e += size_t(R))
    res.epoch_dice.emplace_back(run.epoch_dice_flat.begin() + long(e), run.epoch_dice_flat.begin() + long(e) + R);
  res.data_seconds = run.data_s;
  res.compute_seconds = run.compute_s;
  return res;
}

}  // namespace fedseg::nn
