#include "transfer/transfer.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/tool.h"

namespace fedseg::transfer {
namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

std::string getenv_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// S3 keys: unreserved characters and '/' as they are, the rest %XX (as SigV4's
// canonical URI wants it, so that libcurl signs what it sends).
std::string encode_key(const std::string& key) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/')
      out += static_cast<char>(c);
    else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};
void curl_once() { static CurlGlobal g; }

// ---------------------------------------------------------------- write-behind

// Starts the write-back of a download's part file while it grows, so that the fsync
// before the rename has little left to do: each completed kChunk range is handed to
// sync_file_range(SYNC_FILE_RANGE_WRITE) in a thread of its own, because that call can
// block while the kernel queues the I/O and the download must not wait for the disk.
// Only a head start: durability still comes from the fsync of the file (and of the
// folder after the rename); errors here are left for that fsync to report.
class WriteBehind {
 public:
  static constexpr uint64_t kChunk = 8u << 20;
  explicit WriteBehind(int fd) : fd_(fd) {}
  ~WriteBehind() { stop(); }
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // len bytes were written at off.
  void wrote(uint64_t off, uint64_t len) {
    std::lock_guard<std::mutex> g(m_);
    if (stopped_) return;
    if (off != hi_) {  // not where the last write ended (a new response, a restart)
      if (hi_ > lo_) queue_.emplace_back(lo_, hi_ - lo_);
      lo_ = off;
    }
    hi_ = off + len;
    if (hi_ - lo_ >= kChunk) {
      queue_.emplace_back(lo_, hi_ - lo_);
      lo_ = hi_;
    }
    if (queue_.empty()) return;
    if (!thread_.joinable()) {
      try {
        thread_ = std::thread([this] { run(); });
      } catch (...) {  // no thread (limits): no head start; the fsync does it all
        queue_.clear();
        stopped_ = true;
        return;
      }
    }
    cv_.notify_one();
  }

  // Waits for the thread; what is still queued is left to the fsync.
  void stop() {
    {
      std::lock_guard<std::mutex> g(m_);
      stopped_ = true;
      queue_.clear();
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      cv_.wait(lk, [this] { return stopped_ || !queue_.empty(); });
      if (stopped_) return;
      auto [off, len] = queue_.front();
      queue_.erase(queue_.begin());
      lk.unlock();
      ::sync_file_range(fd_, static_cast<off_t>(off), static_cast<off_t>(len), SYNC_FILE_RANGE_WRITE);
      lk.lock();
    }
  }

  int fd_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::pair<uint64_t, uint64_t>> queue_;
  uint64_t lo_ = 0, hi_ = 0;
  bool stopped_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------- HTTP requests

struct Response {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string curl_error;
  std::map<std::string, std::string> headers;  // lower-case names, last value
  std::string error_body;                        // first bytes of a non-2xx body
  uint64_t body_bytes = 0;                       // 2xx body bytes written to the sink
  uint64_t sent_bytes = 0;
  std::string protocol_error;  // set when a 206 is not the range asked for (transfer stopped)
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct Request {
  std::string method = "GET";  // GET, HEAD, PUT
  std::string url;
  std::vector<std::string> headers;
  uint64_t range_from = 0;     // GET: Range: bytes=N-
  int sink_fd = -1;            // GET: 2xx body appended here (at range_from; truncated on a 200)
  bool sink_hash = false;      // GET: hash the 2xx body instead of storing it
  int source_fd = -1;          // PUT: the body
  uint64_t source_size = 0;
};

std::optional<uint64_t> content_range_start(const std::string& cr);

class Http {
 public:
  Http(const Options& o, const Location& loc) : o_(o), loc_(loc) {
    if (o.https_only && loc.url.rfind("https://", 0) != 0)
      throw Error(kExitUnavailable, "refusing a plain HTTP URL", loc.given, "--https-only is set");
    if (!o.token_file.empty()) {
      token_ = trim(read_file(o.token_file, 1 << 16));
      if (token_.empty()) throw Error(kExitConfig, "empty bearer token file", o.token_file);
    } else if (!getenv_str("FEDSEG_TOKEN").empty()) {
      token_ = trim(getenv_str("FEDSEG_TOKEN"));
    }
    if (loc.scheme == Scheme::s3) {
      s3_ = o.s3;
      resolve_s3(s3_);
    }
    curl_once();
    h_ = curl_easy_init();
    if (!h_) throw Error(kExitSoftware, "cannot initialise libcurl");
  }
  ~Http() {
    if (h_) curl_easy_cleanup(h_);
  }
  Http(const Http&) = delete;
  Http& operator=(const Http&) = delete;

  // Set by the caller for progress: bytes already there and the expected total.
  Progress* progress = nullptr;
  uint64_t progress_base = 0;

