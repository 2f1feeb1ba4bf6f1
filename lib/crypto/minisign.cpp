#include "crypto/minisign.h"

#include <sodium.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/atomic_file.h"

namespace fedseg::crypto {
namespace {

const char* const kCommentPrefix = "untrusted comment: ";
const char* const kTrustedPrefix = "trusted comment: ";
constexpr size_t kSecretKeyBytes = 158;  // "Ed" kdf "B2" salt(32) ops(8) mem(8) keynum_sk(104)
constexpr size_t kKeynumSkBytes = 104;   // key id(8) ed25519 sk(64) checksum(32)
constexpr uint64_t kMaxMemlimit = uint64_t(4) << 30;

bool starts_with(const std::string& s, const char* p) { return s.compare(0, std::strlen(p), p) == 0; }

// Lines of a small text file, with a trailing CR removed as minisign does.
std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    size_t end = nl == std::string::npos ? text.size() : nl;
    std::string l = text.substr(start, end - start);
    if (!l.empty() && l.back() == '\r') l.pop_back();
    lines.push_back(std::move(l));
    start = end + 1;
  }
  return lines;
}

void put_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// BLAKE2b-256("Ed" || key id || ed25519 sk): minisign's secret key checksum.
std::array<uint8_t, 32> seckey_checksum(const KeyId& id, const std::array<uint8_t, 64>& sk) {
  std::array<uint8_t, 32> chk{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, chk.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>("Ed"), 2);
  crypto_generichash_update(&st, id.data(), id.size());
  crypto_generichash_update(&st, sk.data(), sk.size());
  crypto_generichash_final(&st, chk.data(), chk.size());
  return chk;
}

void check_comment(const std::string& c, size_t max, const char* what) {
  if (c.find_first_of("\r\n") != std::string::npos)
    throw Error(kExitUsage, std::string(what) + " must be one line");
  if (c.size() > max)
    throw Error(kExitUsage, std::string(what) + " too long", "", std::to_string(c.size()) + " bytes, at most " + std::to_string(max));
}

}  // namespace

std::string key_id_hex(const KeyId& id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llX", static_cast<unsigned long long>(get_le64(id.data())));
  return buf;
}

SignatureError::SignatureError(Kind kind, const std::string& subject, const std::string& why)
    : Error(kExitDataErr, "bad signature", subject, why), kind_(kind) {
  add_context(std::string("failure class: ") + kind_name());
}

const char* SignatureError::kind_name() const noexcept {
  switch (kind_) {
    case Kind::malformed: return "malformed";
    case Kind::legacy: return "legacy";
    case Kind::key_mismatch: return "key_mismatch";
    case Kind::bad_signature: return "bad_signature";
    case Kind::bad_trusted_comment: return "bad_trusted_comment";
  }
  return "unknown";
}

// ---- public keys ---------------------------------------------------------------

MinisignPublicKey MinisignPublicKey::parse(const std::string& text, const std::string& name) {
  auto lines = split_lines(text);
  std::string b64;
  if (lines.size() == 1) {
    b64 = lines[0];
  } else if (lines.size() >= 2 && starts_with(lines[0], "untrusted comment:")) {
    b64 = lines[1];
    for (size_t i = 2; i < lines.size(); ++i)
      if (!lines[i].empty()) throw Error(kExitDataErr, "not a minisign public key", name, "unexpected extra lines");
  } else {
    throw Error(kExitDataErr, "not a minisign public key", name, "expected an untrusted comment line and a base64 line");
  }
  auto d = base64_decode(b64, true);
  if (!d || d->size() != 42 || (*d)[0] != 'E' || (*d)[1] != 'd')
    throw Error(kExitDataErr, "not a minisign public key", name, "the key line is not base64 of \"Ed\" + key id + Ed25519 key");
  KeyId id{};
  std::array<uint8_t, 32> pk{};
  std::memcpy(id.data(), d->data() + 2, 8);
  std::memcpy(pk.data(), d->data() + 10, 32);
  return MinisignPublicKey(id, pk);
}

MinisignPublicKey MinisignPublicKey::load(const std::string& path) { return parse(read_file(path, 1 << 16), path); }

std::string MinisignPublicKey::to_base64() const {
  uint8_t b[42] = {'E', 'd'};
  std::memcpy(b + 2, id_.data(), 8);
  std::memcpy(b + 10, pk_.data(), 32);
  return base64_encode(b, sizeof b, true);
}

std::string MinisignPublicKey::file_text() const {
  return std::string(kCommentPrefix) + "minisign public key " + key_id_hex() + "\n" + to_base64() + "\n";
}

void MinisignPublicKey::save(const std::string& path, bool overwrite) const {
  write_file_atomic(path, file_text(), overwrite, 0644);
}

