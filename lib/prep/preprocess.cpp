// One case: validate, reorient to RAS+, resample, crop, z-score, region-code.
// The fast path (no resampling or clipping) takes the modalities one at a time, each
// decoded into the same buffer (nifti::read_voxels: hashed and inflated from one
// read of the file) and, while it is still in cache, read twice: one pass for its
// statistics and bounding box, one gather pass that reorients, crops to that box,
// z-scores and converts to float16. The crop box is the union of the four boxes,
// known only at the end: the channels stay in their own boxes (Options::packed) or
// are assembled into the full crop. int16 volumes (BraTS) take AVX2 kernels.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "core/error.h"
#include "core/half.h"
#include "core/sha256.h"
#include "nifti/nifti.h"
#include "prep/prep.h"

namespace fedseg::prep {
namespace {

using Mat4 = std::array<std::array<double, 4>, 4>;

Mat4 identity() {
  Mat4 m{};
  for (int i = 0; i < 4; ++i) m[i][i] = 1;
  return m;
}

Mat4 mul(const Mat4& a, const Mat4& b) {
  Mat4 r{};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 4; ++k) r[i][j] += a[i][k] * b[k][j];
  return r;
}

std::vector<double> flat(const Mat4& m) {
  std::vector<double> v;
  for (const auto& row : m)
    for (double x : row) v.push_back(x);
  return v;
}

// Voxel axes -> RAS+ world axes. ax[a] is the voxel axis that runs along world axis
// a; flip[a] says it runs backwards.
struct Orientation {
  std::array<int, 3> ax{0, 1, 2};
  std::array<bool, 3> flip{false, false, false};
  std::string codes;  // of the source, as nibabel's aff2axcodes ("LPS" for BraTS)
};

Orientation orientation_of(const nifti::Affine& A, const std::string& path) {
  Orientation o;
  std::array<bool, 3> used_world{}, used_voxel{};
  std::array<int, 3> world_of_voxel{};
  std::array<double, 3> sign_of_voxel{};
  for (int step = 0; step < 3; ++step) {
    double best = -1;
    int bw = -1, bv = -1;
    for (int w = 0; w < 3; ++w)
      for (int v = 0; v < 3; ++v)
        if (!used_world[w] && !used_voxel[v] && std::fabs(A[w][v]) > best) {
          best = std::fabs(A[w][v]);
          bw = w;
          bv = v;
        }
    if (best <= 0) throw Error(kExitDataErr, "cannot read", path, "degenerate affine: a voxel axis has no direction");
    used_world[bw] = used_voxel[bv] = true;
    world_of_voxel[bv] = bw;
    sign_of_voxel[bv] = A[bw][bv] > 0 ? 1 : -1;
  }
  static const char* pos = "RAS";
  static const char* neg = "LPI";
  for (int v = 0; v < 3; ++v) {
    int w = world_of_voxel[v];
    o.ax[w] = v;
    o.flip[w] = sign_of_voxel[v] < 0;
    o.codes += sign_of_voxel[v] > 0 ? pos[w] : neg[w];
  }
  return o;
}

double affine_distance(const nifti::Affine& a, const nifti::Affine& b) {
  double d = 0;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) d = std::max(d, std::fabs(a[i][j] - b[i][j]));
  return d;
}

// Linear-interpolated percentile over values (numpy's default method).
double percentile(std::vector<float> v, double q) {
  if (v.empty()) return 0;
  double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(lo), v.end());
  double a = v[lo];
  if (lo + 1 >= v.size()) return a;
  double b = *std::min_element(v.begin() + static_cast<long>(lo) + 1, v.end());
  return a + (b - a) * (pos - static_cast<double>(lo));
}

// A 3-D volume in x-fastest order.
struct Grid {
  std::array<int64_t, 3> n{};
  int64_t voxels() const { return n[0] * n[1] * n[2]; }
};

// How the canonical box from `lo` on runs through the source volume: the source
// offset of its first voxel along each canonical axis and the steps (in voxels).
struct Walk {
  std::array<int64_t, 3> step{}, start{};
  // The source offset of canonical row (y, z) of the box, relative to lo.
  int64_t row(int64_t dy, int64_t dz) const { return start[2] + dz * step[2] + start[1] + dy * step[1] + start[0]; }
};

Walk walk_of(const Grid& g, const Orientation& o, const std::array<int64_t, 3>& lo) {
  const std::array<int64_t, 3> stride{1, g.n[0], g.n[0] * g.n[1]};
  Walk w;
  for (int a = 0; a < 3; ++a) {
    int v = o.ax[a];
    int64_t m = g.n[v];
    w.step[a] = o.flip[a] ? -stride[v] : stride[v];
    w.start[a] = (o.flip[a] ? (m - 1 - lo[a]) : lo[a]) * stride[v];
  }
  return w;
}

// Gathers src (source voxel order) into the canonical box [lo, hi) in z-major order,
// applying fn to each value.
template <class T, class Out, class Fn>
void gather(const T* src, const Grid& g, const Orientation& o, const std::array<int64_t, 3>& lo,
            const std::array<int64_t, 3>& hi, Out* out, Fn fn) {
  const Walk w = walk_of(g, o, lo);
  size_t k = 0;
  for (int64_t z = lo[2]; z < hi[2]; ++z) {
    for (int64_t y = lo[1]; y < hi[1]; ++y) {
      const T* row = src + w.row(y - lo[1], z - lo[2]);
      const int64_t sx = w.step[0], nx = hi[0] - lo[0];
      // Constant strides for the common cases (RAS: +1, LPS/BraTS: -1) so that the
      // compiler can vectorise the row.
      if (sx == 1)
        for (int64_t x = 0; x < nx; ++x) out[k + static_cast<size_t>(x)] = fn(row[x]);
      else if (sx == -1)
        for (int64_t x = 0; x < nx; ++x) out[k + static_cast<size_t>(x)] = fn(row[-x]);
      else
        for (int64_t x = 0; x < nx; ++x) out[k + static_cast<size_t>(x)] = fn(row[x * sx]);
      k += static_cast<size_t>(nx);
    }
  }
}

