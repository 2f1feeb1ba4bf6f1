// fedseg::metrics: segmentation metrics of a predicted against a reference mask
// (Dice, HD95 in both conventions, sensitivity, specificity, volumes), per BraTS
// region, and the exact Euclidean distance transform they rest on. Used by eval
// (issue 7). Depends on core only: no HDF5, LibTorch or libcurl.
//
// Volumes are uint8 arrays in C order (Z, Y, X), x fastest, with the voxel
// spacing (sz, sy, sx) in mm. A binary mask is "voxel != 0".
//
// Conventions (../shared/reference/imaging.md §6, "Decisions for fedseg" 8-9):
// - Dice 2|A∩B|/(|A|+|B|): both empty -> 1, exactly one empty -> 0.
// - Surface of a mask = mask XOR its binary erosion with the 6-neighbour structure,
//   voxels outside the array counting as background (scipy.ndimage.binary_erosion
//   with generate_binary_structure(3, 1), border_value=0): a mask voxel on the array
//   border is a surface voxel.
// - Directed surface distances A->B: for each surface voxel of A (C order), the
//   distance in mm to the nearest surface voxel of B (MedPy's
//   distance_transform_edt(~border_B, sampling=spacing)[border_A]).
// - HD95 pooled (default; BraTS <= 2021, MedPy, nnU-Net): 95th percentile, linear
//   interpolation (numpy.percentile's default), of both directed sets pooled.
//   Both empty -> 0; exactly one empty -> 373.12866 (the 240x240x155 diagonal).
// - HD95 max-directed (MONAI, BraTS 2023 without surfel weighting): the larger of
//   the two directed 95th percentiles. Both empty -> 0; one empty -> 374.
// - Sensitivity TP/(TP+FN); an empty reference gives 1 when the prediction is empty
//   too and 0 otherwise (nothing to find: finding nothing is right, anything else
//   is a false positive). Specificity TN/(TN+FP); 1 when the reference covers every
//   voxel (TN+FP = 0).
// All of it is computed inside the bounding box of the union of both masks plus one
// voxel, which gives the same values as the whole grid (surface voxels lie inside
// the masks, and voxels outside the box are background either way).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fedseg::metrics {

using Shape = std::array<int64_t, 3>;   // (Z, Y, X) voxels
using Spacing = std::array<double, 3>;  // (sz, sy, sx) mm

// HD95 when exactly one mask is empty, per convention.
inline constexpr double kHd95EmptyPooled = 373.12866;
inline constexpr double kHd95EmptyMaxDirected = 374.0;

enum class Hd95Convention { pooled, max_directed };
Hd95Convention hd95_convention_from_name(const std::string& name);  // "pooled", "max-directed"; Error 64
const char* hd95_convention_name(Hd95Convention c);

struct Options {
  double hd95_empty_pooled = kHd95EmptyPooled;            // one mask empty, pooled
  double hd95_empty_max_directed = kHd95EmptyMaxDirected;  // one mask empty, max-directed
  int threads = 1;    // distance transform lines and the counting pass are split over these
  bool crop = true;   // false: work on the whole grid (same values, slower; for tests)
};

struct BinaryMetrics {
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;  // voxels (prediction vs reference)
  double dice = 1;
  double hd95_pooled = 0;
  double hd95_max_directed = 0;
  double sensitivity = 1;
  double specificity = 1;
  double volume_pred_ml = 0;
  double volume_ref_ml = 0;
  int64_t surface_pred = 0, surface_ref = 0;  // surface voxels of each mask
  double hd95(Hd95Convention c) const { return c == Hd95Convention::pooled ? hd95_pooled : hd95_max_directed; }
};

// All metrics of two binary masks of the same shape. Error 65 on a bad shape or
// spacing (a dimension < 1, a spacing not finite and > 0); so do the functions below.
BinaryMetrics binary_metrics(const uint8_t* pred, const uint8_t* ref, const Shape& shape, const Spacing& spacing,
                             const Options& options = {});

