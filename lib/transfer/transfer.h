// fedseg::transfer: moves one file between a local path and a shared folder, an
// HTTP(S) server (a WebDAV file drop such as nginx) or an S3-compatible object store
// (DESIGN.md §5, reference/packages-and-transport.md §4-5). Used by fedseg-fetch and
// fedseg-push, and by any tool that takes a URL input (fetch_input()).
//
// Guarantees: a file appears under its final name complete or not at all (a dot-named
// temp or part file in the target folder, fsync, rename without replacing, fsync of
// the folder); remote names are write-once (an identical existing file is "nothing to
// do", a different one is refused with 73 unless force); transient failures (HTTP 408,
// 429, 5xx, connection failures, timeouts, stalls) are retried with capped exponential
// backoff and full jitter, then give 75; downloads resume with Range from the part
// file, within a run and across runs.
// Depends on core and libcurl only; nothing above it (no HDF5, no LibTorch).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace CLI {
class App;
}
namespace fedseg {
class ToolContext;
}

namespace fedseg::transfer {

enum class Scheme { file, http, https, s3 };

// Where a file is: a local path or a URL. For s3://BUCKET/KEY, url is the HTTP(S)
// URL the request goes to (path style on a given endpoint, virtual-hosted style on AWS).
struct Location {
  Scheme scheme = Scheme::file;
  std::string given;  // as written by the user
  std::string path;   // file
  std::string url;    // http, https, s3
  std::string bucket, key, region;  // s3
  bool remote() const { return scheme != Scheme::file; }
};

// True for http://, https:// and s3:// (case-insensitive scheme).
bool is_url(const std::string& s);

// S3 settings: endpoint (empty: AWS, https://BUCKET.s3.REGION.amazonaws.com), region,
// credentials. Filled from options, then the environment (see resolve_s3()).
struct S3Options {
  std::string endpoint;          // --s3-endpoint, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
  std::string region;            // --s3-region, AWS_REGION, AWS_DEFAULT_REGION, "us-east-1"
  std::string credentials_file;  // --s3-credentials (AWS shared credentials format)
  std::string profile;           // --s3-profile, AWS_PROFILE, "default"
  // Resolved by resolve_s3():
  std::string access_key, secret_key, session_token;
};

// Parses a path or URL. Throws Error 64 on a malformed URL or an unknown scheme.
// trailing '/' on a URL or an existing folder as a path means "this folder": the
// caller appends the other side's base name (see with_basename()).
Location parse_location(const std::string& s, const S3Options& s3 = {});

// If loc names a folder (a path that is a folder, or a URL ending in '/'), returns
// it with base_name appended; otherwise loc unchanged.
Location with_basename(const Location& loc, const std::string& base_name, const S3Options& s3 = {});

struct Options {
  bool force = false;       // replace a different existing destination
  // retries
  int retries = 5;          // extra attempts after the first
  double retry_delay = 1.0; // backoff base, seconds
  double retry_max_delay = 60.0;
  // timeouts: stall detection instead of a total timeout
  long connect_timeout = 30;   // seconds
  long stall_time = 60;        // seconds below stall_speed -> stalled (retried)
  long stall_speed = 1024;     // bytes per second
  // TLS and auth
  std::string ca_file, cert, key, pin;  // pin: "sha256//BASE64[;sha256//...]" or a public-key file
  bool https_only = false;
  bool insecure_loopback_ok = true;     // (reserved)
  std::string token_file;               // bearer token file; else FEDSEG_TOKEN if set
  bool netrc = false;                   // basic auth from ~/.netrc
  std::string netrc_file;               // basic auth from this netrc file
  std::string expect_sha256;            // fetch: the file must have this SHA-256 (65 otherwise)
  S3Options s3;
  bool progress = false;                // draw a progress line (the caller decides: TTY only)
  std::string progress_label;
};

// What happened, for --json and the -v summary line. Filled as the transfer goes, so
// that a caller that catches the Error can still report it.
struct Result {
  std::string source, destination;
  std::string action;         // "fetched", "pushed", "copied", "unchanged"
  std::string status = "error";  // "ok" at the end
  int exit_code = 0;
  uint64_t size = 0;          // size of the file
  uint64_t bytes = 0;         // body bytes moved over the wire (or copied) in this run
  uint64_t resumed_from = 0;  // bytes already in the part file when this run began
  double seconds = 0;
  int retries = 0;
  long http_status = 0;       // last HTTP status seen (0: none)
  std::string sha256;         // when computed
  std::string compared;       // for "unchanged": "sha256" or "size"
  std::string error;          // the error message when status is "error"
  nlohmann::json to_json() const;
};

// fedseg-fetch: SRC (path or URL) -> DEST (local path, or an existing folder).
// Throws Error with the documented exit code; r is filled either way.
void fetch(const std::string& src, const std::string& dest, const Options& o, Result& r);

// fedseg-push: SRC (local file) -> DEST (path, folder or URL).
void push(const std::string& src, const std::string& dest, const Options& o, Result& r);

// For tools that take an input that may be a URL: a path is returned as is; a URL is
// fetched into dir (created if needed) under its base name and that path is returned.
std::string fetch_input(const std::string& input, const std::string& dir, const Options& o);

// The body of fedseg-fetch (push = false) and fedseg-push: the transfer with the common
// options applied (--force, progress on a terminal), its --json document (also when it
// fails) and the -v summary line. Throws Error with the documented exit code.
int run_tool(bool push, const std::string& src, const std::string& dest, Options o, const ToolContext& ctx);

// Adds the transfer options (retries, timeouts, TLS, auth, S3) to a tool's CLI.
void add_options(CLI::App& app, Options& o);

// --- exposed for unit tests ---

// Full-jitter capped exponential backoff: u * min(cap, base * 2^attempt), u in [0,1).
double backoff_delay(int attempt, double base, double cap, double u);

// Exit code for a finished request: HTTP status (0 if none) and libcurl result code.
// retryable is set for transient failures (408, 429, 5xx, connection, timeout).
int classify(int curl_code, long http_status, bool for_fetch, bool& retryable);

// Reads AWS credentials: environment first (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN), else the [profile] of the credentials file. Throws 78 if none.
void resolve_s3(S3Options& s3);

}  // namespace fedseg::transfer
