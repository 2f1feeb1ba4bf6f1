// fedseg::fed plan: the whole of federation.json (DESIGN.md §5), written and signed
// by fedseg-init, read by fedseg-train (architecture, recipe) and fedseg-aggregate
// (rule, quorum). The roster part is package::Roster; this adds:
//
//   "model":       the architecture JSON (lib/nn; enough to rebuild the model),
//   "training":    the site recipe (Recipe below),
//   "aggregation": {"rule": "fedavg", ...rule parameters},
//   "quorum":      {"expected": [site ids], "min_sites": n, "deadline_seconds": s,
//                   "after_deadline": "wait" | "aggregate"}
//
// Unknown members are refused (a typo in a hand-edited plan must not be ignored);
// members added by later versions come with a new "fedseg_federation" version.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crypto/minisign.h"
#include "package/roster.h"

namespace fedseg::fed {

// The site training recipe (FeTS production plan defaults, DESIGN.md §1).
struct Recipe {
  std::string optimizer = "adam";   // adam | sgd
  double learning_rate = 5e-5;
  double momentum = 0.99;           // sgd (Nesterov), and Adam's beta1 stays 0.9
  double weight_decay = 0;
  int64_t epochs = 1;               // passes over the site's training cases per round
  int64_t patches_per_case = 1;     // patches drawn per training case per epoch
  std::vector<int64_t> patch{128, 128, 128};  // Z, Y, X
  int64_t batch_size = 1;
  double foreground_fraction = 0.33;  // share of patches centred on a voxel of a present region
  std::string loss = "dice";          // dice | dice+bce
  double fedprox_mu = 0;              // FedProx proximal weight (0: off)
  double grad_clip = 12;              // max L2 norm of the gradient (0: off)
  bool augment = true;                // flips, rot90, intensity scale/shift, Gaussian noise

  nlohmann::json to_json() const;
  // Error 78 (naming `name`) on an unknown member or a value out of range.
  static Recipe from_json(const nlohmann::json& j, const std::string& name);
};

struct Quorum {
  std::vector<std::string> expected;  // site ids expected each round (default: all)
  int64_t min_sites = 1;
  int64_t deadline_seconds = 8100;    // FeTS straggler cutoff, from the round's publication
  std::string after_deadline = "wait";  // with fewer than min_sites: wait | aggregate
  nlohmann::json to_json() const;
  static Quorum from_json(const nlohmann::json& j, const std::string& name);
};

struct Plan {
  static constexpr int kVersion = 1;
  package::Roster roster;
  nlohmann::json model;        // architecture
  Recipe training;
  nlohmann::json aggregation;  // {"rule": ..., params}
  Quorum quorum;

  const std::string& federation() const { return roster.federation(); }

  // Parses and validates federation.json text (Error 65 when malformed, 78 when a
  // plan value is out of range; both name `name`).
  static Plan parse(const std::string& text, const std::string& name);
  // Loads path and checks path + ".minisig": with `pinned` (the aggregator key
  // obtained out of band) the signature must verify with it and the plan's own
  // aggregator key must be the same; without, the signature must verify with the
  // plan's own aggregator key (catches damage, not a forged plan). Error 66 when a
  // file is missing, 65 when the signature or the document is bad.
  static Plan load(const std::string& path, const std::optional<crypto::MinisignPublicKey>& pinned = std::nullopt);

  // The document (roster members in the order given) as fedseg-init writes it.
  nlohmann::json to_json() const;
};

// Builds the roster part of a plan document.
nlohmann::json roster_json(const std::string& federation, const package::RosterMember& aggregator,
                           const std::vector<package::RosterMember>& sites);

}  // namespace fedseg::fed
