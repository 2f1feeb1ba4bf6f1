// fedseg-doctor: checks what a site needs before its first round (issue 9): LibTorch
// and the device, memory, disk, clock skew against the exchange, key permissions, the
// exchange (readable, writable, LATEST signed by the pinned aggregator key) and the
// dataset. Reads the same CONFIG as share/fedseg/site-round.
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <strings.h>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <curl/curl.h>
#include <torch/torch.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/tool.h"
#include "crypto/minisign.h"
#include "fed/exchange.h"
#include "fed/plan.h"
#include "fed/published.h"
#include "h5/tensor_file.h"
#include "nn/data.h"
#include "package/roster.h"
#include "transfer/transfer.h"

namespace fedseg::tools {
namespace {

using nlohmann::json;

struct Options {
  std::string config, exchange, identity, aggregator_pub, dataset, work, site, device;  // device "" = cpu
  std::string fetch_opts;  // FETCH_OPTS of CONFIG: fedseg-fetch options, applied as site-round applies them
  double max_skew = 300;
  transfer::Options tr;
};

struct Check {
  std::string name, status, detail;  // status: ok, warn, fail, skip
};

struct Report {
  std::vector<Check> checks;
  void add(const std::string& n, const std::string& s, const std::string& d) { checks.push_back({n, s, d}); }
};

std::string gib(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f GiB", bytes / double(1ull << 30));
  return b;
}

// KEY=VALUE lines of a site-round configuration (same rules as round-lib.sh).
void read_config(Options& o) {
  std::ifstream in(o.config);
  if (!in) throw Error(kExitNoInput, "cannot read the configuration", o.config);
  std::string line;
  std::map<std::string, std::string> file;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t a = line.find_first_not_of(" \t");
    if (a == std::string::npos || line[a] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) throw Error(kExitConfig, "not KEY=VALUE", o.config + ":" + std::to_string(n));
    std::string k = line.substr(a, eq - a), v = line.substr(eq + 1);
    while (!k.empty() && (k.back() == ' ' || k.back() == '\t')) k.pop_back();
    size_t b = v.find_first_not_of(" \t");
    v = b == std::string::npos ? "" : v.substr(b);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    } else if (!v.empty() && v.front() == '#') {
      v.clear();  // KEY=  # a comment
    } else {
      // As round-lib.sh: an unquoted value ends where " # a comment" starts.
      for (size_t i = 1; i < v.size(); ++i)
        if (v[i] == '#' && (v[i - 1] == ' ' || v[i - 1] == '\t')) {
          v.erase(i);
          while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
          break;
        }
    }
    file[k] = v;  // as site-round reads it: the last line of a key wins
  }
  auto set = [&](std::string& dst, const char* k) {
    if (dst.empty() && file.count(k)) dst = file[k];  // the command line wins
  };
  set(o.exchange, "EXCHANGE");
  set(o.identity, "IDENTITY");
  set(o.aggregator_pub, "AGGREGATOR_PUB");
  set(o.dataset, "DATASET");
  set(o.work, "WORK");
  set(o.site, "SITE");
  set(o.device, "DEVICE");
  if (file.count("FETCH_OPTS")) o.fetch_opts = file["FETCH_OPTS"];
}

void check_torch(const Options& o, Report& r) {
  std::ostringstream d;
  d << "LibTorch " << TORCH_VERSION;
  const bool cuda = torch::cuda::is_available();
  d << (cuda ? ", CUDA with " + std::to_string(torch::cuda::device_count()) + " GPU(s)" : ", no CUDA");
  if (o.device != "cpu" && !cuda) {
    r.add("device", "fail", d.str() + ": --device " + o.device + " needs a CUDA LibTorch and a visible GPU");
    return;
  }
  // A tiny forward pass proves the library loads and computes on this device.
  try {
    torch::Device dev = o.device == "cpu" ? torch::Device(torch::kCPU) : torch::Device(o.device);
    auto x = torch::ones({2, 2}, torch::TensorOptions().device(dev));
    double s = x.matmul(x).sum().item<double>();
    if (std::abs(s - 8.0) > 1e-6) throw std::runtime_error("2x2 matmul gave " + std::to_string(s));
  } catch (const std::exception& e) {
    r.add("device", "fail", d.str() + ": a test computation on " + o.device + " failed: " + std::string(e.what()).substr(0, 200));
    return;
  }
  r.add("device", "ok", d.str() + "; a test computation on " + o.device + " worked");
}

