// Exact Euclidean distance transform with anisotropic spacing, linear in the voxels:
// a two-way scan along Z gives the distance to the nearest site in each Z column;
// then along Y and along X each line takes the lower envelope of the parabolas
// f(q) + (w (p - q))² (Felzenszwalb & Huttenlocher, "Distance transforms of sampled
// functions", Theory of Computing 8, 2012). The passes run Z, Y, X so that a squared
// distance is summed as (dz sz)² + (dy sy)² + (dx sx)², the order scipy's
// distance_transform_edt sums its feature offsets in: equal nearest sites give equal
// bits.
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "metrics/metrics.h"
#include "metrics/parallel.h"

namespace fedseg::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kMinVoxelsPerThread = 1 << 15;

// Lower envelope along one line: f (n values, +inf = no site) -> d[p * stride] =
// min_q f[q] + (w (p - q))². v and zb are scratch of n and n + 1 elements.
void envelope(const double* f, int64_t n, double w, double* d, int64_t stride, int64_t* v, double* zb) {
  int64_t k = -1;
  const double w2 = w * w;
  for (int64_t q = 0; q < n; ++q) {
    if (f[q] == kInf) continue;
    const double hq = f[q] / w2 + double(q) * double(q);  // in units of w²
    if (k < 0) {
      k = 0;
      v[0] = q;
      zb[0] = -kInf;
      continue;
    }
    double s;
    for (;;) {  // zb[0] = -inf ends it at k = 0 at the latest
      const int64_t p = v[k];
      s = (hq - (f[p] / w2 + double(p) * double(p))) / (2.0 * double(q - p));
      if (s > zb[k]) break;
      --k;
    }
    ++k;
    v[k] = q;
    zb[k] = s;
  }
  if (k < 0) {
    for (int64_t p = 0; p < n; ++p) d[p * stride] = kInf;
    return;
  }
  zb[k + 1] = kInf;
  int64_t j = 0;
  for (int64_t p = 0; p < n; ++p) {
    while (zb[j + 1] < double(p)) ++j;
    const double t = double(p - v[j]) * w;
    d[p * stride] = f[v[j]] + t * t;
  }
}

void check_geometry(const Shape& shape, const Spacing& spacing) {
  for (int i = 0; i < 3; ++i) {
    if (shape[i] < 1) throw Error(kExitDataErr, "bad volume shape", {}, "dimension " + std::to_string(shape[i]));
    if (!(spacing[i] > 0) || !std::isfinite(spacing[i]))
      throw Error(kExitDataErr, "bad voxel spacing", {}, std::to_string(spacing[i]) + " mm");
  }
}

}  // namespace

void squared_distance_to_sites(const uint8_t* sites, const Shape& shape, const Spacing& spacing, double* out,
                               int threads) {
  check_geometry(shape, spacing);
  const int64_t Z = shape[0], Y = shape[1], X = shape[2], plane = Y * X;
  threads = std::max(1, threads);

  // Z: nearest site in each column, counted in voxels, by a forward and a backward
  // scan over whole rows (contiguous in x); then scaled and squared.
  const double sz = spacing[0];
  detail::parallel_for(Y, threads, std::max<int64_t>(1, kMinVoxelsPerThread / std::max<int64_t>(1, Z * X)),
                       [&](int64_t y0, int64_t y1) {
                         for (int64_t y = y0; y < y1; ++y) {
                           for (int64_t z = 0; z < Z; ++z) {
                             const int64_t row = z * plane + y * X;
                             const uint8_t* s = sites + row;
                             double* o = out + row;
                             const double* prev = z ? o - plane : nullptr;
                             for (int64_t x = 0; x < X; ++x) o[x] = s[x] ? 0.0 : (prev ? prev[x] + 1.0 : kInf);
                           }
                           for (int64_t z = Z - 2; z >= 0; --z) {
                             double* o = out + z * plane + y * X;
                             const double* next = o + plane;
                             for (int64_t x = 0; x < X; ++x) o[x] = std::min(o[x], next[x] + 1.0);
                           }
                           for (int64_t z = 0; z < Z; ++z) {
                             double* o = out + z * plane + y * X;
                             for (int64_t x = 0; x < X; ++x) {
                               const double t = o[x] * sz;
                               o[x] = t * t;
                             }
                           }
                         }
                       });

  // Y: lines of stride X, gathered; split over z.
  if (Y > 1) {
    const double sy = spacing[1];
    detail::parallel_for(Z, threads, std::max<int64_t>(1, kMinVoxelsPerThread / plane), [&](int64_t z0, int64_t z1) {
      std::vector<double> f(static_cast<size_t>(Y)), zb(static_cast<size_t>(Y) + 1);
      std::vector<int64_t> v(static_cast<size_t>(Y));
      for (int64_t z = z0; z < z1; ++z)
        for (int64_t x = 0; x < X; ++x) {
          double* col = out + z * plane + x;
          bool any = false;
          for (int64_t y = 0; y < Y; ++y) {
            f[size_t(y)] = col[y * X];
            any |= f[size_t(y)] != kInf;
          }
          if (any) envelope(f.data(), Y, sy, col, X, v.data(), zb.data());
        }
    });
  }

  // X: contiguous lines, split over the rows.
  if (X > 1) {
    const double sx = spacing[2];
    detail::parallel_for(Z * Y, threads, std::max<int64_t>(1, kMinVoxelsPerThread / X), [&](int64_t r0, int64_t r1) {
      std::vector<double> f(static_cast<size_t>(X)), zb(static_cast<size_t>(X) + 1);
      std::vector<int64_t> v(static_cast<size_t>(X));
      for (int64_t r = r0; r < r1; ++r) {
        double* row = out + r * X;
        bool any = false;
        for (int64_t x = 0; x < X; ++x) {
          f[size_t(x)] = row[x];
          any |= row[x] != kInf;
        }
        if (any) envelope(f.data(), X, sx, row, 1, v.data(), zb.data());
      }
    });
  }
}

std::vector<double> distance_transform_edt(const uint8_t* input, const Shape& shape, const Spacing& spacing,
                                           int threads) {
  check_geometry(shape, spacing);
  const size_t n = size_t(shape[0] * shape[1] * shape[2]);
  std::vector<uint8_t> zeros(n);
  for (size_t i = 0; i < n; ++i) zeros[i] = input[i] == 0;
  std::vector<double> d(n);
  squared_distance_to_sites(zeros.data(), shape, spacing, d.data(), threads);
  for (double& x : d) x = std::sqrt(x);
  return d;
}

}  // namespace fedseg::metrics
