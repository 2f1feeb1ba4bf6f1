// libFuzzer target for fedseg::nifti: any bytes must give an Image or a
// fedseg::Error, never a crash, a sanitizer report, a hang or a huge allocation.
// The same bytes are also read from a file with read_voxels (fedseg-prep's reader),
// which must agree with read_bytes.
// With FEDSEG_FUZZ_WRITE_SEEDS=DIR set, it writes a seed corpus of small valid
// images (every datatype, NIfTI-1/-2, plain and gzip) into DIR and exits.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/log.h"
#include "core/sha256.h"
#include "nifti/nifti.h"

namespace {

void write_seeds(const std::string& dir) {
  using namespace fedseg::nifti;
  const DataType types[] = {DataType::u8,  DataType::i8,  DataType::i16, DataType::u16, DataType::i32,
                            DataType::u32, DataType::i64, DataType::u64, DataType::f32, DataType::f64};
  Affine a{};
  a[0] = {0.9, -0.2, 0, -40};
  a[1] = {0.2, 0.9, 0, 10};
  a[2] = {0, 0, -2, 5};
  a[3] = {0, 0, 0, 1};
  int n = 0;
  for (DataType t : types) {
    for (int version : {1, 2}) {
      for (const char* ext : {".nii", ".nii.gz"}) {
        Image img = make_image({4, 3, 2 + n % 3}, t, a, 1 + n % 4);
        for (size_t i = 0; i < img.raw.size(); ++i) img.raw[i] = static_cast<unsigned char>(i * 13);
        if (n % 3 == 0) {
          img.header.scl_slope = 0.5;
          img.header.scl_inter = -3;
        }
        if (n % 5 == 0) img.header.sform_code = 0;
        WriteOptions wo;
        wo.version = version;
        write(dir + "/seed" + std::to_string(n++) + ext, img, true, wo);
      }
    }
  }
}

// A private folder for the file that read_voxels reads, removed at exit.
std::string& file_path() {
  static std::string path;
  return path;
}
void remove_file() {
  if (file_path().empty()) return;
  ::unlink(file_path().c_str());
  ::rmdir(file_path().substr(0, file_path().rfind('/')).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fedseg::log::set_level(fedseg::log::Level::quiet);  // the qform/sform warning is noise here
  if (const char* dir = std::getenv("FEDSEG_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/nifti-fuzz-XXXXXX";
  if (!::mkdtemp(tmpl.data())) std::abort();
  file_path() = tmpl + "/fuzz.nii";
  std::atexit(remove_file);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fedseg::nifti::ReadOptions opts;
  opts.max_bytes = uint64_t(64) << 20;
  opts.header_only = size > 0 && (data[size - 1] & 1);  // exercise both paths
  // The same bytes through read_voxels from a file: the same voxels, the file's hash,
  // and no error but bad data (65) or, for a .hdr/.img pair's header, a missing .img (66).
  bool file_ok = false;
  fedseg::nifti::Image from_file;
  fedseg::RawVector<unsigned char> buffer;
  const unsigned char* voxels = nullptr;
  {
    FILE* f = std::fopen(file_path().c_str(), "wb");
    if (!f || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0) std::abort();
    try {
      std::string sha;
      voxels = fedseg::nifti::read_voxels(file_path(), from_file, buffer, &sha, opts);
      if (sha != fedseg::sha256_hex(data, size)) std::abort();
      file_ok = true;
    } catch (const fedseg::Error& e) {
      if (e.code() != fedseg::kExitDataErr && e.code() != fedseg::kExitNoInput) std::abort();
    }
  }
  try {
    fedseg::nifti::Image img = fedseg::nifti::read_bytes("fuzz.nii", data, size, opts);
    if (!file_ok) std::abort();  // read from memory but not from the file
    if (img.shape != from_file.shape || img.datatype != from_file.datatype) std::abort();
    if (!opts.header_only && !img.raw.empty() && std::memcmp(voxels, img.raw.data(), img.raw.size()) != 0) std::abort();
    if (!opts.header_only) {
      std::vector<float> f = img.to_float();
      if (f.size() != static_cast<size_t>(img.voxels())) std::abort();
      try {
        (void)img.to_labels("fuzz.nii");
      } catch (const fedseg::Error& e) {
        if (e.code() != fedseg::kExitDataErr) std::abort();
      }
    }
  } catch (const fedseg::Error& e) {
    if (e.code() != fedseg::kExitDataErr) std::abort();  // from memory: only "bad data" is possible
  }
  return 0;
}
