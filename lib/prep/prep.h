// fedseg::prep: a site's NIfTI cohort -> the cases of a dataset file (DESIGN.md §3).
// Finds cases (BraTS 2021/FeTS or BraTS 2023 folder naming, or a CSV), validates
// them, reorients to RAS+, resamples to the target spacing, crops to the brain,
// z-scores each modality and region-codes the labels. Depends on core and nifti;
// writing the HDF5 file is the tool's job (tools/prep.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/buffer.h"

namespace fedseg::prep {

// Channel order of every dataset image.
inline const std::array<const char*, 4> kChannels = {"t1", "t1ce", "t2", "flair"};

// Regions in the order of the label bits and of the model's output channels
// (FeTS order): bit 0 = ET, bit 1 = TC, bit 2 = WT. Necrotic core = TC|WT (6),
// oedema = WT (4), enhancing = ET|TC|WT (7).
inline const std::array<const char*, 3> kRegions = {"ET", "TC", "WT"};

enum class Scheme { brats2021, brats2023 };
Scheme scheme_from_name(const std::string& name);  // Error 64 on anything else
const char* scheme_name(Scheme s);

struct CaseFiles {
  std::string id;
  std::array<std::string, 4> images;  // t1, t1ce, t2, flair ("" when missing)
  std::string label;                  // "" when the cohort has none for this case
  std::string naming;                 // "brats2021", "brats2023" or "csv"
  std::string problem;                // non-empty: the case cannot be used (e.g. a missing modality)
};

// Finds the cases of a cohort folder (one sub-folder per case) or CSV
// (`id,t1,t1ce,t2,flair[,seg]`, paths relative to the CSV's folder), sorted by id.
// Error 66 if the cohort is missing, 65 if the CSV is malformed or no case is found.
std::vector<CaseFiles> find_cases(const std::string& cohort);

struct Options {
  Scheme scheme = Scheme::brats2021;
  std::array<double, 3> spacing{1.0, 1.0, 1.0};  // target mm; resampled when it differs by > 1e-3
  bool resample = true;
  int margin = 2;                  // voxels around the brain's bounding box
  double clip_low = -1, clip_high = -1;  // percentiles (0..100) or -1: no clipping
  double affine_tolerance = 1e-3;  // mm: modalities must share the grid within this
  bool require_label = false;
  bool float16 = true;             // images as IEEE half (Case::image16), else float32 (Case::image)
  // Leave the image as four per-channel boxes (Case::boxes) instead of the full
  // (4, Z, Y, X) crop, for writers that build chunks with copy_image_box: a channel
  // is 0 outside its own box, and assembling the crop would be one more pass.
  bool packed = false;
};

// Where a channel's values are in Case::image16 / Case::image: the box [lo, hi)
// (x, y, z, in the stored grid) in z-major order from element `offset` on. Voxels of
// the stored grid outside it are 0 in that channel.
struct ChannelBox {
  std::array<int64_t, 3> lo{}, hi{};
  size_t offset = 0;
};

// A preprocessed case, ready to be written.
struct Case {
  std::string id;
  std::array<int64_t, 3> shape{};   // stored grid (x, y, z) after crop
  RawVector<float> image;           // 4 channels, each z-major (C, Z, Y, X order), float32 ...
  RawVector<uint16_t> image16;      // ... or float16 bits (Options::float16): one is empty
  RawVector<uint8_t> label;         // (Z, Y, X) region bits; empty without label
  bool packed = false;              // image16/image hold the channels' boxes, not the full crop
  std::array<ChannelBox, 4> boxes{};  // full crop: the whole grid at c * Z * Y * X
  nlohmann::json attrs;             // provenance and geometry (see prep.cpp)
  nlohmann::json sanity;            // intensity ranges, negatives, non-finite, label volumes
  std::vector<std::string> warnings;
};

// Preprocesses one case. `sha256` holds the inputs' hashes in the order images, label;
// when it is empty they are computed from the bytes read (for gzip files, no second read).
// Error 65 (naming the file and the problem) for anything that makes the case unusable.
Case process_case(const CaseFiles& files, const std::vector<std::string>& sha256, const Options& opts);
// The same into `out`, reusing the capacity of its buffers (batch tools recycle
// a few Case objects instead of allocating ~50 MB per case).
void process_case(const CaseFiles& files, const std::vector<std::string>& sha256, const Options& opts, Case& out);

// Copies the box of the stored image from start (c, z, y, x) with the extent `dims`
// into out (C order, float16 bits or float as stored), zeros beyond the image: an
// HDF5 chunk, from a packed case or not.
void copy_image_box(const Case& c, const std::array<uint64_t, 4>& start, const std::array<uint64_t, 4>& dims, void* out);

// Deterministic split: "val" when the first 8 bytes of sha256(id), as a fraction of
// 2^64, fall below val_fraction.
std::string split_for(const std::string& id, double val_fraction);
// That fraction, in [0, 1).
double split_fraction(const std::string& id);

}  // namespace fedseg::prep
