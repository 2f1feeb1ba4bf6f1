// fedseg-eval: BraTS metrics of a model on a dataset (its val split by default), or of
// a folder of prediction NIfTIs against a cohort's label NIfTIs (no model).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include <torch/torch.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/tool.h"
#include "h5/tensor_file.h"
#include "metrics/metrics.h"
#include "nifti/nifti.h"
#include "nn/data.h"
#include "nn/infer.h"
#include "nn/model_io.h"
#include "prep/prep.h"

namespace fedseg::tools {
namespace {

using nlohmann::json;

struct Options {
  std::string model, dataset, out, federation, aggregator_pub, split = "val", site, hd95 = "pooled";
  std::string predictions, labels, scheme = "brats2021", device = "cpu";
  std::vector<int64_t> patch;
  double overlap = 0.5;
  bool mirror = false, unverified = false;
};

struct CaseResult {
  std::string id;
  metrics::RegionMetrics m;
};

json stats(std::vector<double> v) {
  if (v.empty()) return {{"mean", nullptr}, {"median", nullptr}, {"std", nullptr}};
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  return {{"mean", mean}, {"median", metrics::percentile(v, 50)}, {"std", std::sqrt(var / double(v.size()))}};
}

json summary(const std::vector<CaseResult>& rs, metrics::Hd95Convention conv) {
  json regions = json::object();
  for (size_t r = 0; r < 3; ++r) {
    std::vector<double> d, h, se, sp;
    for (const auto& c : rs) {
      d.push_back(c.m[r].dice);
      h.push_back(c.m[r].hd95(conv));
      se.push_back(c.m[r].sensitivity);
      sp.push_back(c.m[r].specificity);
    }
    regions[metrics::kRegionNames[r]] = {{"dice", stats(d)}, {"hd95", stats(h)}, {"sensitivity", stats(se)}, {"specificity", stats(sp)}};
  }
  return {{"cases", rs.size()}, {"hd95_convention", metrics::hd95_convention_name(conv)}, {"regions", regions}};
}

std::string csv(const std::vector<CaseResult>& rs, metrics::Hd95Convention conv) {
  std::ostringstream s;
  s.precision(17);
  s << "id,region,dice,hd95,sensitivity,specificity,volume_pred_ml,volume_ref_ml\n";
  for (const auto& c : rs)
    for (size_t r = 0; r < 3; ++r) {
      const auto& m = c.m[r];
      s << c.id << "," << metrics::kRegionNames[r] << "," << m.dice << "," << m.hd95(conv) << "," << m.sensitivity << ","
        << m.specificity << "," << m.volume_pred_ml << "," << m.volume_ref_ml << "\n";
    }
  return s.str();
}

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

// Writes the results as -o asks: .csv (+ .summary.json beside it), .json, or .h5 (kind metrics).
void write_outputs(const Options& o, const ToolContext& ctx, const std::vector<CaseResult>& rs, const json& sum,
                   const json& bound) {
  const auto conv = metrics::hd95_convention_from_name(o.hd95);
  if (o.out.empty()) return;
  if (ends_with(o.out, ".csv")) {
    const std::string js = o.out.substr(0, o.out.size() - 4) + ".summary.json";
    AtomicFile a(o.out, ctx.force()), b(js, ctx.force());
    const std::string c = csv(rs, conv), j = sum.dump(2) + "\n";
    a.write(c.data(), c.size());
    b.write(j.data(), j.size());
    a.commit();
    b.commit();
  } else if (ends_with(o.out, ".json")) {
    json cases = json::array();
    for (const auto& c : rs) {
      json reg = json::object();
      for (size_t r = 0; r < 3; ++r)
        reg[metrics::kRegionNames[r]] = {{"dice", c.m[r].dice}, {"hd95", c.m[r].hd95(conv)}, {"sensitivity", c.m[r].sensitivity},
                                        {"specificity", c.m[r].specificity}, {"volume_pred_ml", c.m[r].volume_pred_ml},
                                        {"volume_ref_ml", c.m[r].volume_ref_ml}};
      cases.push_back({{"id", c.id}, {"regions", reg}});
    }
    write_file_atomic(o.out, json{{"summary", sum}, {"cases", cases}}.dump(2) + "\n", ctx.force());
  } else if (ends_with(o.out, ".h5")) {
    if (o.site.empty()) throw Error(kExitUsage, "a metrics file needs --site", o.out, "it is packed and sent as that site's");
    h5::Output out(o.out, "metrics", "fedseg-eval", json{{"split", o.split}, {"hd95", o.hd95}}.dump(), ctx.force());
    h5::File& f = out.file();
    for (auto it = bound.begin(); it != bound.end(); ++it) {
      if (it.value().is_string()) f.set_attr("/", it.key(), it.value().get<std::string>());
      else f.set_attr("/", it.key(), it.value().get<int64_t>());
    }
    f.set_attr("/", "site", o.site);
    f.set_attr("/", "num_cases", int64_t(rs.size()));
    f.set_attr("/", "summary", sum.dump());
    json ids = json::array();
    for (const auto& c : rs) ids.push_back(c.id);
    f.set_attr("/", "case_ids", ids.dump());
    f.set_attr("/", "region_order", json(std::vector<std::string>{"ET", "TC", "WT"}).dump());
    const h5::Shape shape{uint64_t(rs.size()), 3};
    std::vector<double> d, h, se, sp, vp, vr;
    for (const auto& c : rs)
      for (size_t r = 0; r < 3; ++r) {
        d.push_back(c.m[r].dice);
        h.push_back(c.m[r].hd95(conv));
        se.push_back(c.m[r].sensitivity);
        sp.push_back(c.m[r].specificity);
        vp.push_back(c.m[r].volume_pred_ml);
        vr.push_back(c.m[r].volume_ref_ml);
      }
    if (!rs.empty()) {
      f.write("cases/dice", shape, d.data());
      f.write("cases/hd95", shape, h.data());
      f.write("cases/sensitivity", shape, se.data());
      f.write("cases/specificity", shape, sp.data());
      f.write("cases/volume_pred_ml", shape, vp.data());
      f.write("cases/volume_ref_ml", shape, vr.data());
    }
    out.commit();
  } else {
    throw Error(kExitUsage, "unknown output type", o.out, "use .csv, .json or .h5");
  }
}

void report(const ToolContext& ctx, const std::vector<CaseResult>& rs, const json& sum, int failed) {
  if (ctx.json()) {
    ctx.emit_json({{"summary", sum}, {"failed", failed}});
    return;
  }
  char line[200];
  std::cout << "cases " << rs.size() << (failed ? " (" + std::to_string(failed) + " failed)" : "") << "\n";
  for (const char* r : metrics::kRegionNames) {
    const json& s = sum["regions"][r];
    auto v = [](const json& j) { return j.is_null() ? NAN : j.get<double>(); };
    std::snprintf(line, sizeof line, "%-3s Dice %.4f (median %.4f, std %.4f)  HD95 %.2f (median %.2f) mm\n", r,
                  v(s["dice"]["mean"]), v(s["dice"]["median"]), v(s["dice"]["std"]), v(s["hd95"]["mean"]), v(s["hd95"]["median"]));
    std::cout << line;
  }
}

int run_folders(const Options& o, const ToolContext& ctx) {
  const auto conv = metrics::hd95_convention_from_name(o.hd95);
  const auto coding = metrics::label_coding_from_name(o.scheme);
  std::vector<prep::CaseFiles> cases = prep::find_cases(o.labels);
  std::vector<CaseResult> rs;
  int failed = 0;
  metrics::Options mo;
  mo.threads = ctx.threads();
  for (const auto& cf : cases) {
    if (cf.label.empty()) continue;
    const std::string pred = o.predictions + "/" + cf.id + ".nii.gz";
    try {
      if (!path_exists(pred)) throw Error(kExitNoInput, "no prediction for case '" + cf.id + "'", pred);
      nifti::Image p = nifti::read(pred), l = nifti::read(cf.label);
      if (p.shape.size() < 3 || p.shape != l.shape)
        throw Error(kExitDataErr, "prediction and label grids differ", pred, "shapes do not match " + cf.label);
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 4; ++j)
          if (std::fabs(p.affine[size_t(i)][size_t(j)] - l.affine[size_t(i)][size_t(j)]) > 1e-3)
            throw Error(kExitDataErr, "prediction and label grids differ", pred, "affines do not match " + cf.label);
      std::vector<uint8_t> pv = p.to_labels(pred), lv = l.to_labels(cf.label);
      const metrics::Shape sh{p.shape[2], p.shape[1], p.shape[0]};
      const metrics::Spacing sp{l.header.pixdim[3], l.header.pixdim[2], l.header.pixdim[1]};
      rs.push_back({cf.id, metrics::brats_region_metrics(pv.data(), lv.data(), coding, sh, sp, mo)});
    } catch (const Error& e) {
      if (e.code() != kExitDataErr && e.code() != kExitNoInput) throw;
      ++failed;
      log::error(e.message());
    }
  }
  if (rs.empty() && failed == 0) throw Error(kExitNoInput, "no labelled case in", o.labels);
  json sum = summary(rs, conv);
  write_outputs(o, ctx, rs, sum, json::object({{"federation", "-"}}));
  report(ctx, rs, sum, failed);
  return failed ? kExitDataErr : kExitOk;
}

int run_model(const Options& o, const ToolContext& ctx) {
  const auto conv = metrics::hd95_convention_from_name(o.hd95);
  nn::ModelFile mf = nn::load_checked_model(o.model, o.federation, o.aggregator_pub, o.unverified);
  torch::set_num_threads(ctx.threads());
  nn::check_dataset(o.dataset, mf.arch.channels, mf.arch.regions);
  std::vector<nn::Case> cases =
      nn::load_cases(o.dataset, o.split == "all" ? "" : o.split, mf.arch.in_channels, mf.arch.out_channels);
  h5::File ds = h5::File::open(o.dataset, {"dataset", true});
  nn::InferOptions io;
  io.overlap = o.overlap;
  io.mirror = o.mirror;
  io.device = o.device;
  const int64_t p = o.patch.empty() ? (mf.arch.depth >= 4 ? 128 : 64) : o.patch[0];
  io.patch = o.patch.size() == 3 ? std::array<int64_t, 3>{o.patch[0], o.patch[1], o.patch[2]} : std::array<int64_t, 3>{p, p, p};
  for (int64_t v : io.patch)
    if (v % mf.arch.divisor() != 0)
      throw Error(kExitUsage, "invalid --patch", std::to_string(v), "must be a multiple of " + std::to_string(mf.arch.divisor()));
  metrics::Options mo;
  mo.threads = ctx.threads();
  std::vector<CaseResult> rs;
  Progress progress("evaluating", cases.size());
  for (auto& c : cases) {
    if (c.label.empty()) continue;  // no reference
    const size_t n = size_t(c.Z * c.Y * c.X);
    torch::Tensor img = torch::empty({4, c.Z, c.Y, c.X}, torch::kFloat32);
    float* ip = img.data_ptr<float>();
    for (int64_t ch = 0; ch < 4; ++ch)
      for (size_t i = 0; i < n; ++i) ip[size_t(ch) * n + i] = c.value(ch, int64_t(i));
    torch::Tensor prob = nn::predict_volume(mf.model, img, io);
    std::vector<uint8_t> pred(n, 0);
    const float* pp = prob.data_ptr<float>();
    for (size_t r = 0; r < 3; ++r)
      for (size_t i = 0; i < n; ++i)
        if (pp[r * n + i] > 0.5f) pred[i] |= uint8_t(1u << r);
    std::vector<double> sp = ds.attr("cases/" + c.id, "spacing").index() == 4
                                 ? std::get<std::vector<double>>(ds.attr("cases/" + c.id, "spacing"))
                                 : std::vector<double>{1, 1, 1};
    const metrics::Spacing spacing{sp.size() == 3 ? sp[2] : 1, sp.size() == 3 ? sp[1] : 1, sp.size() == 3 ? sp[0] : 1};
    rs.push_back({c.id, metrics::region_metrics(pred.data(), c.label.data(), {c.Z, c.Y, c.X}, spacing, mo)});
    c.half.clear();
    c.half.shrink_to_fit();
    c.f32.clear();
    c.f32.shrink_to_fit();
    progress.add();
  }
  if (rs.empty()) throw Error(kExitDataErr, "no labelled " + o.split + " case in", o.dataset);
  json sum = summary(rs, conv);
  sum["split"] = o.split;
  sum["model_round"] = mf.round;
  const std::string model_sha = sha256_file(o.model);
  json bound{{"federation", mf.federation.empty() ? std::string("-") : mf.federation},
             {"round", mf.round < 0 ? int64_t(0) : mf.round},
             {"base_sha256", model_sha}};
  write_outputs(o, ctx, rs, sum, bound);
  report(ctx, rs, sum, 0);
  return kExitOk;
}

int run(const Options& o, const ToolContext& ctx) {
  metrics::hd95_convention_from_name(o.hd95);
  if (!o.predictions.empty() || !o.labels.empty()) {
    if (o.predictions.empty() || o.labels.empty()) throw Error(kExitUsage, "--predictions and --labels go together");
    if (!o.model.empty()) throw Error(kExitUsage, "--predictions scores files: no MODEL.h5");
    return run_folders(o, ctx);
  }
  if (o.model.empty() || o.dataset.empty()) throw Error(kExitUsage, "give MODEL.h5 DATASET.h5, or --predictions and --labels");
  if (o.split != "val" && o.split != "train" && o.split != "all") throw Error(kExitUsage, "invalid --split", o.split, "use val, train or all");
  return run_model(o, ctx);
}

}  // namespace

