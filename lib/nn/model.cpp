#include "nn/model.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/utils.h>

#include "core/error.h"

namespace fedseg::nn {

namespace F = torch::nn::functional;
using nlohmann::json;

Architecture Architecture::preset(const std::string& name) {
  Architecture a;
  if (name == "fets") return a;
  if (name == "small") {
    a.base_filters = 8;
    a.depth = 3;
    a.dropout = 0.1;
    return a;
  }
  throw Error(kExitUsage, "unknown model preset", name, "use fets or small");
}

std::vector<std::string> Architecture::preset_names() { return {"fets", "small"}; }

json Architecture::to_json() const {
  return {{"name", name},
          {"in_channels", in_channels},
          {"out_channels", out_channels},
          {"base_filters", base_filters},
          {"depth", depth},
          {"dropout", dropout},
          {"negative_slope", negative_slope},
          {"norm", "instance"},
          {"output", "sigmoid"},
          {"regions", regions},
          {"channels", channels}};
}

Architecture Architecture::from_json(const json& j, const std::string& src) {
  auto bad = [&](const std::string& why) { return Error(kExitDataErr, "unusable model architecture", src, why); };
  if (!j.is_object()) throw bad("not a JSON object");
  Architecture a;
  try {
    a.name = j.at("name").get<std::string>();
    if (a.name != "resunet3d") throw bad("model '" + a.name + "' (this fedseg builds resunet3d)");
    a.in_channels = j.at("in_channels").get<int64_t>();
    a.out_channels = j.at("out_channels").get<int64_t>();
    a.base_filters = j.at("base_filters").get<int64_t>();
    a.depth = j.at("depth").get<int64_t>();
    a.dropout = j.at("dropout").get<double>();
    a.negative_slope = j.at("negative_slope").get<double>();
    if (j.value("norm", "instance") != "instance") throw bad("norm must be instance");
    if (j.value("output", "sigmoid") != "sigmoid") throw bad("output must be sigmoid");
    a.regions = j.at("regions").get<std::vector<std::string>>();
    a.channels = j.at("channels").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw bad(std::string("missing or mistyped member: ") + e.what());
  }
  if (a.in_channels < 1 || a.in_channels > 64) throw bad("in_channels must be 1..64");
  if (a.out_channels < 1 || a.out_channels > 64) throw bad("out_channels must be 1..64");
  if (a.base_filters < 1 || a.base_filters > 512) throw bad("base_filters must be 1..512");
  if (a.depth < 0 || a.depth > 7) throw bad("depth must be 0..7");
  if (!(a.dropout >= 0 && a.dropout < 1)) throw bad("dropout must be in [0, 1)");
  if (!(a.negative_slope >= 0 && a.negative_slope < 1)) throw bad("negative_slope must be in [0, 1)");
  if (int64_t(a.regions.size()) != a.out_channels) throw bad("one region name per output channel is needed");
  if (int64_t(a.channels.size()) != a.in_channels) throw bad("one channel name per input channel is needed");
  return a;
}

ResBlockImpl::ResBlockImpl(int64_t in, int64_t out, int64_t stride, double dropout, double slope)
    : dropout_(dropout), slope_(slope) {
  using torch::nn::Conv3dOptions;
  using torch::nn::InstanceNorm3dOptions;
  conv1 = register_module("conv1", torch::nn::Conv3d(Conv3dOptions(in, out, 3).stride(stride).padding(1).bias(false)));
  norm1 = register_module("norm1", torch::nn::InstanceNorm3d(InstanceNorm3dOptions(out).affine(true).track_running_stats(false)));
  conv2 = register_module("conv2", torch::nn::Conv3d(Conv3dOptions(out, out, 3).stride(1).padding(1).bias(false)));
  norm2 = register_module("norm2", torch::nn::InstanceNorm3d(InstanceNorm3dOptions(out).affine(true).track_running_stats(false)));
  if (in != out || stride != 1)
    skip = register_module("skip", torch::nn::Conv3d(Conv3dOptions(in, out, 1).stride(stride).bias(false)));
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x) {
  auto act = F::LeakyReLUFuncOptions().negative_slope(slope_);
  torch::Tensor y = F::leaky_relu(norm1(conv1(x)), act);
  if (dropout_ > 0) y = F::dropout(y, F::DropoutFuncOptions().p(dropout_).training(is_training()));
  y = norm2(conv2(y));
  y = y + (skip ? skip(x) : x);
  return F::leaky_relu(y, act.inplace(true));
}

ResUNetImpl::ResUNetImpl(const Architecture& a) : arch_(a) {
  auto ch = [&](int64_t l) { return a.base_filters << l; };
  enc = register_module("enc", torch::nn::ModuleList());
  for (int64_t l = 0; l <= a.depth; ++l)
    enc->push_back(ResBlock(l == 0 ? a.in_channels : ch(l - 1), ch(l), l == 0 ? 1 : 2, a.dropout, a.negative_slope));
  up = register_module("up", torch::nn::ModuleList());
  dec = register_module("dec", torch::nn::ModuleList());
  for (int64_t l = 0; l < a.depth; ++l) {
    up->push_back(torch::nn::ConvTranspose3d(torch::nn::ConvTranspose3dOptions(ch(l + 1), ch(l), 2).stride(2)));
    dec->push_back(ResBlock(2 * ch(l), ch(l), 1, a.dropout, a.negative_slope));
  }
  head = register_module("head", torch::nn::Conv3d(torch::nn::Conv3dOptions(ch(0), a.out_channels, 1)));
}

torch::Tensor ResUNetImpl::forward(const torch::Tensor& x) {
  const int64_t d = arch_.depth;
  std::vector<torch::Tensor> skips;
  torch::Tensor h = x;
  for (int64_t l = 0; l <= d; ++l) {
    h = enc[l]->as<ResBlock>()->forward(h);
    if (l < d) skips.push_back(h);
  }
  for (int64_t l = d - 1; l >= 0; --l) {
    h = up[l]->as<torch::nn::ConvTranspose3d>()->forward(h);
    h = dec[l]->as<ResBlock>()->forward(torch::cat({h, skips[l]}, 1));
  }
  return head(h);
}

ResUNet build_model(const Architecture& a, uint64_t seed) {
  torch::manual_seed(seed);
  ResUNet m(a);
  return m;
}

int64_t parameter_count(ResUNet& m) {
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  return n;
}

}  // namespace fedseg::nn