// Trilinear (images) or nearest (labels) resampling of a canonical volume.
template <class T>
RawVector<T> resample(const RawVector<T>& in, const Grid& g, const Grid& out_g, const std::array<double, 3>& f,
                        bool nearest) {
  RawVector<T> out(static_cast<size_t>(out_g.voxels()));
  auto coord = [&](int a, int64_t r, int64_t& i0, double& w) {
    double c = (static_cast<double>(r) + 0.5) * f[a] - 0.5;
    c = std::min(std::max(c, 0.0), static_cast<double>(g.n[a] - 1));
    if (nearest) {
      i0 = static_cast<int64_t>(std::floor(c + 0.5));
      w = 0;
      return;
    }
    i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(c)), g.n[a] - 1);
    w = c - static_cast<double>(i0);
  };
  const int64_t sx = 1, sy = g.n[0], sz = g.n[0] * g.n[1];
  size_t k = 0;
  for (int64_t z = 0; z < out_g.n[2]; ++z) {
    int64_t z0;
    double wz;
    coord(2, z, z0, wz);
    int64_t z1 = std::min(z0 + 1, g.n[2] - 1);
    for (int64_t y = 0; y < out_g.n[1]; ++y) {
      int64_t y0;
      double wy;
      coord(1, y, y0, wy);
      int64_t y1 = std::min(y0 + 1, g.n[1] - 1);
      for (int64_t x = 0; x < out_g.n[0]; ++x) {
        int64_t x0;
        double wx;
        coord(0, x, x0, wx);
        if (nearest) {
          out[k++] = in[static_cast<size_t>(x0 * sx + y0 * sy + z0 * sz)];
          continue;
        }
        int64_t x1 = std::min(x0 + 1, g.n[0] - 1);
        auto at = [&](int64_t xi, int64_t yi, int64_t zi) { return static_cast<double>(in[static_cast<size_t>(xi + yi * sy + zi * sz)]); };
        double c00 = at(x0, y0, z0) * (1 - wx) + at(x1, y0, z0) * wx;
        double c10 = at(x0, y1, z0) * (1 - wx) + at(x1, y1, z0) * wx;
        double c01 = at(x0, y0, z1) * (1 - wx) + at(x1, y0, z1) * wx;
        double c11 = at(x0, y1, z1) * (1 - wx) + at(x1, y1, z1) * wx;
        double c0 = c00 * (1 - wy) + c10 * wy, c1 = c01 * (1 - wy) + c11 * wy;
        out[k++] = static_cast<T>(c0 * (1 - wz) + c1 * wz);
      }
    }
  }
  return out;
}

uint8_t region_code(uint8_t label, Scheme s) {
  // bit 0 ET, bit 1 TC, bit 2 WT (kRegions)
  switch (label) {
    case 0: return 0;
    case 1: return 6;  // necrotic core: TC, WT
    case 2: return 4;  // oedema: WT
    case 3: return s == Scheme::brats2023 ? 7 : 0xff;
    case 4: return s == Scheme::brats2021 ? 7 : 0xff;
    default: return 0xff;
  }
}


// ---------------------------------------------------------------------------------
// Per-channel kernels. Each is compiled twice, for the baseline ISA and for AVX2
// (chosen at run time): the statistics and the normalising gather are most of
// prep's own time and vectorise twice as wide. No FMA: the float arithmetic, and so
// every stored value and statistic, is the same on both paths.

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FEDSEG_PREP_AVX2 1
#define FEDSEG_KERNEL inline __attribute__((always_inline))
// AVX2 and F16C, and the OS saves the YMM state. Asked with CPUID directly: clang 14's
// __builtin_cpu_supports knows no "f16c". FEDSEG_PREP_NO_AVX2 (set, non-empty) forces
// the portable kernels, for tests and comparisons.
bool have_avx2() {
  static const bool cpu = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool f16c = (c >> 29) & 1, avx = (c >> 28) & 1, osxsave = (c >> 27) & 1;
    if (!(f16c && avx && osxsave)) return false;
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6u) != 6u || __get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    return ((b >> 5) & 1) != 0;
  }();
  const char* off = std::getenv("FEDSEG_PREP_NO_AVX2");
  return cpu && !(off && *off);
}
#else
#define FEDSEG_KERNEL inline
#endif

// Voxel values as stored, as float (exactly as nifti::Image::to_float computes them).
template <class T>
struct Plain {
  static constexpr bool kPlain = true;
  FEDSEG_KERNEL float operator()(T x) const { return static_cast<float>(x); }
};
template <class T>
struct Scaled {
  static constexpr bool kPlain = false;
  double slope, inter;
  FEDSEG_KERNEL float operator()(T x) const { return static_cast<float>(static_cast<double>(x) * slope + inter); }
};

// Statistics of one channel over its non-zero voxels and their bounding box (source
// voxel order, hi inclusive; lo > hi when every voxel is zero).
struct ChannelStats {
  uint64_t n = 0, neg = 0, bad = 0;
  double sum = 0, sum2 = 0, mn = INFINITY, mx = -INFINITY;
  std::array<int64_t, 3> lo{}, hi{-1, -1, -1};
};