const ToolDef& eval() {
  static const ToolDef def{
      {
          "eval",
          "BraTS metrics of a model on a dataset, or of prediction files against labels",
          "MODEL.h5 DATASET.h5 [-o METRICS.csv|.json|.h5] [--federation federation.json | --unverified] | "
          "--predictions PRED_DIR --labels COHORT_DIR",
          "With a model: checks its signature (--federation, as fedseg-predict), loads the dataset's --split (val "
          "by default; train or all), predicts every labelled case by sliding windows in the dataset's grid, and "
          "scores the three regions (WT, TC, ET): Dice (both masks empty 1, one empty 0), HD95, sensitivity, "
          "specificity and volumes.\n\n"
          "HD95 (--hd95): pooled (default; the BraTS <= 2021 / MedPy convention: surface = mask XOR erosion with "
          "6-connectivity, the directed distances of both directions pooled, 95th percentile with linear "
          "interpolation, spacing from the data; both empty 0, one empty 373.12866) or max-directed (MONAI / "
          "BraTS 2023: the larger of the two directed 95th percentiles; one empty 374). The distance transform is "
          "exact and linear-time, restricted to the masks' bounding box, over --threads threads.\n\n"
          "Outputs: a summary on stdout (mean, median and std per region and metric, the case count; --json for "
          "a document); with -o METRICS.csv the per-case table (id, region, dice, hd95, sensitivity, specificity, "
          "volume_pred_ml, volume_ref_ml) and METRICS.summary.json beside it; -o METRICS.json both in one "
          "document; -o METRICS.h5 a metrics file (kind metrics, with federation, round and base_sha256 of the "
          "model and --site) that fedseg-pack packs for the aggregator.\n\n"
          "Without a model, --predictions PRED_DIR --labels COHORT_DIR scores PRED_DIR/<ID>.nii.gz against each "
          "labelled case of the cohort (BraTS labels of --scheme, the same grid and affine), as the BraTS "
          "evaluation scripts do. A case without a prediction or with another grid is reported and skipped (exit "
          "65).",
          {{"fedseg-eval exchange/rounds/3/global.h5 site.h5 --federation exchange/federation.json -o val.csv",
            "Round 3's model on this site's validation cases."},
           {"fedseg-eval global.h5 site.h5 --federation federation.json --site hospital-a -o metrics.h5",
            "A metrics file to pack and send to the aggregator."},
           {"fedseg-eval --predictions out --labels /data/cohort --hd95 max-directed --json",
            "Score a folder of segmentations, BraTS 2023 style HD95."}},
          {},
          {{64, "invalid options"},
           {65, "a bad model or dataset, a dataset that does not fit the model, or (folders) a case that failed"},
           {66, "an input is missing"},
           {69, "--device cuda without CUDA"},
           {73, "an output exists (use --force) or cannot be written"}},
          "A document {\"tool\", \"version\", \"summary\": {\"cases\", \"hd95_convention\", \"regions\": {ET|TC|WT: "
          "{dice|hd95|sensitivity|specificity: {mean, median, std}}}, \"split\", \"model_round\"}, \"failed\"}.",
          {"fedseg-predict", "fedseg-train", "fedseg-pack", "fedseg-report"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("MODEL", o->model, "the model")->type_name("MODEL.h5");
        app.add_option("DATASET", o->dataset, "a dataset from fedseg-prep")->type_name("DATASET.h5");
        app.add_option("-o,--output", o->out, "per-case metrics: .csv, .json or .h5")->type_name("METRICS");
        app.add_option("--federation", o->federation, "check the model's signature against this plan")->type_name("federation.json");
        app.add_option("--aggregator-pub", o->aggregator_pub, "pinned aggregator public folder")->type_name("PUB_DIR");
        app.add_flag("--unverified", o->unverified, "load the model without checking a signature");
        app.add_option("--split", o->split, "val, train or all")->capture_default_str();
        app.add_option("--site", o->site, "this site's id (for a metrics .h5)")->type_name("NAME");
        app.add_option("--hd95", o->hd95, "pooled (BraTS <= 2021, MedPy) or max-directed (MONAI, BraTS 2023)")->capture_default_str();
        app.add_option("--predictions", o->predictions, "score these <ID>.nii.gz files (no model)")->type_name("PRED_DIR");
        app.add_option("--labels", o->labels, "the cohort holding the reference labels")->type_name("COHORT_DIR");
        app.add_option("--scheme", o->scheme, "label values of the files: brats2021 or brats2023")->capture_default_str();
        app.add_option("--patch", o->patch, "window size (default 128 for depth 4, else 64)")->delimiter(',')->type_name("SIZE");
        app.add_option("--overlap", o->overlap, "overlap of neighbouring windows")->capture_default_str();
        app.add_flag("--mirror", o->mirror, "average over the 8 axis flips");
        app.add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