  Response perform(const Request& rq) {
    Response rs;
    State st{&rq, &rs, this};
    CURL* h = h_;
    curl_easy_reset(h);
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_URL, rq.url.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, o_.https_only ? "https" : "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);  // never carry credentials elsewhere
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 0L);     // classify on the status instead
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, o_.connect_timeout);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, o_.stall_speed);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, o_.stall_time);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "fedseg-transfer/1");
    if (!o_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, o_.ca_file.c_str());
    if (!o_.cert.empty()) curl_easy_setopt(h, CURLOPT_SSLCERT, o_.cert.c_str());
    if (!o_.key.empty()) curl_easy_setopt(h, CURLOPT_SSLKEY, o_.key.c_str());
    if (!o_.pin.empty()) curl_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, o_.pin.c_str());
    if (!o_.netrc_file.empty()) {
      curl_easy_setopt(h, CURLOPT_NETRC, static_cast<long>(CURL_NETRC_OPTIONAL));
      curl_easy_setopt(h, CURLOPT_NETRC_FILE, o_.netrc_file.c_str());
    } else if (o_.netrc) {
      curl_easy_setopt(h, CURLOPT_NETRC, static_cast<long>(CURL_NETRC_OPTIONAL));
    }
    if (rq.method == "PUT" && ::lseek(rq.source_fd, 0, SEEK_SET) < 0)
      throw_errno(kExitIoErr, "cannot read", loc_.given, errno);
    struct curl_slist* hdrs = nullptr;
    for (const auto& x : rq.headers) hdrs = curl_slist_append(hdrs, x.c_str());
    std::string userpwd;
    if (loc_.scheme == Scheme::s3) {
      // An S3 key is a name, not a path: "a/../b" and "a/./b" are keys of their own,
      // so libcurl must send (and sign) the path without collapsing dot segments.
      curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
      sigv4_ = "aws:amz:" + loc_.region + ":s3";
      curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4_.c_str());
      userpwd = s3_.access_key + ":" + s3_.secret_key;
      curl_easy_setopt(h, CURLOPT_USERPWD, userpwd.c_str());
      if (!s3_.session_token.empty())
        hdrs = curl_slist_append(hdrs, ("x-amz-security-token: " + s3_.session_token).c_str());
      // The payload is streamed from a file: sign it as unsigned (TLS protects it).
      hdrs = curl_slist_append(hdrs, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    } else if (!token_.empty()) {
      curl_easy_setopt(h, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BEARER));
      curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, token_.c_str());
    }
    if (rq.method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (rq.method == "PUT") {
      curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(rq.source_size));
      curl_easy_setopt(h, CURLOPT_READFUNCTION, &State::on_read);
      curl_easy_setopt(h, CURLOPT_READDATA, &st);
    } else if (rq.range_from > 0) {
      std::string r = std::to_string(rq.range_from) + "-";
      curl_easy_setopt(h, CURLOPT_RANGE, r.c_str());
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &State::on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &st);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &State::on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &State::on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &st);
    rs.code = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rs.status);
    rs.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(rs.code);
    if (rs.code == CURLE_SSL_CONNECT_ERROR) {
      // A handshake cut off by the network (reset, EOF: a restarting or overloaded server)
      // is not a TLS verdict: retried like any dropped connection.
      long os_errno = 0;
      curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
      const std::string& m = rs.curl_error;
      if (os_errno == ECONNRESET || os_errno == EPIPE || os_errno == ECONNABORTED ||
          m.find("reset by peer") != std::string::npos || m.find("SSL_ERROR_SYSCALL") != std::string::npos ||
          m.find("unexpected eof") != std::string::npos)
        rs.code = CURLE_RECV_ERROR;
    }
    if (st.write_error) {
      rs.code = CURLE_WRITE_ERROR;
      rs.curl_error = std::string("cannot write the part file: ") + std::strerror(st.write_errno);
    } else if (st.read_error) {
      rs.code = CURLE_READ_ERROR;
      rs.curl_error = std::string("cannot read the source: ") + std::strerror(st.read_errno);
    } else if (!rs.protocol_error.empty()) {
      rs.code = CURLE_WEIRD_SERVER_REPLY;
      rs.curl_error = rs.protocol_error;
    }
    return rs;
  }

  Sha256* body_hash = nullptr;  // for Request::sink_hash
  WriteBehind* write_behind = nullptr;  // told about each write to Request::sink_fd
  // Called once the headers of a 200/206 to a download are in, before its body.
  std::function<void(const Response&)> on_body_start;

 private:
  struct State {
    const Request* rq;
    Response* rs;
    Http* http;
    bool started = false;
    bool ok_body = false;
    bool write_error = false;
    int write_errno = 0;
    bool read_error = false;
    int read_errno = 0;
    uint64_t pos = 0;  // where the next body byte goes in the sink file

    static size_t on_header(char* data, size_t size, size_t n, void* p) {
      auto* s = static_cast<State*>(p);
      std::string line(data, size * n);
      if (line.rfind("HTTP/", 0) == 0) s->rs->headers.clear();  // a new response (100 Continue)
      auto colon = line.find(':');
      if (colon != std::string::npos) s->rs->headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
      return size * n;
    }
    static size_t on_write(char* data, size_t size, size_t n, void* p) {
      auto* s = static_cast<State*>(p);
      size_t len = size * n;
      if (!s->started) {
        s->started = true;
        long status = 0;
        curl_easy_getinfo(s->http->h_, CURLINFO_RESPONSE_CODE, &status);
        s->ok_body = (status == 200 || status == 206);
        if (s->ok_body && s->rq->sink_fd >= 0) {
          // A 200 to a range request is the whole file again: start over.
          uint64_t at = status == 206 ? s->rq->range_from : 0;
          if (status == 206) {
            const std::string cr = s->rs->header("content-range");
            auto start = content_range_start(cr);
            if (!start || *start != s->rq->range_from) {
              s->rs->protocol_error = "asked for the bytes from " + std::to_string(s->rq->range_from) +
                                      ", the server sent Content-Range '" + cr.substr(0, 80) + "'";
              return 0;  // stop before writing anything
            }
          }
          if (status == 200 && s->rq->range_from > 0) {
            if (::ftruncate(s->rq->sink_fd, 0) != 0) return fail(s, errno);
            s->http->restarted_ = true;
          }
          if (::lseek(s->rq->sink_fd, static_cast<off_t>(at), SEEK_SET) < 0) return fail(s, errno);
          s->pos = at;
          s->http->progress_base = at;
          if (s->http->on_body_start) s->http->on_body_start(*s->rs);
        }
      }
      if (!s->ok_body) {
        if (s->rs->error_body.size() < 2048) s->rs->error_body.append(data, std::min<size_t>(len, 2048));
        return len;
      }
      if (s->rq->sink_hash) {
        if (s->http->body_hash) s->http->body_hash->update(data, len);
      } else if (s->rq->sink_fd >= 0) {
        const char* q = data;
        size_t left = len;
        while (left > 0) {
          ssize_t w = ::write(s->rq->sink_fd, q, left);
          if (w < 0) {
            if (errno == EINTR) continue;
            return fail(s, errno);
          }
          q += w;
          left -= static_cast<size_t>(w);
        }
        if (s->http->write_behind) s->http->write_behind->wrote(s->pos, len);
        s->pos += len;
      }
      s->rs->body_bytes += len;
      return len;
    }
    static size_t fail(State* s, int e) {
      s->write_error = true;
      s->write_errno = e;
      return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
    }
    static size_t on_read(char* buf, size_t size, size_t n, void* p) {
      auto* s = static_cast<State*>(p);
      for (;;) {
        ssize_t r = ::read(s->rq->source_fd, buf, size * n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
          s->read_error = true;
          s->read_errno = errno;
          return CURL_READFUNC_ABORT;
        }
        s->rs->sent_bytes += static_cast<uint64_t>(r);
        return static_cast<size_t>(r);
      }
    }
    static int on_progress(void* p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
      auto* s = static_cast<State*>(p);
      if (s->http->progress) {
        if (s->rq->method == "PUT")
          s->http->progress->set(static_cast<uint64_t>(ulnow));
        else if (s->ok_body)
          s->http->progress->set(s->http->progress_base + static_cast<uint64_t>(dlnow));
      }
      return 0;
    }
  };

 public:
  bool restarted_ = false;

 private:
  const Options& o_;
  const Location& loc_;
  CURL* h_ = nullptr;
  std::string token_, sigv4_;
  S3Options s3_;
};