void check_memory(Report& r) {
  std::ifstream in("/proc/meminfo");
  std::string k;
  double kb = -1;
  uint64_t v;
  std::string unit;
  while (in >> k >> v >> unit)
    if (k == "MemAvailable:") kb = double(v);
  if (kb < 0) {
    r.add("memory", "warn", "cannot read MemAvailable from /proc/meminfo");
    return;
  }
  const double b = kb * 1024;
  // Measured peaks (bench/train.sh): the small preset stays under 2 GiB; fets at 128^3
  // needs about 9.5 GiB on CPU.
  if (b < 2.0 * (1ull << 30)) r.add("memory", "fail", gib(b) + " available; the small preset needs about 2 GiB");
  else if (b < 10.0 * (1ull << 30))
    r.add("memory", "warn", gib(b) + " available: enough for the small preset, not for fets at 128^3 (about 9.5 GiB)");
  else r.add("memory", "ok", gib(b) + " available");
}

void check_disk(const std::string& what, const std::string& dir, Report& r) {
  struct statvfs s{};
  std::string d = dir;
  while (!d.empty() && !path_exists(d)) d = dirname_of(d) == d ? "" : dirname_of(d);
  if (d.empty()) d = ".";
  if (::statvfs(d.c_str(), &s) != 0) {
    r.add("disk " + what, "fail", "cannot stat " + d);
    return;
  }
  const double free_b = double(s.f_bavail) * double(s.f_frsize);
  // A round keeps the global model, the update, the checkpoint and the packages: about
  // 4 x 100 MB with fets, plus the mirror; 1 GiB is the floor, 10 GiB comfortable.
  if (free_b < double(1ull << 30)) r.add("disk " + what, "fail", gib(free_b) + " free in " + d + " (need at least 1 GiB)");
  else if (free_b < 10.0 * double(1ull << 30)) r.add("disk " + what, "warn", gib(free_b) + " free in " + d);
  else r.add("disk " + what, "ok", gib(free_b) + " free in " + d);
}

// Secret keys: present, owned by this user, not readable by group or others.
void check_keys(const Options& o, Report& r) {
  if (o.identity.empty()) {
    r.add("keys", "skip", "no identity folder given (--identity or IDENTITY)");
    return;
  }
  std::string problems, seen;
  for (const char* f : {"age.key", "minisign.key"}) {
    const std::string p = o.identity + "/" + f;
    struct stat st{};
    if (::stat(p.c_str(), &st) != 0) {
      problems += (problems.empty() ? "" : "; ") + p + " is missing";
      continue;
    }
    if (st.st_mode & 077) {
      char m[8];
      std::snprintf(m, sizeof m, "%03o", unsigned(st.st_mode & 0777));
      problems += (problems.empty() ? "" : "; ") + p + " has mode " + m + " (chmod 600)";
    }
    if (st.st_uid != ::geteuid()) problems += (problems.empty() ? "" : "; ") + p + " belongs to another user";
    seen += std::string(seen.empty() ? "" : ", ") + f;
  }
  if (!problems.empty()) r.add("keys", "fail", problems);
  else r.add("keys", "ok", o.identity + ": " + seen + " private (0600, yours)");
}

