// Phantom generation: brain model (phantom or resampled anatomy), tumour, contrasts,
// bias field, acquisition blur and Rician noise. Pure arrays; file I/O is in synth_io.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "synth/synth.h"

namespace fedseg::synth {
namespace {

// ---------------------------------------------------------------------------
// Random numbers. Everything is drawn from xoshiro256** streams derived from
// (seed, case index, stream id) with splitmix64, and normals come from our own
// Box-Muller or an inverse-CDF table: std::*_distribution differ between standard
// libraries and would break "same seed, same bytes".

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  Rng(uint64_t seed, uint64_t index, uint64_t stream) {
    uint64_t s = seed;
    uint64_t a = splitmix64(s);
    s = a ^ (index * 0xd1b54a32d192ed03ULL);
    uint64_t b = splitmix64(s);
    s = b ^ (stream * 0x8cb92ba72f3d8dd7ULL);
    for (auto& w : s_) w = splitmix64(s);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  // Box-Muller (polar form would need rejection; the trigonometric form draws a fixed
  // number of values, which keeps the streams easy to reason about).
  double normal() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    double u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2 * M_PI * u2);
    have_spare_ = true;
    return r * std::cos(2 * M_PI * u2);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  bool have_spare_ = false;
  double spare_ = 0;
};

enum Stream : uint64_t {
  kStreamBrain = 1,
  kStreamShape = 2,
  kStreamGyri = 3,
  kStreamTexture = 4,
  kStreamTumour = 5,
  kStreamTumourShape = 6,
  kStreamContrast = 7,
  kStreamBias = 10,   // + modality
  kStreamNoise = 20,  // + modality
};

// Inverse standard normal CDF (P. J. Acklam's rational approximation, rel. error 1e-9).
double inverse_normal_cdf(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01,  -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double plow = 0.02425;
  if (p < plow) {
    double q = std::sqrt(-2 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - plow) return -inverse_normal_cdf(1 - p);
  double q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

// 65536 stratified standard normal values, indexed by 16 random bits: noise for a
// 240x240x155 case costs one table lookup per value instead of a log and a sin.
const std::vector<float>& normal_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    double ss = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      double v = inverse_normal_cdf((static_cast<double>(i) + 0.5) / 65536.0);
      t[i] = static_cast<float>(v);
      ss += v * v;
    }
    const float k = static_cast<float>(1.0 / std::sqrt(ss / 65536.0));  // unit variance exactly
    for (auto& v : t) v *= k;
    return t;
  }();
  return table;
}

// ---------------------------------------------------------------------------
// Smooth random fields: unit-variance Gaussian values on a coarse lattice,
// interpolated with cubic B-splines. Whole slices are evaluated from x-y planes
// precomputed per lattice layer (4 multiply-adds per voxel).

class Field {
 public:
  Field(const std::array<int64_t, 3>& shape, double step, Rng& rng) : shape_(shape), step_(std::max(step, 1.5)) {
    for (int a = 0; a < 3; ++a) n_[a] = static_cast<int>(std::floor(static_cast<double>(shape[a] - 1) / step_)) + 4;
    lattice_.resize(static_cast<size_t>(n_[0]) * n_[1] * n_[2]);
    // Var of a cubic B-spline sum of iid unit values is (151/315)^3 on average: rescale to 1.
    const double k = 1.0 / std::pow(151.0 / 315.0, 1.5);
    for (auto& v : lattice_) v = static_cast<float>(rng.normal() * k);
    for (int a = 0; a < 3; ++a) {
      idx_[a].resize(static_cast<size_t>(shape[a]));
      w_[a].resize(static_cast<size_t>(shape[a]));
      for (int64_t i = 0; i < shape[a]; ++i) weights(static_cast<double>(i), idx_[a][i], w_[a][i]);
    }
    // Planes: for each lattice layer kz, the x-y interpolation on the full x-y grid.
    const int64_t X = shape[0], Y = shape[1];
    std::vector<float> tmp(static_cast<size_t>(n_[1]) * X);
    planes_.assign(static_cast<size_t>(n_[2]) * X * Y, 0.f);
    for (int kz = 0; kz < n_[2]; ++kz) {
      for (int ky = 0; ky < n_[1]; ++ky) {
        const float* row = &lattice_[(static_cast<size_t>(kz) * n_[1] + ky) * n_[0]];
        for (int64_t x = 0; x < X; ++x) {
          const auto& w = w_[0][x];
          const float* r = row + idx_[0][x];
          tmp[static_cast<size_t>(ky) * X + x] = w[0] * r[0] + w[1] * r[1] + w[2] * r[2] + w[3] * r[3];
        }
      }
      float* plane = &planes_[static_cast<size_t>(kz) * X * Y];
      for (int64_t y = 0; y < Y; ++y) {
        const auto& w = w_[1][y];
        const float* t0 = &tmp[static_cast<size_t>(idx_[1][y]) * X];
        float* out = plane + y * X;
        for (int64_t x = 0; x < X; ++x)
          out[x] = w[0] * t0[x] + w[1] * t0[x + X] + w[2] * t0[x + 2 * X] + w[3] * t0[x + 3 * X];
      }
    }
  }

  // Values of slice z (X*Y, x fastest).
  void slice(int64_t z, float* out) const {
    const int64_t XY = shape_[0] * shape_[1];
    const auto& w = w_[2][z];
    const float* p = &planes_[static_cast<size_t>(idx_[2][z]) * XY];
    for (int64_t i = 0; i < XY; ++i) out[i] = w[0] * p[i] + w[1] * p[i + XY] + w[2] * p[i + 2 * XY] + w[3] * p[i + 3 * XY];
  }

  // Value at a (fractional, possibly outside) voxel position.
  double at(double x, double y, double z) const {
    const double pos[3] = {std::clamp(x, 0.0, static_cast<double>(shape_[0] - 1)),
                           std::clamp(y, 0.0, static_cast<double>(shape_[1] - 1)),
                           std::clamp(z, 0.0, static_cast<double>(shape_[2] - 1))};
    int i0[3];
    std::array<float, 4> w[3];
    for (int a = 0; a < 3; ++a) weights(pos[a], i0[a], w[a]);
    double v = 0;
    for (int c = 0; c < 4; ++c)
      for (int b = 0; b < 4; ++b)
        for (int a = 0; a < 4; ++a)
          v += static_cast<double>(w[0][a]) * w[1][b] * w[2][c] *
               lattice_[(static_cast<size_t>(i0[2] + c) * n_[1] + (i0[1] + b)) * n_[0] + (i0[0] + a)];
    return v;
  }

