// fedseg-testwrite (tests only, not installed): writes a fedseg HDF5 file whose
// values follow a documented formula, so that independent readers (h5py, h5dump)
// can check them, and slowly if asked, so that tests can kill it mid-write.
//   element i of tensor k: float types  ((i*7 + k*13) % 1000) * 0.25 - 100
//                          integer types (i*7 + k*13) % 100
#include <unistd.h>

#include <cstring>
#include <memory>

#include "core/atomic_file.h"

#include "core/tool.h"
#include "h5/tensor_file.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string out;
  std::string kind = "global";
  int64_t format = h5::kFormatVersion;
  int tensors = 3;
  std::vector<uint64_t> shape{4, 5, 6};
  std::string dtype = "float32";
  int slow_ms = 0;
  bool no_schema = false;
  bool nan = false;
  bool contiguous = false;
  std::string from_f32;  // raw little-endian float32 values for one 1-D tensor "values"
  std::string federation = "test-fed";
  int64_t round = 3;
  std::string site;        // written as attribute `site` when set
  std::string base;        // written as attribute `base_sha256` when set
  uint64_t random_mb = 0;  // also a float32 tensor "noise" of this many MiB (package benchmarks)
  uint64_t seed = 1;
};

int run(const Options& o, const ToolContext& ctx) {
  auto dt = h5::dtype_from_name(o.dtype);
  if (!dt) throw Error(kExitUsage, "unknown dtype", o.dtype);
  h5::Output out(o.out, o.kind, ctx.program() + " " + kVersion, "{\"test\":true}", ctx.force());
  h5::File& f = out.file();
  if (o.no_schema) {
    f.set_attr("/", "fedseg_format", std::string("none"));
  } else {
    f.set_attr("/", "fedseg_format", o.format);
  }
  f.set_attr("/", "federation", o.federation);
  f.set_attr("/", "round", o.round);
  if (!o.site.empty()) f.set_attr("/", "site", o.site);
  if (!o.base.empty()) f.set_attr("/", "base_sha256", o.base);
  if (o.random_mb > 0) {
    // Model-delta-like float32 values (small, varied mantissas: zstd -3 gains ~8%),
    // from a xorshift generator, written in 16 MiB slabs of one contiguous tensor.
    const uint64_t n = o.random_mb << 18, slab = uint64_t(1) << 22;
    h5::WriteOptions plain;
    plain.compress = false;
    std::vector<float> v(n);
    uint64_t x = o.seed * 0x9E3779B97F4A7C15ull + 1;
    for (uint64_t i = 0; i < n; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v[i] = (static_cast<float>(x >> 40) / 16777216.0f - 0.5f) * 0.01f * static_cast<float>(1 + (i / slab) % 3);
    }
    f.write("delta/noise", h5::DType::f32, {n}, v.data(), h5::DType::f32, plain);
  }
  if (!o.from_f32.empty()) {
    std::string raw = read_file(o.from_f32);
    std::vector<float> v(raw.size() / 4);
    std::memcpy(v.data(), raw.data(), v.size() * 4);
    f.write("values", *dt, {v.size()}, v.data(), h5::DType::f32);
  }
  uint64_t n = h5::numel(o.shape);
  h5::WriteOptions wo;
  wo.compress = !o.contiguous;
  for (int k = 0; k < o.tensors; ++k) {
    std::string name = "params/t" + std::to_string(k);
    if (h5::dtype_is_float(*dt)) {
      std::vector<double> v(n);
      for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<double>((i * 7 + static_cast<uint64_t>(k) * 13) % 1000) * 0.25 - 100;
      if (o.nan && n > 0) v[n / 2] = std::nan("");
      f.write(name, *dt, o.shape, v.data(), h5::DType::f64, wo);
    } else {
      std::vector<int64_t> v(n);
      for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<int64_t>((i * 7 + static_cast<uint64_t>(k) * 13) % 100);
      f.write(name, *dt, o.shape, v.data(), h5::DType::i64, wo);
    }
    if (o.slow_ms > 0) ::usleep(static_cast<useconds_t>(o.slow_ms) * 1000);
  }
  out.commit();
  return kExitOk;
}

}  // namespace

const ToolDef& testwrite() {
  static const ToolDef def{
      {"testwrite", "write a fedseg HDF5 file with known values (tests only)", "-o FILE", "For tests.", {}, {}, {}, "", {}},
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("-o", o->out, "output file")->required();
        app.add_option("--kind", o->kind, "kind attribute");
        app.add_option("--format", o->format, "fedseg_format attribute");
        app.add_option("--tensors", o->tensors, "number of tensors");
        app.add_option("--shape", o->shape, "tensor shape")->delimiter(',');
        app.add_option("--dtype", o->dtype, "stored dtype");
        app.add_option("--slow-ms", o->slow_ms, "sleep after each tensor");
        app.add_flag("--no-schema", o->no_schema, "write fedseg_format as a string (not a fedseg file)");
        app.add_flag("--nan", o->nan, "put a NaN in each float tensor");
        app.add_option("--from-f32", o->from_f32, "also write tensor 'values' from raw float32 in this file");
        app.add_flag("--contiguous", o->contiguous, "no chunking or compression");
        app.add_option("--federation", o->federation, "federation attribute");
        app.add_option("--round", o->round, "round attribute");
        app.add_option("--site", o->site, "site attribute");
        app.add_option("--base", o->base, "base_sha256 attribute");
        app.add_option("--random-mb", o->random_mb, "add a float32 tensor delta/noise of this many MiB");
        app.add_option("--seed", o->seed, "seed of --random-mb");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
