#include "package/package.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>

#include "core/atomic_file.h"
#include "core/buffer.h"
#include "core/sha256.h"
#include "crypto/encoding.h"
#include "h5/tensor_file.h"

namespace fedseg::package {

const char* fail_class_name(FailClass c) {
  switch (c) {
    case FailClass::size: return "size";
    case FailClass::signature: return "signature";
    case FailClass::fields: return "fields";
    case FailClass::decrypt: return "decrypt";
    case FailClass::hash: return "hash";
    case FailClass::inner: return "inner";
  }
  return "?";
}

PackageError::PackageError(FailClass cls, const std::string& subject, const std::string& why, const std::string& what)
    : Error(kExitDataErr, what + " rejected (" + fail_class_name(cls) + ")", subject, why), cls_(cls) {}

namespace {

constexpr size_t kBlock = size_t(1) << 20;
// The untrusted comment is not covered by the signature, so a package fixes it to
// what `minisign -S` writes by default: packages made with the standard tools
// verify, and no byte of a .minisig can change without the package failing.
constexpr const char* kUntrustedComment = "signature from minisign secret key";

bool is_hex(const std::string& s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool is_kind(const std::string& k) { return k == "update" || k == "metrics" || k == "global"; }
// Kinds a trusted comment may carry: the packable HDF5 kinds, and the files the
// aggregator publishes in the clear with enc=none (lib/fed: federation.json,
// LATEST, report.json).
bool is_comment_kind(const std::string& k) {
  return is_kind(k) || k == "federation" || k == "latest" || k == "report";
}

// Decimal without sign or leading zeros, fitting int64.
bool parse_uint(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 18 || (s.size() > 1 && s[0] == '0')) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

// Validates the fields a comment may carry; returns "" or what is wrong.
std::string invalid_fields(const Fields& f) {
  if (!valid_id(f.federation)) return "invalid federation id '" + f.federation + "'";
  if (f.round < 0) return "negative round";
  if (!is_comment_kind(f.kind)) return "invalid kind '" + f.kind + "'";
  const bool aggregator_kind = f.kind == "global" || f.kind == "federation" || f.kind == "latest" || f.kind == "report";
  if (aggregator_kind ? f.site != "-" : !valid_id(f.site))
    return "invalid site '" + f.site + "' for kind " + f.kind;
  if (f.base != "-" && !is_hex(f.base, 64)) return "invalid base '" + f.base + "'";
  if (!is_hex(f.plain, 64)) return "invalid plain hash '" + f.plain + "'";
  if (f.enc != "age" && f.enc != "zstd+age" && f.enc != "none") return "invalid enc '" + f.enc + "'";
  if (f.enc == "none" && f.kind != "global" && !(f.kind == "federation" || f.kind == "latest" || f.kind == "report"))
    return "kind " + f.kind + " must be encrypted (enc=none)";
  if (f.ts < 0) return "negative ts";
  if (!is_hex(f.nonce, 32)) return "invalid nonce '" + f.nonce + "'";
  return {};
}

// Pipeline memory: one mapping per pipe, aligned to 2 MiB and marked for
// transparent huge pages. On this project's VMs the first touch of a page is what
// costs (about 15 us per 4 KiB page, against about 1 ms per 2 MiB one): the 12 MiB
// of blocks of an unpack cost ~45 ms of CPU per run in 4 KiB pages, ~6 ms in huge
// ones. Without THP it is an ordinary mapping.
class Arena {
 public:
  explicit Arena(size_t bytes) : size_((bytes + kHuge - 1) / kHuge * kHuge) {
    void* p = ::mmap(nullptr, size_ + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    auto start = reinterpret_cast<uintptr_t>(p);
    auto aligned = (start + kHuge - 1) / kHuge * kHuge;
    if (aligned > start) ::munmap(p, aligned - start);
    ::munmap(reinterpret_cast<void*>(aligned + size_), start + kHuge - aligned);  // the tail, >= 1 page
    base_ = reinterpret_cast<uint8_t*>(aligned);
    ::madvise(base_, size_, MADV_HUGEPAGE);  // advice: ignored where THP is off
  }
  ~Arena() { ::munmap(base_, size_); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  uint8_t* data() const { return base_; }

 private:
  static constexpr size_t kHuge = size_t(2) << 20;
  size_t size_;
  uint8_t* base_ = nullptr;
};

// A bounded queue of reusable blocks between two threads (no allocation per block).
struct Block {
  uint8_t* data = nullptr;
  size_t size = 0;
};

class BlockPipe {
 public:
  explicit BlockPipe(size_t count) : arena_(count * kBlock) {
    for (size_t i = 0; i < count; ++i) {
      blocks_.push_back(Block{arena_.data() + i * kBlock, 0});
      free_.push_back(&blocks_.back());
    }
  }
  // Producer: a free block (nullptr once aborted).
  Block* acquire() {
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return aborted_ || !free_.empty(); });
    if (aborted_) return nullptr;
    Block* b = free_.front();
    free_.pop_front();
    b->size = 0;
    return b;
  }
  void push(Block* b) {
    std::lock_guard<std::mutex> l(m_);
    full_.push_back(b);
    cv_.notify_all();
  }
  void close() {
    std::lock_guard<std::mutex> l(m_);
    closed_ = true;
    cv_.notify_all();
  }
  // Consumer: the next full block, nullptr at the end or once aborted.
  Block* pop() {
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return aborted_ || !full_.empty() || closed_; });
    if (aborted_ || full_.empty()) return nullptr;
    Block* b = full_.front();
    full_.pop_front();
    return b;
  }
  void release(Block* b) {
    std::lock_guard<std::mutex> l(m_);
    free_.push_back(b);
    cv_.notify_all();
  }
  void abort() {
    std::lock_guard<std::mutex> l(m_);
    aborted_ = true;
    cv_.notify_all();
  }
  bool aborted() {
    std::lock_guard<std::mutex> l(m_);
    return aborted_;
  }