template <class T, class V>
FEDSEG_KERNEL void stats_kernel(const T* p, const Grid& g, V value, ChannelStats& st) {
  // Sums in kLanes independent double lanes so that the compiler vectorises the
  // loop (a single accumulator serialises on its dependency chain). Zeros add
  // nothing to the sums; the non-zero count, negatives and min/max are masked.
  constexpr int kLanes = 8;
  // Stored integers as they are: exact integer sums per row, which vectorise well.
  constexpr bool kExactInt = std::is_integral_v<T> && sizeof(T) <= 2 && V::kPlain;
  double s[kLanes] = {}, s2[kLanes] = {}, cnt[kLanes] = {}, negs[kLanes] = {};
  float mnl[kLanes], mxl[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    mnl[l] = INFINITY;
    mxl[l] = -INFINITY;
  }
  std::array<int64_t, 3> blo{g.n[0], g.n[1], g.n[2]}, bhi{-1, -1, -1};
  const int64_t nx = g.n[0];
  for (int64_t z = 0; z < g.n[2]; ++z) {
    for (int64_t y = 0; y < g.n[1]; ++y) {
      const T* row = p + (z * g.n[1] + y) * nx;
      // Background rows are the majority: one vectorisable test of the whole
      // row first, the first/last scan only for rows that hold brain.
      bool any = false;
      if constexpr (kExactInt)
        for (int64_t x = 0; x < nx; ++x) any |= row[x] != 0;
      else
        for (int64_t x = 0; x < nx; ++x) any |= value(row[x]) != 0;
      if (!any) continue;
      int64_t first = 0;
      while (value(row[first]) == 0) ++first;
      int64_t last = nx - 1;
      while (value(row[last]) == 0) --last;
      blo[0] = std::min(blo[0], first);
      bhi[0] = std::max(bhi[0], last);
      blo[1] = std::min(blo[1], y);
      bhi[1] = std::max(bhi[1], y);
      blo[2] = std::min(blo[2], z);
      bhi[2] = std::max(bhi[2], z);
      int64_t x = first;
      if constexpr (kExactInt) {
        // Squares in 32 bits: at most 2^30 (signed) or 65535^2 (unsigned 16-bit).
        using Sq = std::conditional_t<std::is_signed_v<T>, int32_t, uint32_t>;
        int64_t rs = 0, rs2 = 0, rc = 0, rn = 0;
        T rmn = std::numeric_limits<T>::max(), rmx = std::numeric_limits<T>::lowest();
        for (int64_t k = first; k <= last; ++k) {
          const int32_t v = row[k];
          const Sq q = static_cast<Sq>(v);
          rs += v;
          rs2 += static_cast<int64_t>(q * q);
          rc += v != 0;
          rn += v < 0;
          rmn = v != 0 && row[k] < rmn ? row[k] : rmn;
          rmx = v != 0 && row[k] > rmx ? row[k] : rmx;
        }
        s[0] += static_cast<double>(rs);
        s2[0] += static_cast<double>(rs2);
        cnt[0] += static_cast<double>(rc);
        negs[0] += static_cast<double>(rn);
        mnl[0] = std::min(mnl[0], static_cast<float>(rmn));
        mxl[0] = std::max(mxl[0], static_cast<float>(rmx));
        continue;
      }
      for (; x + kLanes <= last + 1; x += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const float v = value(row[x + l]);
          const double dv = v;
          const bool nz = v != 0;
          s[l] += dv;
          s2[l] += dv * dv;
          cnt[l] += nz ? 1.0 : 0.0;
          negs[l] += v < 0 ? 1.0 : 0.0;
          mnl[l] = nz && v < mnl[l] ? v : mnl[l];
          mxl[l] = nz && v > mxl[l] ? v : mxl[l];
        }
      }
      for (; x <= last; ++x) {
        const float v = value(row[x]);
        s[0] += v;
        s2[0] += static_cast<double>(v) * v;
        cnt[0] += v != 0 ? 1.0 : 0.0;
        negs[0] += v < 0 ? 1.0 : 0.0;
        if (v != 0) {
          mnl[0] = std::min(mnl[0], v);
          mxl[0] = std::max(mxl[0], v);
        }
      }
    }
  }
  double sum = 0, sum2 = 0, nd = 0, negd = 0;
  for (int l = 0; l < kLanes; ++l) {
    sum += s[l];
    sum2 += s2[l];
    nd += cnt[l];
    negd += negs[l];
    st.mn = std::min(st.mn, static_cast<double>(mnl[l]));
    st.mx = std::max(st.mx, static_cast<double>(mxl[l]));
  }
  st.n = static_cast<uint64_t>(nd);
  st.neg = static_cast<uint64_t>(negd);
  // NaN or infinity anywhere makes the sums non-finite: count them only then.
  if (!std::isfinite(sum) || !std::isfinite(sum2)) {
    const size_t nv = static_cast<size_t>(g.voxels());
    for (size_t k = 0; k < nv; ++k) st.bad += !std::isfinite(value(p[k]));
  }
  st.sum = sum;
  st.sum2 = sum2;
  st.lo = blo;
  st.hi = bhi;
}

// Gathers src (source voxel order) into the canonical box [lo, hi) in z-major order,
// z-scored (zeros stay 0), as float or as float16 bits.
template <class T, class V, class Out>
FEDSEG_KERNEL void normalise_kernel(const T* src, const Grid& g, const Orientation& o, const std::array<int64_t, 3>& lo,
                                    const std::array<int64_t, 3>& hi, V value, float m, float inv, Out* out) {
  const Walk w = walk_of(g, o, lo);
  auto norm = [m, inv, value](T x) {
    const float v = value(x);
    return v == 0 ? 0.0f : (v - m) * inv;
  };
  constexpr int64_t kBlock = 256;
  float tmp[kBlock];
  const int64_t sx = w.step[0], nx = hi[0] - lo[0];
  size_t k = 0;
  for (int64_t z = lo[2]; z < hi[2]; ++z) {
    for (int64_t y = lo[1]; y < hi[1]; ++y) {
      const T* row = src + w.row(y - lo[1], z - lo[2]);
      for (int64_t x0 = 0; x0 < nx; x0 += kBlock) {
        const int64_t nb = std::min(kBlock, nx - x0);
        float* dst = tmp;
        if constexpr (std::is_same_v<Out, float>) dst = out + k + static_cast<size_t>(x0);
        // Constant strides for the common cases (RAS: +1, LPS/BraTS: -1) so that
        // the compiler can vectorise the row.
        if (sx == 1)
          for (int64_t x = 0; x < nb; ++x) dst[x] = norm(row[x0 + x]);
        else if (sx == -1)
          for (int64_t x = 0; x < nb; ++x) dst[x] = norm(row[-(x0 + x)]);
        else
          for (int64_t x = 0; x < nb; ++x) dst[x] = norm(row[(x0 + x) * sx]);
        if constexpr (!std::is_same_v<Out, float>) floats_to_halves(tmp, out + k + static_cast<size_t>(x0), static_cast<size_t>(nb));
      }
      k += static_cast<size_t>(nx);
    }
  }
}

template <class T, class V>
void stats_base(const T* p, const Grid& g, V value, ChannelStats& st) {
  stats_kernel(p, g, value, st);
}
template <class T, class V, class Out>
void normalise_base(const T* src, const Grid& g, const Orientation& o, const std::array<int64_t, 3>& lo,
                    const std::array<int64_t, 3>& hi, V value, float m, float inv, Out* out) {
  normalise_kernel(src, g, o, lo, hi, value, m, inv, out);
}
#ifdef FEDSEG_PREP_AVX2
template <class T, class V>
__attribute__((target("avx2"))) void stats_avx2(const T* p, const Grid& g, V value, ChannelStats& st) {
  stats_kernel(p, g, value, st);
}
template <class T, class V, class Out>
__attribute__((target("avx2"))) void normalise_avx2(const T* src, const Grid& g, const Orientation& o,
                                                    const std::array<int64_t, 3>& lo, const std::array<int64_t, 3>& hi,
                                                    V value, float m, float inv, Out* out) {
  normalise_kernel(src, g, o, lo, hi, value, m, inv, out);
}
#endif

