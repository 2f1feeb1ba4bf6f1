#include "fed/exchange.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <thread>

#include "core/atomic_file.h"
#include "core/error.h"
#include "fed/published.h"
#include "package/roster.h"

namespace fedseg::fed {

using nlohmann::json;

std::string federation_path(const std::string& ex) { return ex + "/federation.json"; }
std::string round_dir(const std::string& ex, int64_t r) { return ex + "/rounds/" + std::to_string(r); }
std::string global_path(const std::string& ex, int64_t r) { return round_dir(ex, r) + "/global.h5"; }
std::string update_path(const std::string& ex, int64_t r, const std::string& site) {
  return round_dir(ex, r) + "/updates/" + site + ".age";
}
std::string metrics_path(const std::string& ex, int64_t r, const std::string& site) {
  return round_dir(ex, r) + "/metrics/" + site + ".age";
}
std::string report_path(const std::string& ex, int64_t r) { return round_dir(ex, r) + "/report.json"; }
std::string latest_path(const std::string& ex) { return ex + "/LATEST"; }

json Latest::to_json() const {
  return {{"fedseg_latest", kVersion}, {"federation", federation},       {"round", round},
          {"global", global},          {"global_sha256", global_sha256}, {"published", published}};
}

Latest Latest::parse(const std::string& text, const std::string& name) {
  json j = json::parse(text, nullptr, false);
  auto bad = [&](const std::string& why) { return Error(kExitDataErr, "malformed LATEST", name, why); };
  if (j.is_discarded() || !j.is_object()) throw bad("not a JSON object");
  if (!j.contains("fedseg_latest") || !j["fedseg_latest"].is_number_integer()) throw bad("no 'fedseg_latest' version");
  if (j["fedseg_latest"].get<int64_t>() != kVersion)
    throw bad("version " + std::to_string(j["fedseg_latest"].get<int64_t>()) + " (this fedseg reads 1)");
  Latest l;
  try {
    l.federation = j.at("federation").get<std::string>();
    l.round = j.at("round").get<int64_t>();
    l.global = j.at("global").get<std::string>();
    l.global_sha256 = j.at("global_sha256").get<std::string>();
    l.published = j.value("published", "");
  } catch (const json::exception&) {
    throw bad("needs string 'federation', 'global', 'global_sha256' and integer 'round'");
  }
  if (!package::valid_id(l.federation)) throw bad("invalid federation id");
  if (l.round < 0) throw bad("negative round");
  if (l.global != "rounds/" + std::to_string(l.round) + "/global.h5")
    throw bad("'global' must be rounds/" + std::to_string(l.round) + "/global.h5");
  if (l.global_sha256.size() != 64 || l.global_sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw bad("'global_sha256' is not 64 lower-case hex digits");
  return l;
}

void write_latest(const std::string& ex, const Latest& l, const crypto::MinisignSecretKey& key) {
  const std::string p = latest_path(ex);
  publish_signed(key, p, l.to_json().dump(2) + "\n", l.federation, l.round, "latest");
}

Latest read_latest(const std::string& ex, const crypto::MinisignPublicKey& key, const std::string& federation) {
  const std::string p = latest_path(ex);
  for (int attempt = 0;; ++attempt) {
    try {
      std::string text = read_file(p, 1 << 20);
      verify_published(key, p, {federation, std::nullopt, "latest"});
      // The bytes verified may be newer than `text`: parse what verified.
      std::string again = read_file(p, 1 << 20);
      if (again != text) continue;
      return Latest::parse(text, p);
    } catch (const package::PackageError& e) {
      if (attempt >= 3 || e.fail_class() != package::FailClass::signature) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

void make_dirs(const std::string& path) {
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    if (!cur.empty() && ::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      throw_errno(kExitCantCreate, "cannot create folder", cur, errno);
    i = j + 1;
  }
}

std::string utc_now_iso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace fedseg::fed