// ---- passwords -------------------------------------------------------------------

std::string read_password(const PasswordSource& src) {
  if (!src.file.empty()) {
    std::string text = read_secret_file(src.file, 4096);
    size_t nl = text.find('\n');
    std::string pw = text.substr(0, nl);
    wipe(text);
    if (!pw.empty() && pw.back() == '\r') pw.pop_back();
    return pw;
  }
  if (!src.env.empty()) {
    const char* v = std::getenv(src.env.c_str());
    if (!v) throw Error(kExitConfig, "password variable is not set", src.env);
    return v;
  }
  throw Error(kExitConfig, "the secret key is password-protected and no password was given",
              "", "give a password file or environment variable");
}

// ---- secret keys ---------------------------------------------------------------

MinisignSecretKey::~MinisignSecretKey() { sodium_memzero(sk_.data(), sk_.size()); }

MinisignSecretKey MinisignSecretKey::generate() {
  ensure_sodium();
  MinisignSecretKey k;
  std::array<uint8_t, 32> pk{};
  crypto_sign_keypair(pk.data(), k.sk_.data());
  randombytes_buf(k.id_.data(), k.id_.size());
  return k;
}

MinisignPublicKey MinisignSecretKey::public_key() const {
  std::array<uint8_t, 32> pk{};
  std::memcpy(pk.data(), sk_.data() + 32, 32);
  return MinisignPublicKey(id_, pk);
}

MinisignSecretKey MinisignSecretKey::parse(const std::string& text, const std::string& name,
                                           const PasswordSource& password) {
  ensure_sodium();
  auto bad = [&](const std::string& why) { return Error(kExitDataErr, "not a minisign secret key", name, why); };
  auto lines = split_lines(text);
  if (lines.size() < 2 || !starts_with(lines[0], "untrusted comment:"))
    throw bad("expected an untrusted comment line and a base64 line");
  auto d = base64_decode(lines[1], true);
  for (auto& l : lines) wipe(l);
  if (!d || d->size() != kSecretKeyBytes) {
    if (d) sodium_memzero(d->data(), d->size());
    throw bad("the key line is not base64 of 158 bytes");
  }
  uint8_t* b = d->data();
  struct Wiper {
    Bytes& v;
    ~Wiper() { sodium_memzero(v.data(), v.size()); }
  } wiper{*d};
  if (std::memcmp(b, "Ed", 2) != 0) throw bad("signature algorithm is not Ed25519");
  if (std::memcmp(b + 4, "B2", 2) != 0) throw bad("checksum algorithm is not BLAKE2b");
  const uint8_t* salt = b + 6;
  uint64_t opslimit = get_le64(b + 38), memlimit = get_le64(b + 46);
  uint8_t* keynum_sk = b + 54;
  MinisignSecretKey k;
  bool zero_chk_ok = false;
  if (std::memcmp(b + 2, "Sc", 2) == 0) {
    if (memlimit > kMaxMemlimit) throw bad("scrypt memory limit above 4 GiB");
    std::string pw = read_password(password);
    uint8_t stream[kKeynumSkBytes];
    int rc = crypto_pwhash_scryptsalsa208sha256(stream, sizeof stream, pw.data(), pw.size(), salt, opslimit,
                                                static_cast<size_t>(memlimit));
    wipe(pw);
    if (rc != 0) throw Error(kExitSoftware, "cannot derive the key from the password", name, "out of memory?");
    for (size_t i = 0; i < kKeynumSkBytes; ++i) keynum_sk[i] ^= stream[i];
    sodium_memzero(stream, sizeof stream);
    k.was_encrypted_ = true;
  } else if (b[2] == 0 && b[3] == 0) {
    zero_chk_ok = true;  // minisign -W leaves the checksum of unencrypted keys zero
  } else {
    throw bad("unsupported key derivation algorithm");
  }
  std::memcpy(k.id_.data(), keynum_sk, 8);
  std::memcpy(k.sk_.data(), keynum_sk + 8, 64);
  const uint8_t* stored_chk = keynum_sk + 72;
  auto chk = seckey_checksum(k.id_, k.sk_);
  bool chk_ok = sodium_memcmp(chk.data(), stored_chk, 32) == 0;
  if (!chk_ok && !(zero_chk_ok && sodium_is_zero(stored_chk, 32))) {
    if (k.was_encrypted_)
      throw Error(kExitConfig, "cannot unlock minisign secret key", name, "wrong password (or a damaged key)");
    throw bad("checksum mismatch (damaged key)");
  }
  // The Ed25519 secret key is seed || public key: they must agree.
  std::array<uint8_t, 32> pk{};
  std::array<uint8_t, 64> sk2{};
  crypto_sign_seed_keypair(pk.data(), sk2.data(), k.sk_.data());
  bool same = sodium_memcmp(sk2.data(), k.sk_.data(), 64) == 0;
  sodium_memzero(sk2.data(), sk2.size());
  if (!same) throw bad("its public half does not match its secret half");
  return k;
}