 private:
  Arena arena_;
  std::deque<Block> blocks_;
  std::deque<Block*> free_, full_;
  std::mutex m_;
  std::condition_variable cv_;
  bool closed_ = false, aborted_ = false;
};

// Runs consumer(pipe) on a thread while producer(pipe) runs here; rethrows the
// first exception of either side after both stopped.
template <class Producer, class Consumer>
void run_pipeline(BlockPipe& pipe, Producer producer, Consumer consumer) {
  std::exception_ptr consumer_error;
  std::thread t([&] {
    try {
      consumer(pipe);
    } catch (...) {
      consumer_error = std::current_exception();
      pipe.abort();
    }
  });
  try {
    producer(pipe);
    pipe.close();
  } catch (...) {
    pipe.abort();
    t.join();
    // An error on the consumer side usually caused the producer's (aborted pipe).
    if (consumer_error) std::rethrow_exception(consumer_error);
    throw;
  }
  t.join();
  if (consumer_error) std::rethrow_exception(consumer_error);
}

// The same with the producer on a thread and the consumer here.
template <class Producer, class Consumer>
void run_pipeline_pt(BlockPipe& pipe, Producer producer, Consumer consumer) {
  std::exception_ptr producer_error;
  std::thread t([&] {
    try {
      producer(pipe);
      pipe.close();
    } catch (...) {
      producer_error = std::current_exception();
      pipe.abort();
    }
  });
  try {
    consumer(pipe);
  } catch (...) {
    pipe.abort();
    t.join();
    if (producer_error) std::rethrow_exception(producer_error);
    throw;
  }
  pipe.abort();  // releases a producer still waiting for a block (consumer stopped early)
  t.join();
  if (producer_error) std::rethrow_exception(producer_error);
}

// Identity of a file's contents as far as the kernel tells: changes when it is
// written to or replaced.
FileStamp stamp_of(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(kExitIoErr, "cannot stat", path, errno);
  return FileStamp{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                   static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec};
}

class Fd {
 public:
  Fd(const std::string& path, int exit_missing = kExitNoInput) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw_errno(errno == ENOENT ? exit_missing : kExitNoInput, "cannot open", path, errno);
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int fd() const { return fd_; }
  uint64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw_errno(kExitIoErr, "cannot stat", path_, errno);
    if (!S_ISREG(st.st_mode)) throw Error(kExitNoInput, "not a regular file", path_);
    return static_cast<uint64_t>(st.st_size);
  }
  // Reads up to n bytes (short only at EOF).
  size_t read(void* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::read(fd_, static_cast<char*>(buf) + got, n - got);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno(kExitIoErr, "cannot read", path_, errno);
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    return got;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// Pushes an output towards stable storage while it is written, so that
// AtomicFile::commit()'s fsync finds little left to do. In the background (the
// default), a helper thread started once 8 MiB were written runs fdatasync
// after every further 8 MiB: on this project's virtual disks the cache flush at
// the end is what costs (about 0.1 s for 200 MB written at once, against a few ms
// when flushed along the way), and it overlaps the pipeline. Inline (threads = 1),
// the writer only starts the kernel's writeback every 8 MiB. Advice only: errors
// are ignored (the fsync in commit() reports them).
class Writeback {
 public:
  Writeback(const std::string& path, bool background)
      : fd_(::open(path.c_str(), O_WRONLY | O_CLOEXEC)), background_(background) {}
  Writeback() : fd_(-1), background_(false) {}  // nothing to flush (a plaintext kept in memory)
  ~Writeback() {
    stop();
    if (fd_ >= 0) ::close(fd_);
  }
  Writeback(const Writeback&) = delete;
  Writeback& operator=(const Writeback&) = delete;
  // Called by the one thread that writes the file, after each write.
  void wrote(size_t n) {
    if (fd_ < 0) return;
    written_ += n;
    if (!background_) {
      if (written_ - started_ >= kInlineStep) {
        ::sync_file_range(fd_, static_cast<off_t>(started_), static_cast<off_t>(written_ - started_), SYNC_FILE_RANGE_WRITE);
        started_ = written_;
      }
      return;
    }
    if (written_ - started_ < kBackgroundStep) return;
    started_ = written_;
    std::lock_guard<std::mutex> l(m_);
    shared_written_ = written_;
    if (thread_.joinable()) {
      cv_.notify_one();
      return;
    }
    try {
      thread_ = std::thread([this] { run(); });
    } catch (const std::system_error&) {
      background_ = false;  // no thread to be had: the inline way
    }
  }
  // Asks the helper thread, if any, for a last flush of everything written, then
  // to end: the file's final fsync overlaps what the caller does meanwhile.
  void flush_async() {
    std::lock_guard<std::mutex> l(m_);
    final_ = true;
    cv_.notify_one();
  }
  // Stops the helper thread (after the flush in progress, if any).
  void stop() {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  static constexpr uint64_t kInlineStep = uint64_t(8) << 20, kBackgroundStep = uint64_t(8) << 20;
  void run() {
    std::unique_lock<std::mutex> l(m_);
    uint64_t synced = 0;
    while (true) {
      cv_.wait(l, [&] { return stop_ || final_ || shared_written_ > synced; });
      if (stop_) return;
      bool last = final_;
      synced = shared_written_;
      l.unlock();
      ::fdatasync(fd_);
      if (last) return;
      l.lock();
    }
  }
  int fd_;
  bool background_;
  uint64_t written_ = 0, started_ = 0;  // the writer's own
  std::mutex m_;
  std::condition_variable cv_;
  uint64_t shared_written_ = 0;
  bool stop_ = false, final_ = false;
  std::thread thread_;
};

struct ZstdCCtx {
  ZSTD_CCtx* p = ZSTD_createCCtx();
  ~ZstdCCtx() { ZSTD_freeCCtx(p); }
};
struct ZstdDCtx {
  ZSTD_DCtx* p = ZSTD_createDCtx();
  ~ZstdDCtx() { ZSTD_freeDCtx(p); }
};

void zstd_check(size_t rc, const std::string& what) {
  if (ZSTD_isError(rc)) throw Error(kExitSoftware, what, {}, ZSTD_getErrorName(rc));
}

Fields bound_attributes(const h5::File& f, const std::string& path) {
  Fields out;
  auto bad = [&](const std::string& why) { return Error(kExitDataErr, "cannot package", path, why); };
  out.kind = f.kind();
  if (!is_kind(out.kind)) throw bad("kind '" + out.kind + "' is not update, metrics or global");
  if (!f.has_attr("/", "federation")) throw bad("no 'federation' attribute");
  out.federation = f.attr_string("/", "federation");
  if (!f.has_attr("/", "round")) throw bad("no 'round' attribute");
  out.round = f.attr_int("/", "round");
  if (out.kind == "global") {
    if (f.has_attr("/", "site")) throw bad("a global model has no 'site' attribute");
    out.site = "-";
  } else {
    if (!f.has_attr("/", "site")) throw bad("no 'site' attribute");
    out.site = f.attr_string("/", "site");
  }
  out.base = f.has_attr("/", "base_sha256") ? f.attr_string("/", "base_sha256") : "-";
  if (!valid_id(out.federation)) throw bad("invalid federation id '" + out.federation + "'");
  if (out.round < 0) throw bad("negative round");
  if (out.site != "-" && !valid_id(out.site)) throw bad("invalid site id '" + out.site + "'");
  if (out.base != "-" && !is_hex(out.base, 64)) throw bad("base_sha256 is not 64 lower-case hex digits");
  return out;
}

}  // namespace

std::string Fields::comment() const {
  return std::string(kProfile) + " fed=" + federation + " round=" + std::to_string(round) + " site=" + site +
         " kind=" + kind + " base=" + base + " plain=" + plain + " enc=" + enc + " ts=" + std::to_string(ts) +
         " nonce=" + nonce;
}

Fields Fields::parse(const std::string& comment, const std::string& subject) {
  static const char* const keys[] = {"fed", "round", "site", "kind", "base", "plain", "enc", "ts", "nonce"};
  auto fail = [&](const std::string& why) { return PackageError(FailClass::fields, subject, why); };
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    size_t sp = comment.find(' ', pos);
    parts.push_back(comment.substr(pos, sp == std::string::npos ? std::string::npos : sp - pos));
    if (sp == std::string::npos) break;
    pos = sp + 1;
  }
  if (parts.empty() || parts[0] != kProfile) throw fail("trusted comment does not start with '" + std::string(kProfile) + " '");
  if (parts.size() != 10) throw fail("trusted comment has " + std::to_string(parts.size() - 1) + " fields, want 9");
  std::string v[9];
  for (size_t i = 0; i < 9; ++i) {
    const std::string& p = parts[i + 1];
    std::string want = std::string(keys[i]) + "=";
    if (p.compare(0, want.size(), want) != 0)
      throw fail("trusted comment field " + std::to_string(i + 1) + " is '" + p.substr(0, 40) + "', want " + keys[i] + "=");
    v[i] = p.substr(want.size());
  }
  Fields f;
  f.federation = v[0];
  if (!parse_uint(v[1], f.round)) throw fail("invalid round '" + v[1] + "'");
  f.site = v[2];
  f.kind = v[3];
  f.base = v[4];
  f.plain = v[5];
  f.enc = v[6];
  if (!parse_uint(v[7], f.ts)) throw fail("invalid ts '" + v[7] + "'");
  f.nonce = v[8];
  std::string why = invalid_fields(f);
  if (!why.empty()) throw fail(why);
  if (f.comment() != comment) throw fail("trusted comment is not in canonical form");
  return f;
}

nlohmann::json Fields::to_json() const {
  return {{"federation", federation}, {"round", round}, {"site", site},   {"kind", kind}, {"base", base},
          {"plain", plain},           {"enc", enc},     {"ts", ts},       {"nonce", nonce}};
}

Fields read_bound_attributes(const std::string& h5_path) {
  h5::File f = h5::File::open(h5_path);
  return bound_attributes(f, h5_path);
}

// ---------------------------------------------------------------- pack

PackResult pack(const PackOptions& o, const crypto::MinisignSecretKey& key) {
  if (o.recipients.empty()) throw Error(kExitUsage, "no recipient to encrypt to");
  if (o.zstd_level < 0 || o.zstd_level > ZSTD_maxCLevel())
    throw Error(kExitUsage, "zstd level out of range", std::to_string(o.zstd_level), "use 1.." + std::to_string(ZSTD_maxCLevel()));
  PackResult res;
  res.age_path = o.output;
  res.sig_path = o.output + ".minisig";
  Fields f = read_bound_attributes(o.input);
  f.enc = o.zstd_level > 0 ? "zstd+age" : "age";
  f.ts = static_cast<int64_t>(std::time(nullptr));
  uint8_t nonce[16];
  crypto::ensure_sodium();
  randombytes_buf(nonce, sizeof nonce);
  f.nonce = to_hex(nonce, sizeof nonce);

  // Reserve both outputs first: an existing one fails (73) before any work.
  AtomicFile age_out(res.age_path, o.overwrite, 0644);
  AtomicFile sig_out(res.sig_path, o.overwrite, 0644);
  Fd in(o.input);

  Sha256 sha;
  crypto::Blake2b512 b2;
  uint64_t plain_bytes = 0, age_bytes = 0;
  ZstdCCtx cctx;
  if (o.zstd_level > 0) {
    if (!cctx.p) throw Error(kExitSoftware, "cannot create a zstd context");
    zstd_check(ZSTD_CCtx_setParameter(cctx.p, ZSTD_c_compressionLevel, o.zstd_level), "zstd level");
  }

  // Stages, each on its own thread: read + SHA-256 | zstd | age + BLAKE2b-512 +
  // write. Like `zstd | age` but with the hashes off the compressor's thread.
  // (zstd's own workers were slower here: they add a copy and compete for 2 cores.)
  auto reader = [&](BlockPipe& p) {
    while (Block* b = p.acquire()) {
      b->size = in.read(b->data, kBlock);
      sha.update(b->data, b->size);
      plain_bytes += b->size;
      if (b->size == 0) {
        p.release(b);
        return;
      }
      p.push(b);
    }
  };
  auto compressor = [&](BlockPipe& pin, BlockPipe& pout) {
    Block* out = pout.acquire();
    if (!out) return;
    bool eof = false;
    while (!eof) {
      Block* b = pin.pop();
      if (!b && pin.aborted()) return;
      eof = b == nullptr;
      ZSTD_inBuffer zin{b ? b->data : nullptr, b ? b->size : 0, 0};
      ZSTD_EndDirective mode = eof ? ZSTD_e_end : ZSTD_e_continue;
      while (true) {
        ZSTD_outBuffer zout{out->data, kBlock, out->size};
        size_t rem = ZSTD_compressStream2(cctx.p, &zout, &zin, mode);
        zstd_check(rem, "zstd compression failed");
        out->size = zout.pos;
        if (out->size == kBlock) {
          pout.push(out);
          out = pout.acquire();
          if (!out) return;
        }
        if (eof ? rem == 0 : zin.pos == zin.size) break;
      }
      if (b) pin.release(b);
    }
    if (out->size) {
      pout.push(out);
    } else {
      pout.release(out);
    }
  };
  Writeback age_wb(age_out.temp_path(), true);
  auto encryptor = [&](BlockPipe& p) {
    crypto::CallbackSink tee(
        [&](const void* d, size_t n) {
          b2.update(d, n);
          age_out.write(d, n);
          age_bytes += n;
          age_wb.wrote(n);
        },
        res.age_path);
    crypto::AgeEncryptor enc(o.recipients, tee);
    while (Block* b = p.pop()) {
      enc.write(b->data, b->size);
      p.release(b);
    }
    if (p.aborted()) return;
    enc.finish();
  };
  BlockPipe raw(4), packed(4);
  if (o.zstd_level > 0) {
    run_pipeline(
        packed, [&](BlockPipe& pout) { run_pipeline_pt(raw, reader, [&](BlockPipe& pin) { compressor(pin, pout); }); },
        encryptor);
  } else {
    run_pipeline(raw, reader, encryptor);
  }
  age_wb.flush_async();  // the last flush overlaps signing
  f.plain = sha.hex();
  std::string why = invalid_fields(f);
  if (!why.empty()) throw Error(kExitSoftware, "cannot package", o.input, why);

  const crypto::Blake2b512::Digest digest = b2.final();
  std::string sig = crypto::sign_prehashed(key, digest, f.comment(), kUntrustedComment);

  // With --force, an old signature must not sit beside the new ciphertext even
  // for a moment: it goes first, and the new one is written last.
  if (o.overwrite && ::unlink(res.sig_path.c_str()) != 0 && errno != ENOENT)
    throw_errno(kExitCantCreate, "cannot remove the old signature", res.sig_path, errno);
  age_wb.stop();
  age_out.commit();
  sig_out.write(sig.data(), sig.size());
  sig_out.commit();
  res.fields = f;
  res.plain_bytes = plain_bytes;
  res.age_bytes = age_bytes;
  res.key_id = key.public_key().key_id_hex();
  return res;
}

// ---------------------------------------------------------------- check

Signers Signers::from_roster(const Roster& roster) {
  Signers s;
  s.roster = roster;
  return s;
}

Signers Signers::single(const crypto::MinisignPublicKey& key) {
  Signers s;
  s.key = key;
  return s;
}

namespace {

// What the steps before any bulk read established: size, the .minisig's form, its
// key, the global signature (so the trusted comment is authentic) and the fields.
// The file signature over the .age bytes is still to be checked.
struct Preflight {
  Checked c;
  crypto::MinisignSignature sig;
  std::optional<crypto::MinisignPublicKey> key;
};

PackageError signature_error(const std::string& subject, const crypto::SignatureError& e) {
  return PackageError(FailClass::signature, subject, std::string(e.kind_name()) + ": " + e.why());
}

// Steps size → signature (form, key, global signature) → fields: every check that
// needs no pass over the .age bytes. `in` is the open .age file.
Preflight preflight(const Fd& in, const std::string& sig_path_in, const Signers& signers, const Expect& ex) {
  Preflight p;
  Checked& c = p.c;
  const std::string& age_path = in.path();
  c.age_path = age_path;
  c.sig_path = sig_path_in.empty() ? age_path + ".minisig" : sig_path_in;
  c.stamp = stamp_of(in.fd(), age_path);
  // 1. size (the signature file is bounded by its parser: 64 KiB).
  c.age_bytes = in.size();
  if (c.age_bytes > ex.max_size)
    throw PackageError(FailClass::size, age_path,
                       std::to_string(c.age_bytes) + " bytes, over the limit of " + std::to_string(ex.max_size));
  // 2. signature, the half that needs no pass over the file: its form, its key and
  // the global signature, which authenticates the trusted comment.
  std::string sig_text;
  try {
    sig_text = read_file(c.sig_path, 1 << 16);
  } catch (const Error& e) {
    if (e.code() != kExitDataErr) throw;
    throw PackageError(FailClass::signature, c.sig_path, "not a minisign signature: " + e.why());
  }
  crypto::MinisignSignature& sig = p.sig;
  const RosterMember* member = nullptr;
  try {
    sig = crypto::MinisignSignature::parse(sig_text, c.sig_path);
    {
      uint8_t blob[74];
      std::memcpy(blob, sig.algorithm.data(), 2);
      std::memcpy(blob + 2, sig.key_id.data(), 8);
      std::memcpy(blob + 10, sig.signature.data(), 64);
      std::string canonical = "untrusted comment: " + sig.untrusted_comment + "\n" + crypto::base64_encode(blob, 74, true) +
                              "\ntrusted comment: " + sig.trusted_comment + "\n" +
                              crypto::base64_encode(sig.global_signature.data(), 64, true) + "\n";
      if (canonical != sig_text)
        throw PackageError(FailClass::signature, c.sig_path, "malformed: not exactly the four lines minisign writes");
      if (sig.untrusted_comment != kUntrustedComment)
        throw PackageError(FailClass::signature, c.sig_path,
                           "the untrusted comment was changed (a package's is always '" + std::string(kUntrustedComment) + "')");
    }
    if (signers.roster) {
      member = signers.roster->by_key_id(sig.key_id);
      if (!member)
        throw PackageError(FailClass::signature, c.sig_path,
                           "signed by key " + crypto::key_id_hex(sig.key_id) + ", which is not in the roster of federation '" +
                               signers.roster->federation() + "'");
      p.key = member->key;
    } else if (signers.key) {
      p.key = *signers.key;
    } else {
      throw Error(kExitSoftware, "no signer keys given");
    }
    crypto::verify_trusted_comment(*p.key, sig);
  } catch (const crypto::SignatureError& e) {
    throw signature_error(age_path, e);
  }
  // 3. fields (the comment is authentic now)
  c.fields = Fields::parse(sig.trusted_comment, c.sig_path);
  const Fields& f = c.fields;
  auto fail = [&](const std::string& why) { return PackageError(FailClass::fields, age_path, why); };
  if (f.enc == "none") throw fail("enc=none: a file published in the clear, not a package");
  if (member) {
    c.signer = member->id;
    if (f.federation != signers.roster->federation())
      throw fail("federation '" + f.federation + "' is not the roster's '" + signers.roster->federation() + "'");
    if (member->id == "-" && f.kind != "global")
      throw fail("the aggregator key signed a package of kind " + f.kind + " (it signs global models only)");
    if (member->id != "-" && f.site != member->id)
      throw fail("signed by the key of site '" + member->id + "' but claims site '" + f.site + "'");
  }
  if (!ex.federation.empty() && f.federation != ex.federation)
    throw fail("federation '" + f.federation + "', expected '" + ex.federation + "'");
  if (ex.round && f.round != *ex.round)
    throw fail("round " + std::to_string(f.round) + ", expected " + std::to_string(*ex.round) +
               (f.round < *ex.round ? " (an old round replayed?)" : ""));
  if (!ex.site.empty() && f.site != ex.site) throw fail("site '" + f.site + "', expected '" + ex.site + "'");
  if (!ex.kind.empty() && f.kind != ex.kind) throw fail("kind " + f.kind + ", expected " + ex.kind);
  if (!ex.base.empty() && f.base != ex.base) throw fail("base " + f.base + ", expected " + ex.base);
  if (ex.accepted.count({f.site, f.round}))
    throw fail("site '" + f.site + "' already has an accepted package for round " + std::to_string(f.round) + " (replay?)");
  if (ex.nonces.count(f.nonce)) throw fail("nonce " + f.nonce + " was seen before (replay)");
  return p;
}

// Reads the whole .age file once (the caller hands each block on), enforcing the
// size limit while it is read.
size_t read_block(Fd& in, uint8_t* buf, uint64_t& total, const Expect& ex) {
  size_t n = in.read(buf, kBlock);
  total += n;
  if (total > ex.max_size) throw PackageError(FailClass::size, in.path(), "grew over the size limit while being read");
  return n;
}

// The second half of the signature step, once the whole file was read: the file
// did not change meanwhile (kernel stamp, byte count) and the signature over its
// BLAKE2b-512 verifies. PackageError{signature}.
void verify_file_signature(Preflight& p, const Fd& in, uint64_t total, crypto::Blake2b512& b2) {
  Checked& c = p.c;
  c.digest = b2.final();
  c.age_bytes = total;
  if (!(stamp_of(in.fd(), c.age_path) == c.stamp) || total != c.stamp.size)
    throw PackageError(FailClass::signature, c.age_path, "changed while its signature was being checked");
  try {
    crypto::Verified v = crypto::verify_prehashed(*p.key, p.sig, c.digest);
    c.key_id = crypto::key_id_hex(v.key_id);
  } catch (const crypto::SignatureError& e) {
    throw signature_error(c.age_path, e);
  }
}

}  // namespace

Checked check(const std::string& age_path, const std::string& sig_path, const Signers& signers, const Expect& ex,
              int threads) {
  Fd in(age_path);
  Preflight p = preflight(in, sig_path, signers, ex);
  crypto::Blake2b512 b2;
  uint64_t total = 0;
  if (threads == 1) {
    std::unique_ptr<uint8_t[]> buf(new uint8_t[kBlock]);
    while (size_t n = read_block(in, buf.get(), total, ex)) b2.update(buf.get(), n);
  } else {
    // Read (kernel copy) on one thread, BLAKE2b-512 on this one.
    BlockPipe pipe(4);
    run_pipeline_pt(
        pipe,
        [&](BlockPipe& q) {
          while (Block* b = q.acquire()) {
            b->size = read_block(in, b->data, total, ex);
            if (b->size == 0) {
              q.release(b);
              return;
            }
            q.push(b);
          }
        },
        [&](BlockPipe& q) {
          while (Block* b = q.pop()) {
            b2.update(b->data, b->size);
            q.release(b);
          }
        });
  }
  verify_file_signature(p, in, total, b2);
  return p.c;
}

// ---------------------------------------------------------------- unpack

namespace {

class FdReadSource : public crypto::Source {
 public:
  explicit FdReadSource(Fd& fd) : fd_(fd) {}
  size_t read(void* buf, size_t n) override { return fd_.read(buf, n); }
  std::string name() const override { return fd_.path(); }