// Dice of two binary masks of n voxels (both empty -> 1).
double dice(const uint8_t* pred, const uint8_t* ref, size_t n);

// The directed surface distances (mm), each in C order of its surface voxels.
// When either mask is empty both vectors are empty (the distances are undefined).
struct SurfaceDistances {
  bool pred_empty = true, ref_empty = true;
  std::vector<double> pred_to_ref;  // surface voxels of pred -> nearest surface voxel of ref
  std::vector<double> ref_to_pred;
};
SurfaceDistances surface_distances(const uint8_t* pred, const uint8_t* ref, const Shape& shape, const Spacing& spacing,
                                   const Options& options = {});

// HD95 from surface distances in a convention, with the empty-mask constants of options.
double hd95(const SurfaceDistances& d, Hd95Convention convention, const Options& options = {});
// The same straight from two binary masks.
double hd95(const uint8_t* pred, const uint8_t* ref, const Shape& shape, const Spacing& spacing,
            Hd95Convention convention = Hd95Convention::pooled, const Options& options = {});

// numpy.percentile(values, q) with its default linear interpolation (the same
// arithmetic, so equal inputs give equal bits); NaN for no values. q in [0, 100].
double percentile(std::vector<double> values, double q);

// --- regions ---------------------------------------------------------------------

// How a label volume codes the BraTS regions:
// - region_bits: fedseg's datasets and predictions: bit 0 ET, bit 1 TC, bit 2 WT, any
//   value 0..7 (docs/formats.md);
// - brats2021 (BraTS 2017-2021, FeTS): labels {0,1,2,4}: WT={1,2,4}, TC={1,4}, ET={4};
// - brats2023 (BraTS 2023 GLI): labels {0,1,2,3}: WT={1,2,3}, TC={1,3}, ET={3}.
enum class LabelCoding { region_bits, brats2021, brats2023 };
LabelCoding label_coding_from_name(const std::string& name);  // "regions", "brats2021", "brats2023"; Error 64
const char* label_coding_name(LabelCoding c);

// Region order of every result: the label bits' and the model's outputs.
inline const std::array<const char*, 3> kRegionNames = {"ET", "TC", "WT"};

using RegionMetrics = std::array<BinaryMetrics, 3>;  // ET, TC, WT

// Metrics of each region between a predicted and a reference label volume, each in
// its own coding (a region-coded prediction can be scored against BraTS labels).
// Error 65 naming the value when a voxel holds a value its coding does not declare.
RegionMetrics region_metrics(const uint8_t* pred, LabelCoding pred_coding, const uint8_t* ref, LabelCoding ref_coding,
                             const Shape& shape, const Spacing& spacing, const Options& options = {});
// Both volumes region-coded (fedseg's datasets and predictions).
RegionMetrics region_metrics(const uint8_t* pred, const uint8_t* ref, const Shape& shape, const Spacing& spacing,
                             const Options& options = {});
// Both volumes in BraTS label values of a scheme (brats2021 or brats2023).
RegionMetrics brats_region_metrics(const uint8_t* pred, const uint8_t* ref, LabelCoding scheme, const Shape& shape,
                                   const Spacing& spacing, const Options& options = {});

// --- distance transform ----------------------------------------------------------

// Squared Euclidean distance (mm²) from every voxel to the nearest voxel where
// sites is non-zero, +inf on lines of the whole volume without one. Exact, linear
// time: a scan along Z, then the lower envelope of parabolas (Felzenszwalb &
// Huttenlocher 2012) along Y and X; lines are split over threads. out has
// Z*Y*X elements.
void squared_distance_to_sites(const uint8_t* sites, const Shape& shape, const Spacing& spacing, double* out,
                               int threads = 1);

// scipy.ndimage.distance_transform_edt(input, sampling=spacing): for every non-zero
// voxel the distance (mm) to the nearest zero voxel, 0 on zero voxels; +inf
// everywhere when the input has no zero voxel.
std::vector<double> distance_transform_edt(const uint8_t* input, const Shape& shape, const Spacing& spacing,
                                           int threads = 1);

}  // namespace fedseg::metrics