std::string body_snippet(const std::string& body) {
  std::string out;
  bool tag = false;
  for (char c : body) {
    if (c == '<') tag = true;
    else if (c == '>') { tag = false; out += ' '; }
    else if (!tag) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  }
  std::string t;
  for (char c : out)
    if (!(c == ' ' && (t.empty() || t.back() == ' '))) t += c;
  t = trim(t);
  return t.size() > 160 ? t.substr(0, 160) + "..." : t;
}

// The error for a request that failed permanently or ran out of retries.
Error request_error(const Location& loc, const Response& rs, bool for_fetch, int retries) {
  bool retryable = false;
  int code = classify(rs.code, rs.code == CURLE_OK ? rs.status : 0, for_fetch, retryable);
  if (code == kExitOk) code = kExitProtocol;  // a 2xx this transfer cannot use (204 to a GET, 202 to a PUT)
  std::string why;
  if (rs.code != CURLE_OK)
    why = rs.curl_error;
  else
    why = "HTTP " + std::to_string(rs.status);
  const char* what = for_fetch ? "cannot fetch" : "cannot push to";
  if (code == kExitNoInput) what = "not found";
  if (code == kExitNoPerm) what = "not permitted";
  Error e(code, what, loc.given, why);
  if (retryable) e.add_context("gave up after " + std::to_string(retries) + " retries");
  std::string snip = body_snippet(rs.error_body);
  if (!snip.empty() && rs.code == CURLE_OK) e.add_context("server said: " + snip);
  return e;
}

void sleep_backoff(const Options& o, int attempt) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  double d = backoff_delay(attempt, o.retry_delay, o.retry_max_delay, u);
  if (d > 0) std::this_thread::sleep_for(std::chrono::duration<double>(d));
}

// Runs rq with retries on transient failures. Returns the last response, which is
// either a success (CURLE_OK, status not retryable) or a permanent failure; throws
// the 75 error when retries run out. before_retry is called before each new attempt.
Response with_retries(Http& http, const Options& o, const Location& loc, bool for_fetch, Result& r,
                      const std::function<Request()>& make) {
  for (int attempt = 0;; ++attempt) {
    Request rq = make();
    Response rs = http.perform(rq);
    if (rs.code == CURLE_OK) r.http_status = rs.status;
    if (rq.method == "GET") r.bytes += rs.body_bytes;
    bool retryable = false;
    int code = classify(rs.code, rs.code == CURLE_OK ? rs.status : 0, for_fetch, retryable);
    if (code == kExitOk || !retryable) return rs;
    if (attempt >= o.retries) throw request_error(loc, rs, for_fetch, r.retries);
    log::debug("retrying " + loc.given + " (" +
               (rs.code != CURLE_OK ? rs.curl_error : "HTTP " + std::to_string(rs.status)) + ")");
    ++r.retries;
    sleep_backoff(o, attempt);
  }
}

uint64_t parse_u64(const std::string& s, uint64_t fallback) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return fallback;
  return std::strtoull(s.c_str(), nullptr, 10);
}

// "bytes A-B/N": A, or nothing when the header is not of that form.
std::optional<uint64_t> content_range_start(const std::string& cr) {
  if (cr.rfind("bytes ", 0) != 0) return std::nullopt;
  size_t i = 6, n = 0;
  uint64_t v = 0;
  while (i < cr.size() && cr[i] >= '0' && cr[i] <= '9' && n < 20) v = v * 10 + uint64_t(cr[i++] - '0'), ++n;
  if (n == 0 || n == 20 || i >= cr.size() || cr[i] != '-') return std::nullopt;
  return v;
}

// Total size from "Content-Range: bytes a-b/N" or "bytes */N".
std::optional<uint64_t> content_range_total(const std::string& cr) {
  auto slash = cr.rfind('/');
  if (slash == std::string::npos || slash + 1 >= cr.size() || cr[slash + 1] == '*') return std::nullopt;
  return parse_u64(cr.substr(slash + 1), 0);
}

// ---------------------------------------------------------------- local files

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

uint64_t file_size_of(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(kExitIoErr, "cannot stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

int open_source(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno == ENOENT || errno == EACCES ? kExitNoInput : kExitIoErr, "cannot open", path, errno);
  struct stat st {};
  ::fstat(fd, &st);
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(kExitNoInput, "cannot open", path, "not a regular file");
  }
  return fd;
}

std::string sha256_fd(int fd, const std::string& path) {
  Sha256 h;
  std::vector<char> buf(1 << 20);
  off_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(kExitIoErr, "cannot read", path, errno);
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    off += n;
  }
  return h.hex();
}

bool same_file_content(const std::string& a, const std::string& b) {
  Fd fa(open_source(a)), fb(open_source(b));
  if (file_size_of(fa.fd, a) != file_size_of(fb.fd, b)) return false;
  return sha256_fd(fa.fd, a) == sha256_fd(fb.fd, b);
}

