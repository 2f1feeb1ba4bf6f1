// fedseg::fed exchange: the names of the exchange layout (DESIGN.md §5), the same on
// a folder, an HTTP prefix, an S3 bucket or a USB stick, and the LATEST pointer.
//
//   federation.json(.minisig)                  the plan, signed by the aggregator
//   rounds/<r>/global.h5(.minisig)             global model of round r
//   rounds/<r>/updates/<site>.age(.minisig)    site packages (write-once)
//   rounds/<r>/metrics/<site>.age(.minisig)
//   rounds/<r>/report.json(.minisig)
//   LATEST(.minisig)                           {"fedseg_latest": 1, "federation", "round",
//                                               "global": "rounds/<r>/global.h5",
//                                               "global_sha256", "published"}
//
// LATEST is replaced (new content, then its new signature); a reader that finds
// the two out of step (a writer between its two renames) sees a signature
// failure and should retry (read_latest() does, briefly).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "crypto/minisign.h"

namespace fedseg::fed {

std::string federation_path(const std::string& exchange);
std::string round_dir(const std::string& exchange, int64_t round);
std::string global_path(const std::string& exchange, int64_t round);
std::string update_path(const std::string& exchange, int64_t round, const std::string& site);
std::string metrics_path(const std::string& exchange, int64_t round, const std::string& site);
std::string report_path(const std::string& exchange, int64_t round);
std::string latest_path(const std::string& exchange);

struct Latest {
  static constexpr int kVersion = 1;
  std::string federation;
  int64_t round = 0;
  std::string global;         // relative to the exchange
  std::string global_sha256;
  std::string published;      // UTC ISO 8601
  nlohmann::json to_json() const;
  // Error 65 naming `name` when malformed.
  static Latest parse(const std::string& text, const std::string& name);
};

// Writes exchange/LATEST (replacing it) and its signature.
void write_latest(const std::string& exchange, const Latest& latest, const crypto::MinisignSecretKey& key);
// Reads and verifies exchange/LATEST against the aggregator key and federation.
// Error 66 when missing; 65 when it does not verify after a few short retries.
Latest read_latest(const std::string& exchange, const crypto::MinisignPublicKey& key, const std::string& federation);

// mkdir -p (mode 0755); Error 73 naming the folder on failure.
void make_dirs(const std::string& path);

// Current UTC time as ISO 8601 ("2026-11-28T01:02:03Z").
std::string utc_now_iso();

}  // namespace fedseg::fed
