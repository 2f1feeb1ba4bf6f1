#include "fed/plan.h"

#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "fed/published.h"
#include "fed/rules.h"

namespace fedseg::fed {
namespace {

using nlohmann::json;

[[noreturn]] void bad_value(const std::string& name, const std::string& where, const std::string& why) {
  throw Error(kExitConfig, "bad federation plan", name, where + ": " + why);
}

void only_keys(const json& j, const std::set<std::string>& allowed, const std::string& name, const std::string& where) {
  if (!j.is_object()) bad_value(name, where, "not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!allowed.count(it.key())) bad_value(name, where, "unknown member '" + it.key() + "'");
}

double num(const json& j, const char* key, double def, double lo, double hi, const std::string& name,
           const std::string& where) {
  if (!j.contains(key)) return def;
  if (!j[key].is_number()) bad_value(name, where + "." + key, "not a number");
  double v = j[key].get<double>();
  if (!(v >= lo && v <= hi))
    bad_value(name, where + "." + key, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

int64_t integer(const json& j, const char* key, int64_t def, int64_t lo, int64_t hi, const std::string& name,
                const std::string& where) {
  if (!j.contains(key)) return def;
  if (!j[key].is_number_integer()) bad_value(name, where + "." + key, "not an integer");
  int64_t v = j[key].get<int64_t>();
  if (v < lo || v > hi)
    bad_value(name, where + "." + key, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

std::string text(const json& j, const char* key, const std::string& def, const std::set<std::string>& allowed,
                 const std::string& name, const std::string& where) {
  if (!j.contains(key)) return def;
  if (!j[key].is_string()) bad_value(name, where + "." + key, "not a string");
  std::string v = j[key].get<std::string>();
  if (!allowed.empty() && !allowed.count(v)) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    bad_value(name, where + "." + key, "'" + v + "' is not one of " + list);
  }
  return v;
}


}  // namespace

json Recipe::to_json() const {
  return {{"optimizer", optimizer},   {"learning_rate", learning_rate},
          {"momentum", momentum},     {"weight_decay", weight_decay},
          {"epochs", epochs},         {"patches_per_case", patches_per_case},
          {"patch", patch},           {"batch_size", batch_size},
          {"foreground_fraction", foreground_fraction},
          {"loss", loss},             {"fedprox_mu", fedprox_mu},
          {"grad_clip", grad_clip},   {"augment", augment}};
}

Recipe Recipe::from_json(const json& j, const std::string& name) {
  const std::string w = "training";
  only_keys(j, {"optimizer", "learning_rate", "momentum", "weight_decay", "epochs", "patches_per_case", "patch",
                "batch_size", "foreground_fraction", "loss", "fedprox_mu", "grad_clip", "augment"},
            name, w);
  Recipe r;
  r.optimizer = text(j, "optimizer", r.optimizer, {"adam", "sgd"}, name, w);
  r.learning_rate = num(j, "learning_rate", r.learning_rate, 1e-12, 10, name, w);
  r.momentum = num(j, "momentum", r.momentum, 0, 0.9999, name, w);
  r.weight_decay = num(j, "weight_decay", r.weight_decay, 0, 1, name, w);
  r.epochs = integer(j, "epochs", r.epochs, 1, 100000, name, w);
  r.patches_per_case = integer(j, "patches_per_case", r.patches_per_case, 1, 100000, name, w);
  r.batch_size = integer(j, "batch_size", r.batch_size, 1, 1024, name, w);
  r.foreground_fraction = num(j, "foreground_fraction", r.foreground_fraction, 0, 1, name, w);
  r.loss = text(j, "loss", r.loss, {"dice", "dice+bce"}, name, w);
  r.fedprox_mu = num(j, "fedprox_mu", r.fedprox_mu, 0, 1e6, name, w);
  r.grad_clip = num(j, "grad_clip", r.grad_clip, 0, 1e9, name, w);
  if (j.contains("augment")) {
    if (!j["augment"].is_boolean()) bad_value(name, w + ".augment", "not true or false");
    r.augment = j["augment"].get<bool>();
  }
  if (j.contains("patch")) {
    const json& p = j["patch"];
    if (!p.is_array() || p.size() != 3) bad_value(name, w + ".patch", "not a list of three integers (Z, Y, X)");
    r.patch.clear();
    for (const auto& v : p) {
      if (!v.is_number_integer() || v.get<int64_t>() < 4 || v.get<int64_t>() > 1024)
        bad_value(name, w + ".patch", "each size must be an integer in [4, 1024]");
      r.patch.push_back(v.get<int64_t>());
    }
  }
  return r;
}

json Quorum::to_json() const {
  return {{"expected", expected},
          {"min_sites", min_sites},
          {"deadline_seconds", deadline_seconds},
          {"after_deadline", after_deadline}};
}

Quorum Quorum::from_json(const json& j, const std::string& name) {
  const std::string w = "quorum";
  only_keys(j, {"expected", "min_sites", "deadline_seconds", "after_deadline"}, name, w);
  Quorum q;
  if (j.contains("expected")) {
    if (!j["expected"].is_array()) bad_value(name, w + ".expected", "not a list of site ids");
    for (const auto& s : j["expected"]) {
      if (!s.is_string()) bad_value(name, w + ".expected", "not a list of site ids");
      q.expected.push_back(s.get<std::string>());
    }
  }
  q.min_sites = integer(j, "min_sites", q.min_sites, 1, 1000000, name, w);
  q.deadline_seconds = integer(j, "deadline_seconds", q.deadline_seconds, 0, int64_t(1) << 40, name, w);
  q.after_deadline = text(j, "after_deadline", q.after_deadline, {"wait", "aggregate"}, name, w);
  return q;
}

json roster_json(const std::string& federation, const package::RosterMember& aggregator,
                 const std::vector<package::RosterMember>& sites) {
  json s = json::array();
  for (const auto& m : sites)
    s.push_back({{"id", m.id},
                 {"age_recipient", m.recipient.to_string()},
                 {"minisign_public_key", m.key.to_base64()}});
  return {{"fedseg_federation", Plan::kVersion},
          {"federation", federation},
          {"aggregator",
           {{"age_recipient", aggregator.recipient.to_string()}, {"minisign_public_key", aggregator.key.to_base64()}}},
          {"sites", s}};
}

Plan Plan::parse(const std::string& txt, const std::string& name) {
  Plan p;
  p.roster = package::Roster::parse(txt, name);  // JSON, version, members
  json j = json::parse(txt);
  only_keys(j, {"fedseg_federation", "federation", "aggregator", "sites", "model", "training", "aggregation", "quorum"},
            name, "federation.json");
  if (!j.contains("model") || !j["model"].is_object())
    throw Error(kExitDataErr, "malformed federation plan", name, "no 'model' object (the architecture)");
  p.model = j["model"];
  p.training = Recipe::from_json(j.value("training", json::object()), name);
  p.aggregation = j.value("aggregation", json{{"rule", "fedavg"}});
  RuleConfig::from_json(p.aggregation, name);  // the rule and its parameters (Error 78)
  p.quorum = Quorum::from_json(j.value("quorum", json::object()), name);
  if (p.quorum.expected.empty())
    for (const auto& s : p.roster.sites()) p.quorum.expected.push_back(s.id);
  for (const auto& s : p.quorum.expected)
    if (!p.roster.site(s)) bad_value(name, "quorum.expected", "site '" + s + "' is not in the roster");
  if (p.quorum.min_sites > int64_t(p.quorum.expected.size()))
    bad_value(name, "quorum.min_sites",
              std::to_string(p.quorum.min_sites) + " is more than the " + std::to_string(p.quorum.expected.size()) +
                  " expected sites");
  return p;
}

Plan Plan::load(const std::string& path, const std::optional<crypto::MinisignPublicKey>& pinned) {
  std::string txt = read_file(path, size_t(16) << 20);
  Plan p = parse(txt, path);
  const crypto::MinisignPublicKey& own = p.roster.aggregator().key;
  if (pinned && !(*pinned == own))
    throw Error(kExitDataErr, "federation plan names another aggregator", path,
                "its aggregator key is " + own.key_id_hex() + ", the pinned key is " + pinned->key_id_hex());
  verify_published(own, path, {p.federation(), std::nullopt, "federation"});
  return p;
}

json Plan::to_json() const {
  std::vector<package::RosterMember> sites(roster.sites().begin(), roster.sites().end());
  json j = roster_json(roster.federation(), roster.aggregator(), sites);
  j["model"] = model;
  j["training"] = training.to_json();
  j["aggregation"] = aggregation;
  j["quorum"] = quorum.to_json();
  return j;
}

}  // namespace fedseg::fed
