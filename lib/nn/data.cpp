#include "nn/data.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"
#include "h5/tensor_file.h"

namespace fedseg::nn {

float Case::value(int64_t c, int64_t idx) const {
  const int64_t i = c * Z * Y * X + idx;
  return half.empty() ? f32[size_t(i)] : half_to_float(half[size_t(i)]);
}

namespace {

std::vector<std::string> json_list(const h5::File& f, const char* attr) {
  auto j = nlohmann::json::parse(f.attr_string("/", attr), nullptr, false);
  if (j.is_discarded() || !j.is_array()) throw Error(kExitDataErr, "malformed dataset", f.path(), std::string("attribute '") + attr + "' is not a JSON list");
  std::vector<std::string> v;
  for (const auto& e : j) {
    if (!e.is_string()) throw Error(kExitDataErr, "malformed dataset", f.path(), std::string("attribute '") + attr + "' is not a list of strings");
    v.push_back(e.get<std::string>());
  }
  return v;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ",") + e;
  return s;
}

}  // namespace

DatasetInfo check_dataset(const std::string& path, const std::vector<std::string>& channels,
                          const std::vector<std::string>& regions) {
  h5::File f = h5::File::open(path, {"dataset", true});
  DatasetInfo d;
  auto bad = [&](const std::string& why) { return Error(kExitDataErr, "dataset does not fit the model", path, why); };
  for (const char* a : {"channels", "region_order", "label_coding", "label_scheme"})
    if (!f.has_attr("/", a)) throw Error(kExitDataErr, "malformed dataset", path, std::string("no root attribute '") + a + "'");
  d.channels = json_list(f, "channels");
  d.regions = json_list(f, "region_order");
  d.label_scheme = f.attr_string("/", "label_scheme");
  if (d.channels != channels)
    throw bad(std::to_string(d.channels.size()) + " channels [" + join(d.channels) + "], the model takes " +
              std::to_string(channels.size()) + " [" + join(channels) + "]");
  if (d.regions != regions) throw bad("regions [" + join(d.regions) + "], the model predicts [" + join(regions) + "]");
  const std::string coding = f.attr_string("/", "label_coding");
  if (coding.rfind("bit 0 ET, bit 1 TC, bit 2 WT", 0) != 0)
    throw bad("label coding '" + coding + "' is not fedseg's region bits");
  if (d.label_scheme != "brats2021" && d.label_scheme != "brats2023")
    throw bad("label scheme '" + d.label_scheme + "' is not brats2021 or brats2023");
  d.num_train = f.has_attr("/", "num_train") ? f.attr_int("/", "num_train") : 0;
  d.num_val = f.has_attr("/", "num_val") ? f.attr_int("/", "num_val") : 0;
  return d;
}

