#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "metrics/metrics.h"
#include "test_util.h"

namespace fedseg::metrics {
namespace {

using fedseg::test::error_code;

size_t voxels(const Shape& s) { return size_t(s[0] * s[1] * s[2]); }
size_t at(const Shape& s, int64_t z, int64_t y, int64_t x) { return size_t((z * s[1] + y) * s[2] + x); }

// --- brute force, straight from the definitions ------------------------------------

std::vector<uint8_t> brute_surface(const std::vector<uint8_t>& m, const Shape& s) {
  std::vector<uint8_t> out(m.size());
  auto in = [&](int64_t z, int64_t y, int64_t x) {
    return z >= 0 && y >= 0 && x >= 0 && z < s[0] && y < s[1] && x < s[2] && m[at(s, z, y, x)];
  };
  for (int64_t z = 0; z < s[0]; ++z)
    for (int64_t y = 0; y < s[1]; ++y)
      for (int64_t x = 0; x < s[2]; ++x)
        out[at(s, z, y, x)] = in(z, y, x) && !(in(z - 1, y, x) && in(z + 1, y, x) && in(z, y - 1, x) &&
                                               in(z, y + 1, x) && in(z, y, x - 1) && in(z, y, x + 1));
  return out;
}

// For each voxel of `from` (C order), the distance to the nearest voxel of `to`.
std::vector<double> brute_directed(const std::vector<uint8_t>& from, const std::vector<uint8_t>& to, const Shape& s,
                                   const Spacing& sp) {
  std::vector<double> out;
  for (size_t i = 0; i < from.size(); ++i) {
    if (!from[i]) continue;
    const int64_t zi = int64_t(i) / (s[1] * s[2]), yi = int64_t(i) / s[2] % s[1], xi = int64_t(i) % s[2];
    double best = std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < to.size(); ++j) {
      if (!to[j]) continue;
      const int64_t zj = int64_t(j) / (s[1] * s[2]), yj = int64_t(j) / s[2] % s[1], xj = int64_t(j) % s[2];
      const double dz = double(zi - zj) * sp[0], dy = double(yi - yj) * sp[1], dx = double(xi - xj) * sp[2];
      best = std::min(best, dz * dz + dy * dy + dx * dx);
    }
    out.push_back(std::sqrt(best));
  }
  return out;
}

double sorted_percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double h = double(v.size() - 1) * q / 100.0;
  const size_t lo = size_t(std::floor(h));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (h - double(lo));
}

std::vector<uint8_t> random_mask(std::mt19937& rng, const Shape& s, double density) {
  std::bernoulli_distribution b(density);
  std::vector<uint8_t> m(voxels(s));
  for (auto& v : m) v = b(rng);
  return m;
}

// --- Dice, sensitivity, specificity, volumes ------------------------------------------

