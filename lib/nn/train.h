// fedseg::nn train: one site's local training of a global model for one round.
//
// Steps: an epoch visits every training case `patches_per_case` times in an order
// shuffled by (seed, epoch); a step takes `batch_size` of those visits (the last
// step of an epoch may be smaller). Loss: BraTS region Dice over the batch,
// 1 - mean_r (2 Σ p g + 1) / (Σ p + Σ g + 1) with p = sigmoid(logits), plus the
// mean binary cross-entropy for "dice+bce"; FedProx adds (mu/2) ||w - w_global||².
// Optimisers: Adam (β 0.9/0.999, ε 1e-8, L2 weight decay) and SGD with Nesterov
// momentum, written out here so that their state is ours to checkpoint.
// Gradients are clipped to `grad_clip` (global L2 norm).
//
// Determinism and resumption: sampling, augmentation and dropout draw from
// generators seeded by (seed, step), so a run resumed from a checkpoint takes
// exactly the steps an uninterrupted run takes. A checkpoint (kind checkpoint) holds
// the parameters, the optimiser state, the step and the running metrics, and a
// run key (global model, dataset, recipe, seed, device); one with another key is
// not resumed from.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fed/plan.h"
#include "nn/data.h"
#include "nn/model.h"

namespace fedseg::nn {

struct TrainConfig {
  fed::Recipe recipe;
  uint64_t seed = 0;
  std::string device = "cpu";     // cpu | cuda | cuda:N
  bool amp = true;                // mixed precision on CUDA (ignored on CPU)
  int64_t max_steps = 0;          // > 0: stop after this many steps (benchmarks)
  std::string checkpoint;         // "" : none
  int64_t checkpoint_steps = 0;   // > 0: every this many steps
  double checkpoint_seconds = 300;  // and at least this often (wall time)
  std::string run_key;            // identifies the run a checkpoint belongs to
};

struct StepInfo {
  int64_t step = 0, total = 0, epoch = 0;
  double loss = 0;
  double data_seconds = 0, compute_seconds = 0;
};

struct TrainResult {
  int64_t steps = 0, steps_per_epoch = 0, epochs = 0, examples = 0;
  std::vector<double> step_loss;               // one per step
  std::vector<double> step_seconds;            // data + compute of each step of this process
  std::vector<double> epoch_loss;              // mean per epoch
  std::vector<std::vector<double>> epoch_dice; // per epoch, per region (hard Dice at 0.5 over the epoch)
  double data_seconds = 0, compute_seconds = 0, checkpoint_seconds = 0;
  int64_t resumed_from = -1;                   // step the run resumed at, -1 if fresh
  int64_t checkpoints_written = 0;
};

// Resolves "cpu" / "cuda" / "cuda:N". Error 69 when CUDA is asked for and this
// LibTorch has none or no GPU is visible; 64 when malformed.
torch::Device parse_device(const std::string& s);

// Trains `model` in place from its current (global) weights. `on_step` is called
// after every step.
TrainResult train(ResUNet& model, const std::vector<Case>& cases, const TrainConfig& cfg,
                  const std::function<void(const StepInfo&)>& on_step = {});

}  // namespace fedseg::nn
