// Tests of fedseg::synth: determinism, label scheme, region nesting, skull-stripped
// background, tumour contrasts, profiles, anatomy input, file output.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <set>

#include "core/error.h"
#include "nifti/nifti.h"
#include "synth/synth.h"

namespace fedseg::synth {
namespace {

CaseParams params(uint64_t seed, uint64_t index = 0, const char* profile = "standard",
                  Naming n = Naming::brats2021) {
  CaseParams p;
  p.shape = {48, 48, 36};
  p.seed = seed;
  p.index = index;
  p.profile = find_profile(profile);
  p.naming = n;
  return p;
}

double mean_where(const std::vector<int16_t>& img, const std::vector<uint8_t>& lab, uint8_t want) {
  double s = 0;
  size_t n = 0;
  for (size_t i = 0; i < img.size(); ++i)
    if (lab[i] == want) {
      s += img[i];
      ++n;
    }
  return n ? s / static_cast<double>(n) : 0;
}

TEST(SynthGenerate, SameSeedSameData) {
  Case a = generate(params(11, 3));
  Case b = generate(params(11, 3));
  EXPECT_EQ(a.labels, b.labels);
  for (int m = 0; m < kModalities; ++m) EXPECT_EQ(a.images[m], b.images[m]) << m;
}

TEST(SynthGenerate, DifferentSeedOrCaseDifferentData) {
  Case a = generate(params(11, 3));
  Case b = generate(params(12, 3));
  Case c = generate(params(11, 4));
  EXPECT_NE(a.labels, b.labels);
  EXPECT_NE(a.labels, c.labels);
  for (int m = 0; m < kModalities; ++m) {
    EXPECT_NE(a.images[m], b.images[m]);
    EXPECT_NE(a.images[m], c.images[m]);
  }
}

TEST(SynthGenerate, LabelsOnlyInTheScheme) {
  for (Naming n : {Naming::brats2021, Naming::brats2023}) {
    Case c = generate(params(5, 0, "standard", n));
    std::set<int> seen(c.labels.begin(), c.labels.end());
    std::set<int> want = n == Naming::brats2021 ? std::set<int>{0, 1, 2, 4} : std::set<int>{0, 1, 2, 3};
    EXPECT_EQ(seen, want) << naming_name(n);
    EXPECT_GT(c.necrotic, 0u);
    EXPECT_GT(c.oedema, 0u);
    EXPECT_GT(c.enhancing, 0u);
  }
}

// Necrosis is enclosed by the enhancing rim, the tumour core lies inside the brain
// (never at its surface), every label lies in the brain, and the regions nest:
// ET and NCR inside TC, TC inside WT.
TEST(SynthGenerate, TumourRegionsNested) {
  for (const char* prof : {"standard", "smalltumour", "largetumour", "lowfield", "pediatric"}) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      Case c = generate(params(seed, seed * 7, prof));
      const int64_t X = c.shape[0], Y = c.shape[1], Z = c.shape[2];
      const uint8_t et = 4;
      size_t wt = 0, tc = 0, etn = 0;
      for (int64_t z = 0; z < Z; ++z)
        for (int64_t y = 0; y < Y; ++y)
          for (int64_t x = 0; x < X; ++x) {
            const size_t i = static_cast<size_t>((z * Y + y) * X + x);
            const uint8_t l = c.labels[i];
            if (l) {
              ASSERT_TRUE(c.brain[i]) << prof << " seed " << seed;
            }
            wt += l == 1 || l == 2 || l == et;
            tc += l == 1 || l == et;
            etn += l == et;
            if (l != 1 && l != et) continue;
            const int64_t nb[6][3] = {{x - 1, y, z}, {x + 1, y, z}, {x, y - 1, z}, {x, y + 1, z}, {x, y, z - 1}, {x, y, z + 1}};
            for (const auto& q : nb) {
              ASSERT_TRUE(q[0] >= 0 && q[0] < X && q[1] >= 0 && q[1] < Y && q[2] >= 0 && q[2] < Z);
              const size_t j = static_cast<size_t>((q[2] * Y + q[1]) * X + q[0]);
              ASSERT_TRUE(c.brain[j]) << "tumour core touches the brain surface: " << prof << " seed " << seed;
              if (l == 1) {
                ASSERT_TRUE(c.labels[j] == 1 || c.labels[j] == et)
                    << "necrosis not enclosed by the enhancing rim: " << prof << " seed " << seed;
              }
            }
          }
      EXPECT_GT(etn, 0u);
      EXPECT_LT(etn, tc);
      EXPECT_LT(tc, wt);
      EXPECT_EQ(tc, c.necrotic + c.enhancing);
      EXPECT_EQ(wt, c.necrotic + c.enhancing + c.oedema);
    }
  }
}

