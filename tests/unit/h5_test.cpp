#include <gtest/gtest.h>

#include "test_util.h"
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/sha256.h"
#include "h5/tensor_file.h"
#include "h5/zstd_filter.h"

namespace fedseg::h5 {
namespace {

using fedseg::test::error_code;
using fedseg::test::tmpdir;

std::string write_sample(const std::string& path, const std::string& kind = "global", int64_t format = kFormatVersion) {
  File f = File::create(path, kind, "test 0", "{}", format);
  std::vector<float> w(2 * 3 * 4);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f - 3.0f;
  f.write<float>("params/enc.0.conv1.weight", {2, 3, 4}, w.data());
  f.close();
  return path;
}

TEST(H5, RoundTripEveryDtype) {
  std::string d = tmpdir();
  File f = File::create(d + "/a.h5", "global", "test 0", "{\"k\":1}");
  std::vector<double> src(1000);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<double>(i % 100);
  std::vector<DType> types = {DType::f16, DType::f32, DType::f64, DType::u8,  DType::i8, DType::u16,
                              DType::i16, DType::u32, DType::i32, DType::u64, DType::i64};
  for (DType t : types) {
    for (bool compress : {true, false}) {
      WriteOptions wo;
      wo.compress = compress;
      std::string name = std::string("x/") + dtype_name(t) + (compress ? "_z" : "_raw");
      f.write(name, t, {10, 100}, src.data(), DType::f64, wo);
    }
  }
  f.close();
  File r = File::open(d + "/a.h5");
  EXPECT_EQ(r.kind(), "global");
  EXPECT_EQ(r.format(), kFormatVersion);
  auto ts = r.tensors();
  ASSERT_EQ(ts.size(), types.size() * 2);
  EXPECT_TRUE(std::is_sorted(ts.begin(), ts.end(), [](auto& a, auto& b) { return a.name < b.name; }));
  for (const auto& ti : ts) {
    ASSERT_TRUE(ti.dtype.has_value()) << ti.name;
    EXPECT_EQ(ti.shape, (Shape{10, 100}));
    EXPECT_EQ(ti.bytes, 1000 * dtype_size(*ti.dtype));
    bool z = ti.name.size() > 2 && ti.name.substr(ti.name.size() - 2) == "_z";
    if (z) {
      EXPECT_EQ(ti.filters.back(), "zstd") << ti.name;
      EXPECT_FALSE(ti.chunks.empty());
    } else {
      EXPECT_TRUE(ti.filters.empty());
    }
    auto back = r.read_as<double>(ti.name);
    EXPECT_EQ(back, src) << ti.name;
  }
}

TEST(H5, FileImageOpensInMemoryAndShowsPlainTensorsInPlace) {
  std::string d = tmpdir();
  {
    File f = File::create(d + "/u.h5", "update", "test 0", "{}");
    std::vector<float> v(1000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.25f - 7.0f;
    f.write("delta/plain", DType::f32, {10, 100}, v.data(), DType::f32, {false, 0, {}});
    f.write("delta/zstd", DType::f32, {10, 100}, v.data(), DType::f32, {true, 1, {}});
    f.write("delta/half", DType::f16, {10, 100}, v.data(), DType::f32, {false, 0, {}});
    f.close();
  }
  std::ifstream in(d + "/u.h5", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  RawVector<uint8_t> image(bytes.begin(), bytes.end());
  File f = File::open_image(image.data(), image.size(), "u.h5 in memory", {"update", true});
  EXPECT_EQ(f.kind(), "update");
  const float* p = f.f32_in_image("delta/plain");
  ASSERT_NE(p, nullptr);
  EXPECT_GE(reinterpret_cast<const uint8_t*>(p), image.data());
  EXPECT_LE(reinterpret_cast<const uint8_t*>(p + 1000), image.data() + image.size());
  std::vector<float> r(1000);
  f.read("delta/zstd", DType::f32, r.data(), r.size() * 4);
  for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(p[i], r[i]) << i;
  EXPECT_EQ(p[3], 3 * 0.25f - 7.0f);
  EXPECT_EQ(f.f32_in_image("delta/zstd"), nullptr);  // filtered: read() it
  EXPECT_EQ(f.f32_in_image("delta/half"), nullptr);  // another type
  EXPECT_EQ(f.f32_in_image("delta/none"), nullptr);
  f.close();
  // A file not opened from memory has no image; garbage is not an HDF5 file.
  EXPECT_EQ(File::open(d + "/u.h5", {"update", true}).f32_in_image("delta/plain"), nullptr);
  RawVector<uint8_t> junk(4096, 0x5a);
  EXPECT_EQ(error_code([&] { File::open_image(junk.data(), junk.size(), "junk", {}); }), 65);
  EXPECT_EQ(error_code([&] { File::open_image(image.data(), image.size() / 2, "half", {}); }), 65);
}

TEST(H5, Float16StorageRoundsLikeIeeeHalf) {
  std::string d = tmpdir();
  File f = File::create(d + "/h.h5", "update", "t", "{}");
  std::vector<float> v = {0.0f, 1.0f, -2.5f, 65504.0f, 1e-7f, 0.1f};
  f.write("delta/x", DType::f16, {6}, v.data(), DType::f32);
  f.close();
  File r = File::open(d + "/h.h5");
  EXPECT_EQ(r.info("delta/x").dtype, DType::f16);
  auto back = r.read_as<float>("delta/x");
  EXPECT_EQ(back[0], 0.0f);
  EXPECT_EQ(back[1], 1.0f);
  EXPECT_EQ(back[2], -2.5f);
  EXPECT_EQ(back[3], 65504.0f);
  EXPECT_NEAR(back[4], 1.19209e-07f, 1e-9);  // nearest half subnormal
  EXPECT_NEAR(back[5], 0.0999755859375f, 1e-7);
}

TEST(H5, AttributesAllTypes) {
  std::string d = tmpdir();
  File f = File::create(d + "/a.h5", "update", "t", "{}");
  f.set_attr("/", "round", int64_t{7});
  f.set_attr("/", "lr", 5e-5);
  f.set_attr("/", "site", std::string("hospital-ä"));
  f.set_attr("/", "ints", std::vector<int64_t>{1, 2, 3});
  f.set_attr("/", "curve", std::vector<double>{0.5, 0.25});
  f.write<float>("delta/w", {1}, std::vector<float>{1.f}.data());
  f.set_attr("delta/w", "note", std::string("per tensor"));
  f.set_attr("/", "round", int64_t{8});  // replaces
  f.close();
  File r = File::open(d + "/a.h5");
  EXPECT_EQ(r.attr_int("/", "round"), 8);
  EXPECT_DOUBLE_EQ(r.attr_double("/", "lr"), 5e-5);
  EXPECT_EQ(r.attr_string("/", "site"), "hospital-ä");
  EXPECT_EQ(std::get<std::vector<int64_t>>(r.attr("/", "ints")), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(std::get<std::vector<double>>(r.attr("/", "curve")), (std::vector<double>{0.5, 0.25}));
  EXPECT_EQ(r.attr_string("delta/w", "note"), "per tensor");
  auto all = r.attrs("/");
  for (const char* k : {"fedseg_format", "kind", "created", "tool", "provenance", "round", "site"}) EXPECT_TRUE(all.count(k)) << k;
  EXPECT_EQ(error_code([&] { r.attr("/", "absent"); }), kExitDataErr);
  EXPECT_EQ(error_code([&] { r.attr_int("/", "site"); }), kExitDataErr);
}

TEST(H5, ExistsChildrenAndSlabs) {
  std::string d = tmpdir();
  File f = File::create(d + "/s.h5", "dataset", "t", "{}");
  std::vector<int16_t> v(4 * 5 * 6);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int16_t>(i);
  f.write<int16_t>("cases/a/image", {4, 5, 6}, v.data());
  f.write<int16_t>("cases/b/image", {4, 5, 6}, v.data());
  f.close();
  File r = File::open(d + "/s.h5", {"dataset", true});
  EXPECT_TRUE(r.exists("cases/a/image"));
  EXPECT_FALSE(r.exists("cases/c/image"));
  EXPECT_FALSE(r.exists("nope/deeper/still"));
  EXPECT_EQ(r.children("cases"), (std::vector<std::string>{"a", "b"}));
  std::vector<float> slab(2 * 2 * 3);
  r.read_slab("cases/b/image", {1, 2, 3}, {2, 2, 3}, DType::f32, slab.data());
  size_t k = 0;
  for (int z = 1; z < 3; ++z)
    for (int y = 2; y < 4; ++y)
      for (int x = 3; x < 6; ++x) EXPECT_EQ(slab[k++], static_cast<float>(z * 30 + y * 6 + x));
}

TEST(H5, SchemaIsEnforced) {
  std::string d = tmpdir();
  EXPECT_EQ(error_code([&] { File::open(d + "/missing.h5"); }), kExitNoInput);
  EXPECT_EQ(error_code([&] { File::open(d); }), kExitNoInput);
  std::ofstream(d + "/text.h5") << "this is not an HDF5 file";
  EXPECT_EQ(error_code([&] { File::open(d + "/text.h5"); }), kExitDataErr);
  write_sample(d + "/unknown.h5", "frobnicator");
  EXPECT_EQ(error_code([&] { File::open(d + "/unknown.h5"); }), kExitDataErr);
  write_sample(d + "/newer.h5", "global", kFormatVersion + 1);
  try {
    File::open(d + "/newer.h5");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitDataErr);
    EXPECT_NE(e.message().find("newer"), std::string::npos) << e.message();
  }
  write_sample(d + "/g.h5");
  EXPECT_EQ(error_code([&] { File::open(d + "/g.h5", {"update", true}); }), kExitDataErr);
  EXPECT_EQ(error_code([&] { File::open(d + "/g.h5", {"global", true}); }), 0);
}

TEST(H5, TruncatedAndCorruptFilesAreDataErrors) {
  std::string d = tmpdir();
  File f = File::create(d + "/big.h5", "global", "t", "{}");
  std::vector<float> w(200000);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(static_cast<float>(i));
  f.write<float>("params/w", {200000}, w.data());
  f.close();
  std::string bytes = read_file(d + "/big.h5");
  for (size_t cut : {size_t(10), size_t(100), size_t(2048), bytes.size() / 2, bytes.size() - 1}) {
    std::string p = d + "/cut.h5";
    ::unlink(p.c_str());
    write_file_atomic(p, bytes.substr(0, cut), true);
    int code = error_code([&] {
      File r = File::open(p);
      for (const auto& t : r.tensors()) check_tensor(r, t.name);
    });
    EXPECT_EQ(code, kExitDataErr) << "cut at " << cut;
  }
  // Flip bytes inside the compressed chunks (the middle of the file).
  std::string bad = bytes;
  for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 64; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5a);
  write_file_atomic(d + "/flip.h5", bad, true);
  EXPECT_EQ(error_code([&] {
              File r = File::open(d + "/flip.h5");
              check_tensor(r, "params/w");
            }),
            kExitDataErr);
}

TEST(H5, CheckTensorHashesLittleEndianValues) {
  std::string d = tmpdir();
  write_sample(d + "/g.h5");
  File r = File::open(d + "/g.h5");
  TensorCheck c = check_tensor(r, "params/enc.0.conv1.weight");
  std::vector<float> w(24);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f - 3.0f;
  EXPECT_EQ(c.sha256, sha256_hex(w.data(), w.size() * 4));
  EXPECT_EQ(c.nonfinite, 0u);
  EXPECT_EQ(c.min, -3.0);
  EXPECT_EQ(c.max, 8.5);
}

TEST(H5, CheckTensorWalksLargeTensorsInPieces) {
  std::string d = tmpdir();
  File f = File::create(d + "/l.h5", "global", "t", "{}");
  // 3 x 3M float32 = 36 MB > the 32 MB check budget: walked in boxes, same hash.
  std::vector<float> w(3 * 3000000);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 977);
  w[5] = NAN;
  f.write<float>("p", {3, 3000000}, w.data());
  f.close();
  File r = File::open(d + "/l.h5");
  TensorCheck c = check_tensor(r, "p");
  EXPECT_EQ(c.sha256, sha256_hex(w.data(), w.size() * 4));
  EXPECT_EQ(c.nonfinite, 1u);
}

TEST(H5, DeterministicBytesForFixedTime) {
  std::string d = tmpdir();
  ::setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
  write_sample(d + "/1.h5");
  ::sleep(1);  // object modification times, if any were stored, would now differ
  write_sample(d + "/2.h5");
  ::unsetenv("SOURCE_DATE_EPOCH");
  EXPECT_EQ(read_file(d + "/1.h5"), read_file(d + "/2.h5"));
  EXPECT_EQ(File::open(d + "/1.h5").attr_string("/", "created"), "2023-11-14T22:13:20Z");
}

TEST(H5, OutputIsAtomic) {
  std::string d = tmpdir();
  {
    Output o(d + "/m.h5", "global", "t", "{}", false);
    o.file().write<float>("params/w", {1}, std::vector<float>{1.f}.data());
    EXPECT_FALSE(path_exists(d + "/m.h5"));
  }  // not committed
  EXPECT_FALSE(path_exists(d + "/m.h5"));
  Output o(d + "/m.h5", "global", "t", "{}", false);
  o.file().write<float>("params/w", {1}, std::vector<float>{1.f}.data());
  o.commit();
  EXPECT_EQ(File::open(d + "/m.h5").read_as<float>("params/w"), std::vector<float>{1.f});
  EXPECT_EQ(error_code([&] { Output again(d + "/m.h5", "global", "t", "{}", false); }), kExitCantCreate);
}

TEST(ZstdFilter, RejectsGarbageWithoutCrashing) {
  // The filter callback itself: random input must fail cleanly (return 0).
  for (int seed = 0; seed < 200; ++seed) {
    size_t n = 1 + static_cast<size_t>(seed * 37 % 500);
    auto* buf = static_cast<unsigned char*>(std::malloc(n));
    unsigned s = static_cast<unsigned>(seed) * 2654435761u;
    for (size_t i = 0; i < n; ++i) buf[i] = static_cast<unsigned char>((s = s * 1103515245u + 12345u) >> 16);
    if (seed % 2) {  // a valid zstd magic in front of garbage
      const unsigned char magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
      std::memcpy(buf, magic, std::min<size_t>(4, n));
    }
    size_t size = n;
    void* p = buf;
    size_t r = fedseg_h5z_zstd_class.filter(H5Z_FLAG_REVERSE, 0, nullptr, n, &size, &p);
    EXPECT_EQ(r, 0u) << "seed " << seed;
    std::free(p);
  }
}

TEST(ZstdFilter, CompressDecompress) {
  std::vector<unsigned char> src(100000);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i % 7);
  void* p = std::malloc(src.size());
  std::memcpy(p, src.data(), src.size());
  size_t size = src.size();
  unsigned level = 5;
  size_t c = fedseg_h5z_zstd_class.filter(0, 1, &level, src.size(), &size, &p);
  ASSERT_GT(c, 0u);
  ASSERT_LT(c, src.size());
  size_t d = fedseg_h5z_zstd_class.filter(H5Z_FLAG_REVERSE, 1, &level, c, &size, &p);
  ASSERT_EQ(d, src.size());
  EXPECT_EQ(std::memcmp(p, src.data(), d), 0);
  // Truncated frame fails.
  size_t c2 = fedseg_h5z_zstd_class.filter(0, 1, &level, d, &size, &p);
  EXPECT_EQ(fedseg_h5z_zstd_class.filter(H5Z_FLAG_REVERSE, 1, &level, c2 - 3, &size, &p), 0u);
  std::free(p);
}

}  // namespace
}  // namespace fedseg::h5
