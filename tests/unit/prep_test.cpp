#include <gtest/gtest.h>

#include "test_util.h"
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/sha256.h"
#include "h5/tensor_file.h"
#include "nifti/nifti.h"
#include "prep/prep.h"

namespace fedseg::prep {
namespace {

using fedseg::test::error_code;
using fedseg::test::tmpdir;

void touch(const std::string& p) { std::ofstream(p) << "x"; }

TEST(PrepCohort, FindsBrats2021FetsAnd2023Naming) {
  std::string d = tmpdir();
  ::mkdir((d + "/A").c_str(), 0755);
  for (const char* s : {"_t1", "_t1ce", "_t2", "_flair", "_seg"}) touch(d + "/A/A" + std::string(s) + ".nii.gz");
  ::mkdir((d + "/B").c_str(), 0755);
  for (const char* s : {"_brain_t1", "_brain_t1ce", "_brain_t2", "_brain_t2flair"}) touch(d + "/B/B" + std::string(s) + ".nii");
  ::mkdir((d + "/C").c_str(), 0755);
  for (const char* s : {"-t1n", "-t1c", "-t2w", "-t2f", "-seg"}) touch(d + "/C/C" + std::string(s) + ".nii.gz");
  ::mkdir((d + "/D").c_str(), 0755);
  for (const char* s : {"_t1", "_t2", "_flair"}) touch(d + "/D/D" + std::string(s) + ".nii.gz");
  touch(d + "/notes.txt");
  auto cases = find_cases(d);
  ASSERT_EQ(cases.size(), 4u);
  EXPECT_EQ(cases[0].id, "A");
  EXPECT_EQ(cases[0].images[1], d + "/A/A_t1ce.nii.gz");
  EXPECT_EQ(cases[0].label, d + "/A/A_seg.nii.gz");
  EXPECT_EQ(cases[0].naming, "brats2021");
  EXPECT_TRUE(cases[0].problem.empty());
  EXPECT_EQ(cases[1].images[3], d + "/B/B_brain_t2flair.nii");
  EXPECT_TRUE(cases[1].label.empty());
  EXPECT_TRUE(cases[1].problem.empty());
  EXPECT_EQ(cases[2].naming, "brats2023");
  EXPECT_EQ(cases[2].images[0], d + "/C/C-t1n.nii.gz");
  EXPECT_EQ(cases[3].problem, "missing modality t1ce");
}

TEST(PrepCohort, CsvListsAndErrors) {
  std::string d = tmpdir();
  std::ofstream(d + "/ok.csv") << "id,t1,t1ce,t2,flair,seg\nb,b1.nii,b2.nii,b3.nii,b4.nii,\n\"a\",/x/a1.nii,a2.nii,a3.nii,a4.nii,aseg.nii\n";
  auto c = find_cases(d + "/ok.csv");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, "a");
  EXPECT_EQ(c[0].images[0], "/x/a1.nii");
  EXPECT_EQ(c[0].images[1], d + "/a2.nii");
  EXPECT_EQ(c[0].label, d + "/aseg.nii");
  EXPECT_TRUE(c[1].label.empty());
  std::ofstream(d + "/dup.csv") << "id,t1,t1ce,t2,flair\na,1,2,3,4\na,1,2,3,4\n";
  EXPECT_EQ(error_code([&] { find_cases(d + "/dup.csv"); }), kExitDataErr);
  std::ofstream(d + "/short.csv") << "id,t1,t1ce,t2,flair\na,1,2\n";
  EXPECT_EQ(error_code([&] { find_cases(d + "/short.csv"); }), kExitDataErr);
  EXPECT_EQ(error_code([&] { find_cases(d + "/missing.csv"); }), kExitNoInput);
  ::mkdir((d + "/empty").c_str(), 0755);
  EXPECT_EQ(error_code([&] { find_cases(d + "/empty"); }), kExitDataErr);
}

TEST(PrepSplit, DeterministicAndProportional) {
  int val = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string id = "case" + std::to_string(i);
    EXPECT_EQ(split_for(id, 0.25), split_for(id, 0.25));
    val += split_for(id, 0.25) == "val";
  }
  EXPECT_NEAR(val / 2000.0, 0.25, 0.04);
  EXPECT_EQ(split_for("x", 0.0), "train");
  EXPECT_EQ(split_for("x", 1.0), "val");
}