// Moves a complete, synced temp or part file to dest: without replacing (then an
// identical file already there is success), or replacing with force. Returns
// "unchanged" when dest already held the same bytes.
std::string publish(const std::string& tmp, const std::string& dest, bool force, Result& r) {
  if (force) {
    if (::rename(tmp.c_str(), dest.c_str()) != 0) throw_errno(kExitIoErr, "cannot rename into place", dest, errno);
    fsync_dir(dirname_of(dest));
    return "";
  }
  if (AtomicFile::rename_no_replace(tmp, dest)) {
    fsync_dir(dirname_of(dest));
    return "";
  }
  if (same_file_content(tmp, dest)) {
    ::unlink(tmp.c_str());
    r.compared = "sha256";
    return "unchanged";
  }
  ::unlink(tmp.c_str());
  throw Error(kExitCantCreate, "output exists", dest, "it differs from the source; use --force to replace it");
}

// Folder to folder: temp file in the target folder, fsync, rename without replacing,
// fsync the folder (AtomicFile does the temp-file part and cleans up on signals).
void copy_local(const std::string& src, const std::string& dest, const Options& o, Result& r) {
  auto t0 = Clock::now();
  Fd in(open_source(src));
  r.size = file_size_of(in.fd, src);
  // Temp files of copies to this name killed outright (a rerun after a crash) go first,
  // also when there is nothing left to copy.
  AtomicFile::remove_stale(dest);
  if (path_exists(dest) && !o.force) {
    if (same_file_content(src, dest)) {
      r.action = "unchanged";
      r.compared = "sha256";
      r.status = "ok";
      return;
    }
    throw Error(kExitCantCreate, "output exists", dest, "it differs from the source; use --force to replace it");
  }
  std::string tmp;
  {
    AtomicFile out(dest, /*overwrite=*/true, 0644);  // the rename below decides about replacing
    std::unique_ptr<Progress> bar;
    if (o.progress) bar = std::make_unique<Progress>(o.progress_label, r.size, Progress::Unit::bytes);
    int ofd = ::open(out.temp_path().c_str(), O_WRONLY | O_CLOEXEC);
    if (ofd < 0) throw_errno(kExitCantCreate, "cannot create output", dest, errno);
    Fd of(ofd);
    loff_t off_in = 0;
    while (static_cast<uint64_t>(off_in) < r.size) {
      ssize_t n = ::copy_file_range(in.fd, &off_in, ofd, nullptr, 64u << 20, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
        // Old kernel or filesystem pair: plain reads and writes.
        std::vector<char> buf(1 << 20);
        for (;;) {
          ssize_t k = ::pread(in.fd, buf.data(), buf.size(), off_in);
          if (k < 0 && errno == EINTR) continue;
          if (k < 0) throw_errno(kExitIoErr, "cannot read", src, errno);
          if (k == 0) break;
          out.write(buf.data(), static_cast<size_t>(k));
          off_in += k;
          if (bar) bar->set(static_cast<uint64_t>(off_in));
        }
        break;
      }
      if (n < 0) throw_errno(kExitIoErr, "cannot copy to", dest, errno);
      if (n == 0) break;
      if (bar) bar->set(static_cast<uint64_t>(off_in));
    }
    r.bytes = static_cast<uint64_t>(off_in);
    if (r.bytes != r.size) throw Error(kExitIoErr, "source changed while it was copied", src);
    if (::fsync(ofd) != 0) throw_errno(kExitIoErr, "cannot sync", dest, errno);
    // Hand the synced temp file to publish(): it renames without replacing.
    tmp = AtomicFile::temp_prefix(dest) + std::to_string(::getpid()) + "-copy";
    if (::rename(out.temp_path().c_str(), tmp.c_str()) != 0) throw_errno(kExitIoErr, "cannot rename", tmp, errno);
    out.discard();
  }
  try {
    std::string res = publish(tmp, dest, o.force, r);
    r.action = res.empty() ? "copied" : res;
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.status = "ok";
}

// ---------------------------------------------------------------- fetch over HTTP

// The part file of a download: ".NAME.fedseg-part" next to NAME, plus
// ".NAME.fedseg-part.meta" holding the URL and the validator (ETag or Last-Modified)
// of the bytes in it, so that a later run resumes only the same file.
struct PartFile {
  std::string path, meta;
  int fd = -1;
  bool locked = false;  // only the holder of the lock may remove the part file
  explicit PartFile(const std::string& dest) {
    std::string dir = dirname_of(dest);
    std::string base = basename_of(dest);
    path = (dest.find('/') == std::string::npos ? std::string() : dir + "/") + "." + base + ".fedseg-part";
    meta = path + ".meta";
  }
  ~PartFile() {
    if (fd >= 0) ::close(fd);
  }
  void remove() {
    ::unlink(path.c_str());
    ::unlink(meta.c_str());
  }
};

nlohmann::json read_meta(const std::string& meta) {
  std::ifstream f(meta);
  if (!f) return nullptr;
  try {
    return nlohmann::json::parse(f);
  } catch (...) {
    return nullptr;
  }
}

void write_meta(const std::string& meta, const std::string& url, const std::string& validator) {
  std::string tmp = meta + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << nlohmann::json{{"url", url}, {"validator", validator}}.dump() << "\n";
  }
  ::rename(tmp.c_str(), meta.c_str());
}

