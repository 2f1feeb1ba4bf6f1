// One case: validate, reorient to RAS+, resample, crop, z-score, region-code.
// The fast path (no resampling) reads each input value a bounded number of times:
// a scaling pass (nifti::Image::to_float), one pass for statistics and the brain's
// bounding box, and one gather pass that reorients, crops and normalises at once.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

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

// Gathers src (source voxel order) into the canonical box [lo, hi) in z-major order,
// applying fn to each value.
template <class T, class Out, class Fn>
void gather(const T* src, const Grid& g, const Orientation& o, const std::array<int64_t, 3>& lo,
            const std::array<int64_t, 3>& hi, Out* out, Fn fn) {
  const std::array<int64_t, 3> stride{1, g.n[0], g.n[0] * g.n[1]};
  std::array<int64_t, 3> step{}, start{};
  for (int a = 0; a < 3; ++a) {
    int v = o.ax[a];
    int64_t m = g.n[v];
    step[a] = o.flip[a] ? -stride[v] : stride[v];
    start[a] = (o.flip[a] ? (m - 1 - lo[a]) : lo[a]) * stride[v];
  }
  size_t k = 0;
  for (int64_t z = lo[2]; z < hi[2]; ++z) {
    int64_t oz = start[2] + (z - lo[2]) * step[2];
    for (int64_t y = lo[1]; y < hi[1]; ++y) {
      const T* row = src + oz + start[1] + (y - lo[1]) * step[1] + start[0];
      const int64_t sx = step[0], nx = hi[0] - lo[0];
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

}  // namespace

Scheme scheme_from_name(const std::string& name) {
  if (name == "brats2021") return Scheme::brats2021;
  if (name == "brats2023") return Scheme::brats2023;
  throw Error(kExitUsage, "unknown label scheme", name, "use brats2021 or brats2023");
}

const char* scheme_name(Scheme s) { return s == Scheme::brats2021 ? "brats2021" : "brats2023"; }

std::string split_for(const std::string& id, double val_fraction) {
  Sha256 h;
  h.update(id.data(), id.size());
  const std::string d = h.digest();
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(d[static_cast<size_t>(i)]);
  double frac = static_cast<double>(v) / 18446744073709551616.0;
  return frac < val_fraction ? "val" : "train";
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
  if (!files.problem.empty()) throw Error(kExitDataErr, files.problem);
  if (opts.require_label && files.label.empty())
    throw Error(kExitDataErr, "no label file (seg)");

  // Read and validate the grid. The big buffers are kept per thread and reused
  // from case to case: allocating them afresh cost more page faults than the work.
  thread_local std::array<nifti::Image, 5> images;
  thread_local std::array<RawVector<float>, 4> ch;
  thread_local RawVector<uint8_t> labels;
  labels.clear();
  Grid g;
  nifti::Affine A{};
  nlohmann::json sources = nlohmann::json::array();
  nlohmann::json sanity = nlohmann::json::object();
  for (size_t c = 0; c < 4; ++c) {
    const std::string& path = files.images[c];
    nifti::Image& img = images[c];
    nifti::read(path, img);
    int64_t extra = 1;
    for (size_t d = 3; d < img.shape.size(); ++d) extra *= img.shape[d];
    if (img.shape.size() < 3 || extra != 1)
      throw Error(kExitDataErr, "not a 3-D volume", path, "shape has " + std::to_string(img.shape.size()) + " dimensions");
    std::array<int64_t, 3> n{img.shape[0], img.shape[1], img.shape[2]};
    if (c == 0) {
      g.n = n;
      A = img.affine;
    } else {
      if (n != g.n)
        throw Error(kExitDataErr, "grid differs from t1's", path,
                    "shape " + std::to_string(n[0]) + "x" + std::to_string(n[1]) + "x" + std::to_string(n[2]) + " vs " +
                        std::to_string(g.n[0]) + "x" + std::to_string(g.n[1]) + "x" + std::to_string(g.n[2]));
      double d = affine_distance(img.affine, A);
      if (d > opts.affine_tolerance)
        throw Error(kExitDataErr, "grid differs from t1's", path, "affines differ by " + std::to_string(d) + " mm");
    }
    sources.push_back({{"role", kChannels[c]}, {"path", path}, {"sha256", c < sha256.size() ? sha256[c] : ""}});
  }
  const size_t nvox = static_cast<size_t>(g.voxels());

  if (!files.label.empty()) {
    nifti::Image& limg = images[4];
    nifti::read(files.label, limg);
    if (limg.shape.size() < 3 || limg.shape[0] != g.n[0] || limg.shape[1] != g.n[1] || limg.shape[2] != g.n[2])
      throw Error(kExitDataErr, "grid differs from t1's", files.label, "label shape differs");
    double d = affine_distance(limg.affine, A);
    if (d > opts.affine_tolerance)
      throw Error(kExitDataErr, "grid differs from t1's", files.label, "affines differ by " + std::to_string(d) + " mm");
    labels.resize(static_cast<size_t>(limg.voxels()));
    limg.to_labels(files.label, labels.data());
    std::array<uint64_t, 256> counts{};
    for (uint8_t v : labels) ++counts[v];
    for (int v = 0; v < 256; ++v)
      if (counts[static_cast<size_t>(v)] && region_code(static_cast<uint8_t>(v), opts.scheme) == 0xff)
        throw Error(kExitDataErr, "bad label", files.label,
                    "value " + std::to_string(v) + " is not in the " + scheme_name(opts.scheme) + " scheme (" +
                        (opts.scheme == Scheme::brats2021 ? "0,1,2,4" : "0,1,2,3") + ")");
    sources.push_back({{"role", "seg"}, {"path", files.label}, {"sha256", sha256.size() > 4 ? sha256[4] : ""}});
    double vox_ml = 1e-3;
    for (int i = 0; i < 3; ++i) vox_ml *= std::sqrt(A[0][i] * A[0][i] + A[1][i] * A[1][i] + A[2][i] * A[2][i]);
    nlohmann::json vol = nlohmann::json::object();
    for (int v = 1; v < 256; ++v)
      if (counts[static_cast<size_t>(v)]) vol[std::to_string(v)] = static_cast<double>(counts[static_cast<size_t>(v)]) * vox_ml;
    sanity["label_volume_ml"] = vol;
  }

  Orientation o = orientation_of(A, files.images[0]);
  const std::string original_codes = o.codes;
  const std::vector<int64_t> original_shape(g.n.begin(), g.n.end());
  // to_canonical: canonical voxel index -> source voxel index.
  Mat4 T{};
  T[3][3] = 1;
  for (int a = 0; a < 3; ++a) {
    int v = o.ax[a];
    T[v][a] = o.flip[a] ? -1 : 1;
    T[v][3] = o.flip[a] ? static_cast<double>(g.n[v] - 1) : 0;
  }
  Grid cg;  // canonical grid
  std::array<double, 3> sp{};
  for (int a = 0; a < 3; ++a) {
    int v = o.ax[a];
    cg.n[a] = g.n[v];
    sp[a] = std::sqrt(A[0][v] * A[0][v] + A[1][v] * A[1][v] + A[2][v] * A[2][v]);
  }
  Mat4 to_source = T;  // stored-grid index -> source index (crop added below)

  // Resampling and clipping work on float copies; otherwise the statistics and the
  // output pass read the stored voxels directly (no float copy of the volumes).
  bool need_resample = false;
  for (int a = 0; a < 3 && opts.resample; ++a) need_resample |= std::fabs(sp[a] - opts.spacing[a]) > 1e-3;
  const bool clipping = opts.clip_low >= 0 && opts.clip_high > opts.clip_low;
  const bool as_float = need_resample || clipping;
  if (as_float)
    for (size_t c = 0; c < 4; ++c) {
      ch[c].resize(static_cast<size_t>(images[c].voxels()));
      images[c].to_float(ch[c].data());
    }

  // Resampling: reorient in full first, then interpolate on the canonical grid.
  bool resampled = false;
  if (need_resample) {
    std::array<double, 3> f{};
    bool differs = false;
    Grid rg;
    for (int a = 0; a < 3; ++a) {
      differs |= std::fabs(sp[a] - opts.spacing[a]) > 1e-3;
      f[a] = opts.spacing[a] / sp[a];
      rg.n[a] = std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(cg.n[a]) * sp[a] / opts.spacing[a])));
    }
    if (differs) {
      std::array<int64_t, 3> zero{0, 0, 0};
      for (auto& c : ch) {
        RawVector<float> can(nvox);
        gather(c.data(), g, o, zero, cg.n, can.data(), [](float v) { return v; });
        c = resample(can, cg, rg, f, false);
      }
      if (!labels.empty()) {
        RawVector<uint8_t> can(nvox);
        gather(labels.data(), g, o, zero, cg.n, can.data(), [](uint8_t v) { return v; });
        labels = resample(can, cg, rg, f, true);
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
  }
  const size_t nv = static_cast<size_t>(g.voxels());

  // Optional percentile clipping of the non-zero voxels.
  nlohmann::json clip = nullptr;
  if (clipping) {
    clip = nlohmann::json::array();
    for (auto& c : ch) {
      std::vector<float> nz;
      nz.reserve(nv / 4);
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

  // Calls fn(pointer to channel c's voxels, value functor) with the voxels as stored
  // (scaled on the fly, exactly as nifti::Image::to_float does) or as the float copy.
  auto visit_channel = [&](size_t c, auto&& fn) {
    if (as_float) {
      fn(static_cast<const float*>(ch[c].data()), [](float v) { return v; }, false);
      return;
    }
    const nifti::Image& im = images[c];
    const double slope = im.header.scl_slope, inter = im.header.scl_inter;
    const bool scaled = slope != 0 && std::isfinite(slope) && std::isfinite(inter) && !(slope == 1 && inter == 0);
    auto dispatch = [&](const auto* p) {
      using T = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
      if (scaled)
        fn(p, [slope, inter](T x) { return static_cast<float>(static_cast<double>(x) * slope + inter); }, true);
      else
        fn(p, [](T x) { return static_cast<float>(x); }, false);
    };
    const unsigned char* r = im.raw.data();
    switch (im.datatype) {
      case nifti::DataType::u8: dispatch(reinterpret_cast<const uint8_t*>(r)); break;
      case nifti::DataType::i8: dispatch(reinterpret_cast<const int8_t*>(r)); break;
      case nifti::DataType::i16: dispatch(reinterpret_cast<const int16_t*>(r)); break;
      case nifti::DataType::u16: dispatch(reinterpret_cast<const uint16_t*>(r)); break;
      case nifti::DataType::i32: dispatch(reinterpret_cast<const int32_t*>(r)); break;
      case nifti::DataType::u32: dispatch(reinterpret_cast<const uint32_t*>(r)); break;
      case nifti::DataType::i64: dispatch(reinterpret_cast<const int64_t*>(r)); break;
      case nifti::DataType::u64: dispatch(reinterpret_cast<const uint64_t*>(r)); break;
      case nifti::DataType::f32: dispatch(reinterpret_cast<const float*>(r)); break;
      case nifti::DataType::f64: dispatch(reinterpret_cast<const double*>(r)); break;
    }
  };

  // Statistics over non-zero voxels and the bounding box of the union (source order).
  std::array<int64_t, 3> blo{g.n[0], g.n[1], g.n[2]}, bhi{-1, -1, -1};
  std::array<double, 4> mean{}, sd{};
  nlohmann::json ranges = nlohmann::json::array();
  uint64_t negatives_total = 0, nonfinite_total = 0;
  for (size_t c = 0; c < 4; ++c) {
    uint64_t n = 0, neg = 0, bad = 0;
    double s_total = 0, s2_total = 0, mn = INFINITY, mx = -INFINITY;
    visit_channel(c, [&](const auto* p, auto value, bool scaled) {
    // Sums in kLanes independent double lanes so that the compiler vectorises the
    // loop (a single accumulator serialises on its dependency chain). Zeros add
    // nothing to the sums; the non-zero count, negatives and min/max are masked.
    constexpr int kLanes = 8;
    double s[kLanes] = {}, s2[kLanes] = {}, cnt[kLanes] = {}, negs[kLanes] = {};
    float mnl[kLanes], mxl[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      mnl[l] = INFINITY;
      mxl[l] = -INFINITY;
    }
    for (int64_t z = 0; z < g.n[2]; ++z) {
      for (int64_t y = 0; y < g.n[1]; ++y) {
        const auto* row = p + (z * g.n[1] + y) * g.n[0];
        const int64_t nx = g.n[0];
        // Background rows are the majority: one vectorisable test of the whole
        // row first, the first/last scan only for rows that hold brain.
        bool any = false;
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
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
        if constexpr (std::is_integral_v<T> && sizeof(T) <= 2) {
          if (!scaled) {
            // Stored integers as they are: exact integer sums, which vectorise well.
            int64_t rs = 0, rs2 = 0, rc = 0, rn = 0;
            T rmn = std::numeric_limits<T>::max(), rmx = std::numeric_limits<T>::lowest();
            for (int64_t k = first; k <= last; ++k) {
              const int32_t v = row[k];
              rs += v;
              rs2 += static_cast<int64_t>(v) * v;
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
      mn = std::min(mn, static_cast<double>(mnl[l]));
      mx = std::max(mx, static_cast<double>(mxl[l]));
    }
    n = static_cast<uint64_t>(nd);
    neg = static_cast<uint64_t>(negd);
    // NaN or infinity anywhere makes the sums non-finite: count them only then.
    if (!std::isfinite(sum) || !std::isfinite(sum2))
      for (size_t k = 0; k < nv; ++k) bad += !std::isfinite(value(p[k]));
    s_total = sum;
    s2_total = sum2;
    });
    if (bad) throw Error(kExitDataErr, "non-finite values", files.images[c], std::to_string(bad) + " voxels are NaN or infinite");
    if (n == 0) throw Error(kExitDataErr, "empty image", files.images[c], "every voxel is zero");
    mean[c] = s_total / static_cast<double>(n);
    double var = std::max(0.0, s2_total / static_cast<double>(n) - mean[c] * mean[c]);
    sd[c] = std::max(std::sqrt(var), 1e-8);
    negatives_total += neg;
    nonfinite_total += bad;
    ranges.push_back({{"channel", kChannels[c]}, {"min", mn}, {"max", mx}, {"nonzero", n}, {"negative", neg}});
    if (neg) out.warnings.push_back(std::to_string(neg) + " negative values in " + kChannels[c] + " inside the brain");
  }

  // Canonical crop box with margin.
  std::array<int64_t, 3> lo{}, hi{};
  for (int a = 0; a < 3; ++a) {
    int v = o.ax[a];
    int64_t l = blo[v], h = bhi[v];
    if (o.flip[a]) {
      int64_t nl = g.n[v] - 1 - h, nh = g.n[v] - 1 - l;
      l = nl;
      h = nh;
    }
    lo[a] = std::max<int64_t>(0, l - opts.margin);
    hi[a] = std::min<int64_t>(cg.n[a], h + 1 + opts.margin);
    out.shape[static_cast<size_t>(a)] = hi[a] - lo[a];
  }
  const size_t ncrop = static_cast<size_t>(out.shape[0] * out.shape[1] * out.shape[2]);
  // Reorient, crop, normalise and (for float16) convert in one pass.
  if (opts.float16)
    out.image16.resize(4 * ncrop);
  else
    out.image.resize(4 * ncrop);
  for (size_t c = 0; c < 4; ++c) {
    const float m = static_cast<float>(mean[c]);
    const float inv = static_cast<float>(1.0 / sd[c]);
    visit_channel(c, [&](const auto* p, auto value, bool) {
      if (opts.float16) {
        // Normalise into a float scratch volume, then convert in bulk (F16C).
        thread_local RawVector<float> scratch;
        scratch.resize(ncrop);
        gather(p, g, o, lo, hi, scratch.data(), [m, inv, value](auto x) {
          const float v = value(x);
          return v == 0 ? 0.0f : (v - m) * inv;
        });
        floats_to_halves(scratch.data(), out.image16.data() + c * ncrop, ncrop);
      } else
        gather(p, g, o, lo, hi, out.image.data() + c * ncrop, [m, inv, value](auto x) {
          const float v = value(x);
          return v == 0 ? 0.0f : (v - m) * inv;
        });
    });
  }
  if (!labels.empty()) {
    out.label.resize(ncrop);
    std::array<uint8_t, 256> code{};
    for (int v = 0; v < 256; ++v) code[static_cast<size_t>(v)] = region_code(static_cast<uint8_t>(v), opts.scheme);
    gather(labels.data(), g, o, lo, hi, out.label.data(), [&code](uint8_t v) { return code[v]; });
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
      {"has_label", labels.empty() ? 0 : 1},
  };
  if (!clip.is_null()) out.attrs["clip_values"] = clip.dump();
}

}  // namespace fedseg::prep