#ifdef FEDSEG_PREP_AVX2
// int16 voxels without scaling (BraTS and most MRI), written out with intrinsics: the
// compiler vectorises neither the row tests nor the widening sums. The same integer
// row sums, in the same order, as stats_kernel: the same statistics.
__attribute__((target("avx2"))) void stats_i16_avx2(const int16_t* p, const Grid& g, ChannelStats& st) {
  const int64_t nx = g.n[0];
  // 32-bit lane sums hold at most 2 * 32768 per vector: flushed every kFlush vectors.
  constexpr int64_t kFlush = 1 << 14;
  const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
  const __m256i vmax = _mm256_set1_epi16(std::numeric_limits<int16_t>::max());
  const __m256i vmin = _mm256_set1_epi16(std::numeric_limits<int16_t>::lowest());
  __m256i mn = vmax, mx = vmin;
  int16_t smn = std::numeric_limits<int16_t>::max(), smx = std::numeric_limits<int16_t>::lowest();
  double s = 0, s2 = 0, cnt = 0, negs = 0;
  std::array<int64_t, 3> blo{g.n[0], g.n[1], g.n[2]}, bhi{-1, -1, -1};
  for (int64_t z = 0; z < g.n[2]; ++z) {
    for (int64_t y = 0; y < g.n[1]; ++y) {
      const int16_t* row = p + (z * g.n[1] + y) * nx;
      int64_t first = -1, last = -1, rs = 0, rc = 0, rn = 0;
      uint64_t rq = 0;
      int64_t x = 0;
      while (x + 16 <= nx) {
        __m256i vs = zero, vq = zero;
        const int64_t stop = std::min(nx, x + 16 * kFlush);
        for (; x + 16 <= stop; x += 16) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x));
          const __m256i isz = _mm256_cmpeq_epi16(v, zero);
          const unsigned zm = static_cast<unsigned>(_mm256_movemask_epi8(isz));
          if (zm == 0xffffffffu) continue;  // background: adds nothing
          const unsigned nz = ~zm;           // two bits per non-zero voxel
          if (first < 0) first = x + (__builtin_ctz(nz) >> 1);
          last = x + ((31 - __builtin_clz(nz)) >> 1);
          rc += __builtin_popcount(nz) >> 1;
          rn += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_epi8(_mm256_cmpgt_epi16(zero, v)))) >> 1;
          vs = _mm256_add_epi32(vs, _mm256_madd_epi16(v, ones));
          const __m256i q = _mm256_madd_epi16(v, v);  // pairs of squares, up to 2^31: unsigned
          vq = _mm256_add_epi64(vq, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(q)));
          vq = _mm256_add_epi64(vq, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(q, 1)));
          mn = _mm256_min_epi16(mn, _mm256_blendv_epi8(v, vmax, isz));
          mx = _mm256_max_epi16(mx, _mm256_blendv_epi8(v, vmin, isz));
        }
        alignas(32) int32_t ls[8];
        alignas(32) uint64_t lq[4];
        _mm256_store_si256(reinterpret_cast<__m256i*>(ls), vs);
        _mm256_store_si256(reinterpret_cast<__m256i*>(lq), vq);
        for (int l = 0; l < 8; ++l) rs += ls[l];
        for (int l = 0; l < 4; ++l) rq += lq[l];
      }
      for (; x < nx; ++x) {
        const int32_t v = row[x];
        if (v == 0) continue;
        if (first < 0) first = x;
        last = x;
        rs += v;
        rq += static_cast<uint64_t>(static_cast<int64_t>(v) * v);
        ++rc;
        rn += v < 0;
        smn = std::min(smn, row[x]);
        smx = std::max(smx, row[x]);
      }
      if (first < 0) continue;
      blo[0] = std::min(blo[0], first);
      bhi[0] = std::max(bhi[0], last);
      blo[1] = std::min(blo[1], y);
      bhi[1] = std::max(bhi[1], y);
      blo[2] = std::min(blo[2], z);
      bhi[2] = std::max(bhi[2], z);
      s += static_cast<double>(rs);
      s2 += static_cast<double>(static_cast<int64_t>(rq));
      cnt += static_cast<double>(rc);
      negs += static_cast<double>(rn);
    }
  }
  alignas(32) int16_t lmn[16], lmx[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lmn), mn);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lmx), mx);
  for (int l = 0; l < 16; ++l) {
    smn = std::min(smn, lmn[l]);
    smx = std::max(smx, lmx[l]);
  }
  st.n = static_cast<uint64_t>(cnt);
  st.neg = static_cast<uint64_t>(negs);
  if (st.n) {
    st.mn = static_cast<double>(static_cast<float>(smn));
    st.mx = static_cast<double>(static_cast<float>(smx));
  }
  st.sum = s;
  st.sum2 = s2;
  st.lo = blo;
  st.hi = bhi;
}

// Reorient, crop and z-score int16 rows that run along +x or -x (RAS, LPS), 16
// voxels at a time, straight to float16 (F16C, round to nearest even) or float.
template <class Out>
__attribute__((target("avx2,f16c"))) void normalise_i16_avx2(const int16_t* src, const Grid& g, const Orientation& o,
                                                             const std::array<int64_t, 3>& lo,
                                                             const std::array<int64_t, 3>& hi, float m, float inv,
                                                             Out* out) {
  const Walk w = walk_of(g, o, lo);
  const bool backwards = w.step[0] == -1;
  const int64_t nx = hi[0] - lo[0];
  const __m256 vm = _mm256_set1_ps(m), vinv = _mm256_set1_ps(inv), fzero = _mm256_setzero_ps();
  // Reverses the 16 int16 of a vector: the 8 in each 128-bit lane, then the lanes.
  const __m256i rev = _mm256_setr_epi8(14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1, 14, 15, 12, 13, 10, 11, 8,
                                       9, 6, 7, 4, 5, 2, 3, 0, 1);
  size_t k = 0;
  for (int64_t z = lo[2]; z < hi[2]; ++z) {
    for (int64_t y = lo[1]; y < hi[1]; ++y) {
      const int16_t* row = src + w.row(y - lo[1], z - lo[2]);
      Out* dst = out + k;
      int64_t x = 0;
      for (; x + 16 <= nx; x += 16) {
        __m256i v;
        if (backwards) {
          v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row - x - 15));
          v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, rev), 0x4e);
        } else {
          v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x));
        }
        const __m128i half8[2] = {_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)};
        for (int h = 0; h < 2; ++h) {
          const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(half8[h]));
          const __m256 r = _mm256_andnot_ps(_mm256_cmp_ps(f, fzero, _CMP_EQ_OQ),  // zeros stay 0
                                            _mm256_mul_ps(_mm256_sub_ps(f, vm), vinv));
          if constexpr (std::is_same_v<Out, float>)
            _mm256_storeu_ps(dst + x + 8 * h, r);
          else
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + x + 8 * h),
                             _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
      }
      for (; x < nx; ++x) {
        const float v = static_cast<float>(backwards ? row[-x] : row[x]);
        const float r = v == 0 ? 0.0f : (v - m) * inv;
        if constexpr (std::is_same_v<Out, float>)
          dst[x] = r;
        else
          dst[x] = float_to_half(r);
      }
      k += static_cast<size_t>(nx);
    }
  }
}