MinisignSecretKey MinisignSecretKey::load(const std::string& path, const PasswordSource& password) {
  std::string text = read_secret_file(path);
  try {
    MinisignSecretKey k = parse(text, path, password);
    wipe(text);
    return k;
  } catch (...) {
    wipe(text);
    throw;
  }
}

std::string MinisignSecretKey::file_text() const {
  uint8_t b[kSecretKeyBytes] = {'E', 'd', 0, 0, 'B', '2'};
  std::memcpy(b + 54, id_.data(), 8);
  std::memcpy(b + 62, sk_.data(), 64);
  auto chk = seckey_checksum(id_, sk_);
  std::memcpy(b + 126, chk.data(), 32);
  std::string text = std::string(kCommentPrefix) + "minisign secret key (unencrypted)\n" + base64_encode(b, sizeof b, true) + "\n";
  sodium_memzero(b, sizeof b);
  return text;
}

std::string MinisignSecretKey::encrypted_file_text(const std::string& password, uint64_t opslimit,
                                                   uint64_t memlimit) const {
  ensure_sodium();
  uint8_t b[kSecretKeyBytes] = {'E', 'd', 'S', 'c', 'B', '2'};
  randombytes_buf(b + 6, 32);
  put_le64(b + 38, opslimit);
  put_le64(b + 46, memlimit);
  std::memcpy(b + 54, id_.data(), 8);
  std::memcpy(b + 62, sk_.data(), 64);
  auto chk = seckey_checksum(id_, sk_);
  std::memcpy(b + 126, chk.data(), 32);
  uint8_t stream[kKeynumSkBytes];
  if (crypto_pwhash_scryptsalsa208sha256(stream, sizeof stream, password.data(), password.size(), b + 6, opslimit,
                                         static_cast<size_t>(memlimit)) != 0) {
    sodium_memzero(b, sizeof b);
    throw Error(kExitSoftware, "cannot derive a key from the password", "", "out of memory?");
  }
  for (size_t i = 0; i < kKeynumSkBytes; ++i) b[54 + i] ^= stream[i];
  sodium_memzero(stream, sizeof stream);
  std::string text = std::string(kCommentPrefix) + "minisign encrypted secret key\n" + base64_encode(b, sizeof b, true) + "\n";
  sodium_memzero(b, sizeof b);
  return text;
}

void MinisignSecretKey::save_text(const std::string& path, std::string text, bool overwrite) {
  write_secret_file(path, std::move(text), overwrite);
}

// ---- signatures -------------------------------------------------------------------

MinisignSignature MinisignSignature::parse(const std::string& text, const std::string& name) {
  using K = SignatureError::Kind;
  auto lines = split_lines(text);
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.size() != 4) throw SignatureError(K::malformed, name, "a minisign signature has 4 lines");
  if (!starts_with(lines[0], kCommentPrefix))
    throw SignatureError(K::malformed, name, "line 1 is not an untrusted comment");
  if (!starts_with(lines[2], kTrustedPrefix))
    throw SignatureError(K::malformed, name, "line 3 is not a trusted comment");
  auto s = base64_decode(lines[1], true);
  if (!s || s->size() != 74) throw SignatureError(K::malformed, name, "line 2 is not base64 of a 74-byte signature");
  auto g = base64_decode(lines[3], true);
  if (!g || g->size() != 64) throw SignatureError(K::malformed, name, "line 4 is not base64 of a 64-byte signature");
  MinisignSignature sig;
  sig.name = name;
  std::memcpy(sig.algorithm.data(), s->data(), 2);
  std::memcpy(sig.key_id.data(), s->data() + 2, 8);
  std::memcpy(sig.signature.data(), s->data() + 10, 64);
  std::memcpy(sig.global_signature.data(), g->data(), 64);
  sig.untrusted_comment = lines[0].substr(std::strlen(kCommentPrefix));
  sig.trusted_comment = lines[2].substr(std::strlen(kTrustedPrefix));
  return sig;
}

MinisignSignature MinisignSignature::load(const std::string& path) { return parse(read_file(path, 1 << 16), path); }