TEST(Metrics, DiceOfKnownOverlaps) {
  const Shape s{1, 2, 5};
  // pred 4 voxels, ref 6 voxels, 3 in common: 2*3/10
  std::vector<uint8_t> p{1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  std::vector<uint8_t> r{0, 1, 1, 1, 0, 1, 1, 1, 0, 0};
  EXPECT_DOUBLE_EQ(dice(p.data(), r.data(), p.size()), 0.6);
  BinaryMetrics m = binary_metrics(p.data(), r.data(), s, {1, 1, 1});
  EXPECT_DOUBLE_EQ(m.dice, 0.6);
  EXPECT_EQ(m.tp, 3);
  EXPECT_EQ(m.fp, 1);
  EXPECT_EQ(m.fn, 3);
  EXPECT_EQ(m.tn, 3);
  EXPECT_DOUBLE_EQ(m.sensitivity, 0.5);
  EXPECT_DOUBLE_EQ(m.specificity, 0.75);

  std::vector<uint8_t> z(10, 0), two(10, 0);
  two[0] = 2;  // any non-zero value is inside a binary mask
  EXPECT_EQ(dice(z.data(), z.data(), 10), 1.0);
  EXPECT_EQ(dice(z.data(), p.data(), 10), 0.0);
  EXPECT_EQ(dice(p.data(), z.data(), 10), 0.0);
  EXPECT_DOUBLE_EQ(dice(two.data(), p.data(), 10), 2.0 / 5.0);
  EXPECT_EQ(binary_metrics(z.data(), z.data(), s, {1, 1, 1}).dice, 1.0);
  EXPECT_EQ(binary_metrics(p.data(), z.data(), s, {1, 1, 1}).dice, 0.0);
}

TEST(Metrics, SensitivitySpecificityVolumesEdgeCases) {
  const Shape s{2, 2, 2};
  const Spacing sp{2.0, 1.0, 0.5};  // 1 mm³ voxels
  std::vector<uint8_t> z(8, 0), one(8, 0), full(8, 1);
  one[3] = 1;
  BinaryMetrics m = binary_metrics(z.data(), z.data(), s, sp);
  EXPECT_EQ(m.sensitivity, 1.0);  // nothing to find, nothing found
  EXPECT_EQ(m.specificity, 1.0);
  EXPECT_EQ(m.volume_pred_ml, 0.0);
  m = binary_metrics(one.data(), z.data(), s, sp);
  EXPECT_EQ(m.sensitivity, 0.0);  // empty reference, a false positive
  EXPECT_DOUBLE_EQ(m.specificity, 7.0 / 8.0);
  EXPECT_DOUBLE_EQ(m.volume_pred_ml, 0.001);
  EXPECT_EQ(m.volume_ref_ml, 0.0);
  m = binary_metrics(one.data(), full.data(), s, sp);
  EXPECT_EQ(m.specificity, 1.0);  // the reference covers every voxel: TN + FP = 0
  EXPECT_DOUBLE_EQ(m.sensitivity, 1.0 / 8.0);
  EXPECT_DOUBLE_EQ(m.volume_ref_ml, 0.008);
}

// --- HD95 ---------------------------------------------------------------------------

TEST(Metrics, PercentileIsNumpyLinear) {
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 95), 3.85);  // index 2.85 between 3 and 4
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_EQ(percentile({5}, 95), 5.0);
  EXPECT_EQ(percentile({0, 7}, 0), 0.0);
  EXPECT_EQ(percentile({0, 7}, 100), 7.0);
  EXPECT_TRUE(std::isnan(percentile({}, 95)));
}

TEST(Metrics, Hd95OfTwoPointsWithSpacing) {
  const Shape s{3, 4, 5};
  const Spacing sp{2.0, 1.5, 0.5};
  std::vector<uint8_t> a(voxels(s)), b(voxels(s));
  a[at(s, 0, 0, 0)] = 1;
  b[at(s, 2, 3, 4)] = 1;
  const double d = std::sqrt(4.0 * 4.0 + 4.5 * 4.5 + 2.0 * 2.0);
  BinaryMetrics m = binary_metrics(a.data(), b.data(), s, sp);
  EXPECT_NEAR(m.hd95_pooled, d, 1e-12);
  EXPECT_NEAR(m.hd95_max_directed, d, 1e-12);
  EXPECT_NEAR(hd95(a.data(), b.data(), s, sp), d, 1e-12);
  EXPECT_EQ(m.surface_pred, 1);
  EXPECT_EQ(m.surface_ref, 1);
  EXPECT_EQ(m.dice, 0.0);
  EXPECT_EQ(binary_metrics(a.data(), a.data(), s, sp).hd95_pooled, 0.0);
}

