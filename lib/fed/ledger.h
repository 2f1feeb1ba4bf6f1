// fedseg::fed ledger: the aggregator's append-only record of accepted rounds, a hash
// chain in STATE/ledger.jsonl, one JSON object per line:
//   {"index": i, "prev": sha256 of line i-1 as written (64 zeros for i = 0),
//    "federation", "round": r (the round aggregated), "global": "rounds/<r+1>/global.h5",
//    "global_sha256", "report_sha256",
//    "accepted": [{"site", "plain", "nonce"}], "time"}
// It is also the replay guard: a (site, round) or nonce already in it is refused.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace fedseg::fed {

struct LedgerEntry {
  nlohmann::json doc;
  std::string line;  // as written, without the newline
  std::string sha256;
};

class Ledger {
 public:
  // Reads and checks the chain (Error 65 naming the file and line on a break);
  // a missing file is an empty ledger.
  static Ledger load(const std::string& path);
  const std::vector<LedgerEntry>& entries() const { return entries_; }
  const LedgerEntry* for_round(int64_t round) const;
  std::set<std::pair<std::string, int64_t>> accepted() const;
  std::set<std::string> nonces() const;
  // Appends an entry (index and prev filled in) with fsync; returns its sha256.
  std::string append(nlohmann::json entry);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<LedgerEntry> entries_;
  size_t valid_bytes_ = 0;  // up to the last complete line
};

}  // namespace fedseg::fed
