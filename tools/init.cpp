// fedseg-init: creates a federation (aggregator side): the signed plan
// federation.json with its roster, model, training recipe, aggregation rule and
// quorum, and the signed round-0 global model, in an exchange folder.
#include <iostream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/tool.h"
#include "fed/exchange.h"
#include "fed/plan.h"
#include "fed/published.h"
#include "nn/model.h"
#include "nn/model_io.h"
#include "package/roster.h"

namespace fedseg::tools {
namespace {

using nlohmann::json;

struct Options {
  std::string federation, key, out, password_file, password_env;
  std::vector<std::string> sites;
  std::string preset = "fets";
  int64_t base_filters = 0, depth = -1;
  double dropout = -1;
  std::string optimizer = "adam", loss = "dice";
  double lr = 5e-5, momentum = 0.99, weight_decay = 0, fg_fraction = 0.33, fedprox_mu = 0, grad_clip = 12;
  int64_t epochs = 1, batch = 1, ppc = 1;
  std::vector<int64_t> patch;
  bool no_augment = false;
  std::string rule = "fedavg";
  std::vector<std::string> rule_params;
  std::vector<std::string> expected;
  int64_t min_sites = 0, deadline = 8100;
  std::string after_deadline = "wait";
  uint64_t seed = 0;
};

json parse_value(const std::string& v) {
  json j = json::parse(v, nullptr, false);
  if (!j.is_discarded() && (j.is_number() || j.is_boolean())) return j;
  return v;
}

int run(const Options& o, const ToolContext& ctx) {
  if (!package::valid_id(o.federation))
    throw Error(kExitUsage, "invalid --federation", o.federation, "ids match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
  if (o.sites.empty()) throw Error(kExitUsage, "no --site", {}, "give each site as --site NAME=PUB_DIR");
  const std::string fed_path = fed::federation_path(o.out);
  if (path_exists(fed_path + ".minisig"))
    throw Error(kExitCantCreate, "a federation exists in", o.out,
                "fedseg-init creates a federation once; " + fed_path + " is signed already (use a new folder)");

  // Keys and roster.
  crypto::MinisignSecretKey key = fed::load_signing_key(o.key, {o.password_file, o.password_env});
  package::RosterMember agg{"-", package::recipient_of(o.key), key.public_key()};
  std::vector<package::RosterMember> members;
  for (const auto& s : o.sites) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
      throw Error(kExitUsage, "invalid --site", s, "use --site NAME=PUB_DIR");
    std::string id = s.substr(0, eq), dir = s.substr(eq + 1);
    if (!package::valid_id(id)) throw Error(kExitUsage, "invalid site id", id, "ids match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
    members.push_back({id, package::recipient_of(dir), package::public_key_of(dir)});
  }

  // Model.
  nn::Architecture arch = nn::Architecture::preset(o.preset);
  if (o.base_filters > 0) arch.base_filters = o.base_filters;
  if (o.depth >= 0) arch.depth = o.depth;
  if (o.dropout >= 0) arch.dropout = o.dropout;
  arch = nn::Architecture::from_json(arch.to_json(), "the command line");  // range checks

  // Plan document, validated by the same parser every reader uses.
  json doc = fed::roster_json(o.federation, agg, members);
  doc["model"] = arch.to_json();
  fed::Recipe r;
  r.optimizer = o.optimizer;
  r.learning_rate = o.lr;
  r.momentum = o.momentum;
  r.weight_decay = o.weight_decay;
  r.epochs = o.epochs;
  r.patches_per_case = o.ppc;
  r.batch_size = o.batch;
  r.foreground_fraction = o.fg_fraction;
  r.loss = o.loss;
  r.fedprox_mu = o.fedprox_mu;
  r.grad_clip = o.grad_clip;
  r.augment = !o.no_augment;
  if (!o.patch.empty()) {
    if (o.patch.size() == 1) r.patch = {o.patch[0], o.patch[0], o.patch[0]};
    else if (o.patch.size() == 3) r.patch = o.patch;
    else throw Error(kExitUsage, "invalid --patch", {}, "give one size or Z,Y,X");
  } else {
    const int64_t p = o.preset == "small" ? 64 : 128;
    r.patch = {p, p, p};
  }
  for (int64_t p : r.patch)
    if (p % arch.divisor() != 0)
      throw Error(kExitUsage, "invalid --patch", std::to_string(p),
                  "each size must be a multiple of " + std::to_string(arch.divisor()) + " (2^depth)");
  doc["training"] = r.to_json();
  json agg_rule{{"rule", o.rule}};
  for (const auto& kv : o.rule_params) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) throw Error(kExitUsage, "invalid --rule-param", kv, "use KEY=VALUE");
    agg_rule[kv.substr(0, eq)] = parse_value(kv.substr(eq + 1));
  }
  doc["aggregation"] = agg_rule;
  fed::Quorum q;
  q.expected = o.expected;
  if (q.expected.empty())
    for (const auto& m : members) q.expected.push_back(m.id);
  q.min_sites = o.min_sites > 0 ? o.min_sites : int64_t(q.expected.size());
  q.deadline_seconds = o.deadline;
  q.after_deadline = o.after_deadline;
  doc["quorum"] = q.to_json();
  const std::string text = doc.dump(2) + "\n";
  fed::Plan plan = fed::Plan::parse(text, "the plan given on the command line");