TEST(SynthGenerate, BackgroundExactlyZeroOutsideTheBrain) {
  for (const char* prof : {"standard", "lowfield"}) {
    Case c = generate(params(9, 1, prof));
    size_t inside = 0;
    for (size_t i = 0; i < c.brain.size(); ++i) inside += c.brain[i];
    EXPECT_GT(inside, c.brain.size() / 8);
    EXPECT_LT(inside, c.brain.size() * 3 / 4);
    for (int m = 0; m < kModalities; ++m)
      for (size_t i = 0; i < c.brain.size(); ++i) {
        if (c.brain[i])
          ASSERT_GE(c.images[m][i], 1) << prof << " modality " << m;
        else
          ASSERT_EQ(c.images[m][i], 0) << prof << " modality " << m;
      }
  }
}

TEST(SynthGenerate, TumourContrasts) {
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    Case c = generate(params(seed));
    // Enhancing rim bright and necrosis dark on T1ce.
    EXPECT_GT(mean_where(c.images[kT1ce], c.labels, 4), 1.8 * mean_where(c.images[kT1ce], c.labels, 1));
    // Oedema brighter than the brain around it on T2 and FLAIR, darker on T1.
    std::vector<uint8_t> bl(c.labels);
    for (size_t i = 0; i < bl.size(); ++i)
      if (c.brain[i] && !c.labels[i]) bl[i] = 9;
    EXPECT_GT(mean_where(c.images[kFlair], bl, 2), 1.3 * mean_where(c.images[kFlair], bl, 9));
    EXPECT_GT(mean_where(c.images[kT2], bl, 2), 1.2 * mean_where(c.images[kT2], bl, 9));
    EXPECT_LT(mean_where(c.images[kT1], bl, 2), mean_where(c.images[kT1], bl, 9));
  }
}

// Tissue order on the phantom's central white matter versus the ventricles.
TEST(SynthGenerate, TissueContrastsByModality) {
  CaseParams p = params(21);
  p.profile = find_profile("highres");
  Case c = generate(p);
  // The darkest tenth of brain voxels on T1 is mostly CSF: it must be bright on T2
  // and dark on FLAIR compared with the brightest tenth on T1 (white matter).
  std::vector<std::pair<int16_t, size_t>> v;
  for (size_t i = 0; i < c.brain.size(); ++i)
    if (c.brain[i] && !c.labels[i]) v.push_back({c.images[kT1][i], i});
  std::sort(v.begin(), v.end());
  const size_t k = v.size() / 10;
  double t2_dark = 0, t2_bright = 0, fl_dark = 0, fl_bright = 0;
  for (size_t j = 0; j < k; ++j) {
    t2_dark += c.images[kT2][v[j].second];
    fl_dark += c.images[kFlair][v[j].second];
    t2_bright += c.images[kT2][v[v.size() - 1 - j].second];
    fl_bright += c.images[kFlair][v[v.size() - 1 - j].second];
  }
  EXPECT_GT(t2_dark, 1.3 * t2_bright);
  EXPECT_LT(fl_dark, fl_bright);
}