std::vector<Case> load_cases(const std::string& path, const std::string& split, int64_t channels, int64_t regions,
                             int /*threads*/) {
  h5::File f = h5::File::open(path, {"dataset", true});
  std::vector<std::string> ids = f.exists("cases") ? f.children("cases") : std::vector<std::string>{};
  std::sort(ids.begin(), ids.end());
  std::vector<Case> out;
  for (const std::string& id : ids) {
    const std::string g = "cases/" + id;
    auto bad = [&](const std::string& why) { return Error(kExitDataErr, "malformed case '" + id + "' in", path, why); };
    std::string s = f.has_attr(g, "split") ? f.attr_string(g, "split") : "";
    if (!split.empty() && s != split) continue;
    if (!f.exists(g + "/image")) throw bad("no image");
    h5::TensorInfo ti = f.info(g + "/image");
    if (ti.shape.size() != 4 || int64_t(ti.shape[0]) != channels)
      throw bad("image shape " + h5::shape_str(ti.shape) + ", expected (" + std::to_string(channels) + ", Z, Y, X)");
    Case c;
    c.id = id;
    c.Z = int64_t(ti.shape[1]);
    c.Y = int64_t(ti.shape[2]);
    c.X = int64_t(ti.shape[3]);
    const int64_t n = c.Z * c.Y * c.X;
    if (n <= 0) throw bad("empty image");
    if (ti.dtype == h5::DType::f16) {
      c.half.resize(size_t(n * channels));
      f.read(g + "/image", h5::DType::f16, c.half.data(), c.half.size() * 2);
    } else {
      c.f32.resize(size_t(n * channels));
      f.read(g + "/image", h5::DType::f32, c.f32.data(), c.f32.size() * 4);
    }
    if (!f.exists(g + "/label")) {
      if (split == "train") throw bad("a training case without a label");
      out.push_back(std::move(c));
      continue;
    }
    h5::TensorInfo li = f.info(g + "/label");
    if (li.shape != h5::Shape{ti.shape[1], ti.shape[2], ti.shape[3]})
      throw bad("label shape " + h5::shape_str(li.shape) + " differs from the image's grid");
    c.label.resize(size_t(n));
    f.read(g + "/label", h5::DType::u8, c.label.data(), c.label.size());
    const uint8_t mask = uint8_t((1u << regions) - 1);
    c.fg.assign(size_t(regions), {});
    std::vector<int64_t> count(size_t(regions), 0);
    for (int64_t i = 0; i < n; ++i) {
      uint8_t l = c.label[size_t(i)];
      if (l & ~mask) throw bad("label value " + std::to_string(l) + " has bits beyond the " + std::to_string(regions) + " regions");
      for (int64_t r = 0; r < regions; ++r) count[size_t(r)] += (l >> r) & 1;
    }
    for (int64_t r = 0; r < regions; ++r) {
      // Every k-th voxel of the region, so that at most kMaxForeground are kept.
      const int64_t k = std::max<int64_t>(1, (count[size_t(r)] + int64_t(kMaxForeground) - 1) / int64_t(kMaxForeground));
      int64_t seen = 0;
      auto& v = c.fg[size_t(r)];
      v.reserve(size_t(std::min<int64_t>(count[size_t(r)], int64_t(kMaxForeground))));
      for (int64_t i = 0; i < n; ++i)
        if ((c.label[size_t(i)] >> r) & 1)
          if (seen++ % k == 0) v.push_back(i);
    }
    out.push_back(std::move(c));
  }
  if (out.empty())
    throw Error(kExitDataErr, "no " + (split.empty() ? std::string("cases") : split + " cases") + " in", path,
                split == "train" ? "nothing to train on (check fedseg-prep's --val-fraction)" : "the dataset is empty");
  return out;
}

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  auto sm = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  return sm(sm(sm(sm(seed) ^ a) ^ b) ^ c);
}

std::vector<int64_t> epoch_order(int64_t num_cases, int64_t ppc, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> v;
  v.reserve(size_t(num_cases * ppc));
  for (int64_t k = 0; k < ppc; ++k)
    for (int64_t i = 0; i < num_cases; ++i) v.push_back(i);
  std::mt19937_64 rng(mix_seed(seed, 0x65706f6368ull, uint64_t(epoch)));
  // Fisher-Yates with our own bounded draw: std::shuffle's use of the engine is
  // implementation-defined, and the order must not depend on the C++ library.
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng() % i)]);
  return v;
}

namespace {

// Uniform double in [0, 1) and integer in [lo, hi] from the engine directly.
struct Draw {
  std::mt19937_64 rng;
  explicit Draw(uint64_t s) : rng(s) {}
  double u() { return double(rng() >> 11) * (1.0 / 9007199254740992.0); }
  int64_t i(int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); }
  double normal() {  // Box-Muller
    double a = u(), b = u();
    return std::sqrt(-2.0 * std::log(1.0 - a)) * std::cos(6.283185307179586 * b);
  }
};

}  // namespace

