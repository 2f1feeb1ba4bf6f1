#include <gtest/gtest.h>

#include "test_util.h"
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/sha256.h"
#include "nifti/nifti.h"

namespace fedseg::nifti {
namespace {

using fedseg::test::error_code;
using fedseg::test::tmpdir;

void put_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string get_file(const std::string& path) { return read_file(path); }

std::string gzip(const std::string& in) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, in.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A hand-made NIfTI-1 header, so that tests control every byte (and byte order).
struct H1 {
  bool be = false;
  std::string magic = std::string("n+1\0", 4);
  int16_t dim[8] = {3, 4, 3, 2, 1, 1, 1, 1};
  int16_t datatype = 4;
  int16_t bitpix = 16;
  float pixdim[8] = {1, 2, 3, 4, 1, 1, 1, 1};
  float vox_offset = 352;
  float slope = 0, inter = 0;
  int16_t qform_code = 0, sform_code = 0;
  float quat[3] = {0, 0, 0}, qoff[3] = {0, 0, 0};
  float srow[3][4] = {{2, 0, 0, 10}, {0, 3, 0, 20}, {0, 0, 4, 30}};
  char extender0 = 0;

  template <typename T>
  void put(std::string& b, size_t off, T v) const {
    unsigned char tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    if (be) std::reverse(tmp, tmp + sizeof(T));
    std::memcpy(&b[off], tmp, sizeof(T));
  }
  std::string bytes() const {
    std::string b(352, '\0');
    put<int32_t>(b, 0, 348);
    for (int i = 0; i < 8; ++i) put<int16_t>(b, 40 + 2 * i, dim[i]);
    put<int16_t>(b, 70, datatype);
    put<int16_t>(b, 72, bitpix);
    for (int i = 0; i < 8; ++i) put<float>(b, 76 + 4 * i, pixdim[i]);
    put<float>(b, 108, vox_offset);
    put<float>(b, 112, slope);
    put<float>(b, 116, inter);
    put<int16_t>(b, 252, qform_code);
    put<int16_t>(b, 254, sform_code);
    for (int i = 0; i < 3; ++i) put<float>(b, 256 + 4 * i, quat[i]);
    for (int i = 0; i < 3; ++i) put<float>(b, 268 + 4 * i, qoff[i]);
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) put<float>(b, 280 + 16 * r + 4 * c, srow[r][c]);
    std::memcpy(&b[344], magic.data(), 4);
    b[348] = extender0;
    return b;
  }
  // int16 voxels 0..n-1 in this header's byte order.
  std::string data(size_t n) const {
    std::string d(n * 2, '\0');
    for (size_t i = 0; i < n; ++i) put<int16_t>(d, 2 * i, static_cast<int16_t>(i));
    return d;
  }
};

Image read_mem(const std::string& b, const ReadOptions& o = {}) {
  return read_bytes("mem.nii", reinterpret_cast<const unsigned char*>(b.data()), b.size(), o);
}

Affine diag_affine(double x, double y, double z) {
  Affine a{};
  a[0][0] = x;
  a[1][1] = y;
  a[2][2] = z;
  a[3][3] = 1;
  a[0][3] = -10;
  a[1][3] = 20.5;
  a[2][3] = 7;
  return a;
}

void expect_affine_near(const Affine& a, const Affine& b, double tol = 1e-5) {
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(a[r][c], b[r][c], tol) << "at " << r << "," << c;
}

TEST(Nifti, DatatypeTable) {
  EXPECT_STREQ(datatype_name(DataType::i16), "int16");
  EXPECT_EQ(datatype_size(DataType::u64), 8u);
  EXPECT_EQ(datatype_code(DataType::i8), 256);
  EXPECT_EQ(datatype_code(DataType::f64), 64);
}

TEST(Nifti, RoundTripEveryDatatypeV1V2Gzip) {
  std::string d = tmpdir();
  const std::vector<DataType> types = {DataType::u8,  DataType::i8,  DataType::i16, DataType::u16, DataType::i32,
                                       DataType::u32, DataType::i64, DataType::u64, DataType::f32, DataType::f64};
  Affine aff{};
  // Oblique, left-handed, with an offset.
  const double c = std::cos(0.3), s = std::sin(0.3);
  aff[0] = {c * 1.5, -s * 2, 0, -90};
  aff[1] = {s * 1.5, c * 2, 0, 12};
  aff[2] = {0, 0, -2.5, 40};
  aff[3] = {0, 0, 0, 1};
  for (DataType t : types) {
    for (int version : {1, 2}) {
      for (const char* ext : {".nii", ".nii.gz"}) {
        Image img = make_image({5, 4, 3, 2}, t, aff, 2);
        for (size_t i = 0; i < img.raw.size(); ++i) img.raw[i] = static_cast<unsigned char>(i * 7 + 3);
        if (t == DataType::f32 || t == DataType::f64) {
          // Keep the floats finite: write small integers.
          for (int64_t i = 0; i < img.voxels(); ++i) {
            if (t == DataType::f32) {
              float v = static_cast<float>(i) - 20;
              std::memcpy(&img.raw[i * 4], &v, 4);
            } else {
              double v = static_cast<double>(i) * 0.5;
              std::memcpy(&img.raw[i * 8], &v, 8);
            }
          }
        }
        img.header.descrip = "round trip";
        std::string path = d + "/rt_" + datatype_name(t) + "_v" + std::to_string(version) + ext;
        WriteOptions wo;
        wo.version = version;
        write(path, img, false, wo);
        Image back = read(path);
        EXPECT_EQ(back.header.version, version);
        EXPECT_EQ(back.datatype, t);
        EXPECT_EQ(back.shape, img.shape);
        EXPECT_EQ(back.raw, img.raw) << path;
        EXPECT_EQ(back.header.descrip, "round trip");
        EXPECT_EQ(back.header.sform_code, 2);
        EXPECT_EQ(back.header.qform_code, 2);
        EXPECT_FALSE(back.qform_sform_disagree);
        expect_affine_near(back.affine, aff);
        expect_affine_near(back.qform, aff, 1e-4);
        EXPECT_EQ(back.header.qfac, -1);
        EXPECT_EQ(back.header.vox_offset, version == 1 ? 352 : 544);
        if (std::string(ext) == ".nii.gz") {
          std::string raw = get_file(path);
          ASSERT_GE(raw.size(), 2u);
          EXPECT_EQ(static_cast<unsigned char>(raw[0]), 0x1f);
        }
      }
    }
  }
}

TEST(Nifti, WriteRefusesExistingUnlessOverwrite) {
  std::string d = tmpdir();
  Image img = make_image({2, 2, 2}, DataType::u8, diag_affine(1, 1, 1));
  write(d + "/a.nii", img, false);
  EXPECT_EQ(error_code([&] { write(d + "/a.nii", img, false); }), kExitCantCreate);
  img.raw[0] = 9;
  write(d + "/a.nii", img, true);
  EXPECT_EQ(read(d + "/a.nii").raw[0], 9);
  Image bad = img;
  bad.raw.pop_back();
  EXPECT_EQ(error_code([&] { write(d + "/b.nii", bad, false); }), kExitSoftware);
}

TEST(Nifti, BigEndianAndScaling) {
  for (bool be : {false, true}) {
    H1 h;
    h.be = be;
    h.slope = 0.25f;
    h.inter = 128;
    std::string b = h.bytes() + h.data(24);
    Image img = read_mem(b);
    EXPECT_EQ(img.header.big_endian, be);
    ASSERT_EQ(img.voxels(), 24);
    std::vector<float> f = img.to_float();
    for (int i = 0; i < 24; ++i) EXPECT_FLOAT_EQ(f[i], 0.25f * i + 128) << i;
    int16_t v;
    std::memcpy(&v, &img.raw[2 * 5], 2);
    EXPECT_EQ(v, 5);  // host order
  }
}

TEST(Nifti, SlopeZeroOrNonFiniteMeansNoScaling) {
  for (float slope : {0.0f, NAN, INFINITY}) {
    H1 h;
    h.slope = slope;
    h.inter = 5;
    Image img = read_mem(h.bytes() + h.data(24));
    EXPECT_FLOAT_EQ(img.to_float()[7], 7.0f);
  }
  H1 h;
  h.slope = 2;
  h.inter = NAN;  // nibabel raises
  EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
}

TEST(Nifti, NiftiTwoFromBytes) {
  std::string d = tmpdir();
  Image img = make_image({3, 2, 2}, DataType::i16, diag_affine(1, 2, 3));
  for (size_t i = 0; i < img.raw.size(); i += 2) img.raw[i] = static_cast<unsigned char>(i);
  WriteOptions wo;
  wo.version = 2;
  write(d + "/v2.nii", img, false, wo);
  std::string b = get_file(d + "/v2.nii");
  ASSERT_EQ(b.size(), 544u + 24u);
  EXPECT_EQ(b.substr(4, 8), std::string("n+2\0\r\n\032\n", 8));
  Image back = read_mem(b);
  EXPECT_EQ(back.header.version, 2);
  EXPECT_EQ(back.raw, img.raw);
  // A damaged EOL signature (text-mode transfer) is rejected; all zero is accepted.
  std::string bad = b;
  bad[8] = '\n';  // \r lost
  EXPECT_EQ(error_code([&] { read_mem(bad); }), kExitDataErr);
  std::string zero = b;
  std::memset(&zero[8], 0, 4);
  EXPECT_EQ(read_mem(zero).raw, img.raw);
}

TEST(Nifti, GzipMultiMemberAndDetectedByMagic) {
  std::string d = tmpdir();
  H1 h;
  std::string plain = h.bytes() + h.data(24);
  // Two members, split inside the header; named .nii (gzip is found by its magic).
  std::string two = gzip(plain.substr(0, 100)) + gzip(plain.substr(100));
  put_file(d + "/multi.nii", two);
  Image img = read(d + "/multi.nii");
  EXPECT_EQ(img.to_float()[23], 23.0f);
  // Three members with the split in the data, plus trailing zero padding.
  std::string three = gzip(plain.substr(0, 360)) + gzip(plain.substr(360, 10)) + gzip(plain.substr(370)) +
                      std::string(16, '\0');
  put_file(d + "/three.nii.gz", three);
  EXPECT_EQ(read(d + "/three.nii.gz").raw, img.raw);
  // A plain file named .nii.gz is read as plain.
  put_file(d + "/plain.nii.gz", plain);
  EXPECT_EQ(read(d + "/plain.nii.gz").raw, img.raw);
  // More data than the header needs is fine.
  put_file(d + "/long.nii.gz", gzip(plain + std::string(100000, 'x')));
  EXPECT_EQ(read(d + "/long.nii.gz").raw, img.raw);
}

TEST(Nifti, TruncatedGzipAndPlain) {
  std::string d = tmpdir();
  H1 h;
  h.dim[1] = 100;
  h.dim[2] = 100;
  h.dim[3] = 10;
  std::string plain = h.bytes();
  for (int i = 0; i < 100000; ++i) plain += static_cast<char>((i * 2654435761u) >> 24), plain += static_cast<char>(i);
  std::string z = gzip(plain);
  put_file(d + "/t.nii.gz", z.substr(0, z.size() / 2));
  std::string msg;
  EXPECT_EQ(error_code([&] { read(d + "/t.nii.gz"); }, &msg), kExitDataErr);
  EXPECT_NE(msg.find("t.nii.gz"), std::string::npos) << msg;
  put_file(d + "/t.nii", plain.substr(0, plain.size() - 1));
  EXPECT_EQ(error_code([&] { read(d + "/t.nii"); }, &msg), kExitDataErr);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // Only the trailer lost: the data are all there (as Python's gzip reads it).
  put_file(d + "/trailer.nii.gz", z.substr(0, z.size() - 4));
  EXPECT_EQ(read(d + "/trailer.nii.gz").raw.size(), 200000u);
  // Header only: no data needed.
  ReadOptions ho;
  ho.header_only = true;
  EXPECT_EQ(read(d + "/t.nii", ho).shape, (std::vector<int64_t>{100, 100, 10}));
}

TEST(Nifti, BoundedReadFailures) {
  H1 base;
  std::string msg;
  // Huge dims: 32767^3 * 2 bytes, far past max_bytes; rejected before allocating.
  {
    H1 h;
    h.dim[1] = h.dim[2] = h.dim[3] = 32767;
    h.dim[0] = 7;
    for (int i = 4; i < 8; ++i) h.dim[i] = 32767;
    EXPECT_EQ(error_code([&] { read_mem(h.bytes()); }, &msg), kExitDataErr);
    EXPECT_NE(msg.find("mem.nii"), std::string::npos);
  }
  {
    H1 h;
    h.dim[1] = h.dim[2] = h.dim[3] = 1000;
    ReadOptions o;
    o.max_bytes = 1 << 20;
    EXPECT_EQ(error_code([&] { read_mem(h.bytes(), o); }, &msg), kExitDataErr);
    EXPECT_NE(msg.find("limit"), std::string::npos) << msg;
    // The same claim inside a tiny gzip stream cannot be backed by it.
    std::string z = gzip(h.bytes());
    EXPECT_EQ(error_code([&] { read_mem(z); }, &msg), kExitDataErr);
  }
  {
    H1 h;
    h.vox_offset = -16;
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }, &msg), kExitDataErr);
    EXPECT_NE(msg.find("vox_offset"), std::string::npos) << msg;
    h.vox_offset = NAN;
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
    h.vox_offset = 1e30f;
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
    h.vox_offset = 100;  // inside the header
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
  }
  {
    H1 h;
    h.dim[0] = 0;
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
    h.dim[0] = 8;
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
    h.dim[0] = 3;
    h.dim[1] = -1;  // nibabel's FreeSurfer hack, nifti_clib's error
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
  }
  // Garbage, empty, short, Analyze.
  std::string garbage(801, 'a');
  EXPECT_EQ(error_code([&] { read_mem(garbage); }, &msg), kExitDataErr);
  EXPECT_NE(msg.find("not a NIfTI"), std::string::npos);
  EXPECT_EQ(error_code([&] { read_mem(""); }), kExitDataErr);
  EXPECT_EQ(error_code([&] { read_mem(base.bytes().substr(0, 200)); }), kExitDataErr);
  H1 analyze;
  analyze.magic = std::string(4, '\0');
  EXPECT_EQ(error_code([&] { read_mem(analyze.bytes() + analyze.data(24)); }, &msg), kExitDataErr);
  EXPECT_NE(msg.find("Analyze"), std::string::npos) << msg;
  // Missing file.
  EXPECT_EQ(error_code([&] { read("/nonexistent/x.nii"); }), kExitNoInput);
}

