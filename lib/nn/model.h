// fedseg::nn model: the 3D residual U-Net of the FeTS production plan (DESIGN.md §1)
// in LibTorch. The `architecture` JSON (Architecture::to_json) stored in every model
// file is enough to rebuild it; share/fedseg/python/fedseg_model.py is the same
// network in PyTorch, with the same parameter names.
//
// Channels per level: c_l = base_filters * 2^l, l = 0..depth. Parameter names
// (PyTorch state_dict keys), stable across versions of the same architecture:
//
//   enc.<l>.conv1.weight      3x3x3 conv, c_{l-1} -> c_l (c_{-1} = in_channels),
//                             stride 2 for l > 0 (the downsampling), no bias
//   enc.<l>.norm1.{weight,bias}   instance norm (affine, no running statistics)
//   enc.<l>.conv2.weight      3x3x3 conv, c_l -> c_l, no bias
//   enc.<l>.norm2.{weight,bias}
//   enc.<l>.skip.weight       1x1x1 conv (same stride) where channels or size change
//   up.<l>.{weight,bias}      2x2x2 transposed conv, stride 2, c_{l+1} -> c_l, l = 0..depth-1
//   dec.<l>.*                 a residual block, 2 c_l (upsampled ++ skip) -> c_l
//   head.{weight,bias}        1x1x1 conv, c_0 -> out_channels
//
// Residual block: y = LReLU(IN(conv1 x)); y = dropout(y); y = IN(conv2 y);
// out = LReLU(y + skip(x)), LeakyReLU slope `negative_slope`, element-wise dropout.
// forward() returns logits (N, out_channels, Z, Y, X); the outputs are sigmoids,
// one per nested region in `regions` order (ET, TC, WT), applied by the loss and by
// inference. Patch sizes must be multiples of 2^depth.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn.h>
#include <torch/types.h>

namespace fedseg::nn {

struct Architecture {
  std::string name = "resunet3d";
  int64_t in_channels = 4;
  int64_t out_channels = 3;
  int64_t base_filters = 30;
  int64_t depth = 4;
  double dropout = 0.3;
  double negative_slope = 0.01;
  std::vector<std::string> regions{"ET", "TC", "WT"};
  std::vector<std::string> channels{"t1", "t1ce", "t2", "flair"};

  // Presets: "fets" (base 30, depth 4; FeTS patch 128) and "small" (base 8,
  // depth 3; for CPU tests and the demo). Error 64 for an unknown name.
  static Architecture preset(const std::string& name);
  static std::vector<std::string> preset_names();
  nlohmann::json to_json() const;
  // Error 65 (naming `name`) when malformed or not a resunet3d.
  static Architecture from_json(const nlohmann::json& j, const std::string& name);
  int64_t divisor() const { return int64_t(1) << depth; }
};

class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t stride, double dropout, double slope);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Conv3d conv1{nullptr}, conv2{nullptr}, skip{nullptr};
  torch::nn::InstanceNorm3d norm1{nullptr}, norm2{nullptr};
  double dropout_, slope_;
};
TORCH_MODULE(ResBlock);

class ResUNetImpl : public torch::nn::Module {
 public:
  explicit ResUNetImpl(const Architecture& a);
  torch::Tensor forward(const torch::Tensor& x);
  const Architecture& architecture() const { return arch_; }

 private:
  Architecture arch_;
  torch::nn::ModuleList enc{nullptr}, up{nullptr}, dec{nullptr};
  torch::nn::Conv3d head{nullptr};
};
TORCH_MODULE(ResUNet);

// Builds the model with weights drawn deterministically from `seed` (LibTorch's
// default initialisation, the same as PyTorch's, from the CPU generator).
ResUNet build_model(const Architecture& a, uint64_t seed);

int64_t parameter_count(ResUNet& m);

}  // namespace fedseg::nn
