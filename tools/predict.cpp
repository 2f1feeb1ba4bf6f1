// fedseg-predict: a model × NIfTI scans → one BraTS segmentation per case, in the
// case's own grid and affine (the crop, resampling and reorientation of prep undone).
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <iostream>

#include <torch/torch.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/tool.h"
#include "fed/exchange.h"
#include "nifti/nifti.h"
#include "nn/infer.h"
#include "nn/model_io.h"
#include "prep/prep.h"

namespace fedseg::tools {
namespace {

using nlohmann::json;

struct Options {
  std::string model, input, out, federation, aggregator_pub, scheme = "brats2021", device = "cpu";
  std::vector<int64_t> patch;
  double overlap = 0.5;
  bool mirror = false, probabilities = false, unverified = false, oracle = false;
};

// The cases of a cohort folder, a CSV, or a single case folder.
std::vector<prep::CaseFiles> cases_of(const std::string& input) {
  if (is_directory(input)) {
    // A case folder holds the NIfTI files itself.
    std::string dir = input;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    bool has_nifti = false;
    for (const char* suffix : {"_t1.nii.gz", "_flair.nii.gz", "-t1n.nii.gz", "-t2f.nii.gz", "_t1.nii", "_flair.nii"})
      has_nifti |= path_exists(dir + "/" + basename_of(dir) + suffix);
    if (has_nifti) {
      std::vector<prep::CaseFiles> all = prep::find_cases(dirname_of(dir));
      for (auto& c : all)
        if (c.id == basename_of(dir)) return {c};
      throw Error(kExitNoInput, "no case found in", input);
    }
  }
  return prep::find_cases(input);
}

using Mat4 = std::array<std::array<double, 4>, 4>;

Mat4 from_flat(const std::vector<double>& v, const std::string& what) {
  if (v.size() != 16) throw Error(kExitSoftware, "bad geometry from preprocessing", what);
  Mat4 m{};
  for (int i = 0; i < 16; ++i) m[size_t(i / 4)][size_t(i % 4)] = v[size_t(i)];
  return m;
}

Mat4 inverse(Mat4 a) {
  Mat4 inv{};
  for (int i = 0; i < 4; ++i) inv[size_t(i)][size_t(i)] = 1;
  for (int c = 0; c < 4; ++c) {
    int p = c;
    for (int r = c + 1; r < 4; ++r)
      if (std::fabs(a[size_t(r)][size_t(c)]) > std::fabs(a[size_t(p)][size_t(c)])) p = r;
    std::swap(a[size_t(c)], a[size_t(p)]);
    std::swap(inv[size_t(c)], inv[size_t(p)]);
    const double d = a[size_t(c)][size_t(c)];
    if (std::fabs(d) < 1e-12) throw Error(kExitDataErr, "singular geometry", {}, "cannot map the prediction back");
    for (int j = 0; j < 4; ++j) {
      a[size_t(c)][size_t(j)] /= d;
      inv[size_t(c)][size_t(j)] /= d;
    }
    for (int r = 0; r < 4; ++r)
      if (r != c) {
        const double f = a[size_t(r)][size_t(c)];
        for (int j = 0; j < 4; ++j) {
          a[size_t(r)][size_t(j)] -= f * a[size_t(c)][size_t(j)];
          inv[size_t(r)][size_t(j)] -= f * inv[size_t(c)][size_t(j)];
        }
      }
  }
  return inv;
}

// Maps stored-grid values to the original grid by nearest neighbour: original voxel
// o takes the stored voxel round(T^-1 o), 0 (or `fill`) outside the stored crop.
template <class T>
void to_original(const T* stored, const std::array<int64_t, 3>& sshape, const Mat4& T_so,
                 const std::vector<int64_t>& oshape, T* out, size_t channels = 1) {
  const Mat4 inv = inverse(T_so);
  const int64_t ni = oshape[0], nj = oshape[1], nk = oshape[2];
  const int64_t X = sshape[0], Y = sshape[1], Z = sshape[2];
  const size_t sn = size_t(X * Y * Z), on = size_t(ni * nj * nk);
  for (int64_t k = 0; k < nk; ++k)
    for (int64_t j = 0; j < nj; ++j)
      for (int64_t i = 0; i < ni; ++i) {
        const double o[4] = {double(i), double(j), double(k), 1};
        int64_t s[3];
        for (int a = 0; a < 3; ++a)
          s[a] = int64_t(std::floor(inv[size_t(a)][0] * o[0] + inv[size_t(a)][1] * o[1] + inv[size_t(a)][2] * o[2] +
                                    inv[size_t(a)][3] + 0.5));
        const size_t oi = size_t((k * nj + j) * ni + i);
        const bool in = s[0] >= 0 && s[0] < X && s[1] >= 0 && s[1] < Y && s[2] >= 0 && s[2] < Z;
        const size_t si = in ? size_t((s[2] * Y + s[1]) * X + s[0]) : 0;
        for (size_t c = 0; c < channels; ++c) out[c * on + oi] = in ? stored[c * sn + si] : T(0);
      }
}

int run(const Options& opts, const ToolContext& ctx) {
  Options o = opts;
  if (o.oracle && o.input.empty()) std::swap(o.model, o.input);  // --oracle COHORT: no model
  if (o.input.empty()) throw Error(kExitUsage, "no input", {}, "give MODEL.h5 and a cohort, case folder or CSV");
  if (o.scheme != "brats2021" && o.scheme != "brats2023") throw Error(kExitUsage, "invalid --scheme", o.scheme);
  const bool b23 = o.scheme == "brats2023";
  nn::ModelFile mf;
  if (!o.oracle) {
    if (o.model.empty()) throw Error(kExitUsage, "no model", {}, "give MODEL.h5 (or --oracle)");
    mf = nn::load_checked_model(o.model, o.federation, o.aggregator_pub, o.unverified);
    torch::set_num_threads(ctx.threads());
  }
  std::vector<prep::CaseFiles> cases = cases_of(o.input);
  fed::make_dirs(o.out);
  prep::Options po;
  po.scheme = prep::scheme_from_name(o.scheme);
  po.float16 = false;
  po.require_label = o.oracle;
  nn::InferOptions io;
  io.overlap = o.overlap;
  io.mirror = o.mirror;
  io.device = o.device;
  if (!o.patch.empty()) {
    if (o.patch.size() == 1) io.patch = {o.patch[0], o.patch[0], o.patch[0]};
    else if (o.patch.size() == 3) io.patch = {o.patch[0], o.patch[1], o.patch[2]};
    else throw Error(kExitUsage, "invalid --patch", {}, "one size or Z,Y,X");
  } else if (!o.oracle) {
    const int64_t p = mf.arch.depth >= 4 ? 128 : 64;
    io.patch = {p, p, p};
  }
  if (!o.oracle)
    for (int64_t p : io.patch)
      if (p % mf.arch.divisor() != 0)
        throw Error(kExitUsage, "invalid --patch", std::to_string(p), "must be a multiple of " + std::to_string(mf.arch.divisor()));
  if (!(o.overlap >= 0 && o.overlap < 1)) throw Error(kExitUsage, "invalid --overlap", std::to_string(o.overlap), "use [0, 1)");

  json results = json::array();
  int failed = 0;
  Progress progress("predicting", cases.size());
  for (const auto& cf : cases) {
    auto t0 = std::chrono::steady_clock::now();
    const std::string out_path = o.out + "/" + cf.id + ".nii.gz";
    try {
      if (!cf.problem.empty()) throw Error(kExitDataErr, "unusable case '" + cf.id + "'", {}, cf.problem);
      if (path_exists(out_path) && !ctx.force()) {  // done by an earlier run
        results.push_back({{"id", cf.id}, {"status", "exists"}, {"output", out_path}});
        progress.add();
        continue;
      }
      prep::Case c = prep::process_case(cf, {}, po);
      const std::array<int64_t, 3> s = c.shape;  // x, y, z
      const size_t n = size_t(s[0] * s[1] * s[2]);
      std::vector<uint8_t> labels(n);
      torch::Tensor prob;
      if (o.oracle) {
        for (size_t i = 0; i < n; ++i) labels[i] = nn::region_bits_to_label(c.label[i], b23);
      } else {
        torch::Tensor img = torch::from_blob(c.image.data(), {4, s[2], s[1], s[0]}, torch::kFloat32).clone();
        prob = nn::predict_volume(mf.model, img, io);
        nn::regions_to_labels(prob.data_ptr<float>(), n, b23, labels.data());
      }
      std::vector<int64_t> oshape = c.attrs["original_shape"].get<std::vector<int64_t>>();
      if (oshape.size() < 3) throw Error(kExitSoftware, "bad original shape", cf.id);
      oshape.resize(3);
      const Mat4 T = from_flat(c.attrs["to_original"].get<std::vector<double>>(), "to_original");
      const Mat4 A = from_flat(c.attrs["original_affine"].get<std::vector<double>>(), "original_affine");
      nifti::Affine aff{};
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) aff[size_t(i)][size_t(j)] = A[size_t(i)][size_t(j)];
      nifti::Image seg = nifti::make_image(oshape, nifti::DataType::u8, aff, 1);
      seg.raw.resize(size_t(oshape[0] * oshape[1] * oshape[2]));
      to_original(labels.data(), s, T, oshape, seg.raw.data());
      seg.header.descrip = "fedseg-predict " + o.scheme;
      nifti::write(out_path, seg, ctx.force());
      json r{{"id", cf.id}, {"status", "ok"}, {"output", out_path},
             {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
      if (o.probabilities && prob.defined()) {
        std::vector<int64_t> pshape{oshape[0], oshape[1], oshape[2], 3};
        nifti::Image pm = nifti::make_image(pshape, nifti::DataType::f32, aff, 1);
        pm.raw.resize(size_t(oshape[0] * oshape[1] * oshape[2]) * 3 * 4);
        to_original(prob.data_ptr<float>(), s, T, oshape, reinterpret_cast<float*>(pm.raw.data()), 3);
        pm.header.descrip = "fedseg-predict ET,TC,WT";
        const std::string pp = o.out + "/" + cf.id + "_prob.nii.gz";
        nifti::write(pp, pm, ctx.force());
        r["probabilities"] = pp;
      }
      results.push_back(r);
    } catch (const Error& e) {
      if (e.code() == kExitSoftware || e.code() == kExitUsage || e.code() == kExitUnavailable) throw;
      ++failed;
      log::error(e.message());
      results.push_back({{"id", cf.id}, {"status", "failed"}, {"error", e.message()}, {"exit_code", e.code()}});
    }
    progress.add();
  }
  log::info(std::to_string(cases.size() - size_t(failed)) + " of " + std::to_string(cases.size()) +
            " cases segmented into " + o.out + (failed ? " (" + std::to_string(failed) + " failed)" : ""));
  if (ctx.json()) ctx.emit_json({{"output", o.out}, {"cases", results}, {"failed", failed}});
  return failed ? kExitDataErr : kExitOk;
}

}  // namespace

const ToolDef& predict() {
  static const ToolDef def{
      {
          "predict",
          "segment NIfTI scans with a model, in each case's own grid",
          "MODEL.h5 COHORT_DIR|CASE_DIR|COHORT.csv -o OUT_DIR [--federation federation.json | --unverified]",
          "For each case (a cohort folder in BraTS 2021/FeTS or 2023 naming, a single case folder, or a CSV as "
          "fedseg-prep reads them) it preprocesses the four modalities exactly as fedseg-prep does (reorientation "
          "to RAS+, resampling to 1 mm, crop to the brain, z-score), runs the model by sliding windows (--overlap, "
          "Gaussian importance weights with sigma = patch/8, zero padding for small volumes, optional --mirror "
          "test-time augmentation over the 8 axis flips), turns the three region outputs into BraTS labels (WT -> "
          "2, then TC -> 1, then ET -> 4, or 3 with --scheme brats2023) and maps them back to the case's original "
          "grid by nearest neighbour, undoing crop, resampling and reorientation. OUT_DIR/<ID>.nii.gz has the "
          "original shape and affine (uint8, as the BraTS evaluations expect); --probabilities also writes "
          "OUT_DIR/<ID>_prob.nii.gz (X, Y, Z, 3: ET, TC, WT).\n\n"
          "The model's signature is checked first: with --federation, MODEL.h5.minisig must verify with the "
          "plan's aggregator key (--aggregator-pub pins it). --unverified loads a model you made yourself.\n\n"
          "An existing OUT_DIR/<ID>.nii.gz is left alone (status exists; a rerun after an interruption does the rest), unless --force. Cases are isolated: one that fails (missing modality, unreadable file, mismatched grids) is reported "
          "on one line and the others proceed; the exit code is then 65. --oracle uses each case's own label map "
          "instead of a model (it needs no MODEL.h5): a check that the mapping back to the original grid is exact.",
          {{"fedseg-predict exchange/rounds/12/global.h5 /data/new-patients -o /data/segmentations --federation "
            "exchange/federation.json",
            "Segment every case of a cohort with round 12's model."},
           {"fedseg-predict model.h5 /data/BraTS-00001 -o out --unverified --mirror --probabilities",
            "One case, with test-time augmentation and probability maps."}},
          {},
          {{64, "invalid options (patch not a multiple of 2^depth, overlap outside [0, 1))"},
           {65, "a bad model signature or file; or some case failed (the others were written)"},
           {66, "the model, the plan or the cohort is missing"},
           {69, "--device cuda without CUDA"},
           {73, "an output cannot be written"}},
          "A document {\"tool\", \"version\", \"output\", \"cases\": [{id, status (ok | exists | failed), output, "
          "probabilities, seconds, error, exit_code}], \"failed\"}.",
          {"fedseg-prep", "fedseg-eval", "fedseg-train"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("MODEL", o->model, "the model (kind global)")->type_name("MODEL.h5");
        app.add_option("INPUT", o->input, "a cohort folder, a case folder or a CSV")->type_name("COHORT");
        app.add_option("-o,--output", o->out, "folder for <ID>.nii.gz")->required()->type_name("OUT_DIR");
        app.add_option("--federation", o->federation, "check the model's signature against this plan")->type_name("federation.json");
        app.add_option("--aggregator-pub", o->aggregator_pub, "pinned aggregator public folder")->type_name("PUB_DIR");
        app.add_flag("--unverified", o->unverified, "load the model without checking a signature");
        app.add_option("--scheme", o->scheme, "label values of the output: brats2021 (ET 4) or brats2023 (ET 3)")->capture_default_str();
        app.add_option("--patch", o->patch, "window size: one size or Z,Y,X (default 128 for depth 4, else 64)")->delimiter(',')->type_name("SIZE");
        app.add_option("--overlap", o->overlap, "overlap of neighbouring windows")->capture_default_str();
        app.add_flag("--mirror", o->mirror, "average over the 8 axis flips (8x slower)");
        app.add_flag("--probabilities", o->probabilities, "also write <ID>_prob.nii.gz");
        app.add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
        app.add_flag("--oracle", o->oracle, "use each case's label as the prediction (checks the geometry; no model)");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