TEST(Nifti, UnsupportedDatatypes) {
  std::string msg;
  for (auto [code, name] : std::vector<std::pair<int, std::string>>{
           {32, "complex64"}, {128, "rgb24"}, {1536, "float128"}, {1, "binary"}, {0, "unknown"}, {2304, "rgba32"}}) {
    H1 h;
    h.datatype = static_cast<int16_t>(code);
    EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(100)); }, &msg), kExitDataErr);
    EXPECT_NE(msg.find("unsupported datatype " + name + " (" + std::to_string(code) + ")"), std::string::npos) << msg;
  }
  // bitpix is ignored: datatype wins.
  H1 h;
  h.bitpix = 8;
  EXPECT_EQ(read_mem(h.bytes() + h.data(24)).raw.size(), 48u);
}

TEST(Nifti, DimAndPixdimFixups) {
  H1 h;
  h.dim[0] = 2;
  h.dim[3] = 7;  // beyond rank: set to 1
  h.dim[2] = 0;  // <= 0 within rank: set to 1
  h.pixdim[1] = -2;
  h.pixdim[2] = 0;
  Image img = read_mem(h.bytes() + h.data(4));
  EXPECT_EQ(img.shape, (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(img.header.dim[3], 1);
  EXPECT_EQ(img.header.pixdim[1], 2);
  EXPECT_EQ(img.header.pixdim[2], 1);
  // Base affine (no codes): nibabel's, x flipped and centred.
  EXPECT_DOUBLE_EQ(img.affine[0][0], -2);
  EXPECT_DOUBLE_EQ(img.affine[0][3], 3);  // (4-1)/2 * 2
  EXPECT_DOUBLE_EQ(img.affine[1][1], 1);
  EXPECT_DOUBLE_EQ(img.affine[2][2], 1);
}

TEST(Nifti, VoxOffsetPastHeaderAndExtensions) {
  H1 h;
  h.vox_offset = 1952;  // no extension flag, as some mricron templates
  std::string b = h.bytes() + std::string(1952 - 352, '\x55') + h.data(24);
  EXPECT_EQ(read_mem(b).to_float()[3], 3.0f);
  // Proper extensions: esize 32 and 16, ending at vox_offset.
  H1 e;
  e.extender0 = 1;
  e.vox_offset = 400;
  std::string ext(48, '\0');
  int32_t v[2] = {32, 6};
  std::memcpy(&ext[0], v, 8);
  int32_t w[2] = {16, 4};
  std::memcpy(&ext[32], w, 8);
  std::string good = e.bytes() + ext + e.data(24);
  EXPECT_EQ(read_mem(good).to_float()[23], 23.0f);
  // esize 0 (would loop forever), negative, and past vox_offset.
  for (int32_t bad : {0, -16, 4, 64, 1 << 30}) {
    std::string x = ext;
    std::memcpy(&x[0], &bad, 4);
    std::string msg;
    EXPECT_EQ(error_code([&] { read_mem(e.bytes() + x + e.data(24)); }, &msg), kExitDataErr) << bad;
    EXPECT_NE(msg.find("extension"), std::string::npos) << msg;
  }
}

TEST(Nifti, PairsFromEitherHalf) {
  std::string d = tmpdir();
  H1 h;
  h.magic = std::string("ni1\0", 4);
  h.vox_offset = 0;
  h.be = true;
  put_file(d + "/p.hdr", h.bytes().substr(0, 348));
  put_file(d + "/p.img", h.data(24));
  Image a = read(d + "/p.hdr");
  Image b = read(d + "/p.img");
  EXPECT_EQ(a.raw, b.raw);
  EXPECT_EQ(a.to_float()[11], 11.0f);
  // Gzipped halves.
  put_file(d + "/q.hdr.gz", gzip(h.bytes()));
  put_file(d + "/q.img.gz", gzip(h.data(24)));
  EXPECT_EQ(read(d + "/q.img.gz").raw, a.raw);
  EXPECT_EQ(read(d + "/q.hdr.gz").raw, a.raw);
  // Missing half.
  put_file(d + "/lonely.hdr", h.bytes());
  EXPECT_EQ(error_code([&] { read(d + "/lonely.hdr"); }), kExitNoInput);
  put_file(d + "/lonely2.img", h.data(24));
  EXPECT_EQ(error_code([&] { read(d + "/lonely2.img"); }), kExitNoInput);
  ReadOptions ho;
  ho.header_only = true;
  EXPECT_EQ(read(d + "/lonely.hdr", ho).shape.size(), 3u);
  // vox_offset inside the .img is honoured.
  H1 o = h;
  o.vox_offset = 16;
  put_file(d + "/o.hdr", o.bytes());
  put_file(d + "/o.img", std::string(16, 'z') + o.data(24));
  EXPECT_EQ(read(d + "/o.img").raw, a.raw);
  // Short .img.
  put_file(d + "/s.hdr", h.bytes());
  put_file(d + "/s.img", h.data(23));
  EXPECT_EQ(error_code([&] { read(d + "/s.hdr"); }), kExitDataErr);
  // A pair cannot come from memory.
  EXPECT_EQ(error_code([&] { read_mem(h.bytes() + h.data(24)); }), kExitDataErr);
}

TEST(Nifti, AffineChoice) {
  // sform wins when its code is set.
  H1 h;
  h.qform_code = 1;
  h.sform_code = 2;
  h.qoff[0] = 10;
  h.qoff[1] = 20;
  h.qoff[2] = 30;
  Image img = read_mem(h.bytes() + h.data(24));
  EXPECT_DOUBLE_EQ(img.affine[0][0], 2);  // srow, not pixdim
  EXPECT_FALSE(img.qform_sform_disagree);  // qform: diag(2,3,4) + (10,20,30) as well
  // qform only: quaternion (0,0,1) = 180° about z, qfac -1.
  H1 q;
  q.qform_code = 1;
  q.quat[2] = 1;
  q.pixdim[0] = -1;
  Image qi = read_mem(q.bytes() + q.data(24));
  EXPECT_NEAR(qi.affine[0][0], -2, 1e-6);
  EXPECT_NEAR(qi.affine[1][1], -3, 1e-6);
  EXPECT_NEAR(qi.affine[2][2], -4, 1e-6);
  EXPECT_EQ(qi.sform[0][0], 0);  // sform not set
  // Disagreement flagged.
  H1 dis = h;
  dis.qoff[0] = 11;
  EXPECT_TRUE(read_mem(dis.bytes() + dis.data(24)).qform_sform_disagree);
  // Invalid quaternion: an error only when the qform is the one used.
  H1 badq;
  badq.qform_code = 1;
  badq.quat[0] = 1;
  badq.quat[1] = 1;
  EXPECT_EQ(error_code([&] { read_mem(badq.bytes() + badq.data(24)); }), kExitDataErr);
  badq.sform_code = 1;
  EXPECT_EQ(read_mem(badq.bytes() + badq.data(24)).affine[0][0], 2);
  // Invalid codes count as 0 (nibabel): base affine.
  H1 inv;
  inv.sform_code = 9;
  EXPECT_DOUBLE_EQ(read_mem(inv.bytes() + inv.data(24)).affine[0][0], -2);
}

TEST(Nifti, MakeImageQuaternionMatchesAffine) {
  Affine a{};
  // Rotation about an oblique axis times zooms (0.9, 1.1, 3), right-handed.
  const double ax[3] = {0.48, 0.6, 0.64}, th = 2.5;
  const double c = std::cos(th), s = std::sin(th), t = 1 - c;
  double R[3][3] = {{t * ax[0] * ax[0] + c, t * ax[0] * ax[1] - s * ax[2], t * ax[0] * ax[2] + s * ax[1]},
                    {t * ax[0] * ax[1] + s * ax[2], t * ax[1] * ax[1] + c, t * ax[1] * ax[2] - s * ax[0]},
                    {t * ax[0] * ax[2] - s * ax[1], t * ax[1] * ax[2] + s * ax[0], t * ax[2] * ax[2] + c}};
  const double z[3] = {0.9, 1.1, 3};
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) a[r][k] = R[r][k] * z[k];
  a[0][3] = 1;
  a[1][3] = -2;
  a[2][3] = 3;
  a[3][3] = 1;
  Image img = make_image({4, 4, 4}, DataType::f32, a);
  expect_affine_near(img.qform, a, 1e-9);
  EXPECT_NEAR(img.header.pixdim[3], 3, 1e-12);
  EXPECT_EQ(img.header.qfac, 1);
  EXPECT_EQ(img.raw.size(), 64u * 4);
}

TEST(Nifti, ToLabelsRules) {
  H1 h;
  Image img = read_mem(h.bytes() + h.data(24));
  std::vector<uint8_t> l = img.to_labels("x.nii");
  EXPECT_EQ(l[23], 23);
  std::string msg;
  // Scaling is never allowed for labels, except the identity.
  img.header.scl_slope = 2;
  EXPECT_EQ(error_code([&] { img.to_labels("x.nii"); }, &msg), kExitDataErr);
  EXPECT_NE(msg.find("x.nii"), std::string::npos);
  img.header.scl_slope = 1;
  img.header.scl_inter = 1;
  EXPECT_EQ(error_code([&] { img.to_labels("x.nii"); }), kExitDataErr);
  img.header.scl_inter = 0;
  EXPECT_EQ(img.to_labels("x.nii").size(), 24u);
  img.header.scl_slope = 0;
  img.header.scl_inter = 7;  // ignored: slope 0 means no scaling
  EXPECT_EQ(img.to_labels("x.nii").size(), 24u);
  // Out of range values.
  int16_t v = 256;
  std::memcpy(&img.raw[2], &v, 2);
  EXPECT_EQ(error_code([&] { img.to_labels("x.nii"); }, &msg), kExitDataErr);
  EXPECT_NE(msg.find("256"), std::string::npos) << msg;
  v = -1;
  std::memcpy(&img.raw[2], &v, 2);
  EXPECT_EQ(error_code([&] { img.to_labels("x.nii"); }), kExitDataErr);
  // Float labels: exact integers 0..255 only.
  Image f = make_image({3}, DataType::f32, diag_affine(1, 1, 1));
  float vals[3] = {0, 4, 255};
  std::memcpy(f.raw.data(), vals, 12);
  EXPECT_EQ(f.to_labels("f.nii")[2], 255);
  vals[1] = 2.5f;
  std::memcpy(f.raw.data(), vals, 12);
  EXPECT_EQ(error_code([&] { f.to_labels("f.nii"); }), kExitDataErr);
  vals[1] = NAN;
  std::memcpy(f.raw.data(), vals, 12);
  EXPECT_EQ(error_code([&] { f.to_labels("f.nii"); }), kExitDataErr);
}

TEST(Nifti, ToFloatAllTypes) {
  Image img = make_image({2}, DataType::i64, diag_affine(1, 1, 1));
  int64_t v[2] = {-5, int64_t(1) << 40};
  std::memcpy(img.raw.data(), v, 16);
  img.header.scl_slope = 0.5;
  img.header.scl_inter = 1;
  std::vector<float> f = img.to_float();
  EXPECT_FLOAT_EQ(f[0], -1.5f);
  EXPECT_FLOAT_EQ(f[1], static_cast<float>(0.5 * 1099511627776.0 + 1));
  Image u = make_image({1}, DataType::u64, diag_affine(1, 1, 1));
  uint64_t big = ~uint64_t(0);
  std::memcpy(u.raw.data(), &big, 8);
  EXPECT_FLOAT_EQ(u.to_float()[0], 1.8446744e19f);
}

TEST(Nifti, LargeGzipWritesMultipleMembers) {
  // > 64 MiB of voxels: written as several gzip members, read back whole.
  std::string d = tmpdir();
  Image img = make_image({512, 512, 130}, DataType::u8, diag_affine(1, 1, 1));
  for (size_t i = 0; i < img.raw.size(); i += 4096) img.raw[i] = static_cast<unsigned char>(i >> 12);
  WriteOptions wo;
  wo.gzip_level = 1;
  write(d + "/big.nii.gz", img, false, wo);
  Image back = read(d + "/big.nii.gz");
  EXPECT_TRUE(back.raw == img.raw);
}

// read_voxels gives the voxels read() gives (gzip or not, either byte order, past
// extensions, from a pair, at an odd vox_offset), the file's SHA-256, and reuses
// one buffer for files of any size in turn.
TEST(Nifti, ReadVoxelsMatchesRead) {
  std::string d = tmpdir();
  H1 h;
  h.dim[1] = 37;
  h.dim[2] = 5;
  h.dim[3] = 3;
  const size_t n = 37 * 5 * 3;
  H1 be = h;
  be.be = true;
  H1 ext = h;
  ext.extender0 = 1;
  ext.vox_offset = 368;
  std::string e(16, '\0');
  int32_t ev[2] = {16, 4};
  std::memcpy(&e[0], ev, 8);
  H1 odd = h;
  odd.vox_offset = 357;  // voxels not aligned for their type in the decoded stream
  H1 pair = h;
  pair.magic = std::string("ni1\0", 4);
  pair.vox_offset = 0;
  put_file(d + "/pair.hdr", pair.bytes().substr(0, 348));
  put_file(d + "/pair.img", pair.data(n));
  put_file(d + "/plain.nii", h.bytes() + h.data(n));
  put_file(d + "/le.nii.gz", gzip(h.bytes() + h.data(n)));
  put_file(d + "/be.nii.gz", gzip(be.bytes() + be.data(n)));
  put_file(d + "/ext.nii.gz", gzip(ext.bytes() + e + ext.data(n)));
  put_file(d + "/odd.nii.gz", gzip(odd.bytes() + std::string(5, 'x') + odd.data(n)));
  Image big = make_image({64, 48, 20}, DataType::f32, diag_affine(1, 1, 2));
  for (size_t i = 0; i < big.raw.size(); ++i) big.raw[i] = static_cast<unsigned char>(i * 7);
  write(d + "/big.nii.gz", big, true);
  RawVector<unsigned char> buffer;
  Image into;
  for (const char* name : {"big.nii.gz", "plain.nii", "le.nii.gz", "be.nii.gz", "ext.nii.gz", "odd.nii.gz", "pair.hdr",
                           "pair.img", "big.nii.gz"}) {
    const std::string path = d + "/" + name;
    Image ref = read(path);
    std::string sha;
    const unsigned char* v = read_voxels(path, into, buffer, &sha);
    EXPECT_TRUE(into.raw.empty()) << name;
    EXPECT_EQ(into.shape, ref.shape) << name;
    EXPECT_EQ(into.datatype, ref.datatype) << name;
    expect_affine_near(into.affine, ref.affine, 0);
    ASSERT_EQ(static_cast<size_t>(into.voxels()) * datatype_size(into.datatype), ref.raw.size()) << name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v) % 8, 0u) << name;
    EXPECT_EQ(std::memcmp(v, ref.raw.data(), ref.raw.size()), 0) << name;
    EXPECT_EQ(sha, sha256_file(path)) << name;
    EXPECT_EQ(read_voxels(path, into, buffer), v) << name;  // no hash asked: the same
  }
  // Errors as read() reports them.
  EXPECT_EQ(error_code([&] { read_voxels(d + "/missing.nii.gz", into, buffer); }), kExitNoInput);
  std::string whole = get_file(d + "/le.nii.gz");
  put_file(d + "/cut.nii.gz", whole.substr(0, whole.size() / 2));
  EXPECT_EQ(error_code([&] { read_voxels(d + "/cut.nii.gz", into, buffer); }), kExitDataErr);
}

}  // namespace
}  // namespace fedseg::nifti