 private:
  void weights(double i, int& idx, std::array<float, 4>& w) const {
    double u = i / step_ + 1.0;
    double f = std::floor(u);
    double t = u - f;
    idx = static_cast<int>(f) - 1;
    double t2 = t * t, t3 = t2 * t;
    w[0] = static_cast<float>((1 - t) * (1 - t) * (1 - t) / 6);
    w[1] = static_cast<float>((3 * t3 - 6 * t2 + 4) / 6);
    w[2] = static_cast<float>((-3 * t3 + 3 * t2 + 3 * t + 1) / 6);
    w[3] = static_cast<float>(t3 / 6);
  }

  std::array<int64_t, 3> shape_;
  double step_;
  int n_[3];
  std::vector<float> lattice_;
  std::vector<int> idx_[3];
  std::vector<std::array<float, 4>> w_[3];
  std::vector<float> planes_;
};

// ---------------------------------------------------------------------------
// Tissue contrasts.

enum Class { kCsf = 0, kGm, kWm, kOedema, kNecrosis, kEnhancing, kClasses };

// Relative signal per modality and class (mean brain ~ 1), after typical 3T appearances:
// T1 WM > GM > CSF; T1ce like T1 with a bright enhancing rim and a dark necrotic core;
// T2 CSF brightest, oedema and necrosis bright; FLAIR like T2 with CSF suppressed,
// oedema brightest.
constexpr float kNominal[kModalities][kClasses] = {
    // CSF   GM    WM    ED    NCR   ET
    {0.30f, 0.62f, 0.86f, 0.55f, 0.33f, 0.62f},  // T1
    {0.32f, 0.64f, 0.86f, 0.56f, 0.30f, 1.40f},  // T1ce
    {1.60f, 0.85f, 0.60f, 1.25f, 1.45f, 0.95f},  // T2
    {0.18f, 0.90f, 0.65f, 1.45f, 0.60f, 1.05f},  // FLAIR
};

using Contrasts = std::array<std::array<float, kClasses>, kModalities>;

Contrasts make_contrasts(const Profile& prof, Rng& rng) {
  Contrasts t{};
  for (int m = 0; m < kModalities; ++m) {
    const float gm = kNominal[m][kGm];
    float wm = gm + static_cast<float>(prof.wm_gm) * (kNominal[m][kWm] - gm);
    const float mu = 0.5f * (gm + wm);
    for (int k = 0; k < kClasses; ++k) {
      float v = k == kWm ? wm : kNominal[m][k];
      v = mu + static_cast<float>(prof.contrast) * (v - mu);
      v *= static_cast<float>(rng.uniform(0.95, 1.05));
      t[m][k] = std::max(v, 0.05f);
    }
  }
  return t;
}

inline float ramp(float v) { return v <= -0.5f ? 0.f : v >= 0.5f ? 1.f : v + 0.5f; }
inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

// ---------------------------------------------------------------------------
// Brain models: a slice at a time, the brain mask, the white-matter fraction (oedema
// spreads along white matter), a partial-volume weight at the surface and the
// tissue signal per modality.

struct SliceBuf {
  explicit SliceBuf(size_t n) : mask(n), wm(n), csf(n), edge(n) {
    for (auto& b : base) b.resize(n);
  }
  std::vector<uint8_t> mask;
  std::vector<float> wm, csf, edge;  // white matter and CSF fractions
  std::array<std::vector<float>, kModalities> base;
};

class Brain {
 public:
  virtual ~Brain() = default;
  virtual void slice(int64_t z, SliceBuf& s) const = 0;
  // Whether the point (voxel coordinates) lies in the brain at least `margin` voxels deep.
  virtual bool inside(double x, double y, double z, double margin) const = 0;
  std::array<double, 3> centre{}, half{};  // where tumours may be placed
  double rmean = 1;                        // mean radius in voxels
};

class PhantomBrain : public Brain {
 public:
  PhantomBrain(const std::array<int64_t, 3>& shape, const Profile& prof, const Contrasts& t, uint64_t seed,
               uint64_t index)
      : shape_(shape), t_(t), shape_field_(init(shape, prof, seed, index)), gyri_(make_gyri(seed, index)) {}