 private:
  Fd& fd_;
};

// The .age bytes as the hashing reader hands them on, block by block (check_and_unpack).
class PipeSource : public crypto::Source {
 public:
  PipeSource(BlockPipe& pipe, std::string name) : pipe_(pipe), name_(std::move(name)) {}
  ~PipeSource() override {
    if (cur_) pipe_.release(cur_);
  }
  PipeSource(const PipeSource&) = delete;
  PipeSource& operator=(const PipeSource&) = delete;
  // The end of the pipe reads as the end of the file; an aborted pipe too (the
  // decryptor then fails, and the reason for the abort is reported first).
  size_t read(void* buf, size_t n) override {
    size_t got = 0;
    while (got < n) {
      if (!cur_ || pos_ == cur_->size) {
        if (cur_) pipe_.release(cur_);
        cur_ = pipe_.pop();
        pos_ = 0;
        if (!cur_) break;
        continue;
      }
      size_t k = std::min(n - got, cur_->size - pos_);
      std::memcpy(static_cast<uint8_t*>(buf) + got, cur_->data + pos_, k);
      pos_ += k;
      got += k;
    }
    return got;
  }
  const uint8_t* view(size_t n) override {
    if (!cur_ || pos_ == cur_->size) {
      if (cur_) pipe_.release(cur_);
      cur_ = pipe_.pop();
      pos_ = 0;
      if (!cur_) return nullptr;
    }
    if (cur_->size - pos_ < n) return nullptr;
    const uint8_t* p = cur_->data + pos_;
    pos_ += n;
    return p;
  }
  std::string name() const override { return name_; }