  // Round-0 global model first, then the plan, then LATEST: a run killed midway
  // leaves no signed plan and is simply run again.
  fed::make_dirs(fed::round_dir(o.out, 0));
  const std::string global = fed::global_path(o.out, 0);
  nn::ResUNet model = nn::build_model(arch, o.seed);
  json prov{{"seed", o.seed}, {"preset", o.preset}};
  nn::write_global_model(global, model, o.federation, 0, {}, "fedseg-init", prov.dump(), true);
  package::Fields gf = fed::sign_published(key, global, o.federation, 0, "global", true);
  write_file_atomic(fed_path, text, true, 0644);
  fed::sign_published(key, fed_path, o.federation, 0, "federation", false);
  fed::Latest latest{o.federation, 0, "rounds/0/global.h5", gf.plain, fed::utc_now_iso()};
  fed::write_latest(o.out, latest, key);

  const int64_t nparams = nn::parameter_count(model);
  if (ctx.json()) {
    ctx.emit_json({{"exchange", o.out},
                   {"federation", o.federation},
                   {"plan", fed_path},
                   {"global", global},
                   {"global_sha256", gf.plain},
                   {"parameters", nparams},
                   {"sites", q.expected},
                   {"model", arch.to_json()},
                   {"training", r.to_json()},
                   {"aggregation", agg_rule},
                   {"quorum", q.to_json()}});
  } else if (!ctx.common().quiet) {
    std::cout << fed_path << "\n" << global << "\n" << fed::latest_path(o.out) << "\n";
  }
  log::info("federation " + o.federation + ": " + std::to_string(members.size()) + " sites, " + arch.name + " (" +
            std::to_string(nparams) + " parameters), round 0 published");
  return kExitOk;
}

}  // namespace