  void slice(int64_t z, SliceBuf& s) const override {
    const int64_t X = shape_[0], Y = shape_[1];
    std::vector<float> sf(static_cast<size_t>(X * Y)), gf(static_cast<size_t>(X * Y));
    shape_field_.slice(z, sf.data());
    gyri_.slice(z, gf.data());
    const double zs = static_cast<double>(z);
    const float qz = static_cast<float>((zs - centre[2]) / (zs < centre[2] ? az_inf_ : az_sup_));
    const float rm = static_cast<float>(rmean);
    const float fissure_w = std::max(0.6f, 0.015f * rm);
    // Lateral ventricles: bananas bending down at both ends, in the upper middle.
    const float vaz = static_cast<float>(0.13 * az_sup_ * vscale_);
    const float vax = static_cast<float>(0.075 * half[0] * vscale_), vay = static_cast<float>(0.36 * half[1]);
    // Deep grey matter (thalami, basal ganglia).
    const float dax = static_cast<float>(0.12 * half[0]), day = static_cast<float>(0.2 * half[1]),
                daz = static_cast<float>(0.14 * az_sup_);
    const float duz = static_cast<float>((zs - (centre[2] - 0.02 * az_sup_)) / daz);
    for (int64_t y = 0; y < Y; ++y) {
      const float qy = static_cast<float>((static_cast<double>(y) - centre[1]) / half[1]);
      const float vy = clampf(static_cast<float>((static_cast<double>(y) - vcy_) / vay), -1.f, 1.f);
      const float vzc = static_cast<float>(centre[2] + 0.13 * az_sup_) - 0.22f * static_cast<float>(az_sup_) * vy * vy;
      const float vz = (static_cast<float>(zs) - vzc) / vaz;
      const float vyy = static_cast<float>((static_cast<double>(y) - vcy_) / vay);
      const float duy = static_cast<float>((static_cast<double>(y) - (centre[1] + 0.02 * half[1])) / day);
      const bool fissure_here = qz > 0.32f || (std::fabs(qy) > 0.5f && qz > -0.3f);
      for (int64_t x = 0; x < X; ++x) {
        const size_t i = static_cast<size_t>(y * X + x);
        const float qx = static_cast<float>((static_cast<double>(x) - centre[0]) / half[0]);
        float rho = std::sqrt(qx * qx + qy * qy + qz * qz) * (1.f + kShapeAmp * clampf(sf[i], -2.5f, 2.5f));
        if (rho >= 1.f) {
          s.mask[i] = 0;
          s.wm[i] = 0;
          s.csf[i] = 0;
          s.edge[i] = 0;
          for (auto& b : s.base) b[i] = 0;
          continue;
        }
        const float d = (1.f - rho) * rm;  // depth below the surface, voxels
        const float g = clampf(gf[i], -2.f, 2.5f);
        // Cortical ribbon, thicker where sulci (CSF reaching in from the surface) are.
        float gm = ramp(rm * std::max(0.04f, 0.085f + 0.05f * g) - d);
        float csf = ramp(rm * (0.012f + 0.08f * std::max(0.f, g - 0.5f)) - d);
        const float dx = static_cast<float>(static_cast<double>(x) - centre[0]);
        if (fissure_here) csf = std::max(csf, ramp(fissure_w - std::fabs(dx)));
        for (int side = -1; side <= 1; side += 2) {
          float vx = (dx - side * 0.11f * static_cast<float>(half[0])) / vax;
          float v = std::sqrt(vx * vx + vyy * vyy + vz * vz);
          if (v < 1.5f) csf = std::max(csf, ramp((1.f - v) * vax));
          float ux = (dx - side * 0.22f * static_cast<float>(half[0])) / dax;
          float u = std::sqrt(ux * ux + duy * duy + duz * duz);
          if (u < 1.5f) gm = std::max(gm, 0.85f * ramp((1.f - u) * dax));
        }
        const float fc = csf, fg = gm * (1.f - csf), fw = (1.f - gm) * (1.f - csf);
        s.mask[i] = 1;
        s.wm[i] = fw;
        s.csf[i] = fc;
        s.edge[i] = std::min(1.f, d + 0.5f);
        for (int m = 0; m < kModalities; ++m) s.base[m][i] = fc * t_[m][kCsf] + fg * t_[m][kGm] + fw * t_[m][kWm];
      }
    }
  }

  bool inside(double x, double y, double z, double margin) const override {
    double qx = (x - centre[0]) / half[0], qy = (y - centre[1]) / half[1];
    double qz = (z - centre[2]) / (z < centre[2] ? az_inf_ : az_sup_);
    double s = std::clamp(shape_field_.at(x, y, z), -2.5, 2.5);
    double rho = std::sqrt(qx * qx + qy * qy + qz * qz) * (1 + kShapeAmp * s);
    return rho < 1 - margin / rmean;
  }

 private:
  static constexpr float kShapeAmp = 0.06f;

  // Draws the brain's size, position and ventricle size; returns its shape field.
  Field init(const std::array<int64_t, 3>& shape, const Profile& prof, uint64_t seed, uint64_t index) {
    Rng rng(seed, index, kStreamBrain);
    // An adult brain (~140 x 170 x 125 mm) in the BraTS grid (240 x 240 x 155):
    // semi-axes as fractions of the half extents; LPS order (x L-R, y A-P, z I-S).
    const double frac[3] = {0.58, 0.71, 0.80};
    for (int a = 0; a < 3; ++a) {
      double h = 0.5 * static_cast<double>(shape[a]);
      half[a] = h * frac[a] * prof.brain_scale * rng.uniform(0.93, 1.04);
      centre[a] = (h - 0.5) + h * rng.uniform(-0.03, 0.03);
    }
    az_sup_ = half[2];
    az_inf_ = half[2] * rng.uniform(0.72, 0.85);  // flatter base
    vscale_ = rng.uniform(0.7, 1.5);
    vcy_ = centre[1] + half[1] * rng.uniform(-0.05, 0.1);
    rmean = std::cbrt(half[0] * half[1] * half[2]);
    Rng srng(seed, index, kStreamShape);
    return Field(shape, 0.6 * rmean, srng);
  }
  Field make_gyri(uint64_t seed, uint64_t index) const {
    Rng rng(seed, index, kStreamGyri);
    return Field(shape_, rmean / 5.5, rng);
  }

  std::array<int64_t, 3> shape_;
  Contrasts t_;
  double az_sup_ = 1, az_inf_ = 1, vscale_ = 1, vcy_ = 0;
  Field shape_field_;
  Field gyri_;
};