TEST(Metrics, Hd95PooledAndMaxDirectedDiffer) {
  // A line of 4 voxels: pred {0}, ref {0, 3}. d(pred->ref) = [0], d(ref->pred) = [0, 3].
  // Pooled: percentile([0, 0, 3], 95) = 2.7; max-directed: max(0, percentile([0, 3], 95)) = 2.85.
  const Shape s{1, 1, 4};
  std::vector<uint8_t> p{1, 0, 0, 0}, r{1, 0, 0, 1};
  SurfaceDistances d = surface_distances(p.data(), r.data(), s, {1, 1, 1});
  EXPECT_EQ(d.pred_to_ref, std::vector<double>({0.0}));
  EXPECT_EQ(d.ref_to_pred, std::vector<double>({0.0, 3.0}));
  EXPECT_NEAR(hd95(d, Hd95Convention::pooled), 2.7, 1e-12);
  EXPECT_NEAR(hd95(d, Hd95Convention::max_directed), 2.85, 1e-12);
  BinaryMetrics m = binary_metrics(p.data(), r.data(), s, {1, 1, 1});
  EXPECT_NEAR(m.hd95(Hd95Convention::pooled), 2.7, 1e-12);
  EXPECT_NEAR(m.hd95(Hd95Convention::max_directed), 2.85, 1e-12);
}

TEST(Metrics, Hd95EmptyMasks) {
  const Shape s{2, 3, 4};
  std::vector<uint8_t> z(voxels(s)), m(voxels(s));
  m[5] = 1;
  EXPECT_EQ(hd95(z.data(), z.data(), s, {1, 1, 1}, Hd95Convention::pooled), 0.0);
  EXPECT_EQ(hd95(z.data(), z.data(), s, {1, 1, 1}, Hd95Convention::max_directed), 0.0);
  EXPECT_EQ(hd95(z.data(), m.data(), s, {1, 1, 1}, Hd95Convention::pooled), kHd95EmptyPooled);
  EXPECT_EQ(hd95(m.data(), z.data(), s, {1, 1, 1}, Hd95Convention::pooled), 373.12866);
  EXPECT_EQ(hd95(m.data(), z.data(), s, {1, 1, 1}, Hd95Convention::max_directed), 374.0);
  Options o;
  o.hd95_empty_pooled = 371.43;
  EXPECT_EQ(hd95(m.data(), z.data(), s, {1, 1, 1}, Hd95Convention::pooled, o), 371.43);
  SurfaceDistances d = surface_distances(m.data(), z.data(), s, {1, 1, 1});
  EXPECT_FALSE(d.pred_empty);
  EXPECT_TRUE(d.ref_empty);
  EXPECT_TRUE(d.pred_to_ref.empty());
  EXPECT_TRUE(d.ref_to_pred.empty());
}

TEST(Metrics, SurfaceIsMaskMinusSixNeighbourErosionWithBackgroundBorder) {
  // A 3x3x3 cube inside a 5x5x5 grid: all but its centre; the whole 5x5x5 grid: its
  // 98 outer voxels (the array border counts as background).
  const Shape s{5, 5, 5};
  std::vector<uint8_t> cube(voxels(s)), full(voxels(s), 1);
  for (int z = 1; z < 4; ++z)
    for (int y = 1; y < 4; ++y)
      for (int x = 1; x < 4; ++x) cube[at(s, z, y, x)] = 1;
  EXPECT_EQ(binary_metrics(cube.data(), cube.data(), s, {1, 1, 1}).surface_pred, 26);
  EXPECT_EQ(binary_metrics(full.data(), full.data(), s, {1, 1, 1}).surface_pred, 98);
  // 6-connectivity: a plus-shaped centre is interior even when the corners are missing.
  std::vector<uint8_t> plus(voxels(s));
  for (int i = 1; i < 4; ++i) {
    plus[at(s, i, 2, 2)] = plus[at(s, 2, i, 2)] = plus[at(s, 2, 2, i)] = 1;
  }
  EXPECT_EQ(binary_metrics(plus.data(), plus.data(), s, {1, 1, 1}).surface_pred, 6);
}

