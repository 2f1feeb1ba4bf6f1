#include "fed/published.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/sha256.h"
#include "crypto/encoding.h"

namespace fedseg::fed {
namespace {

using package::FailClass;
using package::PackageError;

}  // namespace

// One read, two hashes: BLAKE2b-512 here, SHA-256 on a second thread over the same
// blocks (a ring of four), so that a large global model takes the longer of the two.
PublishedHashes hash_published(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno == ENOENT ? kExitNoInput : kExitIoErr, "cannot open", path, errno);
  crypto::Blake2b512 b;
  Sha256 s;
  constexpr size_t kRing = 4, kBlock = size_t(1) << 20;
  std::vector<std::vector<uint8_t>> ring(kRing, std::vector<uint8_t>(kBlock));
  size_t len[kRing] = {};
  std::mutex m;
  std::condition_variable cv;
  uint64_t produced = 0, consumed = 0;
  bool end = false;
  std::thread sha([&] {
    std::unique_lock<std::mutex> l(m);
    for (;;) {
      cv.wait(l, [&] { return consumed < produced || end; });
      if (consumed == produced) return;
      const size_t i = consumed % kRing;
      l.unlock();
      s.update(ring[i].data(), len[i]);
      l.lock();
      ++consumed;
      cv.notify_all();
    }
  });
  auto finish = [&] {
    {
      std::lock_guard<std::mutex> l(m);
      end = true;
    }
    cv.notify_all();
    sha.join();
    ::close(fd);
  };
  for (;;) {
    const size_t i = produced % kRing;
    {
      std::unique_lock<std::mutex> l(m);
      cv.wait(l, [&] { return produced - consumed < kRing; });
    }
    ssize_t n = ::read(fd, ring[i].data(), kBlock);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      finish();
      throw_errno(kExitIoErr, "cannot read", path, e);
    }
    if (n == 0) break;
    b.update(ring[i].data(), size_t(n));
    {
      std::lock_guard<std::mutex> l(m);
      len[i] = size_t(n);
      ++produced;
    }
    cv.notify_all();
  }
  finish();
  return {b.final(), s.hex()};
}

crypto::MinisignSecretKey load_signing_key(const std::string& id, const crypto::PasswordSource& password) {
  return crypto::MinisignSecretKey::load(is_directory(id) ? id + "/minisign.key" : id, password);
}

namespace {

// The .minisig text for a published file of these hashes; f receives its fields.
std::string published_sig(const crypto::MinisignSecretKey& key, const PublishedHashes& h, const std::string& sig_path,
                          const std::string& federation, int64_t round, const std::string& kind, package::Fields& f) {
  f.federation = federation;
  f.round = round;
  f.site = "-";
  f.kind = kind;
  f.base = "-";
  f.plain = h.sha256;
  f.enc = "none";
  f.ts = static_cast<int64_t>(std::time(nullptr));
  uint8_t nonce[16];
  randombytes_buf(nonce, sizeof nonce);
  f.nonce = to_hex(nonce, sizeof nonce);
  // Round-trip through the strict parser: never sign a comment we would refuse.
  package::Fields::parse(f.comment(), sig_path);
  return crypto::sign_prehashed(key, h.blake, f.comment(), "fedseg " + kind + " signed by the aggregator");
}

}  // namespace

package::Fields sign_published(const crypto::MinisignSecretKey& key, const std::string& path,
                               const std::string& federation, int64_t round, const std::string& kind,
                               bool overwrite) {
  return sign_published(key, path, federation, round, kind, overwrite, hash_published(path));
}

package::Fields sign_published(const crypto::MinisignSecretKey& key, const std::string& path,
                               const std::string& federation, int64_t round, const std::string& kind,
                               bool overwrite, const PublishedHashes& hashes) {
  package::Fields f;
  std::string sig = published_sig(key, hashes, path + ".minisig", federation, round, kind, f);
  write_file_atomic(path + ".minisig", sig, overwrite, 0644);
  return f;
}