class AnatomyBrain : public Brain {
 public:
  AnatomyBrain(const std::array<int64_t, 3>& shape, const Anatomy& an, const Profile& prof, const Contrasts& t,
               uint64_t seed, uint64_t index)
      : shape_(shape), an_(an), t_(t) {
    Rng rng(seed, index, kStreamBrain);
    // Scale so that the brain fits the grid (never enlarged), then a small random
    // rotation and anisotropic scaling per case.
    double s = 1;
    for (int a = 0; a < 3; ++a) s = std::min(s, 0.92 * static_cast<double>(shape[a]) / an.extent_mm[a]);
    s *= prof.brain_scale;
    const double th = rng.uniform(-0.09, 0.09), ph = rng.uniform(-0.06, 0.06);
    const double sc[3] = {rng.uniform(0.95, 1.05), rng.uniform(0.95, 1.05), rng.uniform(0.95, 1.05)};
    // world = c + R * diag(1/(s*sc)) * r, r = LPS-flipped offset from the grid centre.
    const double ct = std::cos(th), st = std::sin(th), cp = std::cos(ph), sp = std::sin(ph);
    const double rz[3][3] = {{ct, -st, 0}, {st, ct, 0}, {0, 0, 1}};
    const double rx[3][3] = {{1, 0, 0}, {0, cp, -sp}, {0, sp, cp}};
    double r[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        r[i][j] = 0;
        for (int k = 0; k < 3; ++k) r[i][j] += rz[i][k] * rx[k][j];
      }
    const double flip[3] = {-1, -1, 1};
    double gc[3];
    for (int a = 0; a < 3; ++a) {
      gc[a] = 0.5 * static_cast<double>(shape[a] - 1);
      centre[a] = gc[a];
      half[a] = 0.5 * an.extent_mm[a] * s;
    }
    rmean = std::cbrt(half[0] * half[1] * half[2]);
    // out voxel -> world: w = c + A * (v - gc), A[i][j] = r[i][j] * flip[j] / (s * sc[j]).
    double A[3][3], off[3];
    for (int i = 0; i < 3; ++i) {
      off[i] = an.centre_mm[i];
      for (int j = 0; j < 3; ++j) {
        A[i][j] = r[i][j] * flip[j] / (s * sc[j]);
        off[i] -= A[i][j] * gc[j];
      }
    }
    // source voxel = W2V * world.
    const auto& W = an.world_to_vox;
    for (int i = 0; i < 3; ++i) {
      m_[i][3] = W[i][3];
      for (int j = 0; j < 3; ++j) {
        m_[i][j] = 0;
        for (int k = 0; k < 3; ++k) m_[i][j] += W[i][k] * A[k][j];
        m_[i][3] += W[i][j] * off[j];
      }
    }
    thr_ = 0.35f * static_cast<float>(an.csf);
  }

  void slice(int64_t z, SliceBuf& s) const override {
    const int64_t X = shape_[0], Y = shape_[1];
    const float csf = static_cast<float>(an_.csf), gm = static_cast<float>(an_.gm), wm = static_cast<float>(an_.wm);
    for (int64_t y = 0; y < Y; ++y)
      for (int64_t x = 0; x < X; ++x) {
        const size_t i = static_cast<size_t>(y * X + x);
        const float v = value(static_cast<double>(x), static_cast<double>(y), static_cast<double>(z));
        if (!(v > thr_)) {
          s.mask[i] = 0;
          s.wm[i] = 0;
          s.csf[i] = 0;
          s.edge[i] = 0;
          for (auto& b : s.base) b[i] = 0;
          continue;
        }
        s.mask[i] = 1;
        s.edge[i] = 1;  // the image has its own partial volume
        s.wm[i] = clampf((v - gm) / (wm - gm), 0.f, 1.f);
        s.csf[i] = clampf((gm - v) / (gm - csf), 0.f, 1.f);
        // Piecewise-linear transfer through the class means keeps the image's texture.
        for (int m = 0; m < kModalities; ++m) {
          const auto& t = t_[m];
          float out;
          if (v < csf)
            out = t[kCsf] * v / csf;
          else if (v < gm)
            out = t[kCsf] + (t[kGm] - t[kCsf]) * (v - csf) / (gm - csf);
          else
            out = t[kGm] + (t[kWm] - t[kGm]) * (v - gm) / (wm - gm);
          s.base[m][i] = std::max(out, 0.02f);
        }
      }
  }

  bool inside(double x, double y, double z, double margin) const override {
    if (!(value(x, y, z) > thr_)) return false;
    for (int a = 0; a < 3; ++a)
      for (int sgn = -1; sgn <= 1; sgn += 2) {
        double p[3] = {x, y, z};
        p[a] += sgn * margin;
        if (!(value(p[0], p[1], p[2]) > thr_)) return false;
      }
    return true;
  }

 private:
  float value(double x, double y, double z) const {
    double p[3];
    for (int i = 0; i < 3; ++i) p[i] = m_[i][0] * x + m_[i][1] * y + m_[i][2] * z + m_[i][3];
    const auto& sh = an_.shape;
    if (p[0] < 0 || p[1] < 0 || p[2] < 0 || p[0] > static_cast<double>(sh[0] - 1) ||
        p[1] > static_cast<double>(sh[1] - 1) || p[2] > static_cast<double>(sh[2] - 1))
      return 0.f;
    int64_t i0[3];
    double f[3];
    for (int a = 0; a < 3; ++a) {
      i0[a] = std::min(static_cast<int64_t>(p[a]), sh[a] - 2 < 0 ? 0 : sh[a] - 2);
      f[a] = p[a] - static_cast<double>(i0[a]);
    }
    const int64_t sx = 1, sy = sh[0], sz = sh[0] * sh[1];
    const float* d = &an_.data[static_cast<size_t>(i0[0] + i0[1] * sy + i0[2] * sz)];
    auto at = [&](int a, int b, int c) -> double { return d[a * sx + b * sy + c * sz]; };
    double c00 = at(0, 0, 0) * (1 - f[0]) + at(1, 0, 0) * f[0];
    double c10 = at(0, 1, 0) * (1 - f[0]) + at(1, 1, 0) * f[0];
    double c01 = at(0, 0, 1) * (1 - f[0]) + at(1, 0, 1) * f[0];
    double c11 = at(0, 1, 1) * (1 - f[0]) + at(1, 1, 1) * f[0];
    double c0 = c00 * (1 - f[1]) + c10 * f[1], c1 = c01 * (1 - f[1]) + c11 * f[1];
    return static_cast<float>(c0 * (1 - f[2]) + c1 * f[2]);
  }

  std::array<int64_t, 3> shape_;
  const Anatomy& an_;
  Contrasts t_;
  double m_[3][4];
  float thr_ = 0;
};

// ---------------------------------------------------------------------------
// Tumour: nested level sets of one deformed ellipsoid, t = |q| * (1 + a*F):
// necrosis t < rn, enhancing rim rn <= t < rc, oedema rc <= t < 1 + spread*wm
// (oedema reaches further along white matter). Nesting holds by construction;
// the placement keeps the core inside the brain.