// The server's clock from the Date header of a HEAD request (RFC 9110 requires origin
// servers with a clock to send it), with the same TLS and auth options as the transfers.
// Returns false when there is no Date header or the request fails.
bool server_time(const std::string& url, const transfer::Options& t, double& server, double& local) {
  CURL* h = curl_easy_init();
  if (!h) return false;
  std::string date;
  auto on_header = +[](char* b, size_t size, size_t n, void* ud) -> size_t {
    std::string line(b, size * n);
    if (line.size() > 5 && strncasecmp(line.c_str(), "date:", 5) == 0) {
      std::string v = line.substr(5);
      while (!v.empty() && (v.back() == '\r' || v.back() == '\n')) v.pop_back();
      *static_cast<std::string*>(ud) = v;
    }
    return size * n;
  };
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &date);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, t.connect_timeout);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  if (!t.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, t.ca_file.c_str());
  if (!t.cert.empty()) curl_easy_setopt(h, CURLOPT_SSLCERT, t.cert.c_str());
  if (!t.key.empty()) curl_easy_setopt(h, CURLOPT_SSLKEY, t.key.c_str());
  if (!t.pin.empty()) curl_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, t.pin.c_str());
  if (t.netrc) curl_easy_setopt(h, CURLOPT_NETRC, long(CURL_NETRC_OPTIONAL));
  if (!t.netrc_file.empty()) {
    curl_easy_setopt(h, CURLOPT_NETRC, long(CURL_NETRC_OPTIONAL));
    curl_easy_setopt(h, CURLOPT_NETRC_FILE, t.netrc_file.c_str());
  }
  const auto t0 = std::chrono::system_clock::now();
  const CURLcode rc = curl_easy_perform(h);
  const auto t1 = std::chrono::system_clock::now();
  curl_easy_cleanup(h);
  if (rc != CURLE_OK || date.empty()) return false;
  const time_t d = curl_getdate(date.c_str(), nullptr);
  if (d < 0) return false;
  // Date has a resolution of one second and is taken while the response is made: compare
  // it with the middle of the request, rounded the same way.
  const double mid = std::chrono::duration<double>((t0 + (t1 - t0) / 2).time_since_epoch()).count();
  server = double(d) + 0.5;
  local = mid;
  return true;
}

void report_skew(Report& r, double skew, double max_skew, const std::string& what) {
  char d[128];
  std::snprintf(d, sizeof d, "%s clock is %+.1f s from this machine's", what.c_str(), skew);
  if (std::abs(skew) > max_skew)
    r.add("clock", "fail", std::string(d) + " (deadlines and signature times need < " + std::to_string(int(max_skew)) + " s; run NTP)");
  else if (std::abs(skew) > 30) r.add("clock", "warn", d);
  else r.add("clock", "ok", d);
}

// The exchange: LATEST readable and signed by the pinned aggregator key, a file can be
// written (folders), and the clock agrees with the exchange's.
void check_exchange(const Options& o, Report& r) {
  if (o.exchange.empty()) {
    r.add("exchange", "skip", "no exchange given (--exchange or EXCHANGE)");
    return;
  }
  const std::string tmp = (o.work.empty() ? std::string("/tmp") : o.work) + "/.doctor";
  try {
    fed::make_dirs(tmp);
  } catch (const Error& e) {
    r.add("exchange read", "fail", "cannot stage LATEST in " + tmp + ": " + e.message() + " (is WORK writable?)");
    return;
  }
  std::string latest = tmp + "/LATEST";
  std::remove(latest.c_str());
  std::remove((latest + ".minisig").c_str());
  const bool url = transfer::is_url(o.exchange);
  const std::string base = o.exchange.back() == '/' ? o.exchange.substr(0, o.exchange.size() - 1) : o.exchange;
  try {
    transfer::Options t = o.tr;
    t.force = true;
    t.retries = std::min(t.retries, 2);
    transfer::Result res;
    transfer::fetch(base + "/LATEST", latest, t, res);
    transfer::Result res2;
    transfer::fetch(base + "/LATEST.minisig", latest + ".minisig", t, res2);
  } catch (const Error& e) {
    r.add("exchange read", "fail", base + "/LATEST: " + e.message() + " (exit " + std::to_string(e.code()) + ")");
    return;
  }
  if (o.aggregator_pub.empty()) {
    r.add("exchange read", "warn", base + "/LATEST fetched; no --aggregator-pub, so its signature was not checked");
  } else {
    try {
      crypto::MinisignPublicKey key = package::public_key_of(o.aggregator_pub);
      package::Fields f = fed::verify_published(key, latest, {"", std::nullopt, "latest"});
      r.add("exchange read", "ok",
            base + "/LATEST: federation " + f.federation + ", round " + std::to_string(f.round) + ", signed by the pinned aggregator key");
    } catch (const Error& e) {
      r.add("exchange read", "fail", base + "/LATEST does not verify with " + o.aggregator_pub + ": " + e.message());
    }
  }
  if (url) {
    r.add("exchange write", "skip",
          "not probed over " + o.exchange.substr(0, o.exchange.find(':')) + " (write-once names): the first push tells");
    double server = 0, local = 0;
    if (o.exchange.rfind("s3://", 0) == 0) r.add("clock", "skip", "skew is checked against folder and HTTP(S) exchanges");
    else if (server_time(base + "/LATEST", o.tr, server, local)) report_skew(r, server - local, o.max_skew, "the server's (HTTP Date)");
    else r.add("clock", "warn", base + "/LATEST: the server sent no usable Date header; clock skew not checked");
    return;
  }
  // A probe file: writable, and its modification time (set by the file server) vs ours.
  const std::string probe = base + "/.fedseg-doctor-" + std::to_string(::getpid());
  const auto now = std::chrono::system_clock::now();
  {
    std::ofstream p(probe);
    p << "fedseg-doctor probe\n";
    if (!p.good()) {
      r.add("exchange write", "fail", "cannot write " + probe + ": sites push their packages here");
      return;
    }
  }
  struct stat st{};
  ::stat(probe.c_str(), &st);
  std::remove(probe.c_str());
  r.add("exchange write", "ok", base + " is writable");
  const double ours = std::chrono::duration<double>(now.time_since_epoch()).count();
  const double theirs = double(st.st_mtim.tv_sec) + 1e-9 * double(st.st_mtim.tv_nsec);
  report_skew(r, theirs - ours, o.max_skew, "the exchange's (file server)");
}

