#include "nn/infer.h"

#include <cmath>

#include <torch/torch.h>

#include "core/error.h"
#include "nn/train.h"

namespace fedseg::nn {

namespace {

std::vector<int64_t> starts(int64_t size, int64_t patch, double overlap) {
  std::vector<int64_t> s;
  if (size <= patch) return {0};
  const int64_t step = std::max<int64_t>(1, int64_t(std::floor(double(patch) * (1.0 - overlap))));
  for (int64_t p = 0;; p += step) {
    if (p + patch >= size) {
      s.push_back(size - patch);
      break;
    }
    s.push_back(p);
  }
  return s;
}

torch::Tensor gaussian_map(const std::array<int64_t, 3>& p) {
  std::vector<torch::Tensor> axes;
  for (int a = 0; a < 3; ++a) {
    const double sigma = double(p[size_t(a)]) / 8.0, c = (double(p[size_t(a)]) - 1) / 2.0;
    torch::Tensor i = torch::arange(p[size_t(a)], torch::kFloat64);
    axes.push_back(torch::exp(-(i - c).pow(2) / (2 * sigma * sigma)));
  }
  torch::Tensor g = axes[0].view({-1, 1, 1}) * axes[1].view({1, -1, 1}) * axes[2].view({1, 1, -1});
  g = g / g.max();
  g = torch::clamp_min(g, 1e-3);
  return g.to(torch::kFloat32);
}

}  // namespace

torch::Tensor predict_volume(ResUNet& model, const torch::Tensor& image_in, const InferOptions& o) {
  const torch::Device dev = parse_device(o.device);
  const int64_t C = image_in.size(0);
  const std::array<int64_t, 3> size{image_in.size(1), image_in.size(2), image_in.size(3)};
  // Pad to at least the patch, centred.
  std::array<int64_t, 3> pad_lo{}, padded{};
  for (int a = 0; a < 3; ++a) {
    padded[size_t(a)] = std::max(size[size_t(a)], o.patch[size_t(a)]);
    pad_lo[size_t(a)] = (padded[size_t(a)] - size[size_t(a)]) / 2;
  }
  torch::Tensor image = image_in;
  if (padded != size) {
    image = torch::zeros({C, padded[0], padded[1], padded[2]}, torch::kFloat32);
    image.slice(1, pad_lo[0], pad_lo[0] + size[0]).slice(2, pad_lo[1], pad_lo[1] + size[1]).slice(3, pad_lo[2], pad_lo[2] + size[2]).copy_(image_in);
  }
  model->to(dev);
  model->eval();
  torch::NoGradGuard ng;
  const int64_t R = model->architecture().out_channels;
  torch::Tensor acc = torch::zeros({R, padded[0], padded[1], padded[2]}, torch::kFloat32);
  torch::Tensor wsum = torch::zeros({padded[0], padded[1], padded[2]}, torch::kFloat32);
  torch::Tensor g = gaussian_map(o.patch);
  const auto sz = starts(padded[0], o.patch[0], o.overlap), sy = starts(padded[1], o.patch[1], o.overlap),
             sx = starts(padded[2], o.patch[2], o.overlap);
  for (int64_t z : sz)
    for (int64_t y : sy)
      for (int64_t x : sx) {
        torch::Tensor win = image.slice(1, z, z + o.patch[0]).slice(2, y, y + o.patch[1]).slice(3, x, x + o.patch[2]);
        torch::Tensor in = win.unsqueeze(0).contiguous().to(dev);
        torch::Tensor prob = torch::sigmoid(model->forward(in));
        if (o.mirror) {
          int n = 1;
          for (int mask = 1; mask < 8; ++mask) {
            std::vector<int64_t> dims;
            for (int a = 0; a < 3; ++a)
              if (mask & (1 << a)) dims.push_back(2 + a);
            prob = prob + torch::sigmoid(model->forward(in.flip(dims))).flip(dims);
            ++n;
          }
          prob = prob / n;
        }
        prob = prob.squeeze(0).to(torch::kCPU, torch::kFloat32);
        acc.slice(1, z, z + o.patch[0]).slice(2, y, y + o.patch[1]).slice(3, x, x + o.patch[2]).add_(prob * g);
        wsum.slice(0, z, z + o.patch[0]).slice(1, y, y + o.patch[1]).slice(2, x, x + o.patch[2]).add_(g);
      }
  acc.div_(wsum.unsqueeze(0));
  if (padded != size)
    acc = acc.slice(1, pad_lo[0], pad_lo[0] + size[0]).slice(2, pad_lo[1], pad_lo[1] + size[1]).slice(3, pad_lo[2], pad_lo[2] + size[2]);
  return acc.contiguous();
}

uint8_t region_bits_to_label(uint8_t bits, bool brats2023) {
  uint8_t l = 0;
  if (bits & 4) l = 2;
  if (bits & 2) l = 1;
  if (bits & 1) l = brats2023 ? 3 : 4;
  return l;
}

void regions_to_labels(const float* prob, size_t n, bool brats2023, uint8_t* labels) {
  for (size_t i = 0; i < n; ++i) {
    uint8_t bits = 0;
    for (size_t r = 0; r < 3; ++r)
      if (prob[r * n + i] > 0.5f) bits |= uint8_t(1u << r);
    labels[i] = region_bits_to_label(bits, brats2023);
  }
}

}  // namespace fedseg::nn