struct Tumour {
  double c[3] = {0, 0, 0};
  double r[3] = {1, 1, 1};  // whole-tumour semi-axes, voxels
  double rn = 0.3, rc = 0.6, spread = 0.4;
  int64_t lo[3] = {0, 0, 0}, hi[3] = {-1, -1, -1};  // bounding box (inclusive)
  std::unique_ptr<Field> deform;
  static constexpr double kAmp = 0.12;
};

Tumour place_tumour(const Brain& brain, const std::array<int64_t, 3>& shape, const Profile& prof, uint64_t seed,
                    uint64_t index) {
  Rng rng(seed, index, kStreamTumour);
  Tumour t;
  double R = rng.uniform(prof.tumour_min, prof.tumour_max) * brain.rmean;
  t.rc = 1.0 / rng.uniform(prof.oedema_min, prof.oedema_max);
  double nfrac = rng.uniform(0.35, 0.65);
  t.spread = rng.uniform(0.15, 0.6);
  double aniso[3] = {rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)};
  // Directions to check around the core (26 neighbours' directions).
  std::vector<std::array<double, 3>> dirs;
  for (int a = -1; a <= 1; ++a)
    for (int b = -1; b <= 1; ++b)
      for (int c = -1; c <= 1; ++c) {
        if (!a && !b && !c) continue;
        double n = std::sqrt(static_cast<double>(a * a + b * b + c * c));
        dirs.push_back({a / n, b / n, c / n});
      }
  bool placed = false;
  for (int attempt = 0; attempt < 400 && !placed; ++attempt) {
    if (attempt > 0 && attempt % 80 == 0) R *= 0.85;
    // Small grids: keep every compartment at least a voxel or two thick.
    double Rv = std::max(R, 2.8 / t.rc);
    t.rn = std::clamp(t.rc * nfrac, 1.2 / Rv, t.rc - 1.4 / Rv);
    for (int a = 0; a < 3; ++a) t.r[a] = Rv * aniso[a];
    double cand[3];
    for (int a = 0; a < 3; ++a) cand[a] = brain.centre[a] + brain.half[a] * 0.8 * rng.uniform(-1, 1);
    if (!brain.inside(cand[0], cand[1], cand[2], 1.0)) continue;
    bool ok = true;
    const double reach = t.rc / (1 - 2 * Tumour::kAmp) + 0.05;
    for (const auto& d : dirs) {
      if (!brain.inside(cand[0] + d[0] * t.r[0] * reach, cand[1] + d[1] * t.r[1] * reach,
                        cand[2] + d[2] * t.r[2] * reach, 1.5)) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    for (int a = 0; a < 3; ++a) t.c[a] = cand[a];
    placed = true;
  }
  if (!placed) {  // tiny or odd brains: the centre, smallest tumour
    double Rv = 2.8 / t.rc;
    t.rn = std::clamp(t.rc * nfrac, 1.2 / Rv, t.rc - 1.4 / Rv);
    for (int a = 0; a < 3; ++a) {
      t.r[a] = Rv * aniso[a];
      t.c[a] = brain.centre[a];
    }
  }
  const double reach = (1 + t.spread) / (1 - 2 * Tumour::kAmp);
  for (int a = 0; a < 3; ++a) {
    t.lo[a] = std::max<int64_t>(0, static_cast<int64_t>(std::floor(t.c[a] - t.r[a] * reach - 2)));
    t.hi[a] = std::min<int64_t>(shape[a] - 1, static_cast<int64_t>(std::ceil(t.c[a] + t.r[a] * reach + 2)));
  }
  Rng frng(seed, index, kStreamTumourShape);
  t.deform = std::make_unique<Field>(shape, std::max(2.0, 0.6 * std::min({t.r[0], t.r[1], t.r[2]})), frng);
  return t;
}

// ---------------------------------------------------------------------------
// Acquisition resolution: Gaussian blur with the FWHM that takes the 1 mm grid to
// the acquired resolution, along x and y (in-plane) and z (slices).

void blur_axis(std::vector<float>& v, const std::array<int64_t, 3>& shape, int axis, double sigma) {
  if (sigma < 0.25) return;
  const int rad = static_cast<int>(std::ceil(3 * sigma));
  std::vector<float> k(static_cast<size_t>(2 * rad + 1));
  float sum = 0;
  for (int i = -rad; i <= rad; ++i) sum += k[static_cast<size_t>(i + rad)] = std::exp(-0.5f * static_cast<float>(i * i / (sigma * sigma)));
  for (auto& w : k) w /= sum;
  const int64_t X = shape[0], Y = shape[1], Z = shape[2];
  const int64_t n = shape[axis];
  const int64_t stride = axis == 0 ? 1 : axis == 1 ? X : X * Y;
  std::vector<float> line(static_cast<size_t>(n));
  auto run = [&](int64_t base) {
    for (int64_t i = 0; i < n; ++i) line[static_cast<size_t>(i)] = v[static_cast<size_t>(base + i * stride)];
    for (int64_t i = 0; i < n; ++i) {
      float acc = 0;
      for (int j = -rad; j <= rad; ++j) {
        int64_t ii = std::clamp<int64_t>(i + j, 0, n - 1);
        acc += k[static_cast<size_t>(j + rad)] * line[static_cast<size_t>(ii)];
      }
      v[static_cast<size_t>(base + i * stride)] = acc;
    }
  };
  if (axis == 0) {
    for (int64_t z = 0; z < Z; ++z)
      for (int64_t y = 0; y < Y; ++y) run((z * Y + y) * X);
  } else if (axis == 1) {
    for (int64_t z = 0; z < Z; ++z)
      for (int64_t x = 0; x < X; ++x) run(z * X * Y + x);
  } else {
    for (int64_t y = 0; y < Y; ++y)
      for (int64_t x = 0; x < X; ++x) run(y * X + x);
  }
}

double resolution_sigma(double acquired_mm) {
  // FWHM^2 adds: the grid already has 1 mm.
  double extra = acquired_mm * acquired_mm - 1.0;
  return extra > 0 ? std::sqrt(extra) / 2.3548 : 0.0;
}

}  // namespace

// ---------------------------------------------------------------------------

bool parse_naming(const std::string& s, Naming& out) {
  if (s == "brats2021") {
    out = Naming::brats2021;
    return true;
  }
  if (s == "brats2023") {
    out = Naming::brats2023;
    return true;
  }
  return false;
}