void fetch_http_impl(const Location& src, const std::string& dest, const Options& o, Result& r, PartFile& part) {
  auto t0 = Clock::now();
  Http http(o, src);
  if (is_directory(dest)) throw Error(kExitCantCreate, "cannot write output", dest, "is a folder");
  std::string dir = dirname_of(dest);
  if (!is_directory(dir)) throw Error(kExitCantCreate, "cannot create output", dest, "no such folder");

  // A different existing DEST is refused before anything is downloaded when the
  // sizes already differ.
  if (path_exists(dest) && !o.force) {
    Response head = with_retries(http, o, src, true, r, [&] {
      Request q;
      q.method = "HEAD";
      q.url = src.url;
      return q;
    });
    if (head.code != CURLE_OK || head.status < 200 || head.status > 299) throw request_error(src, head, true, r.retries);
    uint64_t remote = parse_u64(head.header("content-length"), UINT64_MAX);
    Fd d(open_source(dest));
    if (remote != UINT64_MAX && remote != file_size_of(d.fd, dest))
      throw Error(kExitCantCreate, "output exists", dest, "it differs from " + src.given + "; use --force to replace it");
  }

  part.fd = ::open(part.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (part.fd < 0) throw_errno(kExitCantCreate, "cannot create output", part.path, errno);
  // One fetch per part file: an overlapping cron run gets 75.
  if (::flock(part.fd, LOCK_EX | LOCK_NB) != 0)
    throw Error(kExitTempFail, "another fetch is writing", part.path, "retry later");
  part.locked = true;

  WriteBehind write_behind(part.fd);
  http.write_behind = &write_behind;

  uint64_t have = file_size_of(part.fd, part.path);
  std::string validator;
  if (have > 0) {
    nlohmann::json m = read_meta(part.meta);
    if (m.is_object() && m.value("url", "") == src.url && !m.value("validator", "").empty()) {
      validator = m.value("validator", "");
    } else {
      // Bytes of another file, of unknown origin, or of a file the server gave no validator
      // for (a resume could splice two versions): start over.
      if (::ftruncate(part.fd, 0) != 0) throw_errno(kExitIoErr, "cannot truncate", part.path, errno);
      have = 0;
    }
  }
  r.resumed_from = have;
  if (have > 0) log::debug("resuming " + src.given + " from byte " + std::to_string(have));

  std::unique_ptr<Progress> bar;
  if (o.progress) {
    bar = std::make_unique<Progress>(o.progress_label, 0, Progress::Unit::bytes);
    http.progress = bar.get();
  }
  std::optional<uint64_t> total;
  bool complete = false;
  // Record what the bytes in the part file are before any is written, so that a run
  // killed mid-transfer can be resumed by the next one.
  auto validator_of = [](const Response& rs) {
    std::string v = rs.header("etag");
    if (v.empty() || v.rfind("W/", 0) == 0) v = rs.header("last-modified");
    return v;
  };
  http.on_body_start = [&](const Response& rs) {
    std::string v = validator_of(rs);
    if (v != validator || !path_exists(part.meta)) write_meta(part.meta, src.url, v);
    validator = v;
  };
  for (int round = 0; !complete; ++round) {
    if (round > 3) throw Error(kExitProtocol, "cannot fetch", src.given, "the server keeps changing the file");
    Response rs = with_retries(http, o, src, true, r, [&] {
      Request q;
      q.url = src.url;
      q.sink_fd = part.fd;
      q.range_from = file_size_of(part.fd, part.path);
      // If-Range: a changed file comes back whole (200) instead of spliced. Without a
      // validator (no strong ETag, no Last-Modified) nothing can tell: start over.
      if (q.range_from > 0 && validator.empty()) {
        if (::ftruncate(part.fd, 0) != 0) throw_errno(kExitIoErr, "cannot truncate", part.path, errno);
        q.range_from = 0;
      }
      if (q.range_from > 0) q.headers.push_back("If-Range: " + validator);
      return q;
    });
    if (rs.code == CURLE_OK && (rs.status == 200 || rs.status == 206)) {
      uint64_t now = file_size_of(part.fd, part.path);
      if (rs.status == 200 && rs.body_bytes == 0 && now > 0) {  // the file is empty now
        if (::ftruncate(part.fd, 0) != 0) throw_errno(kExitIoErr, "cannot truncate", part.path, errno);
        now = 0;
      }
      if (rs.status == 206) total = content_range_total(rs.header("content-range"));
      else total = now;
      if (total && now != *total)
        throw Error(kExitProtocol, "cannot fetch", src.given, "the server sent a short body without an error");
      if (!total) total = now;
      complete = true;
    } else if (rs.code == CURLE_OK && rs.status == 416) {
      // Nothing after our bytes: complete if the sizes agree, else the file changed.
      auto t = content_range_total(rs.header("content-range"));
      uint64_t now = file_size_of(part.fd, part.path);
      if (t && *t == now) {
        total = now;
        complete = true;
      } else {
        if (::ftruncate(part.fd, 0) != 0) throw_errno(kExitIoErr, "cannot truncate", part.path, errno);
        validator.clear();
      }
    } else {
      throw request_error(src, rs, true, r.retries);
    }
  }
  bar.reset();
  r.size = *total;
  write_behind.stop();
  if (::fsync(part.fd) != 0) throw_errno(kExitIoErr, "cannot sync", part.path, errno);
  if (!o.expect_sha256.empty()) {
    r.sha256 = sha256_fd(part.fd, part.path);
    if (r.sha256 != lower(o.expect_sha256)) {
      part.remove();
      throw Error(kExitDataErr, "checksum mismatch", src.given,
                  "sha256 " + r.sha256 + ", expected " + lower(o.expect_sha256));
    }
  }
  std::string res;
  try {
    res = publish(part.path, dest, o.force, r);
  } catch (const Error&) {
    part.remove();
    throw;
  }
  ::unlink(part.meta.c_str());
  r.action = res.empty() ? "fetched" : res;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.status = "ok";
}

void fetch_http(const Location& src, const std::string& dest, const Options& o, Result& r) {
  auto t0 = Clock::now();
  PartFile part(dest);
  try {
    fetch_http_impl(src, dest, o, r, part);
  } catch (...) {
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    // Keep a part file with bytes in it (the next run resumes it), not an empty one.
    struct stat st {};
    if (part.locked && ::fstat(part.fd, &st) == 0 && st.st_size == 0) part.remove();
    throw;
  }
}

// ---------------------------------------------------------------- push over HTTP / S3

// Compares the remote file with the local one: "sha256" or "size" when identical,
// "" when different. S3 answers the sha256 we stored as metadata; a plain HTTP server
// is read back (GET) to hash it, and if it does not let us read (401/403/405) the
// sizes alone decide (reported as compared = "size").
std::string compare_remote(Http& http, const Location& dest, const Response& head, int fd, const std::string& src,
                           const Options& o, Result& r, std::string& local_sha) {
  uint64_t remote = parse_u64(head.header("content-length"), UINT64_MAX);
  if (remote != r.size) return "";
  if (local_sha.empty()) local_sha = sha256_fd(fd, src);
  std::string meta = lower(head.header("x-amz-meta-sha256"));
  if (!meta.empty()) return meta == local_sha ? "sha256" : "";
  std::unique_ptr<Sha256> h;
  Response g = with_retries(http, o, dest, false, r, [&] {
    h = std::make_unique<Sha256>();  // each attempt hashes the whole body afresh
    http.body_hash = h.get();
    Request q;
    q.url = dest.url;
    q.sink_hash = true;
    return q;
  });
  http.body_hash = nullptr;
  if (g.code == CURLE_OK && g.status == 200) return h->hex() == local_sha ? "sha256" : "";
  if (g.code == CURLE_OK && (g.status == 401 || g.status == 403 || g.status == 405)) return "size";
  throw request_error(dest, g, false, r.retries);
}

void push_http(const std::string& src, const Location& dest, const Options& o, Result& r) {
  auto t0 = Clock::now();
  Fd in(open_source(src));
  r.size = file_size_of(in.fd, src);
  Http http(o, dest);
  std::string sha;
  if (dest.scheme == Scheme::s3) sha = sha256_fd(in.fd, src);  // stored as x-amz-meta-sha256

  auto existing = [&](const Response& head) {
    std::string how = compare_remote(http, dest, head, in.fd, src, o, r, sha);
    if (how.empty())
      throw Error(kExitCantCreate, "output exists", dest.given, "it differs from " + src + "; use --force to replace it");
    r.action = "unchanged";
    r.compared = how;
    r.sha256 = sha;
  };
  auto head_req = [&] {
    Request q;
    q.method = "HEAD";
    q.url = dest.url;
    return q;
  };

  // Plain HTTP servers may overwrite on PUT: look first (write-once from our side).
  // S3 refuses the overwrite itself (If-None-Match: *, 412).
  if (!o.force && dest.scheme != Scheme::s3) {
    Response h = with_retries(http, o, dest, false, r, head_req);
    if (h.code == CURLE_OK && h.status >= 200 && h.status < 300) {
      existing(h);
      r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      r.status = "ok";
      return;
    }
    // 404: not there yet. 401/403/405: we may be allowed to write, not to look.
    if (h.code != CURLE_OK || !(h.status == 404 || h.status == 401 || h.status == 403 || h.status == 405))
      throw request_error(dest, h, false, r.retries);
  }

  std::unique_ptr<Progress> bar;
  if (o.progress) {
    bar = std::make_unique<Progress>(o.progress_label, r.size, Progress::Unit::bytes);
    http.progress = bar.get();
  }
  Response rs = with_retries(http, o, dest, false, r, [&] {
    Request q;
    q.method = "PUT";
    q.url = dest.url;
    q.source_fd = in.fd;
    q.source_size = r.size;
    if (!o.force) q.headers.push_back("If-None-Match: *");
    if (!sha.empty()) q.headers.push_back("x-amz-meta-sha256: " + sha);
    q.headers.push_back("Content-Type: application/octet-stream");
    return q;
  });
  // bytes: what the last (successful) attempt sent
  bar.reset();
  if (rs.code == CURLE_OK && (rs.status == 200 || rs.status == 201 || rs.status == 204)) {
    r.bytes = rs.sent_bytes;
    r.action = "pushed";
  } else if (rs.code == CURLE_OK && (rs.status == 409 || rs.status == 412)) {
    // Write-once: someone (maybe our own earlier, interrupted run) published it.
    Response h = with_retries(http, o, dest, false, r, head_req);
    if (h.code != CURLE_OK || h.status < 200 || h.status > 299) throw request_error(dest, h, false, r.retries);
    existing(h);
  } else {
    throw request_error(dest, rs, false, r.retries);
  }
  if (!sha.empty()) r.sha256 = sha;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.status = "ok";
}

}  // namespace