const ToolDef& init() {
  static const ToolDef def{
      {
          "init",
          "create a federation: its signed plan and the round-0 global model",
          "--federation ID --key AGG_ID_DIR --site NAME=PUB_DIR... [plan options] -o EXCHANGE_DIR",
          "Run once by the aggregator operator. Writes into EXCHANGE_DIR (created if needed), each file with a "
          "minisign signature by the aggregator key (FILE.minisig, trusted comment `fedseg1 fed=ID round=0 site=- "
          "kind=... plain=SHA256 enc=none ...`): rounds/0/global.h5, the round-0 global model, its weights drawn "
          "from --seed; federation.json, the plan; LATEST, which names the current round and the global model's "
          "sha256.\n\n"
          "The plan holds the federation id; the roster (each site's id, age recipient and minisign public key, "
          "read from the public folder fedseg-keygen made for it, and the aggregator's own public keys); the model "
          "architecture (--preset, adjusted by --base-filters, --depth, --dropout); the site training recipe "
          "(optimizer, learning rate, epochs per round, patch and batch size, FedProx mu, loss, gradient clipping, "
          "augmentation); the aggregation rule with its parameters; and the quorum (expected sites, minimum "
          "reporting, deadline in seconds after a round is published, and what happens when the deadline passes "
          "with too few sites). Sites' fedseg-train reads the model and recipe from it; fedseg-aggregate the rule "
          "and quorum.\n\n"
          "Defaults are the FeTS production plan: preset fets (3D residual U-Net, base 30, 4 downsamplings, "
          "dropout 0.3), patch 128, batch 1, Adam, learning rate 5e-5, 1 epoch per round, deadline 8100 s. The "
          "small preset (base 8, depth 3, patch 64) is for CPUs, tests and the demo.\n\n"
          "A federation is created once: when EXCHANGE_DIR/federation.json.minisig exists the tool writes nothing "
          "and exits 73, even with --force. A run killed before that file was written leaves no signed plan and is "
          "simply run again.",
          {{"fedseg-keygen -o agg && fedseg-keygen -o site-a && fedseg-keygen -o site-b", "Identities (each site "
            "sends only its public files)."},
           {"fedseg-init --federation brats-fl --key agg --site a=site-a --site b=site-b -o exchange",
            "A two-site federation with the FeTS plan."},
           {"fedseg-init --federation demo --key agg --site a=pub/a --preset small --patch 32 --epochs 2 --seed 7 "
            "-o exchange",
            "A small CPU-sized federation."}},
          {},
          {{64, "an invalid option: unknown preset, patch not a multiple of 2^depth, a bad site or rule parameter"},
           {65, "a public folder's files are malformed"},
           {66, "a public folder or the aggregator identity is missing"},
           {73, "a federation exists in EXCHANGE_DIR, or an output cannot be written"},
           {77, "the aggregator's secret key is readable by group or others"},
           {78, "a plan value is out of range, or the key's password is missing or wrong"}},
          "A document {\"tool\", \"version\", \"exchange\", \"federation\", \"plan\", \"global\", "
          "\"global_sha256\", \"parameters\", \"sites\", \"model\", \"training\", \"aggregation\", \"quorum\"}.",
          {"fedseg-keygen", "fedseg-train", "fedseg-aggregate", "fedseg-verify"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("--federation", o->federation, "the federation id")->required()->type_name("ID");
        app.add_option("--key", o->key, "the aggregator's identity folder (fedseg-keygen)")->required()->type_name("AGG_ID_DIR");
        app.add_option("--site", o->sites, "a site and its public folder (age.pub, minisign.pub); repeat per site")
            ->required()
            ->type_name("NAME=PUB_DIR");
        app.add_option("-o,--output", o->out, "the exchange folder")->required()->type_name("EXCHANGE_DIR");
        app.add_option("--password-file", o->password_file, "password of a password-protected minisign key (first line)")
            ->type_name("FILE");
        app.add_option("--password-env", o->password_env, "environment variable holding that password")->type_name("VAR");
        app.add_option("--preset", o->preset, "model preset: fets or small")->type_name("NAME")->capture_default_str();
        app.add_option("--base-filters", o->base_filters, "filters of the first level (default: the preset's)")->type_name("N");
        app.add_option("--depth", o->depth, "number of stride-2 downsamplings (default: the preset's)")->type_name("N");
        app.add_option("--dropout", o->dropout, "dropout probability (default: the preset's)")->type_name("P");
        app.add_option("--optimizer", o->optimizer, "adam or sgd (Nesterov momentum)")->capture_default_str();
        app.add_option("--lr", o->lr, "learning rate")->capture_default_str();
        app.add_option("--momentum", o->momentum, "SGD momentum")->capture_default_str();
        app.add_option("--weight-decay", o->weight_decay, "L2 weight decay")->capture_default_str();
        app.add_option("--epochs", o->epochs, "epochs per round (passes over a site's training cases)")->capture_default_str();
        app.add_option("--patches-per-case", o->ppc, "patches per training case per epoch")->capture_default_str();
        app.add_option("--patch", o->patch, "patch size: one size, or Z,Y,X (default 128, 64 for small)")
            ->delimiter(',')
            ->type_name("SIZE");
        app.add_option("--batch-size", o->batch, "patches per step")->capture_default_str();
        app.add_option("--foreground-fraction", o->fg_fraction, "share of patches centred on a tumour region")
            ->capture_default_str();
        app.add_option("--loss", o->loss, "dice or dice+bce")->capture_default_str();
        app.add_option("--fedprox-mu", o->fedprox_mu, "FedProx proximal weight (0: off)")->capture_default_str();
        app.add_option("--grad-clip", o->grad_clip, "clip the gradient's L2 norm to this (0: off)")->capture_default_str();
        app.add_flag("--no-augment", o->no_augment, "train without augmentation");
        app.add_option("--rule", o->rule,
                       "aggregation rule: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, median, trimmed-mean, krum, "
                       "multi-krum")
            ->capture_default_str();
        app.add_option("--rule-param", o->rule_params, "a parameter of the rule (server_lr=1.0, beta=0.1, f=1, ...)")
            ->type_name("KEY=VALUE");
        app.add_option("--expect", o->expected, "sites expected each round (default: all)")->type_name("NAME");
        app.add_option("--min-sites", o->min_sites, "fewest reporting sites to aggregate after the deadline (default: all)")
            ->type_name("N");
        app.add_option("--deadline", o->deadline, "seconds after a round's publication before stragglers are cut off")
            ->capture_default_str();
        app.add_option("--after-deadline", o->after_deadline,
                       "past the deadline with fewer than --min-sites: wait or aggregate")
            ->capture_default_str();
        app.add_option("--seed", o->seed, "seed of the round-0 weights")->capture_default_str();
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