const char* naming_name(Naming n) { return n == Naming::brats2021 ? "brats2021" : "brats2023"; }

uint8_t enhancing_label(Naming n) { return n == Naming::brats2021 ? 4 : 3; }

const std::vector<Profile>& profiles() {
  static const std::vector<Profile> list = [] {
    std::vector<Profile> v;
    Profile p;
    p.name = "standard";
    p.summary = "3 T scanner, 1 mm isotropic, moderate noise and bias, adult glioma sizes";
    v.push_back(p);

    Profile lf = p;
    lf.name = "lowfield";
    lf.summary = "older 1.5 T scanner: lower contrast, more noise and bias, 1.2 mm in-plane, 5 mm slices";
    lf.contrast = 0.72;
    lf.noise = 0.07;
    lf.bias = 0.25;
    lf.inplane_mm = 1.2;
    lf.slice_mm = 5;
    lf.scale_min = 150;
    lf.scale_max = 600;
    v.push_back(lf);

    Profile hr = p;
    hr.name = "highres";
    hr.summary = "research 3 T site: high contrast, low noise, weak bias, 1 mm isotropic";
    hr.contrast = 1.15;
    hr.noise = 0.015;
    hr.bias = 0.06;
    hr.scale_min = 1500;
    hr.scale_max = 4000;
    v.push_back(hr);

    Profile st = p;
    st.name = "smalltumour";
    st.summary = "screening site: standard scanner, small tumours with little oedema";
    st.tumour_min = 0.08;
    st.tumour_max = 0.16;
    st.oedema_min = 1.2;
    st.oedema_max = 1.6;
    v.push_back(st);

    Profile lt = p;
    lt.name = "largetumour";
    lt.summary = "referral centre: standard scanner, large tumours with extensive oedema";
    lt.tumour_min = 0.32;
    lt.tumour_max = 0.46;
    lt.oedema_min = 1.8;
    lt.oedema_max = 2.6;
    v.push_back(lt);

    Profile pd = p;
    pd.name = "pediatric";
    pd.summary = "children's hospital: smaller brains, weaker grey/white contrast, 1.5 T noise, 3 mm slices";
    pd.brain_scale = 0.85;
    pd.wm_gm = 0.55;
    pd.noise = 0.045;
    pd.bias = 0.15;
    pd.slice_mm = 3;
    pd.tumour_min = 0.14;
    pd.tumour_max = 0.28;
    pd.oedema_min = 1.2;
    pd.oedema_max = 1.7;
    v.push_back(pd);
    return v;
  }();
  return list;
}

const Profile* find_profile(const std::string& name) {
  for (const auto& p : profiles())
    if (p.name == name) return &p;
  return nullptr;
}

nifti::Affine brats_affine(const std::array<int64_t, 3>& shape) {
  nifti::Affine a{};
  a[0][0] = -1;
  a[1][1] = -1;
  a[1][3] = static_cast<double>(shape[1] - 1);
  a[2][2] = 1;
  a[3][3] = 1;
  return a;
}

std::string case_id(const std::string& prefix, uint64_t index, Naming n) {
  char buf[32];
  if (n == Naming::brats2021)
    std::snprintf(buf, sizeof buf, "_%05llu", static_cast<unsigned long long>(index));
  else
    std::snprintf(buf, sizeof buf, "-%05llu-000", static_cast<unsigned long long>(index));
  return prefix + buf;
}

std::array<std::string, 5> case_files(const std::string& id, Naming n) {
  if (n == Naming::brats2021)
    return {id + "_t1.nii.gz", id + "_t1ce.nii.gz", id + "_t2.nii.gz", id + "_flair.nii.gz", id + "_seg.nii.gz"};
  return {id + "-t1n.nii.gz", id + "-t1c.nii.gz", id + "-t2w.nii.gz", id + "-t2f.nii.gz", id + "-seg.nii.gz"};
}