 private:
  BlockPipe& pipe_;
  std::string name_;
  Block* cur_ = nullptr;
  size_t pos_ = 0;
};

// Where the plaintext goes: SHA-256, the temp file or memory, the size cap.
struct PlainOut {
  PlainOut(AtomicFile& f, uint64_t max_bytes, std::string subject, bool background)
      : file(&f), wb(f.temp_path(), background), cap(max_bytes), subject(std::move(subject)) {}
  // Into `m` (emptied; `expect` bytes reserved, it grows past them if need be).
  PlainOut(RawVector<uint8_t>& m, uint64_t expect, uint64_t max_bytes, std::string subject)
      : mem(&m), cap(max_bytes), subject(std::move(subject)) {
    m.clear();
    m.reserve(size_t(std::min(expect, max_bytes)));
  }
  void put(const uint8_t* d, size_t n) {
    if (n > cap - bytes)
      throw PackageError(FailClass::size, subject, "plaintext over the limit of " + std::to_string(cap) + " bytes");
    sha.update(d, n);
    if (file) {
      file->write(d, n);
      wb.wrote(n);
    } else {
      mem->insert(mem->end(), d, d + n);
    }
    bytes += n;
  }
  AtomicFile* file = nullptr;
  RawVector<uint8_t>* mem = nullptr;
  Writeback wb;
  Sha256 sha;
  uint64_t bytes = 0, cap;
  std::string subject;
};

// The decrypt steps' state: the zstd decoder, if any, and where its last frame ended.
struct Decoder {
  explicit Decoder(bool zstd_) : zstd(zstd_) {
    if (!zstd) return;
    if (!dctx.p) throw Error(kExitSoftware, "cannot create a zstd context");
    // A 32 MiB window at most bounds memory (zstd -19 uses 8 MiB, level 3 2 MiB); larger
    // windows (--long, --ultra) fail as `decrypt`.
    ZSTD_DCtx_setParameter(dctx.p, ZSTD_d_windowLogMax, 25);
  }
  bool zstd;
  ZstdDCtx dctx;
  size_t zrem = 0;  // ZSTD_decompressStream's last hint: 0 when a frame ended
};

[[noreturn]] void zstd_failed(const std::string& subject, size_t r) {
  throw PackageError(FailClass::decrypt, subject, std::string("payload does not decompress: ") + ZSTD_getErrorName(r));
}

// decrypt → zstd -d → SHA-256 + write on this thread, one age chunk at a time
// (--threads 1).
void decrypt_sequential(crypto::Source& src, const std::vector<crypto::AgeIdentity>& identities, Decoder& dec,
                        PlainOut& po) {
  crypto::AgeDecryptor age(identities, src);
  std::unique_ptr<uint8_t[]> chunk(new uint8_t[crypto::kAgeChunkSize]);
  std::unique_ptr<uint8_t[]> out(dec.zstd ? new uint8_t[kBlock] : nullptr);
  size_t n = 0;
  while (age.next_chunk(chunk.get(), n)) {
    if (!dec.zstd) {
      po.put(chunk.get(), n);
      continue;
    }
    ZSTD_inBuffer zin{chunk.get(), n, 0};
    while (true) {
      ZSTD_outBuffer zout{out.get(), kBlock, 0};
      size_t r = ZSTD_decompressStream(dec.dctx.p, &zout, &zin);
      if (ZSTD_isError(r)) zstd_failed(src.name(), r);
      po.put(out.get(), zout.pos);
      if (zin.pos == zin.size && zout.pos < kBlock) {
        dec.zrem = r;
        break;
      }
    }
  }
}

// The same as three stages, each on its own thread: read + decrypt (reading src) |
// zstd -d | SHA-256 + write (this thread). Any pipe may be aborted from outside to
// stop them all early.
void decrypt_staged(crypto::Source& src, const std::vector<crypto::AgeIdentity>& identities, Decoder& dec,
                    PlainOut& po, BlockPipe& comp_pipe, BlockPipe& plain_pipe) {
  auto decryptor = [&](BlockPipe& p) {
    crypto::AgeDecryptor age(identities, src);
    Block* b = p.acquire();
    if (!b) return;
    size_t n = 0;
    while (true) {
      if (kBlock - b->size < crypto::kAgeChunkSize) {
        p.push(b);
        b = p.acquire();
        if (!b) return;
      }
      // Straight into the block: a chunk that fails leaves its bytes there, unreleased.
      if (!age.next_chunk(b->data + b->size, n)) break;
      b->size += n;
    }
    if (b->size) {
      p.push(b);
    } else {
      p.release(b);
    }
  };
  auto decompressor = [&](BlockPipe& pin, BlockPipe& pout) {
    Block* out = pout.acquire();
    if (!out) return;
    while (Block* b = pin.pop()) {
      ZSTD_inBuffer zin{b->data, b->size, 0};
      while (true) {
        ZSTD_outBuffer zout{out->data, kBlock, out->size};
        size_t r = ZSTD_decompressStream(dec.dctx.p, &zout, &zin);
        if (ZSTD_isError(r)) zstd_failed(src.name(), r);
        out->size = zout.pos;
        bool full = out->size == kBlock;
        if (full) {
          pout.push(out);
          out = pout.acquire();
          if (!out) return;
        }
        // Done with this block once its input is used up and the decoder holds
        // nothing more (output not full); 0 then means a frame ended.
        if (zin.pos == zin.size && !full) {
          dec.zrem = r;
          break;
        }
      }
      pin.release(b);
    }
    if (pin.aborted()) return;
    if (out->size) {
      pout.push(out);
    } else {
      pout.release(out);
    }
  };
  auto writer = [&](BlockPipe& p) {
    while (Block* b = p.pop()) {
      po.put(b->data, b->size);
      p.release(b);
    }
    if (p.aborted()) throw Error(kExitSoftware, "pipeline aborted");  // the real error is rethrown first
  };
  if (dec.zstd) {
    run_pipeline_pt(
        plain_pipe,
        [&](BlockPipe& pout) { run_pipeline_pt(comp_pipe, decryptor, [&](BlockPipe& pin) { decompressor(pin, pout); }); },
        writer);
  } else {
    run_pipeline_pt(plain_pipe, decryptor, writer);
  }
}

PackageError decrypt_error(const std::string& subject, const crypto::DecryptError& e) {
  return PackageError(FailClass::decrypt, subject, std::string(e.kind_name()) + ": " + e.why());
}

// Steps hash → inner, once the plaintext is complete and the file signature verified.
// HDF5 sees the bytes only now (opened by open_inner).
void check_plaintext(const Checked& c, const Decoder& dec, PlainOut& po, const std::function<h5::File()>& open_inner) {
  const Fields& f = c.fields;
  if (dec.zstd && dec.zrem != 0) throw PackageError(FailClass::decrypt, c.age_path, "compressed payload is truncated");
  // hash
  std::string plain = po.sha.hex();
  if (plain != f.plain)
    throw PackageError(FailClass::hash, c.age_path, "plaintext sha256 " + plain + " is not the signed " + f.plain);
  // inner
  try {
    h5::File h = open_inner();
    Fields inner = bound_attributes(h, c.age_path);
    auto cmp = [&](const char* name, const std::string& a, const std::string& b) {
      if (a != b)
        throw PackageError(FailClass::inner, c.age_path,
                           std::string("inner attribute ") + name + " '" + a + "' differs from the signed '" + b + "'");
    };
    cmp("federation", inner.federation, f.federation);
    cmp("round", std::to_string(inner.round), std::to_string(f.round));
    cmp("site", inner.site, f.site);
    cmp("kind", inner.kind, f.kind);
    cmp("base_sha256", inner.base, f.base);
  } catch (const PackageError&) {
    throw;
  } catch (const Error& e) {
    throw PackageError(FailClass::inner, c.age_path, "the HDF5 inside is not a valid " + f.kind + " file: " + e.why());
  }
}

// Steps hash → inner → publish: the plaintext is in po's temp file (renamed into
// place), or in po.mem.
void finish_unpack(const Checked& c, const Decoder& dec, PlainOut& po) {
  if (po.mem) {
    check_plaintext(c, dec, po, [&] { return h5::File::open_image(po.mem->data(), po.mem->size(), c.age_path, {c.fields.kind, true}); });
    return;
  }
  po.wb.flush_async();  // the temp file's last flush overlaps the checks below
  check_plaintext(c, dec, po, [&] { return h5::File::open(po.file->temp_path(), {c.fields.kind, true}); });
  po.wb.stop();
  po.file->commit();
}

// Where unpack() and check_and_unpack() put the plaintext: a file (written
// atomically) or memory.
struct Sink {
  Sink(const std::string& out_path, bool overwrite, RawVector<uint8_t>* mem_) : mem(mem_) {
    if (!mem) file.emplace(out_path, overwrite, 0600);
  }
  PlainOut& plain_out(const Checked& c, const Expect& ex, bool background) {
    if (mem) po.emplace(*mem, c.stamp.size, ex.max_plain_size, c.age_path);
    else po.emplace(*file, ex.max_plain_size, c.age_path, background);
    return *po;
  }
  RawVector<uint8_t>* mem;
  std::optional<AtomicFile> file;
  std::optional<PlainOut> po;
};

}  // namespace

namespace {

uint64_t unpack_to(const Checked& c, const std::vector<crypto::AgeIdentity>& identities, const std::string& out_path,
                   RawVector<uint8_t>* mem, const Expect& ex, bool overwrite, int threads) {
  if (identities.empty()) throw Error(kExitUsage, "no identity to decrypt with");
  Sink sink(out_path, overwrite, mem);
  Fd in(c.age_path);
  auto unchanged = [&] {
    if (!(stamp_of(in.fd(), c.age_path) == c.stamp))
      throw PackageError(FailClass::signature, c.age_path, "changed since its signature was checked");
  };
  unchanged();
  Decoder dec(c.fields.enc == "zstd+age");
  PlainOut& po = sink.plain_out(c, ex, threads != 1);
  FdReadSource src(in);
  try {
    if (threads == 1) {
      decrypt_sequential(src, identities, dec, po);
    } else {
      BlockPipe comp_pipe(4), plain_pipe(4);
      decrypt_staged(src, identities, dec, po, comp_pipe, plain_pipe);
    }
  } catch (const crypto::DecryptError& e) {
    throw decrypt_error(c.age_path, e);
  }
  unchanged();
  finish_unpack(c, dec, po);
  return po.bytes;
}

Checked check_and_unpack_to(const std::string& age_path, const std::string& sig_path, const Signers& signers,
                            const Expect& ex, const std::vector<crypto::AgeIdentity>& identities,
                            const std::string& out_path, RawVector<uint8_t>* mem, bool overwrite, int threads) {
  if (identities.empty()) throw Error(kExitUsage, "no identity to decrypt with");
  if (threads == 1) {
    Checked c = check(age_path, sig_path, signers, ex, 1);
    c.plain_bytes = unpack_to(c, identities, out_path, mem, ex, overwrite, 1);
    return c;
  }
  Fd in(age_path);
  Preflight p = preflight(in, sig_path, signers, ex);
  Checked& c = p.c;
  Sink sink(out_path, overwrite, mem);
  Decoder dec(c.fields.enc == "zstd+age");
  PlainOut& po = sink.plain_out(c, ex, true);

  // One reader hashes every block of the .age file and hands it on to the decrypt
  // stages, so both see the same bytes. It always reads to the end, even when the
  // decrypt stages stopped, because a signature failure outranks theirs; when the
  // signature fails it stops them at once (bounds a decompression bomb's work to
  // the time it takes to hash its .age file).
  BlockPipe age_pipe(4), comp_pipe(4), plain_pipe(4);
  auto stop_decrypt = [&] {
    age_pipe.abort();
    comp_pipe.abort();
    plain_pipe.abort();
  };
  std::exception_ptr reader_error, decrypt_failure;
  std::thread reader([&] {
    try {
      crypto::Blake2b512 b2;
      uint64_t total = 0;
      std::unique_ptr<uint8_t[]> own;  // once the decrypt stages stopped
      while (true) {
        Block* b = age_pipe.acquire();
        uint8_t* buf = b ? b->data : nullptr;
        if (!b) {
          if (!own) own.reset(new uint8_t[kBlock]);
          buf = own.get();
        }
        size_t n = read_block(in, buf, total, ex);
        if (n) b2.update(buf, n);
        if (!b) {
          if (n == 0) break;
          continue;
        }
        b->size = n;
        if (n == 0) {
          age_pipe.release(b);
          age_pipe.close();
          break;
        }
        age_pipe.push(b);
      }
      verify_file_signature(p, in, total, b2);
    } catch (...) {
      reader_error = std::current_exception();
      stop_decrypt();
      return;
    }
    // Idle until the decrypt stages end: start HDF5 (library, zstd filter) for the
    // inner step now rather than after them. Nothing else calls HDF5 meanwhile.
    try {
      h5::register_zstd_filter();
    } catch (const Error&) {
      // the inner step tries again and reports it
    }
  });
  try {
    PipeSource src(age_pipe, age_path);
    decrypt_staged(src, identities, dec, po, comp_pipe, plain_pipe);
  } catch (...) {
    decrypt_failure = std::current_exception();
    age_pipe.abort();  // the reader goes on hashing alone
  }
  reader.join();
  // Fail-closed order: the reader's errors (I/O, size, signature) first, then the
  // decrypt stages', then hash and inner. `out` removes the temp file on any throw.
  if (reader_error) std::rethrow_exception(reader_error);
  if (decrypt_failure) {
    try {
      std::rethrow_exception(decrypt_failure);
    } catch (const crypto::DecryptError& e) {
      throw decrypt_error(age_path, e);
    }
  }
  finish_unpack(c, dec, po);
  c.plain_bytes = po.bytes;
  return c;
}

}  // namespace

uint64_t unpack(const Checked& c, const std::vector<crypto::AgeIdentity>& identities, const std::string& out_path,
                const Expect& ex, bool overwrite, int threads) {
  return unpack_to(c, identities, out_path, nullptr, ex, overwrite, threads);
}

Checked check_and_unpack(const std::string& age_path, const std::string& sig_path, const Signers& signers,
                         const Expect& ex, const std::vector<crypto::AgeIdentity>& identities,
                         const std::string& out_path, bool overwrite, int threads) {
  return check_and_unpack_to(age_path, sig_path, signers, ex, identities, out_path, nullptr, overwrite, threads);
}

Checked check_and_unpack(const std::string& age_path, const std::string& sig_path, const Signers& signers,
                         const Expect& ex, const std::vector<crypto::AgeIdentity>& identities, RawVector<uint8_t>& plain,
                         int threads) {
  return check_and_unpack_to(age_path, sig_path, signers, ex, identities, {}, &plain, false, threads);
}

Checked verify_and_unpack(const std::string& age_path, const Roster& roster,
                          const std::vector<crypto::AgeIdentity>& identities, Expect expect,
                          const std::string& out_path, bool overwrite, int threads) {
  if (expect.federation.empty()) expect.federation = roster.federation();
  return check_and_unpack(age_path, {}, Signers::from_roster(roster), expect, identities, out_path, overwrite, threads);
}

Checked verify_and_unpack(const std::string& age_path, const Roster& roster,
                          const std::vector<crypto::AgeIdentity>& identities, Expect expect, RawVector<uint8_t>& plain,
                          int threads) {
  if (expect.federation.empty()) expect.federation = roster.federation();
  return check_and_unpack(age_path, {}, Signers::from_roster(roster), expect, identities, plain, threads);
}

}  // namespace fedseg::package