// A small LPS case written with our NIfTI writer: a ramp brain in a box.
CaseFiles write_case(const std::string& dir, const std::array<double, 3>& spacing, int16_t offset = 0,
                     int64_t nx = 20) {
  CaseFiles c;
  c.id = "X";
  nifti::Affine A{};
  A[0][0] = -spacing[0];
  A[1][1] = -spacing[1];
  A[2][2] = spacing[2];
  A[0][3] = 20;
  A[1][3] = 30;
  A[2][3] = -5;
  A[3][3] = 1;
  const int64_t ny = 16, nz = 12;
  for (size_t ch = 0; ch < 4; ++ch) {
    nifti::Image img = nifti::make_image({nx, ny, nz}, nifti::DataType::i16, A);
    img.raw.assign(static_cast<size_t>(nx * ny * nz) * 2, 0);
    auto* p = reinterpret_cast<int16_t*>(img.raw.data());
    for (int64_t z = 3; z < 9; ++z)
      for (int64_t y = 4; y < 12; ++y)
        for (int64_t x = 5; x < nx - 5; ++x) p[x + nx * (y + ny * z)] = static_cast<int16_t>(100 + x + 2 * y + 3 * z + offset + 10 * ch);
    c.images[ch] = dir + "/X_" + kChannels[ch] + ".nii.gz";
    nifti::write(c.images[ch], img, true);
  }
  nifti::Image lab = nifti::make_image({nx, ny, nz}, nifti::DataType::u8, A);
  lab.raw.assign(static_cast<size_t>(nx * ny * nz), 0);
  lab.raw[static_cast<size_t>(7 + nx * (6 + ny * 5))] = 4;
  lab.raw[static_cast<size_t>(8 + nx * (6 + ny * 5))] = 1;
  lab.raw[static_cast<size_t>(9 + nx * (6 + ny * 5))] = 2;
  c.label = dir + "/X_seg.nii.gz";
  nifti::write(c.label, lab, true);
  return c;
}

TEST(PrepCase, ReorientCropNormaliseLabels) {
  std::string d = tmpdir();
  CaseFiles files = write_case(d, {1, 1, 1});
  Options o;
  o.margin = 1;
  o.float16 = false;
  Case c = process_case(files, {}, o);
  // Brain box x 5..14, y 4..11, z 3..8 in LPS voxels; RAS flips x and y.
  EXPECT_EQ(c.attrs["crop_box"], (std::vector<int64_t>{19 - 15, 15 - 12, 2, 19 - 4 + 1, 15 - 3 + 1, 10}));
  EXPECT_EQ(c.attrs["original_orientation"], "LPS");
  EXPECT_EQ(c.shape[0], 12);
  // z-scores have mean 0 and population std 1 over the brain voxels.
  size_t n = static_cast<size_t>(c.shape[0] * c.shape[1] * c.shape[2]);
  double s = 0, s2 = 0, cnt = 0;
  for (int64_t z = 1; z < c.shape[2] - 1; ++z)  // the brain: the box without the margin
    for (int64_t y = 1; y < c.shape[1] - 1; ++y)
      for (int64_t x = 1; x < c.shape[0] - 1; ++x) {
        double v = c.image[static_cast<size_t>(x + c.shape[0] * (y + c.shape[1] * z))];
        s += v;
        s2 += v * v;
        ++cnt;
      }
  EXPECT_EQ(cnt, 10 * 8 * 6);
  EXPECT_NEAR(s / cnt, 0, 1e-5);
  EXPECT_NEAR(s2 / cnt, 1, 1e-4);
  int seen[8] = {0};
  for (uint8_t v : c.label) ++seen[v];
  EXPECT_EQ(seen[7], 1);  // enhancing
  EXPECT_EQ(seen[6], 1);  // necrotic core
  EXPECT_EQ(seen[4], 1);  // oedema
  EXPECT_EQ(seen[0], static_cast<int>(n) - 3);
  // to_original maps stored voxel (0,0,0) to LPS voxel (15, 12, 2).
  auto t = c.attrs["to_original"].get<std::vector<double>>();
  EXPECT_DOUBLE_EQ(t[3], 14 + 1);
  EXPECT_DOUBLE_EQ(t[7], 11 + 1);
  EXPECT_DOUBLE_EQ(t[11], 2);
}

