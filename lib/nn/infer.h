// fedseg::nn infer: whole-volume inference by sliding windows (nnU-Net style).
// Windows of the model's patch size step by patch·(1 - overlap) (at least 1 voxel),
// the last window of each axis flush with the end; every window's sigmoid outputs
// are weighted by a Gaussian importance map (σ = patch/8 per axis, normalised to a
// maximum of 1, floored at 1e-3 of it) and the weighted sum is divided by the sum
// of weights. Volumes smaller than the patch are zero-padded (centred) and cropped
// back. With mirroring, each window is also evaluated flipped along every
// combination of the three axes (8 passes) and the probabilities averaged.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "nn/model.h"

namespace fedseg::nn {

struct InferOptions {
  std::array<int64_t, 3> patch{128, 128, 128};  // Z, Y, X
  double overlap = 0.5;
  bool mirror = false;
  std::string device = "cpu";
};

// image: (C, Z, Y, X) float32 on the CPU. Returns (R, Z, Y, X) probabilities on the CPU.
torch::Tensor predict_volume(ResUNet& model, const torch::Tensor& image, const InferOptions& o);

// Region probabilities (ET, TC, WT order; R = 3) → BraTS labels with the usual
// nesting: WT → 2 (oedema), then TC → 1 (necrotic core), then ET → 4 (brats2021)
// or 3 (brats2023). Region present when its probability exceeds 0.5.
void regions_to_labels(const float* prob, size_t voxels, bool brats2023, uint8_t* labels);
// Region bits (bit r = region r present) → BraTS labels, as above.
uint8_t region_bits_to_label(uint8_t bits, bool brats2023);

}  // namespace fedseg::nn