void sample_patch(const Case& c, int64_t channels, int64_t regions, const SamplerOptions& o, uint64_t sample_seed,
                  float* image, float* target) {
  Draw d(sample_seed);
  const int64_t pz = o.patch[0], py = o.patch[1], px = o.patch[2];
  const int64_t dims[3] = {c.Z, c.Y, c.X}, P[3] = {pz, py, px};
  int64_t start[3];
  std::vector<int64_t> present;
  for (int64_t r = 0; r < int64_t(c.fg.size()); ++r)
    if (!c.fg[size_t(r)].empty()) present.push_back(r);
  const bool fg = d.u() < o.foreground_fraction && !present.empty();
  if (fg) {
    const auto& list = c.fg[size_t(present[size_t(d.i(0, int64_t(present.size()) - 1))])];
    int64_t v = list[size_t(d.i(0, int64_t(list.size()) - 1))];
    const int64_t centre[3] = {v / (c.Y * c.X), (v / c.X) % c.Y, v % c.X};
    for (int a = 0; a < 3; ++a) {
      int64_t s = centre[a] - P[a] / 2;
      if (dims[a] >= P[a]) s = std::clamp<int64_t>(s, 0, dims[a] - P[a]);
      else s = -(P[a] - dims[a]) / 2;
      start[a] = s;
    }
  } else {
    for (int a = 0; a < 3; ++a) start[a] = dims[a] >= P[a] ? d.i(0, dims[a] - P[a]) : d.i(dims[a] - P[a], 0);
  }
  bool flip[3] = {false, false, false};
  int k = 0;
  std::vector<float> scale(size_t(channels), 1.f), shift(size_t(channels), 0.f);
  double sigma = 0;
  if (o.augment) {
    for (auto& f : flip) f = d.u() < 0.5;
    if (py == px) k = int(d.i(0, 3));
    for (int64_t ch = 0; ch < channels; ++ch) {
      scale[size_t(ch)] = float(0.9 + 0.2 * d.u());
      shift[size_t(ch)] = float(-0.1 + 0.2 * d.u());
    }
    if (d.u() < 0.15) sigma = 0.1 * d.u();
  }
  const int64_t pn = pz * py * px;
  int64_t o_idx = 0;
  for (int64_t oz = 0; oz < pz; ++oz) {
    const int64_t vz = start[0] + (flip[0] ? pz - 1 - oz : oz);
    for (int64_t oy = 0; oy < py; ++oy) {
      for (int64_t ox = 0; ox < px; ++ox, ++o_idx) {
        const int64_t fy = flip[1] ? py - 1 - oy : oy, fx = flip[2] ? px - 1 - ox : ox;
        int64_t qy = fy, qx = fx;
        switch (k) {  // rotation by k·90° in the (Y, X) plane (py == px)
          case 1: qy = py - 1 - fx; qx = fy; break;
          case 2: qy = py - 1 - fy; qx = px - 1 - fx; break;
          case 3: qy = fx; qx = px - 1 - fy; break;
          default: break;
        }
        const int64_t vy = start[1] + qy, vx = start[2] + qx;
        const bool inside = vz >= 0 && vz < c.Z && vy >= 0 && vy < c.Y && vx >= 0 && vx < c.X;
        const int64_t src = inside ? (vz * c.Y + vy) * c.X + vx : 0;
        for (int64_t ch = 0; ch < channels; ++ch) {
          float v = inside ? c.value(ch, src) : 0.f;
          if (v != 0.f) v = v * scale[size_t(ch)] + shift[size_t(ch)];
          image[ch * pn + o_idx] = v;
        }
        const uint8_t l = inside && !c.label.empty() ? c.label[size_t(src)] : 0;
        for (int64_t r = 0; r < regions; ++r) target[r * pn + o_idx] = float((l >> r) & 1);
      }
    }
  }
  if (sigma > 0)
    for (int64_t i = 0; i < channels * pn; ++i)
      if (image[i] != 0.f) image[i] += float(sigma * d.normal());
}

}  // namespace fedseg::nn