// ---------------------------------------------------------------- public

bool is_url(const std::string& s) {
  std::string l = lower(s.substr(0, 8));
  return l.rfind("http://", 0) == 0 || l.rfind("https://", 0) == 0 || l.rfind("s3://", 0) == 0;
}

Location parse_location(const std::string& s, const S3Options& s3) {
  Location loc;
  loc.given = s;
  if (s.empty()) throw Error(kExitUsage, "empty path or URL");
  std::string l = lower(s.substr(0, 8));
  if (l.rfind("s3://", 0) == 0) {
    loc.scheme = Scheme::s3;
    std::string rest = s.substr(5);
    auto slash = rest.find('/');
    loc.bucket = rest.substr(0, slash);
    loc.key = slash == std::string::npos ? std::string() : rest.substr(slash + 1);
    if (loc.bucket.empty()) throw Error(kExitUsage, "malformed S3 URL", s, "expected s3://BUCKET/KEY");
    for (char c : loc.bucket)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'))
        throw Error(kExitUsage, "malformed S3 URL", s, "bad bucket name");
    loc.region = s3.region;
    if (loc.region.empty()) loc.region = getenv_str("AWS_REGION");
    if (loc.region.empty()) loc.region = getenv_str("AWS_DEFAULT_REGION");
    if (loc.region.empty()) loc.region = "us-east-1";
    std::string ep = s3.endpoint;
    if (ep.empty()) ep = getenv_str("AWS_ENDPOINT_URL_S3");
    if (ep.empty()) ep = getenv_str("AWS_ENDPOINT_URL");
    if (ep.empty()) {
      loc.url = "https://" + loc.bucket + ".s3." + loc.region + ".amazonaws.com/" + encode_key(loc.key);
    } else {
      while (!ep.empty() && ep.back() == '/') ep.pop_back();
      std::string el = lower(ep.substr(0, 8));
      if (el.rfind("http://", 0) != 0 && el.rfind("https://", 0) != 0)
        throw Error(kExitUsage, "malformed S3 endpoint", ep, "expected http(s)://HOST[:PORT]");
      loc.url = ep + "/" + loc.bucket + "/" + encode_key(loc.key);
    }
    return loc;
  }
  if (l.rfind("http://", 0) == 0 || l.rfind("https://", 0) == 0) {
    loc.scheme = l.rfind("https://", 0) == 0 ? Scheme::https : Scheme::http;
    CURLU* u = curl_url();
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, s.c_str(), 0);
    curl_url_cleanup(u);
    if (rc != CURLUE_OK) throw Error(kExitUsage, "malformed URL", s, curl_url_strerror(rc));
    loc.url = s;
    return loc;
  }
  if (s.find("://") != std::string::npos)
    throw Error(kExitUsage, "unsupported URL scheme", s, "use a path, http://, https:// or s3://");
  loc.path = s;
  return loc;
}

