// fedseg-train: a site trains the round's global model on its own dataset and
// writes the update (the delta from the global model) for fedseg-pack.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include <torch/torch.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/tool.h"
#include "fed/plan.h"
#include "fed/published.h"
#include "nn/data.h"
#include "nn/model.h"
#include "nn/model_io.h"
#include "nn/train.h"
#include "package/roster.h"

namespace fedseg::tools {
namespace {

using nlohmann::json;

struct Options {
  std::string global, dataset, federation, aggregator_pub, site, out, device = "cpu", checkpoint, global_sig;
  std::string delta_dtype = "float32";
  int64_t round = -1, checkpoint_every = 0, max_steps = 0;
  double checkpoint_minutes = 5;
  uint64_t seed = 0;
  bool no_amp = false;
};

std::string file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno(kExitNoInput, "cannot open", path, errno);
  return std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

// An existing update for the same global model and site: the step is done.
bool already_done(const std::string& out, const std::string& base_sha, const std::string& site) {
  try {
    h5::File f = h5::File::open(out, {"update", true});
    return f.attr_string("/", "base_sha256") == base_sha && f.attr_string("/", "site") == site;
  } catch (const Error&) {
    return false;
  }
}

int run(const Options& o, const ToolContext& ctx) {
  if (o.delta_dtype != "float32" && o.delta_dtype != "float16")
    throw Error(kExitUsage, "invalid --delta-dtype", o.delta_dtype, "use float32 or float16");
  auto t_start = std::chrono::steady_clock::now();
  std::optional<crypto::MinisignPublicKey> pinned;
  if (!o.aggregator_pub.empty()) pinned = package::public_key_of(o.aggregator_pub);
  fed::Plan plan = fed::Plan::load(o.federation, pinned);
  if (!plan.roster.site(o.site))
    throw Error(kExitConfig, "site not in the federation", o.site, "the roster of " + o.federation + " does not list it");

  // The global model: signature, signed fields, then the HDF5.
  fed::PublishedExpect ex{plan.federation(), std::nullopt, "global"};
  if (o.round >= 0) ex.round = o.round;
  package::Fields gf = fed::verify_published(plan.roster.aggregator().key, o.global, ex, o.global_sig);
  if (path_exists(o.out) && !ctx.force()) {
    if (already_done(o.out, gf.plain, o.site)) {
      log::info(o.out + " is already the update of " + o.site + " for this global model: nothing to do");
      if (ctx.json()) ctx.emit_json({{"update", o.out}, {"status", "exists"}, {"base_sha256", gf.plain}});
      return kExitOk;
    }
    throw Error(kExitCantCreate, "output exists", o.out, "it is not this round's update; use --force to replace it");
  }
  nn::ModelFile mf = nn::load_model(o.global, "global");
  if (mf.federation != gf.federation || mf.round != gf.round)
    throw Error(kExitDataErr, "global model does not match its signature", o.global,
                "the file says federation '" + mf.federation + "' round " + std::to_string(mf.round) + ", the signature '" +
                    gf.federation + "' round " + std::to_string(gf.round));
  if (mf.arch.to_json() != nn::Architecture::from_json(plan.model, o.federation).to_json())
    throw Error(kExitDataErr, "global model is not the plan's architecture", o.global,
                "its architecture differs from the 'model' of " + o.federation);

  // The dataset.
  nn::DatasetInfo di = nn::check_dataset(o.dataset, mf.arch.channels, mf.arch.regions);
  std::vector<nn::Case> cases = nn::load_cases(o.dataset, "train", mf.arch.in_channels, mf.arch.out_channels);

  const int threads = ctx.threads();
  torch::set_num_threads(threads);
  nn::TrainConfig cfg;
  cfg.recipe = plan.training;
  cfg.seed = o.seed;
  cfg.device = o.device;
  cfg.amp = !o.no_amp;
  cfg.max_steps = o.max_steps;
  cfg.checkpoint = o.checkpoint.empty() ? o.out + ".checkpoint" : o.checkpoint;
  cfg.checkpoint_steps = o.checkpoint_every;
  cfg.checkpoint_seconds = o.checkpoint_minutes * 60;
  json key{{"global", gf.plain},       {"dataset", file_identity(o.dataset)},
           {"recipe", plan.training.to_json()}, {"seed", o.seed},
           {"device", o.device},       {"threads", threads},
           {"max_steps", o.max_steps}, {"site", o.site}};
  cfg.run_key = sha256_hex(key.dump());

  nn::NamedTensors base;
  for (auto& [n, p] : nn::named_parameters(mf.model)) base.emplace_back(n, p.detach().clone());

  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  nn::TrainResult res;
  {
    const int64_t visits = int64_t(cases.size()) * plan.training.patches_per_case;
    int64_t total = (visits + plan.training.batch_size - 1) / plan.training.batch_size * plan.training.epochs;
    if (o.max_steps > 0) total = std::min(total, o.max_steps);
    Progress progress("training", uint64_t(total));
    res = nn::train(mf.model, cases, cfg, [&](const nn::StepInfo& s) {
      char label[64];
      std::snprintf(label, sizeof label, "training epoch %lld loss %.4f", static_cast<long long>(s.epoch + 1), s.loss);
      progress.set_label(label);
      progress.set(uint64_t(s.step));
      log::debug("step " + std::to_string(s.step) + "/" + std::to_string(s.total) + " loss " + std::to_string(s.loss) +
                 " data " + std::to_string(s.data_seconds) + " s compute " + std::to_string(s.compute_seconds) + " s");
    });
  }

  // The update: delta = trained - global.
  // Median step time of this process without its first step (LibTorch's warm-up).
  double median_step = 0;
  if (res.step_seconds.size() > 1) {
    std::vector<double> v(res.step_seconds.begin() + 1, res.step_seconds.end());
    std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
    median_step = v[v.size() / 2];
  } else if (!res.step_seconds.empty()) {
    median_step = res.step_seconds[0];
  }
  json timings{{"load_seconds", load_s},
               {"first_step_seconds", res.step_seconds.empty() ? 0.0 : res.step_seconds[0]},
               {"median_step_seconds", median_step},
               {"data_seconds", res.data_seconds},
               {"compute_seconds", res.compute_seconds},
               {"checkpoint_seconds", res.checkpoint_seconds},
               {"seconds_per_step", res.steps ? (res.data_seconds + res.compute_seconds) / double(res.steps) : 0.0}};
  json prov{{"global", o.global}, {"dataset", o.dataset}, {"seed", o.seed}, {"device", o.device},
            {"threads", threads}, {"max_steps", o.max_steps}, {"delta_dtype", o.delta_dtype}};
  const std::vector<double> last_dice = res.epoch_dice.empty() ? std::vector<double>{} : res.epoch_dice.back();
  const std::vector<double> first_dice = res.epoch_dice.empty() ? std::vector<double>{} : res.epoch_dice.front();
  {
    h5::Output out(o.out, "update", "fedseg-train", prov.dump(), ctx.force());
    h5::File& f = out.file();
    f.set_attr("/", "federation", plan.federation());
    f.set_attr("/", "round", gf.round);
    f.set_attr("/", "site", o.site);
    f.set_attr("/", "base_sha256", gf.plain);
    f.set_attr("/", "num_examples", res.examples);
    f.set_attr("/", "epochs", res.epochs);
    f.set_attr("/", "steps", res.steps);
    f.set_attr("/", "loss_curve", res.step_loss);
    f.set_attr("/", "epoch_loss", res.epoch_loss);
    f.set_attr("/", "train_dice", last_dice);
    f.set_attr("/", "train_dice_first_epoch", first_dice);
    f.set_attr("/", "region_order", json(mf.arch.regions).dump());
    f.set_attr("/", "label_scheme", di.label_scheme);
    f.set_attr("/", "recipe", plan.training.to_json().dump());
    f.set_attr("/", "timings", timings.dump());
    f.set_attr("/", "architecture", mf.arch.to_json().dump());
    nn::NamedTensors delta;
    torch::NoGradGuard ng;
    nn::NamedTensors trained = nn::named_parameters(mf.model);
    for (size_t i = 0; i < trained.size(); ++i)
      delta.emplace_back(trained[i].first, trained[i].second.detach() - base[i].second);
    nn::write_tensors(f, "delta", delta, o.delta_dtype == "float16" ? h5::DType::f16 : h5::DType::f32, 1);
    out.commit();
  }
  std::remove(cfg.checkpoint.c_str());

  auto fmt = [](const std::vector<double>& v) {
    std::string s;
    char b[32];
    for (double d : v) {
      std::snprintf(b, sizeof b, "%s%.3f", s.empty() ? "" : "/", d);
      s += b;
    }
    return s;
  };
  char line[256];
  std::snprintf(line, sizeof line, "%lld steps, loss %.4f -> %.4f, training Dice %s (%s) -> %s, %.2f s/step",
                static_cast<long long>(res.steps), res.epoch_loss.empty() ? 0.0 : res.epoch_loss.front(),
                res.epoch_loss.empty() ? 0.0 : res.epoch_loss.back(), "ET/TC/WT", fmt(first_dice).c_str(),
                fmt(last_dice).c_str(), timings["seconds_per_step"].get<double>());
  log::info(o.out + ": " + line + (res.resumed_from >= 0 ? " (resumed at step " + std::to_string(res.resumed_from) + ")" : ""));
  if (ctx.json()) {
    ctx.emit_json({{"update", o.out},
                   {"status", "trained"},
                   {"federation", plan.federation()},
                   {"round", gf.round},
                   {"site", o.site},
                   {"base_sha256", gf.plain},
                   {"num_examples", res.examples},
                   {"epochs", res.epochs},
                   {"steps", res.steps},
                   {"resumed_from_step", res.resumed_from < 0 ? json(nullptr) : json(res.resumed_from)},
                   {"epoch_loss", res.epoch_loss},
                   {"epoch_dice", res.epoch_dice},
                   {"regions", mf.arch.regions},
                   {"timings", timings}});
  }
  return kExitOk;
}

}  // namespace

const ToolDef& train() {
  static const ToolDef def{
      {
          "train",
          "train the round's global model on this site's dataset and write the update",
          "GLOBAL.h5 DATASET.h5 --federation federation.json --site NAME -o UPDATE.h5",
          "Before training it checks, in this order: federation.json and its signature (with --aggregator-pub, "
          "against that pinned key; otherwise against the plan's own aggregator key); that NAME is in the roster; "
          "the global model's signature GLOBAL.h5.minisig by the aggregator, its signed federation (the plan's), "
          "kind and round (--round), and its sha256; then the model file itself (the same federation and round as "
          "signed, the plan's architecture); then the dataset (fedseg-prep's kind dataset with the model's "
          "channels, regions and label coding, and at least one training case).\n\n"
          "It trains with the plan's recipe: epochs over the dataset's train split, patches drawn uniformly or, "
          "for the foreground fraction, centred on a voxel of a tumour region present in the case; flips, rot90, "
          "intensity scale and shift and Gaussian noise; BraTS region Dice loss (optionally + BCE), Adam or SGD, "
          "gradient clipping, FedProx. Sampling, augmentation and dropout are seeded by --seed and the step, so a "
          "run on the CPU is deterministic for a seed and thread count.\n\n"
          "It writes a checkpoint (UPDATE.h5.checkpoint unless --checkpoint) every --checkpoint-minutes and every "
          "--checkpoint-every steps. Rerunning the same command after a kill resumes from it and ends with the "
          "same update as an uninterrupted run; a checkpoint of another run (other global model, dataset, recipe, "
          "seed, device or thread count) is ignored with a warning. It is removed when the update is written.\n\n"
          "The update (kind update) holds /delta/<name> = trained minus global weights and the attributes "
          "federation, round, site, base_sha256 (the global model's sha256), num_examples, epochs, steps, "
          "loss_curve (per step), epoch_loss, train_dice (hard Dice per region of the last epoch, in region_order), "
          "train_dice_first_epoch and timings. It is written atomically. When UPDATE.h5 already is this site's "
          "update of this global model, the tool does nothing and exits 0; another existing file needs --force.\n\n"
          "--device cuda[:N] trains on a GPU with mixed precision (--no-amp: float32) when the LibTorch it was built "
          "against has CUDA; Debian's libtorch is CPU-only, and the tool says so (exit 69). --threads sets "
          "LibTorch's intra-op threads (default: the cores available).",
          {{"fedseg-train exchange/rounds/3/global.h5 site.h5 --federation exchange/federation.json --site hospital-a "
            "-o update.h5",
            "Train round 3's global model on this site's dataset."},
           {"fedseg-train global.h5 site.h5 --federation federation.json --aggregator-pub pub/aggregator --site a "
            "--round 3 -o update.h5 --json",
            "Pin the aggregator key and the round; print a JSON summary."}},
          {},
          {{64, "an invalid option"},
           {65, "a bad signature, the wrong federation, round or kind, a corrupt model or dataset, a dataset that "
                "does not fit the model, a dataset without training cases, or training diverged"},
           {66, "an input or a signature file is missing"},
           {69, "--device cuda with a LibTorch without CUDA, or no such GPU"},
           {73, "UPDATE.h5 exists and is not this round's update (use --force), or it cannot be written"},
           {78, "the site is not in the roster, or the plan is invalid"}},
          "A document {\"tool\", \"version\", \"update\", \"status\" (trained | exists), \"federation\", \"round\", "
          "\"site\", \"base_sha256\", \"num_examples\", \"epochs\", \"steps\", \"resumed_from_step\", "
          "\"epoch_loss\", \"epoch_dice\" (per epoch, per region), \"regions\", \"timings\" {load_seconds, "
          "first_step_seconds, median_step_seconds (without the first step), data_seconds, compute_seconds, "
          "checkpoint_seconds, seconds_per_step}}.",
          {"fedseg-init", "fedseg-prep", "fedseg-pack", "fedseg-aggregate"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("GLOBAL", o->global, "the round's global model")->required()->type_name("GLOBAL.h5");
        app.add_option("DATASET", o->dataset, "this site's dataset from fedseg-prep")->required()->type_name("DATASET.h5");
        app.add_option("--federation", o->federation, "the federation's plan")->required()->type_name("federation.json");
        app.add_option("--aggregator-pub", o->aggregator_pub, "pinned aggregator public folder (or minisign.pub)")
            ->type_name("PUB_DIR");
        app.add_option("--site", o->site, "this site's id in the roster")->required()->type_name("NAME");
        app.add_option("-o,--output", o->out, "the update file")->required()->type_name("UPDATE.h5");
        app.add_option("--round", o->round, "the round the global model must be signed for")->type_name("R");
        app.add_option("--global-sig", o->global_sig, "the global model's signature (default GLOBAL.h5.minisig)")
            ->type_name("FILE");
        app.add_option("--seed", o->seed, "seed of sampling, augmentation and dropout")->capture_default_str();
        app.add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
        app.add_flag("--no-amp", o->no_amp, "no mixed precision on CUDA");
        app.add_option("--checkpoint", o->checkpoint, "checkpoint file (default UPDATE.h5.checkpoint)")->type_name("FILE");
        app.add_option("--checkpoint-every", o->checkpoint_every, "also checkpoint every N steps (0: by time only)")
            ->type_name("N");
        app.add_option("--checkpoint-minutes", o->checkpoint_minutes, "checkpoint at least this often")
            ->capture_default_str();
        app.add_option("--max-steps", o->max_steps, "stop after N steps (tests, benchmarks; 0: the recipe's)")
            ->type_name("N");
        app.add_option("--delta-dtype", o->delta_dtype, "storage of the delta: float32 or float16")->capture_default_str();
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