TEST(Metrics, RandomVolumesMatchBruteForceCroppedAndWhole) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> dim(1, 9);
  std::uniform_real_distribution<double> spacing(0.4, 3.0);
  for (int t = 0; t < 60; ++t) {
    const Shape s{dim(rng), dim(rng), dim(rng)};
    const Spacing sp{spacing(rng), spacing(rng), spacing(rng)};
    std::vector<uint8_t> p = random_mask(rng, s, 0.05 + 0.4 * (t % 3) / 2);
    std::vector<uint8_t> r = random_mask(rng, s, 0.1);
    p[size_t(t) % p.size()] = 1;  // neither empty
    r[size_t(3 * t + 1) % r.size()] = 1;
    const auto sp_ = brute_surface(p, s), sr = brute_surface(r, s);
    const auto d1 = brute_directed(sp_, sr, s, sp), d2 = brute_directed(sr, sp_, s, sp);
    std::vector<double> pooled = d1;
    pooled.insert(pooled.end(), d2.begin(), d2.end());
    const double want_pooled = sorted_percentile(pooled, 95);
    const double want_max = std::max(sorted_percentile(d1, 95), sorted_percentile(d2, 95));
    for (bool crop : {true, false})
      for (int threads : {1, 3}) {
        Options o;
        o.crop = crop;
        o.threads = threads;
        SCOPED_TRACE(testing::Message() << "case " << t << " crop " << crop << " threads " << threads);
        SurfaceDistances d = surface_distances(p.data(), r.data(), s, sp, o);
        ASSERT_EQ(d.pred_to_ref.size(), d1.size());
        ASSERT_EQ(d.ref_to_pred.size(), d2.size());
        for (size_t i = 0; i < d1.size(); ++i) EXPECT_NEAR(d.pred_to_ref[i], d1[i], 1e-9);
        for (size_t i = 0; i < d2.size(); ++i) EXPECT_NEAR(d.ref_to_pred[i], d2[i], 1e-9);
        BinaryMetrics m = binary_metrics(p.data(), r.data(), s, sp, o);
        EXPECT_NEAR(m.hd95_pooled, want_pooled, 1e-9);
        EXPECT_NEAR(m.hd95_max_directed, want_max, 1e-9);
      }
  }
}

TEST(Metrics, CropGivesTheWholeGridsValuesForAMaskAwayFromTheBorder) {
  // 40x30x50 grid, two overlapping boxes well inside: the crop is a small part of it.
  const Shape s{40, 30, 50};
  std::vector<uint8_t> p(voxels(s)), r(voxels(s));
  for (int z = 10; z < 20; ++z)
    for (int y = 8; y < 15; ++y)
      for (int x = 20; x < 31; ++x) {
        p[at(s, z, y, x)] = 1;
        r[at(s, z + 2, y - 1, x + 3)] = 1;
      }
  Options whole;
  whole.crop = false;
  const Spacing sp{3.0, 0.9, 0.9};
  BinaryMetrics a = binary_metrics(p.data(), r.data(), s, sp), b = binary_metrics(p.data(), r.data(), s, sp, whole);
  EXPECT_NEAR(a.hd95_pooled, b.hd95_pooled, 1e-12);
  EXPECT_NEAR(a.hd95_max_directed, b.hd95_max_directed, 1e-12);
  EXPECT_EQ(a.surface_pred, b.surface_pred);
  EXPECT_EQ(a.tn, b.tn);
  EXPECT_GT(a.hd95_pooled, 0.0);
}

// --- distance transform -------------------------------------------------------------