Location with_basename(const Location& loc, const std::string& base_name, const S3Options& s3) {
  if (loc.scheme == Scheme::file) {
    if (!is_directory(loc.path) && (loc.path.empty() || loc.path.back() != '/')) return loc;
    Location out = loc;
    out.path = loc.path + (loc.path.back() == '/' ? "" : "/") + base_name;
    out.given = out.path;
    return out;
  }
  if (loc.given.back() != '/' && !(loc.scheme == Scheme::s3 && loc.key.empty())) return loc;
  std::string g = loc.given + (loc.given.back() == '/' ? "" : "/") + base_name;
  return parse_location(g, s3);
}

static std::string url_basename(const Location& loc) {
  std::string p = loc.scheme == Scheme::s3 ? loc.key : loc.url;
  auto q = p.find_first_of("?#", loc.scheme == Scheme::s3 ? 0 : p.find("://") + 3);
  if (q != std::string::npos) p = p.substr(0, q);
  std::string b = basename_of(p);
  return b;
}

void fetch(const std::string& src_s, const std::string& dest_s, const Options& o, Result& r) {
  r.source = src_s;
  r.destination = dest_s;
  try {
    Location src = parse_location(src_s, o.s3);
    if (is_url(dest_s)) throw Error(kExitUsage, "the destination of a fetch is a local path", dest_s, "use fedseg-push to upload");
    Location dest = parse_location(dest_s, o.s3);
    std::string base = src.remote() ? url_basename(src) : basename_of(src.path);
    if (base.empty() || base == "." || base == "..") base = "";
    if (!base.empty()) dest = with_basename(dest, base, o.s3);
    r.destination = dest.path;
    if (!src.remote()) {
      copy_local(src.path, dest.path, o, r);
    } else {
      if (src.scheme == Scheme::s3 && src.key.empty()) throw Error(kExitUsage, "malformed S3 URL", src_s, "no key");
      fetch_http(src, dest.path, o, r);
    }
    r.exit_code = 0;
  } catch (const Error& e) {
    r.exit_code = e.code();
    r.error = e.message();
    throw;
  }
}

void push(const std::string& src_s, const std::string& dest_s, const Options& o, Result& r) {
  r.source = src_s;
  r.destination = dest_s;
  try {
    if (is_url(src_s)) throw Error(kExitUsage, "the source of a push is a local file", src_s, "use fedseg-fetch to download");
    Location dest = parse_location(dest_s, o.s3);
    dest = with_basename(dest, basename_of(src_s), o.s3);
    r.destination = dest.given;
    if (!dest.remote()) {
      copy_local(src_s, dest.path, o, r);
    } else {
      if (dest.scheme == Scheme::s3 && dest.key.empty()) throw Error(kExitUsage, "malformed S3 URL", dest_s, "no key");
      push_http(src_s, dest, o, r);
    }
    r.exit_code = 0;
  } catch (const Error& e) {
    r.exit_code = e.code();
    r.error = e.message();
    throw;
  }
}

std::string fetch_input(const std::string& input, const std::string& dir, const Options& o) {
  if (!is_url(input)) return input;
  if (!is_directory(dir) && ::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw_errno(kExitCantCreate, "cannot create folder", dir, errno);
  Result r;
  Options oo = o;
  oo.force = true;  // a cached copy of a URL is replaced by what the URL holds now
  fetch(input, dir + "/", oo, r);
  return r.destination;
}

nlohmann::json Result::to_json() const {
  nlohmann::json j = {{"source", source},
                      {"destination", destination},
                      {"status", status},
                      {"exit_code", exit_code},
                      {"action", action.empty() ? nlohmann::json(nullptr) : nlohmann::json(action)},
                      {"size", size},
                      {"bytes", bytes},
                      {"resumed_from", resumed_from},
                      {"seconds", seconds},
                      {"retries", retries},
                      {"http_status", http_status ? nlohmann::json(http_status) : nlohmann::json(nullptr)},
                      {"sha256", sha256.empty() ? nlohmann::json(nullptr) : nlohmann::json(sha256)},
                      {"compared", compared.empty() ? nlohmann::json(nullptr) : nlohmann::json(compared)}};
  if (!error.empty()) j["error"] = error;
  return j;
}

double backoff_delay(int attempt, double base, double cap, double u) {
  double d = base * std::ldexp(1.0, std::min(attempt, 30));
  return u * std::min(cap, d);
}

int classify(int curl_code, long status, bool for_fetch, bool& retryable) {
  retryable = false;
  auto c = static_cast<CURLcode>(curl_code);
  switch (c) {
    case CURLE_OK:
      break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_AGAIN:
      retryable = true;
      return kExitTempFail;
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return kExitUnavailable;
    case CURLE_LOGIN_DENIED:
    case CURLE_AUTH_ERROR:
      return kExitNoPerm;
    case CURLE_URL_MALFORMAT:
      return kExitUsage;
    case CURLE_WRITE_ERROR:
    case CURLE_READ_ERROR:
      return kExitIoErr;
    case CURLE_FILESIZE_EXCEEDED:
      return kExitCantCreate;
    default:
      return kExitProtocol;
  }
  if (status >= 200 && status < 300) return kExitOk;
  if (status == 408 || status == 429 || status >= 500) {
    if (status == 501 || status == 505) return kExitUnavailable;  // HTTP 501/505: the server cannot do this request; retrying will not help
    retryable = true;
    return kExitTempFail;
  }
  if (status == 401 || status == 403) return kExitNoPerm;
  if (status == 404 || status == 410) return for_fetch ? kExitNoInput : kExitCantCreate;
  if (status == 409 || status == 412) return kExitCantCreate;
  if (status == 413) return kExitCantCreate;
  if (status == 405) return kExitUnavailable;
  return kExitProtocol;
}

void resolve_s3(S3Options& s3) {
  s3.access_key = getenv_str("AWS_ACCESS_KEY_ID");
  s3.secret_key = getenv_str("AWS_SECRET_ACCESS_KEY");
  s3.session_token = getenv_str("AWS_SESSION_TOKEN");
  if (!s3.access_key.empty() && !s3.secret_key.empty()) return;
  std::string file = s3.credentials_file;
  if (file.empty()) file = getenv_str("AWS_SHARED_CREDENTIALS_FILE");
  if (file.empty() && !getenv_str("HOME").empty()) {
    file = getenv_str("HOME") + "/.aws/credentials";
    if (!path_exists(file)) file.clear();
  }
  if (file.empty())
    throw Error(kExitConfig, "no S3 credentials",
                "", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or give --s3-credentials FILE");
  std::string profile = s3.profile.empty() ? getenv_str("AWS_PROFILE") : s3.profile;
  if (profile.empty()) profile = "default";
  std::istringstream in(read_file(file, 1 << 20));
  std::string line, section;
  s3.session_token.clear();
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      section = trim(line.substr(1, line.find(']') - 1));
      continue;
    }
    if (section != profile) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = lower(trim(line.substr(0, eq))), v = trim(line.substr(eq + 1));
    if (k == "aws_access_key_id") s3.access_key = v;
    if (k == "aws_secret_access_key") s3.secret_key = v;
    if (k == "aws_session_token") s3.session_token = v;
  }
  if (s3.access_key.empty() || s3.secret_key.empty())
    throw Error(kExitConfig, "no S3 credentials", file, "profile [" + profile + "] lacks aws_access_key_id or aws_secret_access_key");
}