TEST(PrepCase, ResamplesToTargetSpacing) {
  std::string d = tmpdir();
  CaseFiles files = write_case(d, {2, 2, 2});
  Options o;
  o.margin = 0;
  Case c = process_case(files, {}, o);
  EXPECT_EQ(c.attrs["resampled"], 1);
  EXPECT_EQ(c.attrs["canonical_shape"], (std::vector<int64_t>{40, 32, 24}));
  // Physical size of the stored grid's voxels is the target spacing.
  auto a = c.attrs["affine"].get<std::vector<double>>();
  EXPECT_NEAR(std::fabs(a[0]), 1.0, 1e-12);
  EXPECT_NEAR(std::fabs(a[5]), 1.0, 1e-12);
  EXPECT_NEAR(std::fabs(a[10]), 1.0, 1e-12);
  // The stored grid's world centre equals the original brain box centre.
  o.resample = false;
  Case n = process_case(files, {}, o);
  EXPECT_EQ(n.attrs["resampled"], 0);
}

TEST(PrepCase, RejectsBadLabelsAndGrids) {
  std::string d = tmpdir();
  CaseFiles files = write_case(d, {1, 1, 1});
  Options o;
  o.scheme = Scheme::brats2023;  // label 4 is not in the 2023 scheme
  try {
    process_case(files, {}, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitDataErr);
    EXPECT_NE(e.message().find("value 4 is not in the brats2023 scheme"), std::string::npos) << e.message();
  }
  CaseFiles missing = files;
  missing.problem = "missing modality t2";
  EXPECT_EQ(error_code([&] { process_case(missing, {}, Options{}); }), kExitDataErr);
}

// The whole image of a case (4, Z, Y, X) through copy_image_box, in boxes of `dims`
// as HDF5 chunks would ask for them (running past the image at its far edges).
template <class E>
std::vector<E> image_by_boxes(const Case& c, const std::array<uint64_t, 4>& dims) {
  const uint64_t X = static_cast<uint64_t>(c.shape[0]), Y = static_cast<uint64_t>(c.shape[1]),
                 Z = static_cast<uint64_t>(c.shape[2]);
  std::vector<E> full(4 * Z * Y * X, E(1));
  std::vector<E> box(dims[0] * dims[1] * dims[2] * dims[3]);
  for (uint64_t ch = 0; ch < 4; ch += dims[0])
    for (uint64_t z = 0; z < Z; z += dims[1])
      for (uint64_t y = 0; y < Y; y += dims[2])
        for (uint64_t x = 0; x < X; x += dims[3]) {
          std::fill(box.begin(), box.end(), E(1));
          copy_image_box(c, {ch, z, y, x}, dims, box.data());
          size_t k = 0;
          for (uint64_t a = 0; a < dims[0]; ++a)
            for (uint64_t b = 0; b < dims[1]; ++b)
              for (uint64_t e = 0; e < dims[2]; ++e)
                for (uint64_t f = 0; f < dims[3]; ++f, ++k) {
                  const bool in = ch + a < 4 && z + b < Z && y + e < Y && x + f < X;
                  if (!in) {
                    EXPECT_EQ(box[k], E(0));  // beyond the image: zeros
                    continue;
                  }
                  full[(((ch + a) * Z + z + b) * Y + y + e) * X + x + f] = box[k];
                }
        }
  return full;
}

