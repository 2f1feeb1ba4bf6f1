// fedseg::nn data: a prep dataset's cases in memory, and the training patch
// sampler with its augmentations. No LibTorch here: patches are plain float
// arrays the trainer wraps without copying.
//
// Sampling (nnU-Net style): a patch is centred on a voxel of a region present in the
// case with probability `foreground_fraction` (a region chosen uniformly among
// those present, then one of its voxels), else placed uniformly. Volumes smaller
// than the patch are padded with zeros. Augmentations (each drawn per sample):
// flips along each axis (p 0.5), a rotation by k·90° in the axial (Y, X) plane
// when the patch is square there, per-channel intensity scale ×U(0.9, 1.1) and
// shift +U(-0.1, 0.1) over non-zero voxels, and Gaussian noise (p 0.15,
// σ ~ U(0, 0.1)). Every draw comes from a generator seeded by (seed, step,
// sample), so a resumed run samples exactly what an uninterrupted one did.
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace fedseg::nn {

struct Case {
  std::string id;
  int64_t Z = 0, Y = 0, X = 0;
  std::vector<uint16_t> half;  // (C, Z, Y, X) float16 bits, or
  std::vector<float> f32;      // (C, Z, Y, X) when the dataset stores float32
  std::vector<uint8_t> label;  // (Z, Y, X) region bits
  std::vector<std::vector<int64_t>> fg;  // per region: flat voxel indices (at most kMaxForeground)
  float value(int64_t c, int64_t idx) const;
};

struct DatasetInfo {
  std::vector<std::string> channels, regions;
  std::string label_scheme;
  int64_t num_train = 0, num_val = 0;
};

constexpr size_t kMaxForeground = 20000;

// Reads the dataset's root attributes and checks them against the model's
// channels and regions. Error 66 missing, 65 when not a dataset or when the
// channels, regions or label coding do not match.
DatasetInfo check_dataset(const std::string& path, const std::vector<std::string>& channels,
                          const std::vector<std::string>& regions);

// Loads the cases of one split ("train", "val" or "" for all) in id order. Error 65
// when a case is malformed or there is no case in that split.
std::vector<Case> load_cases(const std::string& path, const std::string& split, int64_t channels,
                             int64_t regions, int threads = 1);

struct SamplerOptions {
  std::array<int64_t, 3> patch{128, 128, 128};
  double foreground_fraction = 0.33;
  bool augment = true;
};

// 64-bit mixing of the run seed with counters (splitmix64 over each value).
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

// Fills image (C, pz, py, px) and target (R, pz, py, px; 0/1) for one sample.
void sample_patch(const Case& c, int64_t channels, int64_t regions, const SamplerOptions& o, uint64_t sample_seed,
                  float* image, float* target);

// The order in which an epoch visits the training cases: each case
// patches_per_case times, shuffled by (seed, epoch).
std::vector<int64_t> epoch_order(int64_t num_cases, int64_t patches_per_case, uint64_t seed, int64_t epoch);

}  // namespace fedseg::nn
