#include "package/package.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "core/atomic_file.h"
#include "core/sha256.h"
#include "crypto/encoding.h"
#include "h5/tensor_file.h"
#include "package/bulk_hash.h"

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

PackageError::PackageError(FailClass cls, const std::string& subject, const std::string& why)
    : Error(kExitDataErr, std::string("package rejected (") + fail_class_name(cls) + ")", subject, why), cls_(cls) {}

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

// A bounded queue of reusable blocks between two threads (no allocation per block).
struct Block {
  std::unique_ptr<uint8_t[]> data;
  size_t size = 0;
};

class BlockPipe {
 public:
  explicit BlockPipe(size_t count) {
    for (size_t i = 0; i < count; ++i) {
      blocks_.push_back(Block{std::unique_ptr<uint8_t[]>(new uint8_t[kBlock]), 0});
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

// Starts the kernel's writeback of an output every 8 MiB while it is written, so
// that AtomicFile::commit()'s fsync finds little left to do: the disk works in
// parallel with the pipeline instead of after it. Advice only: errors ignored
// (the fsync in commit() reports them).
class Writeback {
 public:
  explicit Writeback(const std::string& path) : fd_(::open(path.c_str(), O_WRONLY | O_CLOEXEC)) {}
  ~Writeback() {
    if (fd_ >= 0) ::close(fd_);
  }
  Writeback(const Writeback&) = delete;
  Writeback& operator=(const Writeback&) = delete;
  void wrote(size_t n) {
    written_ += n;
    if (fd_ >= 0 && written_ - started_ >= kStep) {
      ::sync_file_range(fd_, static_cast<off_t>(started_), static_cast<off_t>(written_ - started_), SYNC_FILE_RANGE_WRITE);
      started_ = written_;
    }
  }

 private:
  static constexpr uint64_t kStep = uint64_t(8) << 20;
  int fd_;
  uint64_t written_ = 0, started_ = 0;
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
  BulkHash b2(BulkHash::Algo::blake2b512);
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
      b->size = in.read(b->data.get(), kBlock);
      sha.update(b->data.get(), b->size);
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
      ZSTD_inBuffer zin{b ? b->data.get() : nullptr, b ? b->size : 0, 0};
      ZSTD_EndDirective mode = eof ? ZSTD_e_end : ZSTD_e_continue;
      while (true) {
        ZSTD_outBuffer zout{out->data.get(), kBlock, out->size};
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
  Writeback age_wb(age_out.temp_path());
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
      enc.write(b->data.get(), b->size);
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
  f.plain = sha.hex();
  std::string why = invalid_fields(f);
  if (!why.empty()) throw Error(kExitSoftware, "cannot package", o.input, why);

  std::string digest_bytes = b2.final_bytes();
  crypto::Blake2b512::Digest digest{};
  std::memcpy(digest.data(), digest_bytes.data(), digest.size());
  std::string sig = crypto::sign_prehashed(key, digest, f.comment(), kUntrustedComment);

  // With --force, an old signature must not sit beside the new ciphertext even
  // for a moment: it goes first, and the new one is written last.
  if (o.overwrite && ::unlink(res.sig_path.c_str()) != 0 && errno != ENOENT)
    throw_errno(kExitCantCreate, "cannot remove the old signature", res.sig_path, errno);
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

Checked check(const std::string& age_path, const std::string& sig_path_in, const Signers& signers, const Expect& ex) {
  Checked c;
  c.age_path = age_path;
  c.sig_path = sig_path_in.empty() ? age_path + ".minisig" : sig_path_in;
  Fd in(age_path);
  c.stamp = stamp_of(in.fd(), age_path);
  // 1. size (the signature file is bounded by its parser: 64 KiB).
  c.age_bytes = in.size();
  if (c.age_bytes > ex.max_size)
    throw PackageError(FailClass::size, age_path,
                       std::to_string(c.age_bytes) + " bytes, over the limit of " + std::to_string(ex.max_size));
  // 2. signature
  std::string sig_text;
  try {
    sig_text = read_file(c.sig_path, 1 << 16);
  } catch (const Error& e) {
    if (e.code() != kExitDataErr) throw;
    throw PackageError(FailClass::signature, c.sig_path, "not a minisign signature: " + e.why());
  }
  crypto::MinisignSignature sig;
  std::optional<crypto::MinisignPublicKey> key;
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
      key = member->key;
    } else if (signers.key) {
      key = *signers.key;
    } else {
      throw Error(kExitSoftware, "no signer keys given");
    }
    // Read (kernel copy) on one thread, BLAKE2b-512 on this one.
    BulkHash b2(BulkHash::Algo::blake2b512);
    uint64_t total = 0;
    BlockPipe pipe(4);
    run_pipeline_pt(
        pipe,
        [&](BlockPipe& p) {
          while (Block* b = p.acquire()) {
            b->size = in.read(b->data.get(), kBlock);
            if (b->size == 0) {
              p.release(b);
              return;
            }
            total += b->size;
            p.push(b);
            if (total > ex.max_size) throw PackageError(FailClass::size, age_path, "grew over the size limit while being read");
          }
        },
        [&](BlockPipe& p) {
          while (Block* b = p.pop()) {
            b2.update(b->data.get(), b->size);
            p.release(b);
          }
        });
    std::string d = b2.final_bytes();
    std::memcpy(c.digest.data(), d.data(), c.digest.size());
    c.age_bytes = total;
    if (!(stamp_of(in.fd(), age_path) == c.stamp) || total != c.stamp.size)
      throw PackageError(FailClass::signature, age_path, "changed while its signature was being checked");
    crypto::Verified v = crypto::verify_prehashed(*key, sig, c.digest);
    c.key_id = crypto::key_id_hex(v.key_id);
  } catch (const crypto::SignatureError& e) {
    throw PackageError(FailClass::signature, age_path, std::string(e.kind_name()) + ": " + e.why());
  }
  // 3. fields
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
  return c;
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

}  // namespace

uint64_t unpack(const Checked& c, const std::vector<crypto::AgeIdentity>& identities, const std::string& out_path,
                const Expect& ex, bool overwrite) {
  if (identities.empty()) throw Error(kExitUsage, "no identity to decrypt with");
  AtomicFile out(out_path, overwrite, 0600);
  const Fields& f = c.fields;
  const bool zstd = f.enc == "zstd+age";
  Fd in(c.age_path);
  auto unchanged = [&] {
    if (!(stamp_of(in.fd(), c.age_path) == c.stamp))
      throw PackageError(FailClass::signature, c.age_path, "changed since its signature was checked");
  };
  unchanged();
  Sha256 sha;
  uint64_t plain_bytes = 0;
  ZstdDCtx dctx;
  if (zstd && !dctx.p) throw Error(kExitSoftware, "cannot create a zstd context");
  // A 32 MiB window at most bounds memory (zstd -19 uses 8 MiB, level 3 2 MiB); larger
  // windows (--long, --ultra) fail as `decrypt`.
  if (zstd) ZSTD_DCtx_setParameter(dctx.p, ZSTD_d_windowLogMax, 25);
  size_t zrem = 0;  // ZSTD_decompressStream's last hint: 0 when a frame ended

  // Stages, each on its own thread: read + decrypt | zstd -d | SHA-256 + write.
  auto decryptor = [&](BlockPipe& p) {
    FdReadSource src(in);
    crypto::AgeDecryptor dec(identities, src);
    Block* b = p.acquire();
    if (!b) return;
    while (true) {
      auto [d, n] = dec.next_chunk();
      if (!d) break;
      while (n > 0) {
        size_t take = std::min(n, kBlock - b->size);
        std::memcpy(b->data.get() + b->size, d, take);
        b->size += take;
        d += take;
        n -= take;
        if (b->size == kBlock) {
          p.push(b);
          b = p.acquire();
          if (!b) return;
        }
      }
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
      ZSTD_inBuffer zin{b->data.get(), b->size, 0};
      while (true) {
        ZSTD_outBuffer zout{out->data.get(), kBlock, out->size};
        size_t r = ZSTD_decompressStream(dctx.p, &zout, &zin);
        if (ZSTD_isError(r))
          throw PackageError(FailClass::decrypt, c.age_path,
                             std::string("payload does not decompress: ") + ZSTD_getErrorName(r));
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
          zrem = r;
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
  Writeback out_wb(out.temp_path());
  auto writer = [&](BlockPipe& p) {
    while (Block* b = p.pop()) {
      sha.update(b->data.get(), b->size);
      out.write(b->data.get(), b->size);
      plain_bytes += b->size;
      out_wb.wrote(b->size);
      p.release(b);
      if (plain_bytes > ex.max_plain_size)
        throw PackageError(FailClass::size, c.age_path,
                           "plaintext over the limit of " + std::to_string(ex.max_plain_size) + " bytes");
    }
    if (p.aborted()) throw Error(kExitSoftware, "pipeline aborted");  // the real error is rethrown first
  };
  BlockPipe plain_pipe(4), comp_pipe(4);
  try {
    if (zstd) {
      run_pipeline_pt(
          plain_pipe,
          [&](BlockPipe& pout) { run_pipeline_pt(comp_pipe, decryptor, [&](BlockPipe& pin) { decompressor(pin, pout); }); },
          writer);
    } else {
      run_pipeline_pt(comp_pipe, decryptor, writer);
    }
  } catch (const crypto::DecryptError& e) {
    throw PackageError(FailClass::decrypt, c.age_path, std::string(e.kind_name()) + ": " + e.why());
  }
  unchanged();
  if (zstd && zrem != 0) throw PackageError(FailClass::decrypt, c.age_path, "compressed payload is truncated");
  // hash
  std::string plain = sha.hex();
  if (plain != f.plain)
    throw PackageError(FailClass::hash, c.age_path, "plaintext sha256 " + plain + " is not the signed " + f.plain);
  // inner: HDF5 sees the bytes only now.
  try {
    h5::File h = h5::File::open(out.temp_path(), {f.kind, true});
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
  out.commit();
  return plain_bytes;
}

Checked verify_and_unpack(const std::string& age_path, const Roster& roster,
                          const std::vector<crypto::AgeIdentity>& identities, Expect expect,
                          const std::string& out_path, bool overwrite) {
  if (expect.federation.empty()) expect.federation = roster.federation();
  Checked c = check(age_path, {}, Signers::from_roster(roster), expect);
  unpack(c, identities, out_path, expect, overwrite);
  return c;
}

}  // namespace fedseg::package
