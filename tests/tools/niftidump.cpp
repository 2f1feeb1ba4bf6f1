// fedseg-niftidump (tests only, not installed): shows what fedseg::nifti reads, and
// writes a NIfTI file from raw values, so that tests can compare with nibabel.
//   fedseg-niftidump FILE --out PREFIX        PREFIX.json (header, shape, affines) and
//                                             PREFIX.f32 (to_float(), little-endian, x fastest)
//   fedseg-niftidump --write OUT --raw RAW --meta META.json
//       META: {"shape":[..], "dtype":"int16", "affine":[[..]x4], "xform_code":1,
//              "scl_slope":0, "scl_inter":0, "version":1}; RAW: the voxels, little-endian
//       dtype, x fastest. OUT ending in .gz is gzip-compressed.
#include <cstring>
#include <fstream>
#include <memory>

#include "core/atomic_file.h"
#include "core/tool.h"
#include "nifti/nifti.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string in;
  std::string out;
  std::string write;
  std::string raw;
  std::string meta;
  bool header_only = false;
  uint64_t max_bytes = uint64_t(4) << 30;
};

nlohmann::json mat(const nifti::Affine& a) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& row : a) j.push_back(std::vector<double>(row.begin(), row.end()));
  return j;
}

nifti::DataType dtype_from(const std::string& name) {
  for (auto t : {nifti::DataType::u8, nifti::DataType::i8, nifti::DataType::i16, nifti::DataType::u16,
                 nifti::DataType::i32, nifti::DataType::u32, nifti::DataType::i64, nifti::DataType::u64,
                 nifti::DataType::f32, nifti::DataType::f64})
    if (name == nifti::datatype_name(t)) return t;
  throw Error(kExitUsage, "unknown dtype", name);
}

int dump(const Options& o) {
  nifti::ReadOptions ro;
  ro.header_only = o.header_only;
  ro.max_bytes = o.max_bytes;
  nifti::Image img = nifti::read(o.in, ro);
  const nifti::Header& h = img.header;
  nlohmann::json j;
  j["version"] = h.version;
  j["big_endian"] = h.big_endian;
  j["shape"] = img.shape;
  j["datatype"] = nifti::datatype_name(img.datatype);
  j["dim"] = std::vector<int64_t>(h.dim.begin(), h.dim.end());
  j["pixdim"] = std::vector<double>(h.pixdim.begin(), h.pixdim.end());
  j["scl_slope"] = h.scl_slope;
  j["scl_inter"] = h.scl_inter;
  j["qform_code"] = h.qform_code;
  j["sform_code"] = h.sform_code;
  j["qfac"] = h.qfac;
  j["vox_offset"] = h.vox_offset;
  j["xyzt_units"] = h.xyzt_units;
  j["descrip"] = h.descrip;
  j["affine"] = mat(img.affine);
  j["qform"] = mat(img.qform);
  j["sform"] = mat(img.sform);
  j["qform_sform_disagree"] = img.qform_sform_disagree;
  write_file_atomic(o.out + ".json", j.dump(1) + "\n", true);
  if (!o.header_only) {
    std::vector<float> v = img.to_float();
    std::string bytes(v.size() * sizeof(float), '\0');
    if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
    write_file_atomic(o.out + ".f32", bytes, true);
  }
  return kExitOk;
}

int write_image(const Options& o, const ToolContext& ctx) {
  nlohmann::json m = nlohmann::json::parse(read_file(o.meta));
  std::vector<int64_t> shape = m.at("shape").get<std::vector<int64_t>>();
  nifti::DataType t = dtype_from(m.at("dtype").get<std::string>());
  nifti::Affine a{};
  auto rows = m.at("affine").get<std::vector<std::vector<double>>>();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) a[r][c] = rows.at(r).at(c);
  nifti::Image img = nifti::make_image(shape, t, a, m.value("xform_code", 1));
  img.header.scl_slope = m.value("scl_slope", 0.0);
  img.header.scl_inter = m.value("scl_inter", 0.0);
  img.header.descrip = m.value("descrip", std::string("fedseg-niftidump"));
  std::string raw = read_file(o.raw, size_t(1) << 34);
  if (raw.size() != img.raw.size())
    throw Error(kExitDataErr, "wrong size", o.raw,
                std::to_string(raw.size()) + " bytes, the shape needs " + std::to_string(img.raw.size()));
  std::memcpy(img.raw.data(), raw.data(), raw.size());
  nifti::WriteOptions wo;
  wo.version = m.value("version", 1);
  nifti::write(o.write, img, ctx.force(), wo);
  return kExitOk;
}

}  // namespace

const ToolDef& niftidump() {
  static const ToolDef def{
      {"niftidump", "dump or write NIfTI images with fedseg::nifti (tests only)", "FILE --out PREFIX",
       "For tests.", {}, {}, {}, "", {}},
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("file", o->in, "NIfTI file to dump");
        app.add_option("--out", o->out, "output prefix for PREFIX.json and PREFIX.f32");
        app.add_flag("--header-only", o->header_only, "read the header only (no PREFIX.f32)");
        app.add_option("--max-bytes", o->max_bytes, "ReadOptions::max_bytes");
        app.add_option("--write", o->write, "write a NIfTI file from --raw and --meta");
        app.add_option("--raw", o->raw, "raw little-endian voxels");
        app.add_option("--meta", o->meta, "JSON metadata for --write");
        return [o](const ToolContext& ctx) {
          if (!o->write.empty()) {
            if (o->raw.empty() || o->meta.empty()) throw Error(kExitUsage, "--write needs --raw and --meta");
            return write_image(*o, ctx);
          }
          if (o->in.empty() || o->out.empty()) throw Error(kExitUsage, "FILE and --out are required");
          return dump(*o);
        };
      },
  };
  return def;
}

}  // namespace fedseg::tools