Anatomy make_anatomy(std::vector<float> data, std::array<int64_t, 3> shape, const nifti::Affine& affine,
                     const std::string& path) {
  for (auto n : shape)
    if (n < 2) throw Error(kExitDataErr, "cannot use anatomy", path, "not a 3-D image (a size is below 2)");
  if (data.size() != static_cast<size_t>(shape[0] * shape[1] * shape[2]))
    throw Error(kExitDataErr, "cannot use anatomy", path, "voxel count does not match the shape");
  Anatomy an;
  an.shape = shape;
  an.vox_to_world = affine;
  // Invert the 3x3 part.
  const auto& A = affine;
  double det = A[0][0] * (A[1][1] * A[2][2] - A[1][2] * A[2][1]) - A[0][1] * (A[1][0] * A[2][2] - A[1][2] * A[2][0]) +
               A[0][2] * (A[1][0] * A[2][1] - A[1][1] * A[2][0]);
  if (!std::isfinite(det) || std::fabs(det) < 1e-9)
    throw Error(kExitDataErr, "cannot use anatomy", path, "its affine is singular");
  double inv[3][3];
  inv[0][0] = (A[1][1] * A[2][2] - A[1][2] * A[2][1]) / det;
  inv[0][1] = (A[0][2] * A[2][1] - A[0][1] * A[2][2]) / det;
  inv[0][2] = (A[0][1] * A[1][2] - A[0][2] * A[1][1]) / det;
  inv[1][0] = (A[1][2] * A[2][0] - A[1][0] * A[2][2]) / det;
  inv[1][1] = (A[0][0] * A[2][2] - A[0][2] * A[2][0]) / det;
  inv[1][2] = (A[0][2] * A[1][0] - A[0][0] * A[1][2]) / det;
  inv[2][0] = (A[1][0] * A[2][1] - A[1][1] * A[2][0]) / det;
  inv[2][1] = (A[0][1] * A[2][0] - A[0][0] * A[2][1]) / det;
  inv[2][2] = (A[0][0] * A[1][1] - A[0][1] * A[1][0]) / det;
  nifti::Affine W{};
  for (int i = 0; i < 3; ++i) {
    W[i][3] = 0;
    for (int j = 0; j < 3; ++j) {
      W[i][j] = inv[i][j];
      W[i][3] -= inv[i][j] * A[j][3];
    }
  }
  W[3][3] = 1;
  an.world_to_vox = W;

  // Nonzero voxels: bounding box and value range. NaN and negatives count as background.
  size_t count = 0;
  float vmax = 0;
  int64_t lo[3] = {shape[0], shape[1], shape[2]}, hi[3] = {-1, -1, -1};
  for (int64_t z = 0; z < shape[2]; ++z)
    for (int64_t y = 0; y < shape[1]; ++y)
      for (int64_t x = 0; x < shape[0]; ++x) {
        float& v = data[static_cast<size_t>((z * shape[1] + y) * shape[0] + x)];
        if (!(v > 0) || !std::isfinite(v)) {
          v = 0;
          continue;
        }
        ++count;
        vmax = std::max(vmax, v);
        const int64_t p[3] = {x, y, z};
        for (int a = 0; a < 3; ++a) {
          lo[a] = std::min(lo[a], p[a]);
          hi[a] = std::max(hi[a], p[a]);
        }
      }
  if (count < 1000)
    throw Error(kExitDataErr, "cannot use anatomy", path,
                "fewer than 1000 nonzero voxels: not a skull-stripped brain");
  // World bounding box of the voxel box's corners.
  double wlo[3] = {1e300, 1e300, 1e300}, whi[3] = {-1e300, -1e300, -1e300};
  for (int corner = 0; corner < 8; ++corner) {
    double v[3] = {static_cast<double>((corner & 1) ? hi[0] : lo[0]), static_cast<double>((corner & 2) ? hi[1] : lo[1]),
                   static_cast<double>((corner & 4) ? hi[2] : lo[2])};
    for (int i = 0; i < 3; ++i) {
      double w = A[i][0] * v[0] + A[i][1] * v[1] + A[i][2] * v[2] + A[i][3];
      wlo[i] = std::min(wlo[i], w);
      whi[i] = std::max(whi[i], w);
    }
  }
  for (int i = 0; i < 3; ++i) {
    an.centre_mm[i] = 0.5 * (wlo[i] + whi[i]);
    an.extent_mm[i] = std::max(1.0, whi[i] - wlo[i]);
  }
  // Three tissue classes by 1-D k-means on a 512-bin histogram of the nonzero values.
  const int bins = 512;
  std::vector<double> hist(bins, 0);
  for (float v : data)
    if (v > 0) hist[static_cast<size_t>(std::min(bins - 1, static_cast<int>(v / vmax * bins)))] += 1;
  auto centre_of = [&](int b) { return (b + 0.5) * vmax / bins; };
  // Initial means at the 10th, 50th and 90th percentiles.
  double mean[3];
  {
    const double q[3] = {0.1, 0.5, 0.9};
    double acc = 0;
    int k = 0;
    for (int b = 0; b < bins && k < 3; ++b) {
      acc += hist[static_cast<size_t>(b)];
      while (k < 3 && acc >= q[k] * static_cast<double>(count)) mean[k++] = centre_of(b);
    }
    while (k < 3) mean[k++] = vmax;
  }
  for (int it = 0; it < 50; ++it) {
    double s[3] = {0, 0, 0}, n[3] = {0, 0, 0};
    for (int b = 0; b < bins; ++b) {
      double v = centre_of(b);
      int best = 0;
      for (int k = 1; k < 3; ++k)
        if (std::fabs(v - mean[k]) < std::fabs(v - mean[best])) best = k;
      s[best] += v * hist[static_cast<size_t>(b)];
      n[best] += hist[static_cast<size_t>(b)];
    }
    for (int k = 0; k < 3; ++k)
      if (n[k] > 0) mean[k] = s[k] / n[k];
  }
  std::sort(mean, mean + 3);
  // Keep the classes apart so the piecewise-linear transfers stay monotone pieces.
  const double gap = 0.05 * vmax;
  if (mean[1] - mean[0] < gap) mean[0] = mean[1] - gap;
  if (mean[2] - mean[1] < gap) mean[2] = mean[1] + gap;
  if (mean[0] <= 0) mean[0] = 0.5 * mean[1];
  an.csf = mean[0];
  an.gm = mean[1];
  an.wm = mean[2];
  an.data = std::move(data);
  return an;
}