TEST(Metrics, DistanceTransformMatchesBruteForce) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> dim(1, 12);
  std::uniform_real_distribution<double> spacing(0.3, 4.0);
  for (int t = 0; t < 40; ++t) {
    const Shape s{dim(rng), dim(rng), dim(rng)};
    const Spacing sp{spacing(rng), spacing(rng), spacing(rng)};
    std::vector<uint8_t> sites = random_mask(rng, s, t % 4 == 0 ? 0.01 : 0.15);
    std::vector<uint8_t> all(voxels(s), 1);
    const auto want = brute_directed(all, sites, s, sp);  // inf without sites
    for (int threads : {1, 4}) {
      std::vector<double> got(voxels(s));
      squared_distance_to_sites(sites.data(), s, sp, got.data(), threads);
      for (size_t i = 0; i < got.size(); ++i) {
        if (std::isinf(want[i])) {
          EXPECT_TRUE(std::isinf(got[i])) << "case " << t << " voxel " << i;
        } else {
          EXPECT_NEAR(std::sqrt(got[i]), want[i], 1e-9) << "case " << t << " voxel " << i;
        }
      }
    }
    // scipy's distance_transform_edt semantics: distance of non-zero voxels to zeros.
    std::vector<uint8_t> input(sites.size());
    for (size_t i = 0; i < input.size(); ++i) input[i] = !sites[i];
    const auto edt = distance_transform_edt(input.data(), s, sp, 2);
    for (size_t i = 0; i < edt.size(); ++i) {
      if (std::isinf(want[i]))
        EXPECT_TRUE(std::isinf(edt[i]));
      else
        EXPECT_NEAR(edt[i], want[i], 1e-9);
    }
  }
}

TEST(Metrics, DistanceTransformLargerVolumeThreaded) {
  // Big enough for the passes to split over threads; a few far-apart sites.
  const Shape s{37, 61, 53};
  const Spacing sp{2.5, 0.8, 1.1};
  std::vector<uint8_t> sites(voxels(s));
  sites[at(s, 0, 0, 0)] = sites[at(s, 36, 60, 52)] = sites[at(s, 18, 30, 10)] = 1;
  std::vector<double> one(voxels(s)), four(voxels(s));
  squared_distance_to_sites(sites.data(), s, sp, one.data(), 1);
  squared_distance_to_sites(sites.data(), s, sp, four.data(), 4);
  EXPECT_EQ(one, four);
  auto brute = [&](int64_t z, int64_t y, int64_t x) {
    double best = 1e300;
    for (auto c : {std::array<int64_t, 3>{0, 0, 0}, {36, 60, 52}, {18, 30, 10}}) {
      const double dz = double(z - c[0]) * sp[0], dy = double(y - c[1]) * sp[1], dx = double(x - c[2]) * sp[2];
      best = std::min(best, dz * dz + dy * dy + dx * dx);
    }
    return best;
  };
  for (int64_t z = 0; z < s[0]; z += 3)
    for (int64_t y = 0; y < s[1]; y += 2)
      for (int64_t x = 0; x < s[2]; ++x) ASSERT_NEAR(one[at(s, z, y, x)], brute(z, y, x), 1e-9);
}

// --- regions ------------------------------------------------------------------------

TEST(Metrics, BratsRegionsFromLabels) {
  // brats2021: WT = {1,2,4}, TC = {1,4}, ET = {4}.
  const Shape s{1, 1, 6};
  std::vector<uint8_t> ref{0, 1, 2, 4, 4, 0};
  std::vector<uint8_t> pred{0, 2, 2, 4, 1, 1};
  RegionMetrics m = brats_region_metrics(pred.data(), ref.data(), LabelCoding::brats2021, s, {1, 1, 1});
  // ET: pred {3}, ref {3,4}: 2*1/3. TC: pred {3,4,5}, ref {1,3,4}: 2*2/6. WT: pred {1..5}, ref {1..4}: 2*4/9.
  EXPECT_DOUBLE_EQ(m[0].dice, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m[1].dice, 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(m[2].dice, 8.0 / 9.0);
  // The same labels region-coded (ET|TC|WT = 7, TC|WT = 6, WT = 4) give the same values.
  auto code = [](uint8_t l) { return uint8_t(l == 4 ? 7 : l == 1 ? 6 : l == 2 ? 4 : 0); };
  std::vector<uint8_t> pr(pred.size()), rr(ref.size());
  std::transform(pred.begin(), pred.end(), pr.begin(), code);
  std::transform(ref.begin(), ref.end(), rr.begin(), code);
  RegionMetrics c = region_metrics(pr.data(), rr.data(), s, {1, 1, 1});
  RegionMetrics mixed = region_metrics(pr.data(), LabelCoding::region_bits, ref.data(), LabelCoding::brats2021, s,
                                       {1, 1, 1});
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(c[size_t(r)].dice, m[size_t(r)].dice) << kRegionNames[size_t(r)];
    EXPECT_EQ(c[size_t(r)].hd95_pooled, m[size_t(r)].hd95_pooled);
    EXPECT_EQ(mixed[size_t(r)].hd95_max_directed, m[size_t(r)].hd95_max_directed);
  }
  // brats2023: ET = 3.
  std::vector<uint8_t> r23{0, 1, 2, 3, 3, 0};
  RegionMetrics n = brats_region_metrics(r23.data(), r23.data(), LabelCoding::brats2023, s, {1, 1, 1});
  EXPECT_EQ(n[0].tp, 2);
  EXPECT_EQ(n[1].tp, 3);
  EXPECT_EQ(n[2].tp, 4);
  // No ET anywhere: Dice 1, HD95 0 for that region.
  std::vector<uint8_t> noet{0, 1, 2, 2, 1, 0};
  n = brats_region_metrics(noet.data(), noet.data(), LabelCoding::brats2021, s, {1, 1, 1});
  EXPECT_EQ(n[0].dice, 1.0);
  EXPECT_EQ(n[0].hd95_pooled, 0.0);
}

