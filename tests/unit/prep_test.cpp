#include <gtest/gtest.h>

#include "test_util.h"
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

#include "core/error.h"
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
CaseFiles write_case(const std::string& dir, const std::array<double, 3>& spacing, int16_t offset = 0) {
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
  const int64_t nx = 20, ny = 16, nz = 12;
  for (size_t ch = 0; ch < 4; ++ch) {
    nifti::Image img = nifti::make_image({nx, ny, nz}, nifti::DataType::i16, A);
    img.raw.assign(static_cast<size_t>(nx * ny * nz) * 2, 0);
    auto* p = reinterpret_cast<int16_t*>(img.raw.data());
    for (int64_t z = 3; z < 9; ++z)
      for (int64_t y = 4; y < 12; ++y)
        for (int64_t x = 5; x < 15; ++x) p[x + nx * (y + ny * z)] = static_cast<int16_t>(100 + x + 2 * y + 3 * z + offset + 10 * ch);
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

}  // namespace
}  // namespace fedseg::prep