Case generate(const CaseParams& p) {
  for (auto n : p.shape)
    if (n < kMinSize || n > kMaxSize)
      throw Error(kExitUsage, "bad shape", std::to_string(p.shape[0]) + "," + std::to_string(p.shape[1]) + "," +
                                               std::to_string(p.shape[2]),
                  "each size must be " + std::to_string(kMinSize) + " to " + std::to_string(kMaxSize));
  const Profile& prof = p.profile ? *p.profile : profiles().front();
  const auto& shape = p.shape;
  const int64_t X = shape[0], Y = shape[1], Z = shape[2];
  const size_t XY = static_cast<size_t>(X * Y), N = XY * static_cast<size_t>(Z);

  Rng crng(p.seed, p.index, kStreamContrast);
  const Contrasts t = make_contrasts(prof, crng);
  double scale[kModalities];
  for (double& s : scale) s = crng.uniform(prof.scale_min, prof.scale_max);

  std::unique_ptr<Brain> brain;
  if (p.anatomy)
    brain = std::make_unique<AnatomyBrain>(shape, *p.anatomy, prof, t, p.seed, p.index);
  else
    brain = std::make_unique<PhantomBrain>(shape, prof, t, p.seed, p.index);
  Tumour tum = place_tumour(*brain, shape, prof, p.seed, p.index);

  Rng trng(p.seed, p.index, kStreamTexture);
  Field texture(shape, 2.5, trng);
  std::vector<std::unique_ptr<Field>> bias;
  for (int m = 0; m < kModalities; ++m) {
    Rng b(p.seed, p.index, kStreamBias + static_cast<uint64_t>(m));
    bias.push_back(std::make_unique<Field>(shape, static_cast<double>(std::max({X, Y, Z})) / 2.5, b));
  }

  Case c;
  c.shape = shape;
  c.affine = brats_affine(shape);
  c.labels.assign(N, 0);
  c.brain.assign(N, 0);
  const bool blur = resolution_sigma(prof.inplane_mm) >= 0.25 || resolution_sigma(prof.slice_mm) >= 0.25;
  std::array<std::vector<float>, kModalities> clean;  // only when blurring
  for (int m = 0; m < kModalities; ++m) {
    c.images[m].assign(N, 0);
    if (blur) clean[m].assign(N, 0.f);
  }
  const uint8_t et_label = enhancing_label(p.naming);

  SliceBuf s(XY);
  std::vector<float> tex(XY), tdef(XY);
  std::array<std::vector<float>, kModalities> bf;
  for (auto& b : bf) b.resize(XY);
  const float hv = static_cast<float>(1.0 / std::cbrt(tum.r[0] * tum.r[1] * tum.r[2]));  // t units per voxel
  const float rn = static_cast<float>(tum.rn), rc = static_cast<float>(tum.rc), spread = static_cast<float>(tum.spread);
  const float bias_k = static_cast<float>(prof.bias);
  constexpr float kTexture = 0.03f, kOedemaMix = 0.8f;

  for (int64_t z = 0; z < Z; ++z) {
    brain->slice(z, s);
    texture.slice(z, tex.data());
    for (int m = 0; m < kModalities; ++m) bias[static_cast<size_t>(m)]->slice(z, bf[m].data());
    const bool tz = z >= tum.lo[2] && z <= tum.hi[2];
    if (tz) tum.deform->slice(z, tdef.data());
    for (int64_t y = 0; y < Y; ++y) {
      const bool ty = tz && y >= tum.lo[1] && y <= tum.hi[1];
      for (int64_t x = 0; x < X; ++x) {
        const size_t i = static_cast<size_t>(y * X + x);
        const size_t gi = static_cast<size_t>(z) * XY + i;
        if (!s.mask[i]) continue;
        c.brain[gi] = 1;
        float val[kModalities];
        for (int m = 0; m < kModalities; ++m) val[m] = s.base[m][i];
        if (ty && x >= tum.lo[0] && x <= tum.hi[0]) {
          const double qx = (static_cast<double>(x) - tum.c[0]) / tum.r[0];
          const double qy = (static_cast<double>(y) - tum.c[1]) / tum.r[1];
          const double qz = (static_cast<double>(z) - tum.c[2]) / tum.r[2];
          const float tv = static_cast<float>(std::sqrt(qx * qx + qy * qy + qz * qz)) *
                           (1.f + static_cast<float>(Tumour::kAmp) * clampf(tdef[i], -2.f, 2.f));
          const float ed_level = 1.f + spread * s.wm[i];
          if (tv < ed_level + hv) {
            // Oedema is in tissue, not in the ventricles or sulci.
            const float fe = ramp((ed_level - tv) / hv) * kOedemaMix * (1.f - s.csf[i]);
            const float fc = ramp((rc - tv) / hv), fn = ramp((rn - tv) / hv);
            const float het = clampf(tex[i], -2.5f, 2.5f);
            for (int m = 0; m < kModalities; ++m) {
              float v = val[m] * (1.f - fe) + fe * t[m][kOedema];
              float core = fn * t[m][kNecrosis] * (1.f + 0.08f * het) + (1.f - fn) * t[m][kEnhancing] * (1.f + 0.12f * het);
              val[m] = v * (1.f - fc) + fc * core;
            }
            if (tv < rn)
              c.labels[gi] = kNecroticLabel;
            else if (tv < rc)
              c.labels[gi] = et_label;
            else if (tv < ed_level && s.csf[i] < 0.5f)
              c.labels[gi] = kOedemaLabel;
          }
        }
        const float texm = 1.f + kTexture * clampf(tex[i], -3.f, 3.f);
        for (int m = 0; m < kModalities; ++m) {
          float v = val[m] * texm * std::exp(bias_k * clampf(bf[m][i], -2.5f, 2.5f)) * s.edge[i] *
                    static_cast<float>(scale[m]);
          if (blur)
            clean[m][gi] = v;
          else
            c.images[m][gi] = static_cast<int16_t>(std::clamp(std::lround(v), 1L, 32767L));
        }
      }
    }
  }
  if (blur) {
    const double si = resolution_sigma(prof.inplane_mm), sz = resolution_sigma(prof.slice_mm);
    for (int m = 0; m < kModalities; ++m) {
      blur_axis(clean[m], shape, 0, si);
      blur_axis(clean[m], shape, 1, si);
      blur_axis(clean[m], shape, 2, sz);
      for (size_t i = 0; i < N; ++i)
        if (c.brain[i]) c.images[m][i] = static_cast<int16_t>(std::clamp(std::lround(clean[m][i]), 1L, 32767L));
      std::vector<float>().swap(clean[m]);
    }
  }
  // Rician noise inside the brain: |signal + complex Gaussian|. Background stays 0
  // (skull-stripped, as BraTS).
  const auto& tbl = normal_table();
  for (int m = 0; m < kModalities; ++m) {
    Rng nrng(p.seed, p.index, kStreamNoise + static_cast<uint64_t>(m));
    const float sigma = static_cast<float>(prof.noise * scale[m]);
    auto& img = c.images[m];
    uint64_t bits = 0;
    int left = 0;
    for (size_t i = 0; i < N; ++i) {
      if (!c.brain[i]) continue;
      if (left == 0) {
        bits = nrng.next();
        left = 2;
      }
      const float n1 = tbl[bits & 0xffff] * sigma, n2 = tbl[(bits >> 16) & 0xffff] * sigma;
      bits >>= 32;
      --left;
      const float sgn = static_cast<float>(img[i]) + n1;
      const float v = std::sqrt(sgn * sgn + n2 * n2);
      img[i] = static_cast<int16_t>(std::clamp(std::lround(v), 1L, 32767L));
    }
  }
  for (size_t i = 0; i < N; ++i) {
    const uint8_t l = c.labels[i];
    if (l == kNecroticLabel)
      ++c.necrotic;
    else if (l == kOedemaLabel)
      ++c.oedema;
    else if (l == et_label)
      ++c.enhancing;
  }
  return c;
}

}  // namespace fedseg::synth