TEST(Metrics, UndeclaredLabelValuesAreBadData) {
  const Shape s{1, 1, 4};
  std::vector<uint8_t> ok{0, 1, 2, 4}, bad21{0, 1, 3, 4}, bad_bits{0, 8, 0, 0};
  std::string msg;
  EXPECT_EQ(error_code([&] { brats_region_metrics(bad21.data(), ok.data(), LabelCoding::brats2021, s, {1, 1, 1}); },
                       &msg),
            kExitDataErr);
  EXPECT_NE(msg.find("3 in the prediction (brats2021 declares 0, 1, 2, 4)"), std::string::npos) << msg;
  EXPECT_EQ(error_code([&] { brats_region_metrics(ok.data(), ok.data(), LabelCoding::brats2023, s, {1, 1, 1}); },
                       &msg),
            kExitDataErr);
  EXPECT_NE(msg.find("4 in the prediction"), std::string::npos) << msg;
  EXPECT_EQ(error_code([&] { region_metrics(ok.data(), bad_bits.data(), s, {1, 1, 1}); }, &msg), kExitDataErr);
  EXPECT_NE(msg.find("8 in the reference"), std::string::npos) << msg;
  EXPECT_EQ(error_code([&] { brats_region_metrics(ok.data(), ok.data(), LabelCoding::region_bits, s, {1, 1, 1}); }),
            kExitUsage);
}

TEST(Metrics, BadGeometryAndNames) {
  std::vector<uint8_t> v(4, 1);
  EXPECT_EQ(error_code([&] { binary_metrics(v.data(), v.data(), {0, 2, 2}, {1, 1, 1}); }), kExitDataErr);
  EXPECT_EQ(error_code([&] { binary_metrics(v.data(), v.data(), {1, 2, 2}, {1, 0, 1}); }), kExitDataErr);
  EXPECT_EQ(error_code([&] { binary_metrics(v.data(), v.data(), {1, 2, 2}, {1, NAN, 1}); }), kExitDataErr);
  EXPECT_EQ(hd95_convention_from_name("max-directed"), Hd95Convention::max_directed);
  EXPECT_STREQ(hd95_convention_name(Hd95Convention::pooled), "pooled");
  EXPECT_EQ(label_coding_from_name("brats2023"), LabelCoding::brats2023);
  EXPECT_STREQ(label_coding_name(LabelCoding::region_bits), "regions");
  EXPECT_EQ(error_code([] { hd95_convention_from_name("mean"); }), kExitUsage);
  EXPECT_EQ(error_code([] { label_coding_from_name("brats2024"); }), kExitUsage);
}

}  // namespace
}  // namespace fedseg::metrics