// Region-codes label rows that run along +x or -x, 32 voxels at a time: the codes of
// values 0..15 by byte shuffle (labels are checked to be below 16 first).
__attribute__((target("avx2"))) void code_labels_avx2(const uint8_t* src, const Grid& g, const Orientation& o,
                                                     const std::array<int64_t, 3>& lo, const std::array<int64_t, 3>& hi,
                                                     const std::array<uint8_t, 256>& code, uint8_t* out) {
  const Walk w = walk_of(g, o, lo);
  const bool backwards = w.step[0] == -1;
  const int64_t nx = hi[0] - lo[0];
  alignas(32) uint8_t table[32];
  for (int i = 0; i < 16; ++i) table[i] = table[i + 16] = code[static_cast<size_t>(i)];
  const __m256i lut = _mm256_load_si256(reinterpret_cast<const __m256i*>(table));
  const __m256i rev = _mm256_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8,
                                       7, 6, 5, 4, 3, 2, 1, 0);
  size_t k = 0;
  for (int64_t z = lo[2]; z < hi[2]; ++z) {
    for (int64_t y = lo[1]; y < hi[1]; ++y) {
      const uint8_t* row = src + w.row(y - lo[1], z - lo[2]);
      uint8_t* dst = out + k;
      int64_t x = 0;
      for (; x + 32 <= nx; x += 32) {
        __m256i v;
        if (backwards) {
          v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row - x - 31));
          v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, rev), 0x4e);
        } else {
          v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + x), _mm256_shuffle_epi8(lut, v));
      }
      for (; x < nx; ++x) dst[x] = code[backwards ? row[-x] : row[x]];
      k += static_cast<size_t>(nx);
    }
  }
}
#endif

// Region codes of the labels in the box [lo, hi), reoriented. Every value present must
// have a code (checked before).
void code_labels(const uint8_t* src, const Grid& g, const Orientation& o, const std::array<int64_t, 3>& lo,
                 const std::array<int64_t, 3>& hi, const std::array<uint8_t, 256>& code, bool below16, uint8_t* out) {
#ifdef FEDSEG_PREP_AVX2
  if (below16 && have_avx2() && o.ax[0] == 0) return code_labels_avx2(src, g, o, lo, hi, code, out);
#endif
  gather(src, g, o, lo, hi, out, [&code](uint8_t v) { return code[v]; });
}

template <class T, class V>
void channel_stats(const T* p, const Grid& g, V value, ChannelStats& st) {
#ifdef FEDSEG_PREP_AVX2
  if constexpr (std::is_same_v<T, int16_t> && V::kPlain) {
    if (have_avx2()) return stats_i16_avx2(p, g, st);
  }
  if (have_avx2()) return stats_avx2(p, g, value, st);
#endif
  stats_base(p, g, value, st);
}
template <class T, class V, class Out>
void normalise(const T* src, const Grid& g, const Orientation& o, const std::array<int64_t, 3>& lo,
               const std::array<int64_t, 3>& hi, V value, float m, float inv, Out* out) {
#ifdef FEDSEG_PREP_AVX2
  if constexpr (std::is_same_v<T, int16_t> && V::kPlain) {
    const int64_t sx = o.flip[0] ? -1 : 1;
    if (have_avx2() && (o.ax[0] == 0) && (sx == 1 || sx == -1)) return normalise_i16_avx2(src, g, o, lo, hi, m, inv, out);
  }
  if (have_avx2()) return normalise_avx2(src, g, o, lo, hi, value, m, inv, out);
#endif
  normalise_base(src, g, o, lo, hi, value, m, inv, out);
}

// Counts label values. Most of a label map is background: 64-byte blocks of zeros
// are counted at once.
void count_labels(const uint8_t* p, size_t n, std::array<uint64_t, 256>& counts) {
  size_t i = 0;
  uint64_t zeros = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) == 0) {
      zeros += 64;
      continue;
    }
    for (size_t k = i; k < i + 64; ++k) ++counts[p[k]];
  }
  for (; i < n; ++i) ++counts[p[i]];
  counts[0] += zeros;
}

// Copies the n[0] x n[1] x n[2] voxels (x fastest) from (x0, y0, z0) on of a channel
// stored as box b of `data` into out: zeros outside the box.
template <class E>
void copy_box(const ChannelBox& b, const E* data, int64_t x0, int64_t y0, int64_t z0, const std::array<int64_t, 3>& n,
              E* out) {
  const int64_t bx = b.hi[0] - b.lo[0], by = b.hi[1] - b.lo[1];
  const int64_t xa = std::max(x0, b.lo[0]), xb = std::min(x0 + n[0], b.hi[0]);  // the row's part in the box
  for (int64_t z = z0; z < z0 + n[2]; ++z)
    for (int64_t y = y0; y < y0 + n[1]; ++y, out += n[0]) {
      if (z < b.lo[2] || z >= b.hi[2] || y < b.lo[1] || y >= b.hi[1] || xa >= xb) {
        std::fill(out, out + n[0], E(0));
        continue;
      }
      const E* row = data + b.offset + static_cast<size_t>(((z - b.lo[2]) * by + (y - b.lo[1])) * bx + (xa - b.lo[0]));
      std::fill(out, out + (xa - x0), E(0));
      std::memcpy(out + (xa - x0), row, static_cast<size_t>(xb - xa) * sizeof(E));
      std::fill(out + (xb - x0), out + n[0], E(0));
    }
}

// Calls fn(typed pointer, value functor) for voxels of type t at raw.
template <class Fn>
void visit_voxels(const unsigned char* raw, nifti::DataType t, double slope, double inter, Fn&& fn) {
  const bool scaled = slope != 0 && std::isfinite(slope) && std::isfinite(inter) && !(slope == 1 && inter == 0);
  auto dispatch = [&](const auto* p) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
    if (scaled)
      fn(p, Scaled<T>{slope, inter});
    else
      fn(p, Plain<T>{});
  };
  switch (t) {
    case nifti::DataType::u8: dispatch(reinterpret_cast<const uint8_t*>(raw)); break;
    case nifti::DataType::i8: dispatch(reinterpret_cast<const int8_t*>(raw)); break;
    case nifti::DataType::i16: dispatch(reinterpret_cast<const int16_t*>(raw)); break;
    case nifti::DataType::u16: dispatch(reinterpret_cast<const uint16_t*>(raw)); break;
    case nifti::DataType::i32: dispatch(reinterpret_cast<const int32_t*>(raw)); break;
    case nifti::DataType::u32: dispatch(reinterpret_cast<const uint32_t*>(raw)); break;
    case nifti::DataType::i64: dispatch(reinterpret_cast<const int64_t*>(raw)); break;
    case nifti::DataType::u64: dispatch(reinterpret_cast<const uint64_t*>(raw)); break;
    case nifti::DataType::f32: dispatch(reinterpret_cast<const float*>(raw)); break;
    case nifti::DataType::f64: dispatch(reinterpret_cast<const double*>(raw)); break;
  }
}

}  // namespace

