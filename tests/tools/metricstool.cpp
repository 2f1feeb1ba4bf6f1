// fedseg-metricstool (tests and benchmarks only, not installed): scores pairs of raw
// uint8 volumes with fedseg::metrics and prints the results as JSON on stdout, so that
// tests/interop/metrics_scipy.sh and bench/hd95.sh can compare them with scipy.
//   fedseg-metricstool MANIFEST.json [--repeat N] [--full-grid] [--distances] [--threads N]
// MANIFEST: {"raw": "pairs.u8",                       (relative to the manifest's folder)
//            "cases": [{"shape": [Z, Y, X], "spacing": [sz, sy, sx],
//                       "pred_offset": BYTES, "ref_offset": BYTES,
//                       "pred_coding": "binary", "ref_coding": "binary"}, ...]}
// Each volume is Z*Y*X bytes in C order (x fastest) at its offset in the raw file. A
// coding of "binary" (the default) scores the volumes as masks (voxel != 0) with
// binary_metrics; "regions", "brats2021" or "brats2023" score the three BraTS regions
// with region_metrics and print {"ET": {...}, "TC": {...}, "WT": {...}}.
// Output: {"cases": [...], "repeat": N, "seconds": best, "seconds_median": median},
// seconds being the time of scoring all cases once, files already in memory.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>

#include "core/atomic_file.h"
#include "core/tool.h"
#include "metrics/metrics.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string manifest;
  int repeat = 1;
  bool full_grid = false;
  bool distances = false;
};

struct Case {
  metrics::Shape shape{};
  metrics::Spacing spacing{};
  const uint8_t* pred = nullptr;
  const uint8_t* ref = nullptr;
  bool binary = true;
  metrics::LabelCoding pred_coding = metrics::LabelCoding::region_bits;
  metrics::LabelCoding ref_coding = metrics::LabelCoding::region_bits;
};

nlohmann::json to_json(const metrics::BinaryMetrics& m) {
  return {{"tp", m.tp},
          {"fp", m.fp},
          {"fn", m.fn},
          {"tn", m.tn},
          {"dice", m.dice},
          {"hd95", m.hd95_pooled},
          {"hd95_max_directed", m.hd95_max_directed},
          {"sensitivity", m.sensitivity},
          {"specificity", m.specificity},
          {"volume_pred_ml", m.volume_pred_ml},
          {"volume_ref_ml", m.volume_ref_ml},
          {"surface_pred", m.surface_pred},
          {"surface_ref", m.surface_ref}};
}

std::string dirname_of(const std::string& p) {
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

int run_manifest(const Options& o, const ToolContext& ctx) {
  const nlohmann::json m = nlohmann::json::parse(read_file(o.manifest));
  std::string raw_path = m.at("raw").get<std::string>();
  if (raw_path.empty() || raw_path[0] != '/') raw_path = dirname_of(o.manifest) + "/" + raw_path;
  const std::string raw = read_file(raw_path, size_t(1) << 34);
  const auto* base = reinterpret_cast<const uint8_t*>(raw.data());

  std::vector<Case> cases;
  for (const auto& j : m.at("cases")) {
    Case c;
    auto shape = j.at("shape").get<std::vector<int64_t>>();
    auto spacing = j.value("spacing", std::vector<double>{1, 1, 1});
    if (shape.size() != 3 || spacing.size() != 3) throw Error(kExitDataErr, "shape and spacing need 3 values", o.manifest);
    std::copy(shape.begin(), shape.end(), c.shape.begin());
    std::copy(spacing.begin(), spacing.end(), c.spacing.begin());
    const uint64_t n = uint64_t(c.shape[0] * c.shape[1] * c.shape[2]);
    const uint64_t po = j.at("pred_offset").get<uint64_t>(), ro = j.at("ref_offset").get<uint64_t>();
    if (po + n > raw.size() || ro + n > raw.size()) throw Error(kExitDataErr, "volume past the end", raw_path);
    c.pred = base + po;
    c.ref = base + ro;
    const std::string pc = j.value("pred_coding", std::string("binary")), rc = j.value("ref_coding", std::string("binary"));
    c.binary = pc == "binary" && rc == "binary";
    if (!c.binary) {
      if (pc == "binary" || rc == "binary") throw Error(kExitUsage, "binary cannot be mixed with a label coding", o.manifest);
      c.pred_coding = metrics::label_coding_from_name(pc);
      c.ref_coding = metrics::label_coding_from_name(rc);
    }
    cases.push_back(c);
  }

  metrics::Options mo;
  mo.threads = ctx.threads();
  mo.crop = !o.full_grid;
  nlohmann::json out_cases = nlohmann::json::array();
  std::vector<double> seconds;
  for (int rep = 0; rep < std::max(1, o.repeat); ++rep) {
    nlohmann::json js = nlohmann::json::array();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<metrics::BinaryMetrics> bin;
    std::vector<metrics::RegionMetrics> reg;
    for (const Case& c : cases) {
      if (c.binary)
        bin.push_back(metrics::binary_metrics(c.pred, c.ref, c.shape, c.spacing, mo));
      else
        reg.push_back(metrics::region_metrics(c.pred, c.pred_coding, c.ref, c.ref_coding, c.shape, c.spacing, mo));
    }
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (rep > 0) continue;
    size_t ib = 0, ir = 0;
    for (const Case& c : cases) {
      nlohmann::json jc;
      if (c.binary) {
        jc = to_json(bin[ib++]);
        if (o.distances) {
          const auto d = metrics::surface_distances(c.pred, c.ref, c.shape, c.spacing, mo);
          jc["pred_to_ref"] = d.pred_to_ref;
          jc["ref_to_pred"] = d.ref_to_pred;
        }
      } else {
        const auto& r = reg[ir++];
        for (size_t k = 0; k < 3; ++k) jc[metrics::kRegionNames[k]] = to_json(r[k]);
      }
      out_cases.push_back(std::move(jc));
    }
  }
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  nlohmann::json out{{"cases", std::move(out_cases)},
                     {"repeat", seconds.size()},
                     {"threads", mo.threads},
                     {"seconds", sorted.front()},
                     {"seconds_median", sorted[sorted.size() / 2]}};
  std::cout << out.dump() << "\n";
  return kExitOk;
}

}  // namespace

const ToolDef& metricstool() {
  static const ToolDef def{
      {"metricstool", "score raw uint8 volumes with fedseg::metrics (tests only)", "MANIFEST.json",
       "For tests and benchmarks.", {}, {}, {}, "", {}},
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("manifest", o->manifest, "JSON manifest of the cases")->required();
        app.add_option("--repeat", o->repeat, "score all cases N times; seconds = the best run");
        app.add_flag("--full-grid", o->full_grid, "work on the whole grid instead of the union bounding box");
        app.add_flag("--distances", o->distances, "also print the directed surface distances of binary cases");
        return [o](const ToolContext& ctx) { return run_manifest(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