std::string sign_prehashed(const MinisignSecretKey& key, const Blake2b512::Digest& digest,
                           const std::string& trusted_comment, const std::string& untrusted_comment) {
  ensure_sodium();
  check_comment(trusted_comment, kMaxTrustedComment, "trusted comment");
  check_comment(untrusted_comment, kMaxUntrustedComment, "untrusted comment");
  uint8_t blob[74] = {'E', 'D'};
  std::memcpy(blob + 2, key.key_id().data(), 8);
  crypto_sign_detached(blob + 10, nullptr, digest.data(), digest.size(), key.ed25519().data());
  std::string global_msg(reinterpret_cast<const char*>(blob + 10), 64);
  global_msg += trusted_comment;
  uint8_t global[64];
  crypto_sign_detached(global, nullptr, reinterpret_cast<const unsigned char*>(global_msg.data()), global_msg.size(),
                       key.ed25519().data());
  return std::string(kCommentPrefix) + untrusted_comment + "\n" + base64_encode(blob, sizeof blob, true) + "\n" +
         kTrustedPrefix + trusted_comment + "\n" + base64_encode(global, sizeof global, true) + "\n";
}

std::string sign(const MinisignSecretKey& key, Source& data, const std::string& trusted_comment,
                 const std::string& untrusted_comment) {
  check_comment(trusted_comment, kMaxTrustedComment, "trusted comment");
  check_comment(untrusted_comment, kMaxUntrustedComment, "untrusted comment");
  return sign_prehashed(key, blake2b512(data), trusted_comment, untrusted_comment);
}

std::string sign_file(const MinisignSecretKey& key, const std::string& path, const std::string& trusted_comment,
                      const std::string& untrusted_comment) {
  FileSource in(path);
  return sign(key, in, trusted_comment, untrusted_comment);
}

namespace {

void check_algorithm_and_key(const MinisignPublicKey& key, const MinisignSignature& sig) {
  using K = SignatureError::Kind;
  if (sig.algorithm[0] == 'E' && sig.algorithm[1] == 'd')
    throw SignatureError(K::legacy, sig.name, "legacy (not prehashed) Ed signature; only prehashed ED is accepted");
  if (sig.algorithm[0] != 'E' || sig.algorithm[1] != 'D')
    throw SignatureError(K::malformed, sig.name, "unknown signature algorithm");
  if (sig.key_id != key.key_id())
    throw SignatureError(K::key_mismatch, sig.name,
                         "signed by key " + key_id_hex(sig.key_id) + ", not by key " + key.key_id_hex());
}

void check_global_signature(const MinisignPublicKey& key, const MinisignSignature& sig) {
  std::string msg(reinterpret_cast<const char*>(sig.signature.data()), 64);
  msg += sig.trusted_comment;
  if (crypto_sign_verify_detached(sig.global_signature.data(), reinterpret_cast<const unsigned char*>(msg.data()),
                                  msg.size(), key.ed25519().data()) != 0)
    throw SignatureError(SignatureError::Kind::bad_trusted_comment, sig.name, "the trusted comment was altered");
}

}  // namespace

Verified verify_trusted_comment(const MinisignPublicKey& key, const MinisignSignature& sig) {
  ensure_sodium();
  check_algorithm_and_key(key, sig);
  check_global_signature(key, sig);
  return Verified{sig.trusted_comment, sig.key_id};
}

Verified verify_prehashed(const MinisignPublicKey& key, const MinisignSignature& sig,
                          const Blake2b512::Digest& digest) {
  ensure_sodium();
  check_algorithm_and_key(key, sig);
  if (crypto_sign_verify_detached(sig.signature.data(), digest.data(), digest.size(), key.ed25519().data()) != 0)
    throw SignatureError(SignatureError::Kind::bad_signature, sig.name, "the signature does not match the file");
  check_global_signature(key, sig);
  return Verified{sig.trusted_comment, sig.key_id};
}

Verified verify(const MinisignPublicKey& key, const MinisignSignature& sig, Source& data) {
  // Cheap checks first, so a wrong key does not cost a pass over a large file.
  using K = SignatureError::Kind;
  if (sig.algorithm[0] == 'E' && sig.algorithm[1] == 'd')
    throw SignatureError(K::legacy, sig.name, "legacy (not prehashed) Ed signature; only prehashed ED is accepted");
  if (sig.key_id != key.key_id())
    throw SignatureError(K::key_mismatch, sig.name,
                         "signed by key " + key_id_hex(sig.key_id) + ", not by key " + key.key_id_hex());
  return verify_prehashed(key, sig, blake2b512(data));
}

Verified verify_file(const MinisignPublicKey& key, const std::string& data_path, const std::string& sig_path) {
  MinisignSignature sig = MinisignSignature::load(sig_path.empty() ? data_path + ".minisig" : sig_path);
  FileSource in(data_path);
  return verify(key, sig, in);
}

}  // namespace fedseg::crypto