package::Fields publish_signed(const crypto::MinisignSecretKey& key, const std::string& path, const std::string& content,
                               const std::string& federation, int64_t round, const std::string& kind) {
  PublishedHashes h;
  crypto::Blake2b512 b;
  b.update(content.data(), content.size());
  h.blake = b.final();
  h.sha256 = sha256_hex(content.data(), content.size());
  package::Fields f;
  const std::string sig_text = published_sig(key, h, path + ".minisig", federation, round, kind, f);
  AtomicFile body(path, true, 0644), sig(path + ".minisig", true, 0644);
  body.write(content.data(), content.size());
  sig.write(sig_text.data(), sig_text.size());
  body.sync();
  sig.sync();
  body.commit(false);  // the two renames back to back, one folder sync after both
  sig.commit();
  return f;
}

std::string published_what(const std::string& kind) {
  return kind == "global"       ? "global model"
         : kind == "latest"     ? "LATEST"
         : kind == "report"     ? "round report"
         : kind == "federation" ? "federation plan"
                                : "published file";
}

PublishedSignature open_published(const crypto::MinisignPublicKey& key, const std::string& path,
                                  const PublishedExpect& ex, const std::string& sig_path_in) {
  PublishedSignature s;
  s.path = path;
  s.sig_path = sig_path_in.empty() ? path + ".minisig" : sig_path_in;
  s.what = published_what(ex.kind);
  if (!path_exists(path)) throw Error(kExitNoInput, "missing", path, "no such file");
  if (!path_exists(s.sig_path)) throw Error(kExitNoInput, "missing signature", s.sig_path, "no such file");
  try {
    s.sig = crypto::MinisignSignature::parse(read_file(s.sig_path, 64 << 10), s.sig_path);
  } catch (const crypto::SignatureError& e) {
    throw PackageError(FailClass::signature, path, std::string(e.kind_name()) + ": " + e.why(), s.what);
  } catch (const Error& e) {
    if (e.code() == kExitNoInput) throw;
    throw PackageError(FailClass::signature, path, "unreadable signature " + s.sig_path + ": " + e.why(), s.what);
  }
  if (s.sig.key_id != key.key_id())
    throw PackageError(FailClass::signature, path,
                       "key_mismatch: signed by key " + crypto::key_id_hex(s.sig.key_id) + ", expected the aggregator's " +
                           key.key_id_hex(),
                       s.what);
  try {
    crypto::verify_trusted_comment(key, s.sig);
  } catch (const crypto::SignatureError& e) {
    throw PackageError(FailClass::signature, path, std::string(e.kind_name()) + ": " + e.why(), s.what);
  }
  package::Fields& f = s.fields;
  f = package::Fields::parse(s.sig.trusted_comment, s.sig_path);
  auto fail = [&](const std::string& why) { return PackageError(FailClass::fields, path, why, s.what); };
  if (f.enc != "none") throw fail("enc=" + f.enc + ": a package, not a file published in the clear");
  if (f.kind != ex.kind) throw fail("kind " + f.kind + ", expected " + ex.kind);
  if (!ex.federation.empty() && f.federation != ex.federation)
    throw fail("federation '" + f.federation + "', expected '" + ex.federation + "'");
  if (ex.round && f.round != *ex.round)
    throw fail("round " + std::to_string(f.round) + ", expected " + std::to_string(*ex.round) +
               (f.round < *ex.round ? " (an old round replayed?)" : ""));
  return s;
}

void check_published(const crypto::MinisignPublicKey& key, const PublishedSignature& s) {
  PublishedHashes h = hash_published(s.path);
  try {
    crypto::verify_prehashed(key, s.sig, h.blake);
  } catch (const crypto::SignatureError& e) {
    throw PackageError(FailClass::signature, s.path, std::string(e.kind_name()) + ": " + e.why(), s.what);
  }
  if (s.fields.plain != h.sha256)
    throw PackageError(FailClass::hash, s.path, "sha256 " + h.sha256 + " is not the signed " + s.fields.plain, s.what);
}

package::Fields verify_published(const crypto::MinisignPublicKey& key, const std::string& path,
                                 const PublishedExpect& ex, const std::string& sig_path) {
  PublishedSignature s = open_published(key, path, ex, sig_path);
  check_published(key, s);
  return s.fields;
}

}  // namespace fedseg::fed