Scheme scheme_from_name(const std::string& name) {
  if (name == "brats2021") return Scheme::brats2021;
  if (name == "brats2023") return Scheme::brats2023;
  throw Error(kExitUsage, "unknown label scheme", name, "use brats2021 or brats2023");
}

const char* scheme_name(Scheme s) { return s == Scheme::brats2021 ? "brats2021" : "brats2023"; }

std::string split_for(const std::string& id, double val_fraction) {
  return split_fraction(id) < val_fraction ? "val" : "train";
}

double split_fraction(const std::string& id) {
  Sha256 h;
  h.update(id.data(), id.size());
  const std::string d = h.digest();
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(d[static_cast<size_t>(i)]);
  return static_cast<double>(v) / 18446744073709551616.0;
}

Case process_case(const CaseFiles& files, const std::vector<std::string>& sha256, const Options& opts) {
  Case out;
  process_case(files, sha256, opts, out);
  return out;
}

void process_case(const CaseFiles& files, const std::vector<std::string>& sha256, const Options& opts, Case& out) {
  // Keep the big buffers' capacity; reset everything else.
  out.image.clear();
  out.image16.clear();
  out.label.clear();
  out.attrs = nlohmann::json();
  out.sanity = nlohmann::json();
  out.warnings.clear();
  out.id = files.id;
  out.packed = opts.packed;
  out.boxes = {};
  if (!files.problem.empty()) throw Error(kExitDataErr, files.problem);
  if (opts.require_label && files.label.empty())
    throw Error(kExitDataErr, "no label file (seg)");

  // The big buffers are kept per thread and reused from case to case: allocating
  // them afresh cost more page faults than the work. The modalities are read one
  // after the other into the same buffer, each reduced to its normalised bounding
  // box before the next is read (while its voxels are still in cache), so a case
  // holds one decoded volume at a time, not four.
  thread_local nifti::Image img, limg;
  thread_local RawVector<unsigned char> decoded;  // one volume as decoded: each modality, then the label
  thread_local std::array<RawVector<float>, 4> ch;  // float copies: resampling or clipping only
  thread_local RawVector<uint8_t> labels;           // label maps that are not uint8 voxels, or resampled
  thread_local RawVector<uint16_t> boxes16;         // unpacked cases: the channels' boxes before assembly
  thread_local RawVector<float> boxes32;
  RawVector<uint16_t>& packed16 = opts.packed ? out.image16 : boxes16;
  RawVector<float>& packed32 = opts.packed ? out.image : boxes32;
  packed16.clear();
  packed32.clear();

  // Hashes given by the caller, or those of the bytes read here.
  auto read_input = [&](const std::string& path, size_t i, nifti::Image& im, RawVector<unsigned char>& buf,
                        std::string& hash) {
    if (i < sha256.size()) {
      hash = sha256[i];
      return nifti::read_voxels(path, im, buf);
    }
    return nifti::read_voxels(path, im, buf, &hash);
  };

  Grid g;
  nifti::Affine A{};
  Orientation o;
  Grid cg;  // canonical grid
  std::array<double, 3> sp{};
  Mat4 T{};
  bool need_resample = false;
  const bool clipping = opts.clip_low >= 0 && opts.clip_high > opts.clip_low;
  bool as_float = clipping;
  nlohmann::json sources = nlohmann::json::array();
  nlohmann::json sanity = nlohmann::json::object();
  nlohmann::json ranges = nlohmann::json::array();
  std::array<double, 4> mean{}, sd{};
  std::array<std::array<int64_t, 3>, 4> clo{}, chi{};  // each channel's canonical box
  uint64_t negatives_total = 0, nonfinite_total = 0;

  // Statistics over the channel's non-zero voxels, then its own bounding box,
  // reoriented and z-scored: the other channels' boxes are not known yet, and
  // outside its own box the channel is 0.
  auto finish_channel = [&](size_t c, const unsigned char* raw, nifti::DataType t, double slope, double inter) {
    visit_voxels(raw, t, slope, inter, [&](const auto* p, auto value) {
      ChannelStats st;
      channel_stats(p, g, value, st);
      if (st.bad)
        throw Error(kExitDataErr, "non-finite values", files.images[c], std::to_string(st.bad) + " voxels are NaN or infinite");
      if (st.n == 0) throw Error(kExitDataErr, "empty image", files.images[c], "every voxel is zero");
      mean[c] = st.sum / static_cast<double>(st.n);
      double var = std::max(0.0, st.sum2 / static_cast<double>(st.n) - mean[c] * mean[c]);
      sd[c] = std::max(std::sqrt(var), 1e-8);
      negatives_total += st.neg;
      ranges.push_back({{"channel", kChannels[c]}, {"min", st.mn}, {"max", st.mx}, {"nonzero", st.n}, {"negative", st.neg}});
      if (st.neg) out.warnings.push_back(std::to_string(st.neg) + " negative values in " + kChannels[c] + " inside the brain");
      for (int a = 0; a < 3; ++a) {
        int v = o.ax[a];
        int64_t l = st.lo[v], h = st.hi[v];
        if (o.flip[a]) {
          int64_t nl = g.n[v] - 1 - h, nh = g.n[v] - 1 - l;
          l = nl;
          h = nh;
        }
        clo[c][a] = l;
        chi[c][a] = h + 1;
      }
      const size_t nbox = static_cast<size_t>((chi[c][0] - clo[c][0]) * (chi[c][1] - clo[c][1]) * (chi[c][2] - clo[c][2]));
      const float m = static_cast<float>(mean[c]);
      const float inv = static_cast<float>(1.0 / sd[c]);
      if (opts.float16) {
        out.boxes[c].offset = packed16.size();
        packed16.resize(packed16.size() + nbox);
        normalise(p, g, o, clo[c], chi[c], value, m, inv, packed16.data() + out.boxes[c].offset);
      } else {
        out.boxes[c].offset = packed32.size();
        packed32.resize(packed32.size() + nbox);
        normalise(p, g, o, clo[c], chi[c], value, m, inv, packed32.data() + out.boxes[c].offset);
      }
    });
  };

  // Read and validate the grid.
  std::array<std::string, 5> hashes;
  for (size_t c = 0; c < 4; ++c) {
    const std::string& path = files.images[c];
    const unsigned char* raw = read_input(path, c, img, decoded, hashes[c]);
    int64_t extra = 1;
    for (size_t d = 3; d < img.shape.size(); ++d) extra *= img.shape[d];
    if (img.shape.size() < 3 || extra != 1)
      throw Error(kExitDataErr, "not a 3-D volume", path, "shape has " + std::to_string(img.shape.size()) + " dimensions");
    std::array<int64_t, 3> n{img.shape[0], img.shape[1], img.shape[2]};
    if (c == 0) {
      g.n = n;
      A = img.affine;
      o = orientation_of(A, files.images[0]);
      // to_canonical: canonical voxel index -> source voxel index.
      T[3][3] = 1;
      for (int a = 0; a < 3; ++a) {
        int v = o.ax[a];
        T[v][a] = o.flip[a] ? -1 : 1;
        T[v][3] = o.flip[a] ? static_cast<double>(g.n[v] - 1) : 0;
        cg.n[a] = g.n[v];
        sp[a] = std::sqrt(A[0][v] * A[0][v] + A[1][v] * A[1][v] + A[2][v] * A[2][v]);
      }
      // Resampling and clipping work on float copies; otherwise the statistics and
      // the output pass read the stored voxels directly (no float copy of the volumes).
      for (int a = 0; a < 3 && opts.resample; ++a) need_resample |= std::fabs(sp[a] - opts.spacing[a]) > 1e-3;
      as_float |= need_resample;
      // Room for the largest crop, reserved (not touched) once: a later, larger case
      // then needs no new allocation and copy.
      const size_t most = 4 * static_cast<size_t>(g.voxels());
      if (!as_float && opts.float16 && packed16.capacity() < most) packed16.reserve(most);
      if (!as_float && !opts.float16 && packed32.capacity() < most) packed32.reserve(most);
    } else {
      if (n != g.n)
        throw Error(kExitDataErr, "grid differs from t1's", path,
                    "shape " + std::to_string(n[0]) + "x" + std::to_string(n[1]) + "x" + std::to_string(n[2]) + " vs " +
                        std::to_string(g.n[0]) + "x" + std::to_string(g.n[1]) + "x" + std::to_string(g.n[2]));
      double d = affine_distance(img.affine, A);
      if (d > opts.affine_tolerance)
        throw Error(kExitDataErr, "grid differs from t1's", path, "affines differ by " + std::to_string(d) + " mm");
    }
    if (as_float) {
      ch[c].resize(static_cast<size_t>(img.voxels()));
      visit_voxels(raw, img.datatype, img.header.scl_slope, img.header.scl_inter, [&](const auto* p, auto value) {
        for (size_t k = 0; k < ch[c].size(); ++k) ch[c][k] = value(p[k]);
      });
    } else {
      finish_channel(c, raw, img.datatype, img.header.scl_slope, img.header.scl_inter);
    }
  }
  const size_t nvox = static_cast<size_t>(g.voxels());

  const uint8_t* lab = nullptr;  // label values in source order (on grid g)
  bool labels_below16 = true;
  if (!files.label.empty()) {
    // The modalities are done with `decoded`: the label map takes it over.
    const unsigned char* raw = read_input(files.label, 4, limg, decoded, hashes[4]);
    if (limg.shape.size() < 3 || limg.shape[0] != g.n[0] || limg.shape[1] != g.n[1] || limg.shape[2] != g.n[2])
      throw Error(kExitDataErr, "grid differs from t1's", files.label, "label shape differs");
    double d = affine_distance(limg.affine, A);
    if (d > opts.affine_tolerance)
      throw Error(kExitDataErr, "grid differs from t1's", files.label, "affines differ by " + std::to_string(d) + " mm");
    const size_t nl = static_cast<size_t>(limg.voxels());
    const double slope = limg.header.scl_slope, inter = limg.header.scl_inter;
    const bool unscaled = slope == 0 || !std::isfinite(slope) || !std::isfinite(inter) || (slope == 1 && inter == 0);
    if (limg.datatype == nifti::DataType::u8 && unscaled && !as_float) {
      lab = raw;  // as stored: no copy
    } else {
      // Other types are checked and converted by nifti (integers 0..255, no scaling).
      limg.raw.assign(raw, raw + nl * nifti::datatype_size(limg.datatype));
      labels.resize(nl);
      limg.to_labels(files.label, labels.data());
      lab = labels.data();
    }
    std::array<uint64_t, 256> counts{};
    count_labels(lab, nl, counts);
    for (size_t v = 16; v < 256; ++v) labels_below16 &= counts[v] == 0;
    for (int v = 0; v < 256; ++v)
      if (counts[static_cast<size_t>(v)] && region_code(static_cast<uint8_t>(v), opts.scheme) == 0xff)
        throw Error(kExitDataErr, "bad label", files.label,
                    "value " + std::to_string(v) + " is not in the " + scheme_name(opts.scheme) + " scheme (" +
                        (opts.scheme == Scheme::brats2021 ? "0,1,2,4" : "0,1,2,3") + ")");
    double vox_ml = 1e-3;
    for (int i = 0; i < 3; ++i) vox_ml *= std::sqrt(A[0][i] * A[0][i] + A[1][i] * A[1][i] + A[2][i] * A[2][i]);
    nlohmann::json vol = nlohmann::json::object();
    for (int v = 1; v < 256; ++v)
      if (counts[static_cast<size_t>(v)]) vol[std::to_string(v)] = static_cast<double>(counts[static_cast<size_t>(v)]) * vox_ml;
    sanity["label_volume_ml"] = vol;
  }
  for (size_t c = 0; c < 4; ++c)
    sources.push_back({{"role", kChannels[c]}, {"path", files.images[c]}, {"sha256", hashes[c]}});
  if (!files.label.empty()) sources.push_back({{"role", "seg"}, {"path", files.label}, {"sha256", hashes[4]}});

  const std::string original_codes = o.codes;
  const std::vector<int64_t> original_shape(g.n.begin(), g.n.end());
  Mat4 to_source = T;  // stored-grid index -> source index (crop added below)

  // Resampling: reorient in full first, then interpolate on the canonical grid.
  bool resampled = false;
  if (need_resample) {
    std::array<double, 3> f{};
    Grid rg;
    for (int a = 0; a < 3; ++a) {
      f[a] = opts.spacing[a] / sp[a];
      rg.n[a] = std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(cg.n[a]) * sp[a] / opts.spacing[a])));
    }
    std::array<int64_t, 3> zero{0, 0, 0};
    for (auto& c : ch) {
      RawVector<float> can(nvox);
      gather(c.data(), g, o, zero, cg.n, can.data(), [](float v) { return v; });
      c = resample(can, cg, rg, f, false);
    }
    if (lab) {
      RawVector<uint8_t> can(nvox);
      gather(lab, g, o, zero, cg.n, can.data(), [](uint8_t v) { return v; });
      labels = resample(can, cg, rg, f, true);
      lab = labels.data();
    }
    Mat4 S = identity();
    for (int a = 0; a < 3; ++a) {
      S[a][a] = f[a];
      S[a][3] = 0.5 * f[a] - 0.5;
    }
    to_source = mul(T, S);
    g = rg;
    cg = rg;
    o = Orientation{};  // data is canonical now
    sp = opts.spacing;
    resampled = true;
  }

  nlohmann::json clip = nullptr;
  if (as_float) {
    // Optional percentile clipping of the non-zero voxels.
    if (clipping) {
      clip = nlohmann::json::array();
      for (auto& c : ch) {
        std::vector<float> nz;
        nz.reserve(c.size() / 4);
        for (float v : c)
          if (v != 0) nz.push_back(v);
        double lo = percentile(nz, opts.clip_low), hi = percentile(nz, opts.clip_high);
        nz.clear();
        nz.shrink_to_fit();
        for (float& v : c)
          if (v != 0) v = static_cast<float>(std::min(std::max(static_cast<double>(v), lo), hi));
        clip.push_back({lo, hi});
      }
    }
    for (size_t c = 0; c < 4; ++c)
      finish_channel(c, reinterpret_cast<const unsigned char*>(ch[c].data()), nifti::DataType::f32, 0, 0);
  }

  // The crop box: the union of the channels' boxes with the margin.
  std::array<int64_t, 3> lo{}, hi{};
  for (int a = 0; a < 3; ++a) {
    int64_t l = clo[0][a], h = chi[0][a];
    for (size_t c = 1; c < 4; ++c) {
      l = std::min(l, clo[c][a]);
      h = std::max(h, chi[c][a]);
    }
    lo[a] = std::max<int64_t>(0, l - opts.margin);
    hi[a] = std::min<int64_t>(cg.n[a], h + opts.margin);
    out.shape[static_cast<size_t>(a)] = hi[a] - lo[a];
  }
  for (size_t c = 0; c < 4; ++c)
    for (int a = 0; a < 3; ++a) {
      out.boxes[c].lo[static_cast<size_t>(a)] = clo[c][a] - lo[a];
      out.boxes[c].hi[static_cast<size_t>(a)] = chi[c][a] - lo[a];
    }
  const size_t ncrop = static_cast<size_t>(out.shape[0] * out.shape[1] * out.shape[2]);
  if (!opts.packed) {
    // The full (4, Z, Y, X) crop: each channel's box, zeros around it.
    auto assemble = [&](const auto& packed, auto& full) {
      full.resize(4 * ncrop);
      for (size_t c = 0; c < 4; ++c) {
        const ChannelBox b = out.boxes[c];
        out.boxes[c] = {{0, 0, 0}, out.shape, c * ncrop};
        copy_box(b, packed.data(), 0, 0, 0, out.shape, full.data() + c * ncrop);
      }
    };
    if (opts.float16)
      assemble(packed16, out.image16);
    else
      assemble(packed32, out.image);
  }
  if (lab) {
    out.label.resize(ncrop);
    std::array<uint8_t, 256> code{};
    for (int v = 0; v < 256; ++v) code[static_cast<size_t>(v)] = region_code(static_cast<uint8_t>(v), opts.scheme);
    code_labels(lab, g, o, lo, hi, code, labels_below16, out.label.data());
  }

  Mat4 crop = identity();
  for (int a = 0; a < 3; ++a) crop[a][3] = static_cast<double>(lo[a]);
  Mat4 stored_to_source = mul(to_source, crop);
  Mat4 Aorig{};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) Aorig[i][j] = A[i][j];
  Mat4 stored_affine = mul(Aorig, stored_to_source);
  sanity["intensity"] = ranges;
  sanity["negative_in_brain"] = negatives_total;
  sanity["nonfinite"] = nonfinite_total;
  out.sanity = sanity;
  out.attrs = {
      {"source", sources.dump()},
      {"original_orientation", original_codes},
      {"original_shape", original_shape},
      {"original_affine", flat(Aorig)},
      {"to_original", flat(stored_to_source)},
      {"affine", flat(stored_affine)},
      {"spacing", std::vector<double>(sp.begin(), sp.end())},
      {"resampled", resampled ? 1 : 0},
      {"canonical_shape", std::vector<int64_t>(cg.n.begin(), cg.n.end())},
      {"crop_box", std::vector<int64_t>{lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]}},
      {"norm_mean", std::vector<double>(mean.begin(), mean.end())},
      {"norm_std", std::vector<double>(sd.begin(), sd.end())},
      {"has_label", lab ? 1 : 0},
  };
  if (!clip.is_null()) out.attrs["clip_values"] = clip.dump();
}

void copy_image_box(const Case& c, const std::array<uint64_t, 4>& start, const std::array<uint64_t, 4>& dims, void* out) {
  const size_t per = static_cast<size_t>(dims[1] * dims[2] * dims[3]);
  for (uint64_t k = 0; k < dims[0]; ++k) {
    const uint64_t ci = start[0] + k;
    const std::array<int64_t, 3> at{static_cast<int64_t>(start[3]), static_cast<int64_t>(start[2]), static_cast<int64_t>(start[1])};
    const std::array<int64_t, 3> n{static_cast<int64_t>(dims[3]), static_cast<int64_t>(dims[2]), static_cast<int64_t>(dims[1])};
    if (!c.image16.empty()) {
      auto* o = static_cast<uint16_t*>(out) + k * per;
      if (ci < 4)
        copy_box(c.boxes[ci], c.image16.data(), at[0], at[1], at[2], n, o);
      else
        std::fill(o, o + per, uint16_t(0));
    } else {
      auto* o = static_cast<float*>(out) + k * per;
      if (ci < 4)
        copy_box(c.boxes[ci], c.image.data(), at[0], at[1], at[2], n, o);
      else
        std::fill(o, o + per, 0.0f);
    }
  }
}

}  // namespace fedseg::prep