void add_options(CLI::App& app, Options& o) {
  const char* g = "Transfer options";
  app.add_option("--retries", o.retries, "extra attempts after a transient failure (408, 429, 5xx, connection, timeout, stall)")
      ->group(g)->type_name("N")->check(CLI::Range(0, 1000));
  app.add_option("--retry-delay", o.retry_delay, "first backoff delay in seconds; doubles each retry, with full jitter")
      ->group(g)->type_name("SECONDS")->check(CLI::Range(0.0, 3600.0));
  app.add_option("--retry-max-delay", o.retry_max_delay, "cap on the backoff delay in seconds")
      ->group(g)->type_name("SECONDS")->check(CLI::Range(0.0, 86400.0));
  app.add_option("--connect-timeout", o.connect_timeout, "seconds to wait for a connection")
      ->group(g)->type_name("SECONDS")->check(CLI::Range(1, 3600));
  app.add_option("--stall-time", o.stall_time, "a transfer slower than --stall-speed for this many seconds is stalled (retried); there is no total timeout")
      ->group(g)->type_name("SECONDS")->check(CLI::Range(1, 86400));
  app.add_option("--stall-speed", o.stall_speed, "bytes per second below which a transfer counts as stalled")
      ->group(g)->type_name("BYTES")->check(CLI::Range(1L, 1L << 40));
  app.add_option("--cacert", o.ca_file, "CA certificates (PEM) to verify the server with, instead of the system's")
      ->group(g)->type_name("FILE");
  app.add_option("--cert", o.cert, "client certificate (PEM) for mutual TLS")->group(g)->type_name("FILE");
  app.add_option("--key", o.key, "private key (PEM) of the client certificate")->group(g)->type_name("FILE");
  app.add_option("--pin", o.pin, "pinned server public key: sha256//BASE64 (several joined by ';') or a PEM/DER public-key file")
      ->group(g)->type_name("PIN");
  app.add_flag("--https-only", o.https_only, "refuse plain http:// (also for s3:// endpoints)")->group(g);
  app.add_option("--token-file", o.token_file, "bearer token for HTTP(S), read from FILE (default: $FEDSEG_TOKEN)")
      ->group(g)->type_name("FILE");
  app.add_flag("--netrc", o.netrc, "basic auth from ~/.netrc")->group(g);
  app.add_option("--netrc-file", o.netrc_file, "basic auth from this netrc file")->group(g)->type_name("FILE");
  app.add_option("--s3-endpoint", o.s3.endpoint, "S3-compatible endpoint, path-style (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS)")
      ->group(g)->type_name("URL");
  app.add_option("--s3-region", o.s3.region, "S3 region for SigV4 (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)")
      ->group(g)->type_name("REGION");
  app.add_option("--s3-credentials", o.s3.credentials_file, "AWS shared credentials file (used when AWS_ACCESS_KEY_ID is not set; default ~/.aws/credentials)")
      ->group(g)->type_name("FILE");
  app.add_option("--s3-profile", o.s3.profile, "profile in the credentials file (default: $AWS_PROFILE, default)")
      ->group(g)->type_name("NAME");
}

int run_tool(bool push, const std::string& src, const std::string& dest, Options o, const ToolContext& ctx) {
  o.force = ctx.force();
  o.progress = Progress::enabled();
  o.progress_label = std::string(push ? "push " : "fetch ") + src;
  Result r;
  try {
    if (push) transfer::push(src, dest, o, r);
    else transfer::fetch(src, dest, o, r);
  } catch (const Error&) {
    if (ctx.json()) ctx.emit_json(r.to_json());
    throw;
  }
  if (ctx.json()) ctx.emit_json(r.to_json());
  log::debug(r.action + " " + r.source + " -> " + r.destination + ": " + std::to_string(r.bytes) + " bytes in " +
             std::to_string(r.seconds) + " s, " + std::to_string(r.retries) + " retries" +
             (r.resumed_from ? ", resumed from byte " + std::to_string(r.resumed_from) : "") +
             (r.compared.empty() ? "" : ", compared by " + r.compared));
  return kExitOk;
}

}  // namespace fedseg::transfer
