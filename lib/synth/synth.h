// fedseg::synth: synthetic BraTS-layout cases for demos, tests and benchmarks. A case
// is a skull-stripped brain (a phantom with CSF, grey and white matter, or a real T1
// resampled onto the grid) with a tumour (necrotic core, enhancing rim, oedema), seen
// in four MR contrasts (T1, T1ce, T2, FLAIR) through a per-site scanner profile
// (contrast, noise, bias field, acquisition resolution, tumour sizes), plus its label
// map. Everything is a pure function of (seed, case index, shape, profile, naming,
// anatomy): the same inputs give the same bytes on any thread count.
// Depends on core and nifti only (no HDF5, LibTorch or curl).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "nifti/nifti.h"

namespace fedseg::synth {

// File naming and label scheme (imaging.md §1.2, §1.3): brats2021 writes
// <ID>_{t1,t1ce,t2,flair,seg}.nii.gz with labels 0,1,2,4; brats2023 writes
// <ID>-{t1n,t1c,t2w,t2f,seg}.nii.gz with labels 0,1,2,3.
enum class Naming { brats2021, brats2023 };
// Parses "brats2021" / "brats2023"; false for anything else.
bool parse_naming(const std::string& s, Naming& out);
const char* naming_name(Naming n);
// Label of the enhancing tumour in the scheme: 4 (brats2021) or 3 (brats2023).
uint8_t enhancing_label(Naming n);
constexpr uint8_t kNecroticLabel = 1;
constexpr uint8_t kOedemaLabel = 2;

enum Modality : int { kT1 = 0, kT1ce = 1, kT2 = 2, kFlair = 3 };
constexpr int kModalities = 4;

// A site's scanner and population: how its images and tumours differ from other sites'.
struct Profile {
  std::string name;
  std::string summary;
  double contrast = 1;          // tissue contrast around the GM/WM mean (1 = nominal)
  double wm_gm = 1;             // extra factor on the WM-GM difference (myelination)
  double noise = 0.03;          // Rician noise sigma, fraction of the mean brain intensity
  double bias = 0.12;           // bias field strength (log-intensity sigma)
  double inplane_mm = 1;        // acquisition resolution, simulated as blur on the 1 mm grid
  double slice_mm = 1;          // acquisition slice thickness (through-plane = z)
  double brain_scale = 1;       // brain size relative to an adult brain on the grid
  double tumour_min = 0.18;     // whole-tumour radius, fraction of the brain's mean radius
  double tumour_max = 0.34;
  double oedema_min = 1.35;     // whole-tumour radius / tumour-core radius
  double oedema_max = 2.1;
  double scale_min = 400;       // scanner's arbitrary intensity units (mean brain value)
  double scale_max = 1400;
};

// The built-in profiles, "standard" first.
const std::vector<Profile>& profiles();
// nullptr when there is no profile of that name.
const Profile* find_profile(const std::string& name);

// A real skull-stripped brain (T1-weighted) to use instead of the phantom, prepared
// once and shared read-only by all cases.
struct Anatomy {
  std::array<int64_t, 3> shape{};  // x fastest in data
  std::vector<float> data;
  nifti::Affine vox_to_world{};     // RAS+ mm
  nifti::Affine world_to_vox{};
  std::array<double, 3> centre_mm{};  // centre of the brain's bounding box (world)
  std::array<double, 3> extent_mm{};  // size of that box along world x, y, z
  double csf = 0, gm = 0, wm = 0;     // tissue class means (3-class k-means on nonzero voxels)
};

// Builds an Anatomy from voxel values and their affine. Throws Error 65 (naming
// `path`) when the image is not 3-D, has no brain (fewer than 1000 nonzero voxels) or
// its affine cannot be inverted.
Anatomy make_anatomy(std::vector<float> data, std::array<int64_t, 3> shape, const nifti::Affine& affine,
                     const std::string& path);
// Reads a NIfTI T1 and prepares it. Error 66 when missing, 65 when unreadable or unusable.
Anatomy load_anatomy(const std::string& path);

struct CaseParams {
  std::array<int64_t, 3> shape{240, 240, 155};
  uint64_t seed = 0;
  uint64_t index = 0;        // case index within the cohort: each has its own random stream
  const Profile* profile = nullptr;  // nullptr: "standard"
  Naming naming = Naming::brats2021;
  const Anatomy* anatomy = nullptr;  // nullptr: the phantom
};

struct Case {
  std::array<int64_t, 3> shape{};
  nifti::Affine affine{};
  std::array<std::vector<int16_t>, kModalities> images;  // x fastest; 0 outside the brain, >= 1 inside
  std::vector<uint8_t> labels;                            // scheme labels
  std::vector<uint8_t> brain;                             // 1 inside the brain mask
  uint64_t necrotic = 0, oedema = 0, enhancing = 0;        // voxels per label
};

// Smallest and largest accepted size per axis.
constexpr int64_t kMinSize = 16;
constexpr int64_t kMaxSize = 1024;

// Generates one case. Throws Error 64 for a shape outside kMinSize..kMaxSize.
Case generate(const CaseParams& p);

// The BraTS-like affine of a 1 mm grid: LPS voxel order (diagonal -1, -1, +1 in RAS+),
// origin as in the BraTS 2021 release (x 0, y (Y-1) mm, z 0).
nifti::Affine brats_affine(const std::array<int64_t, 3>& shape);

// Case identifiers: brats2021 "<prefix>_00042", brats2023 "<prefix>-00042-000".
std::string case_id(const std::string& prefix, uint64_t index, Naming n);
// The five file names of a case, in the order t1, t1ce, t2, flair, seg.
std::array<std::string, 5> case_files(const std::string& id, Naming n);

// Writes the five files of a case into case_dir (which must exist), each atomically.
// Error 73 when a file exists and !overwrite or cannot be created, 74 on I/O errors.
void write_case(const Case& c, const std::string& case_dir, const std::string& id, Naming n, bool overwrite,
                const std::string& descrip = {});

}  // namespace fedseg::synth