void check_dataset(const Options& o, Report& r) {
  if (o.dataset.empty()) {
    r.add("dataset", "skip", "no dataset given (--dataset or DATASET)");
    return;
  }
  try {
    nn::DatasetInfo info = nn::check_dataset(o.dataset, {"t1", "t1ce", "t2", "flair"}, {"ET", "TC", "WT"});
    if (info.num_train == 0) {
      r.add("dataset", "fail", o.dataset + ": no training case");
      return;
    }
    r.add("dataset", info.num_val == 0 ? "warn" : "ok",
          o.dataset + ": " + std::to_string(info.num_train) + " training and " + std::to_string(info.num_val) +
              " validation cases, labels " + info.label_scheme +
              (info.num_val == 0 ? " (no val split: fedseg-eval has nothing to score)" : ""));
  } catch (const Error& e) {
    r.add("dataset", "fail", e.message());
  }
}

int run(Options o, const ToolContext& ctx) {
  if (!o.config.empty()) read_config(o);
  if (o.device.empty()) o.device = "cpu";  // as site-round: DEVICE unset or empty
  if (!o.fetch_opts.empty()) {
    // The exchange is read with the options site-round gives fedseg-fetch (CA, client
    // certificate, pin, token...), so that an mTLS exchange is checked as it will be used.
    CLI::App opts;
    transfer::add_options(opts, o.tr);
    try {
      opts.parse(o.fetch_opts, false);
    } catch (const CLI::ParseError& e) {
      throw Error(kExitConfig, "FETCH_OPTS in", o.config, e.what());
    }
  }
  Report r;
  check_torch(o, r);
  check_memory(r);
  check_disk("work", o.work.empty() ? "." : o.work, r);
  if (!o.dataset.empty()) check_disk("dataset", dirname_of(o.dataset), r);
  check_keys(o, r);
  if (o.site.empty()) r.add("site", "skip", "no site id given (--site or SITE)");
  check_exchange(o, r);
  check_dataset(o, r);
  int fails = 0, warns = 0;
  for (const auto& c : r.checks) {
    fails += c.status == "fail";
    warns += c.status == "warn";
  }
  if (ctx.json()) {
    json checks = json::array();
    for (const auto& c : r.checks) checks.push_back({{"check", c.name}, {"status", c.status}, {"detail", c.detail}});
    ctx.emit_json({{"ok", fails == 0}, {"failed", fails}, {"warnings", warns}, {"checks", checks}});
  } else if (!ctx.common().quiet) {
    for (const auto& c : r.checks)
      std::cout << (c.status == "fail" ? "FAIL" : c.status) << std::string(6 - std::min<size_t>(c.status.size(), 4), ' ')
                << c.name << ": " << c.detail << "\n";
    std::cout << (fails ? std::to_string(fails) + " check(s) failed" : "ready") << (warns ? ", " + std::to_string(warns) + " warning(s)" : "")
              << "\n";
  } else {
    for (const auto& c : r.checks)
      if (c.status == "fail") std::cerr << "fedseg-doctor: " << c.name << ": " << c.detail << "\n";
  }
  return fails ? kExitUnavailable : kExitOk;
}

}  // namespace

