// fedseg::nifti: NIfTI-1 and NIfTI-2 images (.nii, .nii.gz, .hdr/.img pairs),
// read with bounds checks and written so that nibabel reads them back identically.
// Depends on core only (no HDF5, LibTorch or curl). Reading errors are
// fedseg::Error: 66 missing file, 65 anything wrong with the bytes (always naming
// the file and the problem), never a crash or an allocation the file cannot back.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/buffer.h"

namespace fedseg::nifti {

// Voxel types fedseg reads (NIfTI datatype codes 2, 256, 4, 512, 8, 768, 1024, 1280, 16, 64).
enum class DataType : uint8_t { u8, i8, i16, u16, i32, u32, i64, u64, f32, f64 };
const char* datatype_name(DataType t);
size_t datatype_size(DataType t);
int datatype_code(DataType t);

// Voxel index (i,j,k,1) -> world millimetres (RAS+, as nibabel).
using Affine = std::array<std::array<double, 4>, 4>;

struct Header {
  int version = 1;          // 1 or 2
  bool big_endian = false;  // as stored
  std::array<int64_t, 8> dim{};  // after the reference library's fix-ups; dim[0] = rank
  std::array<double, 8> pixdim{};
  DataType datatype = DataType::f32;
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  double quatern_b = 0, quatern_c = 0, quatern_d = 0;
  double qoffset_x = 0, qoffset_y = 0, qoffset_z = 0;
  double qfac = 1;                          // pixdim[0] sign rule
  std::array<std::array<double, 4>, 3> srow{};  // sform rows
  int xyzt_units = 0;
  int64_t vox_offset = 0;
  std::string descrip;
};

struct Image {
  Header header;
  std::vector<int64_t> shape;  // dim[1..rank]; x varies fastest in `raw`
  Affine affine{};              // nibabel's choice: sform if code>0, else qform if code>0, else pixdim
  Affine qform{}, sform{};      // both as stored (identity-less zero when the code is 0)
  bool qform_sform_disagree = false;  // both set and differ by more than 1e-3 mm
  // Voxels as stored, converted to host byte order, unscaled.
  DataType datatype = DataType::f32;
  RawVector<unsigned char> raw;

  int64_t voxels() const;
  // Scaled values (y = slope*x + inter when slope is finite and non-zero), one pass.
  std::vector<float> to_float() const;
  // The same into out, which must hold voxels() values (no allocation).
  void to_float(float* out) const;
  // A label map: integer values 0..255, no scaling (slope 0 or 1, inter 0), else Error 65
  // naming `path` and the problem.
  std::vector<uint8_t> to_labels(const std::string& path) const;
  // The same into out, which must hold voxels() values (no allocation).
  void to_labels(const std::string& path, uint8_t* out) const;
};

struct ReadOptions {
  bool header_only = false;
  // Refuse files whose decoded voxel data would exceed this (Error 65).
  uint64_t max_bytes = uint64_t(4) << 30;
};

// Reads path (.nii, .nii.gz, .hdr or .img of a pair; gzip detected by magic bytes,
// multi-member streams too). Warns (fedseg::log) when qform and sform disagree.
Image read(const std::string& path, const ReadOptions& opts = {});
// The same into an existing image, reusing the capacity of into.raw (batch readers
// keep one image per worker so that large buffers are not allocated per file).
void read(const std::string& path, Image& into, const ReadOptions& opts = {});

// For batch readers: reads like read(), but leaves the voxels where they were
// decoded, in `buffer` (its capacity reused; into.raw is left empty): no move of a
// whole volume past the header of a .nii.gz. Returns the first voxel's address in
// buffer (into.voxels() values of into.datatype, host byte order; valid until buffer
// changes). With sha256, also the SHA-256 (hex) of the file's bytes, computed from
// the bytes read for decoding when the file is gzip-compressed. header_only leaves
// buffer's contents unspecified.
const unsigned char* read_voxels(const std::string& path, Image& into, RawVector<unsigned char>& buffer,
                                 std::string* sha256 = nullptr, const ReadOptions& opts = {});

// Reads a single-file image (.nii or .nii.gz bytes) from memory; `name` is used in
// error messages only. A .hdr/.img pair (magic ni1/ni2) is Error 65 here. Used by
// the fuzz target and by callers that already hold the bytes.
Image read_bytes(const std::string& name, const unsigned char* data, size_t size, const ReadOptions& opts = {});

struct WriteOptions {
  int version = 1;           // NIfTI-1 or NIfTI-2
  int gzip_level = 6;        // used when path ends in .gz
};

// Writes img atomically (NIfTI-1 single file unless opts.version == 2; gzip when the
// path ends in .gz). Writes img.header's sform/qform codes and rows, pixdim,
// scl_slope/inter, xyzt_units, datatype and descrip; dim from img.shape; vox_offset 352
// (NIfTI-1) or 544 (NIfTI-2). Error 73/74 on failure, 73 if it exists and !overwrite.
void write(const std::string& path, const Image& img, bool overwrite, const WriteOptions& opts = {});

// Builds a header for a new image: shape, spacing and affine (sform and qform set
// from it, codes 1 = scanner / 2 = aligned as given), datatype.
Image make_image(const std::vector<int64_t>& shape, DataType t, const Affine& affine, int xform_code = 1);

}  // namespace fedseg::nifti