TEST(SynthProfiles, NamedAndDistinct) {
  ASSERT_GE(profiles().size(), 4u);
  EXPECT_EQ(profiles().front().name, "standard");
  EXPECT_EQ(find_profile("nope"), nullptr);
  for (const char* n : {"standard", "lowfield", "highres", "smalltumour", "largetumour", "pediatric"})
    EXPECT_NE(find_profile(n), nullptr) << n;
}

TEST(SynthProfiles, SitesDiffer) {
  Case st = generate(params(3, 0, "standard"));
  Case lf = generate(params(3, 0, "lowfield"));
  for (int m = 0; m < kModalities; ++m) EXPECT_NE(st.images[m], lf.images[m]);
  // Tumour sizes follow the profile.
  uint64_t small = 0, large = 0;
  for (uint64_t i = 0; i < 4; ++i) {
    Case s = generate(params(3, i, "smalltumour"));
    Case l = generate(params(3, i, "largetumour"));
    small += s.necrotic + s.enhancing + s.oedema;
    large += l.necrotic + l.enhancing + l.oedema;
  }
  EXPECT_LT(3 * small, large);
  // Low field: noisier relative to the signal (neighbour differences over the mean).
  auto roughness = [](const Case& c) {
    double d = 0, s = 0;
    size_t n = 0;
    for (size_t i = 1; i < c.brain.size(); ++i)
      if (c.brain[i] && c.brain[i - 1] && !c.labels[i]) {
        d += std::fabs(c.images[kT1][i] - c.images[kT1][i - 1]);
        s += c.images[kT1][i];
        ++n;
      }
    return d / s;
  };
  EXPECT_GT(roughness(lf), roughness(st));
}

TEST(SynthGenerate, BadShapeIsUsageError) {
  CaseParams p = params(1);
  p.shape = {0, 1, 2};
  try {
    generate(p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitUsage);
  }
}

TEST(SynthNames, IdsFilesAffine) {
  EXPECT_EQ(case_id("SYNTH", 42, Naming::brats2021), "SYNTH_00042");
  EXPECT_EQ(case_id("BraTS-GLI", 7, Naming::brats2023), "BraTS-GLI-00007-000");
  auto f = case_files("A_00001", Naming::brats2021);
  EXPECT_EQ(f[0], "A_00001_t1.nii.gz");
  EXPECT_EQ(f[1], "A_00001_t1ce.nii.gz");
  EXPECT_EQ(f[3], "A_00001_flair.nii.gz");
  EXPECT_EQ(f[4], "A_00001_seg.nii.gz");
  auto g = case_files("B-00001-000", Naming::brats2023);
  EXPECT_EQ(g[0], "B-00001-000-t1n.nii.gz");
  EXPECT_EQ(g[1], "B-00001-000-t1c.nii.gz");
  EXPECT_EQ(g[2], "B-00001-000-t2w.nii.gz");
  EXPECT_EQ(g[3], "B-00001-000-t2f.nii.gz");
  auto a = brats_affine({240, 240, 155});
  EXPECT_EQ(a[0][0], -1);
  EXPECT_EQ(a[1][1], -1);
  EXPECT_EQ(a[2][2], 1);
  EXPECT_EQ(a[1][3], 239);
  EXPECT_EQ(enhancing_label(Naming::brats2021), 4);
  EXPECT_EQ(enhancing_label(Naming::brats2023), 3);
}

// A fake skull-stripped T1: an ellipsoid of "white matter" with a "grey matter"
// shell and "CSF" core, in RAS voxel order at 1.5 mm.
Anatomy fake_anatomy() {
  const std::array<int64_t, 3> sh{40, 44, 36};
  std::vector<float> d(static_cast<size_t>(sh[0] * sh[1] * sh[2]), 0.f);
  for (int64_t z = 0; z < sh[2]; ++z)
    for (int64_t y = 0; y < sh[1]; ++y)
      for (int64_t x = 0; x < sh[0]; ++x) {
        double qx = (x - 19.5) / 16, qy = (y - 21.5) / 18, qz = (z - 17.5) / 14;
        double r = std::sqrt(qx * qx + qy * qy + qz * qz);
        float v = r > 1 ? 0.f : r > 0.8 ? 60.f : r < 0.45 ? 25.f : 100.f;
        if (v > 0) v += static_cast<float>((x * 7 + y * 3 + z) % 5);
        d[static_cast<size_t>((z * sh[1] + y) * sh[0] + x)] = v;
      }
  nifti::Affine a{};
  a[0][0] = a[1][1] = a[2][2] = 1.5;
  a[0][3] = -30;
  a[1][3] = -33;
  a[2][3] = -27;
  a[3][3] = 1;
  return make_anatomy(std::move(d), sh, a, "fake.nii");
}