const ToolDef& doctor() {
  static const ToolDef def{
      {
          "doctor",
          "check that this machine is ready for a site's first round",
          "[CONFIG] [--exchange EX] [--identity ID_DIR] [--aggregator-pub PUB_DIR] [--dataset DATASET.h5] [--work DIR]",
          "Runs the checks a site needs before its first round and prints one line per check: ok, warn, FAIL or "
          "skip (a check whose input was not given).\n\n"
          "device: LibTorch loads and a small computation runs on --device (cpu, cuda, cuda:N; CUDA needs an "
          "upstream CUDA LibTorch and a visible GPU). memory: MemAvailable against the measured peaks (about 2 GiB "
          "for the small preset, 9.5 GiB for fets at 128^3). disk: free space where WORK and the dataset live "
          "(fail below 1 GiB, warn below 10 GiB). keys: ID_DIR/age.key and minisign.key exist, belong to this "
          "user and are not readable by group or others. exchange: LATEST and its signature can be fetched "
          "(folder, http(s):// or s3://, with the fetch options below) and verify with the pinned aggregator "
          "key; for a folder exchange also that a file can be written there. clock: the exchange's clock is within "
          "--max-skew seconds of this machine's (deadlines and signature times depend on it): a folder's from the "
          "modification time of a probe file the file server stamps, an HTTP(S) server's from the Date header of a "
          "HEAD request (one-second resolution; warn above 30 s). dataset: the file from fedseg-prep opens, has the four BraTS "
          "channels and the three regions, a training and a val split.\n\n"
          "CONFIG is the site-round configuration file (KEY=VALUE lines: EXCHANGE, SITE, IDENTITY, "
          "AGGREGATOR_PUB, DATASET, WORK, DEVICE, and FETCH_OPTS, the fedseg-fetch options used to read the exchange; "
          "other keys are ignored; as in site-round the last line of a key wins); options on the command line win, "
          "except that FETCH_OPTS are applied after them. The write check probes EXCHANGE, not PUSH.",
          {{"fedseg-doctor /etc/fedseg/site.conf", "Check everything the site's round script will need."},
           {"fedseg-doctor --exchange /mnt/fedseg --identity /etc/fedseg/id --aggregator-pub /etc/fedseg/aggregator "
            "--dataset /data/fedseg/dataset.h5 --json",
            "The same with explicit paths, as JSON."}},
          {},
          {{69, "at least one check failed"}, {66, "CONFIG cannot be read"}, {78, "CONFIG is malformed"}},
          "{\"tool\", \"version\", \"ok\", \"failed\", \"warnings\", \"checks\": [{\"check\", \"status\" (ok, warn, "
          "fail, skip), \"detail\"}]}",
          {"fedseg-verify", "fedseg-fetch", "fedseg-prep"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("CONFIG", o->config, "a site-round configuration file")->type_name("CONFIG");
        app.add_option("--exchange", o->exchange, "the exchange: a folder, http(s):// or s3:// prefix")->type_name("EX");
        app.add_option("--identity", o->identity, "this site's identity folder")->type_name("ID_DIR");
        app.add_option("--aggregator-pub", o->aggregator_pub, "the pinned aggregator public folder")->type_name("PUB_DIR");
        app.add_option("--dataset", o->dataset, "this site's dataset from fedseg-prep")->type_name("DATASET.h5");
        app.add_option("--work", o->work, "the round script's work folder (disk space)")->type_name("DIR");
        app.add_option("--site", o->site, "this site's id")->type_name("NAME");
        app.add_option("--device", o->device, "cpu, cuda or cuda:N (default: DEVICE from CONFIG, else cpu)");
        app.add_option("--max-skew", o->max_skew, "largest clock difference accepted, seconds")->capture_default_str();
        transfer::add_options(app, o->tr);
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