// Packed cases (each channel in its own box) hold the same image as assembled ones,
// also when the channels' boxes differ, for float16 and float32; the inputs' hashes
// are those of the files when none are given.
TEST(PrepCase, PackedMatchesAssembled) {
  std::string d = tmpdir();
  CaseFiles files = write_case(d, {1, 1, 1});
  // flair without its first brain slices and columns: a smaller box than the others.
  nifti::Image fl = nifti::read(files.images[3]);
  auto* p = reinterpret_cast<int16_t*>(fl.raw.data());
  for (int64_t z = 0; z < 12; ++z)
    for (int64_t y = 0; y < 16; ++y)
      for (int64_t x = 0; x < 20; ++x)
        if (z < 5 || x > 11) p[x + 20 * (y + 16 * z)] = 0;
  nifti::write(files.images[3], fl, true);
  for (bool f16 : {true, false}) {
    Options o;
    o.margin = 1;
    o.float16 = f16;
    Case full = process_case(files, {}, o);
    o.packed = true;
    Case packed = process_case(files, {}, o);
    EXPECT_FALSE(full.packed);
    EXPECT_TRUE(packed.packed);
    EXPECT_EQ(full.attrs, packed.attrs);
    EXPECT_EQ(full.label, packed.label);
    EXPECT_NE(packed.boxes[3].lo, packed.boxes[0].lo);
    const size_t n = static_cast<size_t>(full.shape[0] * full.shape[1] * full.shape[2]);
    if (f16) {
      EXPECT_LT(packed.image16.size(), 4 * n);
      ASSERT_EQ(full.image16.size(), 4 * n);
      std::vector<uint16_t> want(full.image16.begin(), full.image16.end());
      EXPECT_EQ(image_by_boxes<uint16_t>(packed, {1, 4, 5, 3}), want);
      EXPECT_EQ(image_by_boxes<uint16_t>(full, {3, 64, 64, 64}), want);
    } else {
      ASSERT_EQ(full.image.size(), 4 * n);
      std::vector<float> want(full.image.begin(), full.image.end());
      EXPECT_EQ(image_by_boxes<float>(packed, {2, 3, 7, 64}), want);
    }
    auto src = nlohmann::json::parse(packed.attrs["source"].get<std::string>());
    ASSERT_EQ(src.size(), 5u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(src[i]["sha256"], sha256_file(files.images[i]));
    EXPECT_EQ(src[4]["sha256"], sha256_file(files.label));
  }
  // Hashes given by the caller are recorded as given.
  Case given = process_case(files, {"a", "b", "c", "d", "e"}, Options{});
  EXPECT_EQ(nlohmann::json::parse(given.attrs["source"].get<std::string>())[4]["sha256"], "e");
}

// The AVX2 kernels and the portable ones give the same bytes (FEDSEG_PREP_NO_AVX2
// forces the portable ones), for stored int16 in RAS and LPS order and for scaled
// voxels.
TEST(PrepCase, VectorAndPortableKernelsAgree) {
  // 67 voxels wide: whole vectors and a remainder in every row.
  std::string d = tmpdir(), d2 = tmpdir(), d3 = tmpdir();
  CaseFiles lps = write_case(d, {1, 1, 1}, -150, 67);  // negative values and zeros inside the brain too
  CaseFiles scaled = write_case(d2, {1, 1, 1}, 0, 67);
  CaseFiles ras = write_case(d3, {1, 1, 1}, 0, 67);
  for (size_t c = 0; c < 4; ++c) {
    nifti::Image im = nifti::read(scaled.images[c]);
    im.header.scl_slope = 0.5;
    im.header.scl_inter = -3;
    nifti::write(scaled.images[c], im, true);
    nifti::Image r = nifti::read(ras.images[c]);
    nifti::Affine A = r.affine;
    A[0][0] = -A[0][0];
    A[1][1] = -A[1][1];
    nifti::Image flipped = nifti::make_image(r.shape, r.datatype, A);
    flipped.raw = r.raw;
    nifti::write(ras.images[c], flipped, true);
  }
  nifti::Image rl = nifti::read(ras.label);
  nifti::Affine A = rl.affine;
  A[0][0] = -A[0][0];
  A[1][1] = -A[1][1];
  nifti::Image fl = nifti::make_image(rl.shape, rl.datatype, A);
  fl.raw = rl.raw;
  nifti::write(ras.label, fl, true);
  for (const CaseFiles* files : {&lps, &scaled, &ras})
    for (bool f16 : {true, false}) {
      Options o;
      o.float16 = f16;
      ::setenv("FEDSEG_PREP_NO_AVX2", "1", 1);
      Case a = process_case(*files, {}, o);
      ::unsetenv("FEDSEG_PREP_NO_AVX2");
      Case b = process_case(*files, {}, o);
      EXPECT_EQ(a.attrs, b.attrs);
      EXPECT_EQ(a.sanity, b.sanity);
      EXPECT_TRUE(a.image16 == b.image16);
      EXPECT_TRUE(a.image == b.image);
      EXPECT_TRUE(a.label == b.label);
    }
}

// Tensors encoded in memory (h5::encode, as fedseg-prep's workers do) and written as
// they are read back the same as tensors written through HDF5's filters.
TEST(PrepWrite, EncodedTensorsReadBackAsWritten) {
  std::string d = tmpdir();
  CaseFiles files = write_case(d, {1, 1, 1});
  Options o;
  o.packed = true;
  Case c = process_case(files, {}, o);
  o.packed = false;
  Case full = process_case(files, {}, o);
  const uint64_t X = static_cast<uint64_t>(c.shape[0]), Y = static_cast<uint64_t>(c.shape[1]),
                 Z = static_cast<uint64_t>(c.shape[2]);
  h5::WriteOptions w;
  w.zstd_level = 1;
  w.chunks = {1, 4, 5, 64};  // edge chunks in z and y, one chunk in x
  h5::EncodedTensor image, label, f32, f32b;
  h5::encode(h5::DType::f16, {4, Z, Y, X},
             [&](const h5::Shape& s, const h5::Shape& n, void* out) {
               copy_image_box(c, {s[0], s[1], s[2], s[3]}, {n[0], n[1], n[2], n[3]}, out);
             },
             w, image);
  h5::WriteOptions wl = w;
  wl.chunks = {5, 64, 7};
  h5::encode(h5::DType::u8, {Z, Y, X}, c.label.data(), wl, label);
  std::vector<float> ramp(3 * 5 * 7 * 2);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i) * 0.25f - 3;
  h5::WriteOptions wf;
  wf.chunks = {2, 2, 4, 2};
  h5::encode(h5::DType::f32, {3, 5, 7, 2}, ramp.data(), wf, f32);
  h5::WriteOptions wb;
  wb.chunks = {2, 5, 7, 2};  // whole trailing axes: one block per chunk, an edge chunk in the first
  h5::encode(h5::DType::f32, {3, 5, 7, 2}, ramp.data(), wb, f32b);
  {
    h5::Output out(d + "/a.h5", "dataset", "fedseg-test", "{}", false);
    out.file().write("direct/image", image);
    out.file().write("direct/label", label);
    out.file().write("direct/f32", f32);
    out.file().write("direct/f32b", f32b);
    out.file().write("filters/image", h5::DType::f16, {4, Z, Y, X}, full.image16.data(), h5::DType::f16, w);
    out.file().write("filters/label", h5::DType::u8, {Z, Y, X}, full.label.data(), h5::DType::u8, wl);
    out.file().write("filters/f32", h5::DType::f32, {3, 5, 7, 2}, ramp.data(), h5::DType::f32, wf);
    out.file().write("filters/f32b", h5::DType::f32, {3, 5, 7, 2}, ramp.data(), h5::DType::f32, wb);
    out.commit();
  }
  h5::File f = h5::File::open(d + "/a.h5");
  for (const char* t : {"image", "label", "f32", "f32b"}) {
    h5::TensorInfo a = f.info(std::string("direct/") + t), b = f.info(std::string("filters/") + t);
    EXPECT_EQ(a.shape, b.shape) << t;
    EXPECT_EQ(a.chunks, b.chunks) << t;
    EXPECT_EQ(a.filters, b.filters) << t;
    EXPECT_EQ(a.dtype, b.dtype) << t;
    EXPECT_EQ(a.stored_bytes, b.stored_bytes) << t;  // the same frames
    EXPECT_EQ(h5::check_tensor(f, a.name).sha256, h5::check_tensor(f, b.name).sha256) << t;
  }
  EXPECT_EQ(f.read_as<float>("direct/f32"), ramp);
  EXPECT_EQ(f.read_as<float>("direct/f32b"), ramp);
  std::vector<uint8_t> lab = f.read_as<uint8_t>("direct/label");
  EXPECT_TRUE(std::equal(lab.begin(), lab.end(), full.label.begin(), full.label.end()));
}

}  // namespace
}  // namespace fedseg::prep