TEST(SynthAnatomy, ClassesAndCases) {
  Anatomy an = fake_anatomy();
  EXPECT_NEAR(an.csf, 27, 4);
  EXPECT_NEAR(an.gm, 62, 4);
  EXPECT_NEAR(an.wm, 102, 4);
  EXPECT_NEAR(an.extent_mm[0], 31 * 1.5, 3);
  CaseParams p = params(2);
  p.anatomy = &an;
  Case a = generate(p);
  Case b = generate(p);
  EXPECT_EQ(a.images[kT2], b.images[kT2]);
  EXPECT_GT(a.necrotic, 0u);
  EXPECT_GT(a.enhancing, 0u);
  EXPECT_GT(a.oedema, 0u);
  for (int m = 0; m < kModalities; ++m)
    for (size_t i = 0; i < a.brain.size(); ++i) {
      ASSERT_EQ(a.images[m][i] == 0, a.brain[i] == 0);
      if (a.labels[i]) {
        ASSERT_TRUE(a.brain[i]);
      }
    }
  EXPECT_GT(mean_where(a.images[kT1ce], a.labels, 4), 1.5 * mean_where(a.images[kT1ce], a.labels, 1));
}

TEST(SynthAnatomy, RejectsEmptyImage) {
  std::vector<float> d(20 * 20 * 20, 0.f);
  nifti::Affine a{};
  a[0][0] = a[1][1] = a[2][2] = a[3][3] = 1;
  try {
    make_anatomy(d, {20, 20, 20}, a, "empty.nii");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitDataErr);
    EXPECT_EQ(e.subject(), "empty.nii");
  }
}

TEST(SynthWrite, FilesReadBack) {
  char tmpl[] = "/tmp/synth_test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  CaseParams p = params(4, 0, "standard", Naming::brats2023);
  p.shape = {24, 20, 16};
  Case c = generate(p);
  const std::string id = case_id("T", 0, Naming::brats2023);
  write_case(c, dir, id, Naming::brats2023, false, "test");
  auto names = case_files(id, Naming::brats2023);
  for (int m = 0; m < 5; ++m) {
    nifti::Image img = nifti::read(dir + "/" + names[static_cast<size_t>(m)]);
    EXPECT_EQ(img.shape, (std::vector<int64_t>{24, 20, 16}));
    EXPECT_GT(img.header.sform_code, 0);
    EXPECT_GT(img.header.qform_code, 0);
    EXPECT_EQ(img.affine[0][0], -1);
    EXPECT_EQ(img.affine[1][3], 19);
    if (m == 4) {
      EXPECT_EQ(img.datatype, nifti::DataType::u8);
      EXPECT_EQ(img.to_labels("seg"), c.labels);
    } else {
      EXPECT_EQ(img.datatype, nifti::DataType::i16);
      ASSERT_EQ(img.raw.size(), c.images[static_cast<size_t>(m)].size() * 2);
      EXPECT_EQ(std::memcmp(img.raw.data(), c.images[static_cast<size_t>(m)].data(), img.raw.size()), 0);
    }
  }
  // Existing files are not clobbered without overwrite.
  try {
    write_case(c, dir, id, Naming::brats2023, false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCantCreate);
  }
  for (const auto& n : names) std::remove((dir + "/" + n).c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace fedseg::synth
