#include "crypto/age.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <cstring>
#include <ctime>

#include "core/atomic_file.h"
#include "crypto/encoding.h"

namespace fedseg::crypto {
namespace {

constexpr size_t kEncChunk = kAgeChunkSize + kAgeTagSize;
constexpr size_t kMaxHeader = 1 << 20;  // no real header comes near this
const char* const kVersionLine = "age-encryption.org/v1";
const char* const kX25519Label = "age-encryption.org/v1/X25519";
const char* const kIdentityHrp = "age-secret-key-";
const char* const kRecipientHrp = "age";

// STREAM nonce: 11-byte big-endian chunk counter, then the last-chunk flag.
void set_nonce(std::array<uint8_t, 12>& n, uint64_t counter, bool last) {
  n.fill(0);
  for (int i = 0; i < 8; ++i) n[10 - i] = static_cast<uint8_t>(counter >> (8 * i));
  n[11] = last ? 1 : 0;
}

std::array<uint8_t, 32> header_mac(const uint8_t file_key[16], const std::string& header_upto_dashes) {
  uint8_t hmac_key[32];
  hkdf_sha256_32(hmac_key, file_key, 16, nullptr, 0, "header");
  std::array<uint8_t, 32> mac{};
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, hmac_key, sizeof hmac_key);
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(header_upto_dashes.data()),
                                header_upto_dashes.size());
  crypto_auth_hmacsha256_final(&st, mac.data());
  sodium_memzero(hmac_key, sizeof hmac_key);
  sodium_memzero(&st, sizeof st);
  return mac;
}

std::string strip_line(const std::string& raw) {
  std::string s = raw;
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

// The payload's ChaCha20-Poly1305 (RFC 8439, 12-byte nonce, 16-byte tag, no
// associated data) on OpenSSL's libcrypto, one context per stream, keyed once:
// its AVX-512/AVX2 code is about 3x libsodium 1.0.18's here, and the payload is
// the only bulk use (header stanzas stay on libsodium). Same bytes either way.
EVP_CIPHER_CTX* aead_new(const uint8_t key[32], bool encrypt) {
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  const uint8_t zero_nonce[12] = {0};
  if (!c || EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), nullptr, key, zero_nonce, encrypt ? 1 : 0) != 1) {
    EVP_CIPHER_CTX_free(c);
    throw Error(kExitSoftware, "cannot start ChaCha20-Poly1305", {}, "OpenSSL EVP_CipherInit_ex failed");
  }
  return c;
}

void aead_seal(void* ctx, uint8_t* out, uint8_t tag[kAgeTagSize], const uint8_t* in, size_t n,
               const std::array<uint8_t, 12>& nonce) {
  auto* c = static_cast<EVP_CIPHER_CTX*>(ctx);
  int len = 0;
  bool ok = EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, nonce.data(), 1) == 1 &&
            (n == 0 || EVP_CipherUpdate(c, out, &len, in, static_cast<int>(n)) == 1) &&
            EVP_CipherFinal_ex(c, out + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kAgeTagSize), tag) == 1;
  if (!ok) throw Error(kExitSoftware, "ChaCha20-Poly1305 encryption failed");
}

// Decrypts n bytes + tag into out; false when the tag does not verify (out then
// holds unauthenticated bytes, which the caller must not release).
bool aead_open(void* ctx, uint8_t* out, const uint8_t* in, size_t n, const uint8_t* tag,
               const std::array<uint8_t, 12>& nonce) {
  auto* c = static_cast<EVP_CIPHER_CTX*>(ctx);
  int len = 0;
  if (EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, nonce.data(), 0) != 1 ||
      (n != 0 && EVP_CipherUpdate(c, out, &len, in, static_cast<int>(n)) != 1))
    throw Error(kExitSoftware, "ChaCha20-Poly1305 decryption failed");
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kAgeTagSize), const_cast<uint8_t*>(tag)) != 1)
    throw Error(kExitSoftware, "ChaCha20-Poly1305 decryption failed");
  return EVP_CipherFinal_ex(c, out + len, &len) == 1;
}

bool is_vchar_arg(const std::string& a) {
  if (a.empty()) return false;
  for (char c : a) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7e) return false;
  }
  return true;
}

}  // namespace

// ---- errors ----------------------------------------------------------------

const char* DecryptError::kind_name(Kind k) noexcept {
  switch (k) {
    case Kind::header: return "header";
    case Kind::hmac: return "hmac";
    case Kind::no_match: return "no_match";
    case Kind::payload: return "payload";
  }
  return "unknown";
}

DecryptError::DecryptError(Kind kind, const std::string& subject, const std::string& why)
    : Error(kExitDataErr, "cannot decrypt", subject, why), kind_(kind) {
  add_context(std::string("failure class: ") + kind_name(kind));
}

// ---- keys --------------------------------------------------------------------

AgeRecipient AgeRecipient::parse(const std::string& text) {
  auto d = bech32_decode(text);
  if (!d || d->hrp != kRecipientHrp || d->data.size() != 32)
    throw Error(kExitDataErr, "not an age X25519 recipient", text.substr(0, 80), "expected age1... (Bech32, 32 bytes)");
  std::array<uint8_t, 32> pk{};
  std::memcpy(pk.data(), d->data.data(), 32);
  return AgeRecipient(pk);
}

std::string AgeRecipient::to_string() const { return bech32_encode(kRecipientHrp, pk_.data(), pk_.size()); }

AgeIdentity::AgeIdentity(const std::array<uint8_t, 32>& sk) : sk_(sk) {
  ensure_sodium();
  crypto_scalarmult_base(pk_.data(), sk_.data());
}

AgeIdentity::~AgeIdentity() { sodium_memzero(sk_.data(), sk_.size()); }

AgeIdentity AgeIdentity::generate() {
  ensure_sodium();
  std::array<uint8_t, 32> sk{};
  randombytes_buf(sk.data(), sk.size());
  AgeIdentity id(sk);
  sodium_memzero(sk.data(), sk.size());
  return id;
}

AgeIdentity AgeIdentity::parse(const std::string& text) {
  auto d = bech32_decode(text);
  if (!d || d->hrp != kIdentityHrp || d->data.size() != 32) {
    if (d) sodium_memzero(d->data.data(), d->data.size());
    throw Error(kExitDataErr, "not an age X25519 identity", "", "expected AGE-SECRET-KEY-1... (Bech32, 32 bytes)");
  }
  std::array<uint8_t, 32> sk{};
  std::memcpy(sk.data(), d->data.data(), 32);
  sodium_memzero(d->data.data(), d->data.size());
  AgeIdentity id(sk);
  sodium_memzero(sk.data(), sk.size());
  return id;
}

std::string AgeIdentity::to_string() const {
  std::string s = bech32_encode(kIdentityHrp, sk_.data(), sk_.size());
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

AgeRecipient AgeIdentity::recipient() const { return AgeRecipient(pk_); }

std::vector<AgeIdentity> parse_identities(const std::string& text, const std::string& name) {
  std::vector<AgeIdentity> out;
  size_t start = 0, lineno = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    size_t end = nl == std::string::npos ? text.size() : nl;
    std::string line = strip_line(text.substr(start, end - start));
    ++lineno;
    start = end + 1;
    if (line.empty() || line[0] == '#') {
      wipe(line);
      continue;
    }
    try {
      out.push_back(AgeIdentity::parse(line));
    } catch (const Error&) {
      wipe(line);
      throw Error(kExitDataErr, "not an age identity file", name,
                  "line " + std::to_string(lineno) + " is not an AGE-SECRET-KEY-1 identity");
    }
    wipe(line);
  }
  if (out.empty()) throw Error(kExitDataErr, "not an age identity file", name, "it holds no identity");
  return out;
}

std::vector<AgeIdentity> load_identity_file(const std::string& path) {
  std::string text = read_secret_file(path);
  try {
    auto ids = parse_identities(text, path);
    wipe(text);
    return ids;
  } catch (...) {
    wipe(text);
    throw;
  }
}

std::string identity_file_text(const AgeIdentity& id) {
  char ts[32];
  std::time_t now = std::time(nullptr);
  struct tm tm {};
  ::gmtime_r(&now, &tm);
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string("# created: ") + ts + "\n# public key: " + id.recipient().to_string() + "\n" + id.to_string() +
         "\n";
}

void save_identity_file(const std::string& path, const AgeIdentity& id, bool overwrite) {
  write_secret_file(path, identity_file_text(id), overwrite);
}

std::vector<AgeRecipient> parse_recipients(const std::string& text, const std::string& name) {
  std::vector<AgeRecipient> out;
  size_t start = 0, lineno = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    size_t end = nl == std::string::npos ? text.size() : nl;
    std::string line = strip_line(text.substr(start, end - start));
    ++lineno;
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    try {
      out.push_back(AgeRecipient::parse(line));
    } catch (const Error&) {
      throw Error(kExitDataErr, "not an age recipients file", name,
                  "line " + std::to_string(lineno) + " is not an age1 recipient");
    }
  }
  return out;
}

// ---- encryption ----------------------------------------------------------------

AgeEncryptor::AgeEncryptor(const std::vector<AgeRecipient>& recipients, Sink& out)
    : out_(out), plain_(new uint8_t[kAgeChunkSize]), cipher_(new uint8_t[kEncChunk]) {
  ensure_sodium();
  if (recipients.empty()) throw Error(kExitUsage, "age encryption needs at least one recipient");
  uint8_t file_key[16];
  randombytes_buf(file_key, sizeof file_key);
  std::string header = std::string(kVersionLine) + "\n";
  for (const AgeRecipient& r : recipients) {
    uint8_t eph[32], share[32], shared[32], salt[64], wrap[32], body[32];
    randombytes_buf(eph, sizeof eph);
    crypto_scalarmult_base(share, eph);
    if (crypto_scalarmult(shared, eph, r.public_key().data()) != 0) {
      sodium_memzero(file_key, sizeof file_key);
      throw Error(kExitDataErr, "invalid age recipient", r.to_string(), "it is a low-order point");
    }
    std::memcpy(salt, share, 32);
    std::memcpy(salt + 32, r.public_key().data(), 32);
    hkdf_sha256_32(wrap, shared, sizeof shared, salt, sizeof salt, kX25519Label);
    const uint8_t zero_nonce[12] = {0};
    unsigned long long clen = 0;
    crypto_aead_chacha20poly1305_ietf_encrypt(body, &clen, file_key, sizeof file_key, nullptr, 0, nullptr,
                                              zero_nonce, wrap);
    header += "-> X25519 " + base64_encode(share, 32, false) + "\n" + base64_encode(body, 32, false) + "\n";
    sodium_memzero(eph, sizeof eph);
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(wrap, sizeof wrap);
  }
  header += "---";
  auto mac = header_mac(file_key, header);
  header += " " + base64_encode(mac.data(), mac.size(), false) + "\n";
  uint8_t nonce[16];
  randombytes_buf(nonce, sizeof nonce);
  hkdf_sha256_32(key_.data(), file_key, sizeof file_key, nonce, sizeof nonce, "payload");
  sodium_memzero(file_key, sizeof file_key);
  out_.write(header.data(), header.size());
  out_.write(nonce, sizeof nonce);
  aead_ = aead_new(key_.data(), true);  // last: the destructor frees it, and it does not run if we throw
}

AgeEncryptor::~AgeEncryptor() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(aead_));
  sodium_memzero(key_.data(), key_.size());
  if (plain_) sodium_memzero(plain_.get(), kAgeChunkSize);
}

void AgeEncryptor::flush_chunk(bool last) {
  set_nonce(nonce_, counter_, last);
  aead_seal(aead_, cipher_.get(), cipher_.get() + fill_, plain_.get(), fill_, nonce_);
  out_.write(cipher_.get(), fill_ + kAgeTagSize);
  ++counter_;
  fill_ = 0;
}

void AgeEncryptor::write(const void* data, size_t size) {
  if (finished_) throw Error(kExitSoftware, "age encryptor written after finish()");
  const auto* p = static_cast<const uint8_t*>(data);
  total_ += size;
  while (size > 0) {
    if (fill_ == kAgeChunkSize) flush_chunk(false);
    if (fill_ == 0 && size > kAgeChunkSize) {
      // A whole chunk that more data follows: encrypt from the caller's buffer.
      set_nonce(nonce_, counter_, false);
      aead_seal(aead_, cipher_.get(), cipher_.get() + kAgeChunkSize, p, kAgeChunkSize, nonce_);
      out_.write(cipher_.get(), kEncChunk);
      ++counter_;
      p += kAgeChunkSize;
      size -= kAgeChunkSize;
      continue;
    }
    size_t k = std::min(size, kAgeChunkSize - fill_);
    std::memcpy(plain_.get() + fill_, p, k);
    fill_ += k;
    p += k;
    size -= k;
  }
}

void AgeEncryptor::finish() {
  if (finished_) return;
  flush_chunk(true);  // may be full; empty only when the whole payload is
  finished_ = true;
}

// ---- decryption ----------------------------------------------------------------

AgeDecryptor::AgeDecryptor(const std::vector<AgeIdentity>& identities, Source& in)
    : in_(in), cipher_(new uint8_t[kEncChunk]), plain_(new uint8_t[kAgeChunkSize]) {
  ensure_sodium();
  read_header(identities);
}

AgeDecryptor::~AgeDecryptor() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(aead_));
  sodium_memzero(key_.data(), key_.size());
  if (plain_) sodium_memzero(plain_.get(), kAgeChunkSize);
}

void AgeDecryptor::fail(DecryptError::Kind k, const std::string& why) const { throw DecryptError(k, in_.name(), why); }

bool AgeDecryptor::read_line(std::string& line, std::string& raw) {
  line.clear();
  for (;;) {
    if (pending_pos_ >= pending_.size()) {
      pending_.resize(4096);
      size_t n = in_.read(&pending_[0], pending_.size());
      pending_.resize(n);
      pending_pos_ = 0;
      if (n == 0) return false;
    }
    size_t nl = pending_.find('\n', pending_pos_);
    size_t end = nl == std::string::npos ? pending_.size() : nl;
    line.append(pending_, pending_pos_, end - pending_pos_);
    if (raw.size() + line.size() > kMaxHeader) fail(DecryptError::Kind::header, "header longer than 1 MiB");
    if (nl != std::string::npos) {
      pending_pos_ = nl + 1;
      raw += line;
      raw += '\n';
      return true;
    }
    pending_pos_ = pending_.size();
  }
}

size_t AgeDecryptor::in_read(uint8_t* buf, size_t n) {
  size_t got = 0;
  if (pending_pos_ < pending_.size()) {
    got = std::min(n, pending_.size() - pending_pos_);
    std::memcpy(buf, pending_.data() + pending_pos_, got);
    pending_pos_ += got;
  }
  if (got < n) got += read_full(in_, buf + got, n - got);
  return got;
}

void AgeDecryptor::read_header(const std::vector<AgeIdentity>& identities) {
  using K = DecryptError::Kind;
  struct Stanza {
    std::vector<std::string> args;
    Bytes body;
  };
  std::string raw, line;
  if (!read_line(line, raw)) fail(K::header, raw.empty() && line.empty() ? "empty file" : "not an age file");
  if (line != kVersionLine) fail(K::header, "not an age v1 file (first line is not '" + std::string(kVersionLine) + "')");
  std::vector<Stanza> stanzas;
  std::array<uint8_t, 32> mac{};
  size_t mac_end = 0;
  for (;;) {
    size_t line_start = raw.size();
    if (!read_line(line, raw)) fail(K::header, "header ends before its MAC line");
    if (line.compare(0, 3, "---") == 0) {
      if (line.size() < 4 || line[3] != ' ') fail(K::header, "malformed MAC line");
      auto m = base64_decode(line.substr(4), false);
      if (!m || m->size() != 32) fail(K::header, "malformed or non-canonical header MAC");
      std::memcpy(mac.data(), m->data(), 32);
      mac_end = line_start + 3;
      break;
    }
    if (line.compare(0, 3, "-> ") != 0) fail(K::header, "malformed stanza line");
    Stanza s;
    size_t p = 3;
    for (;;) {
      size_t sp = line.find(' ', p);
      s.args.push_back(line.substr(p, sp == std::string::npos ? std::string::npos : sp - p));
      if (!is_vchar_arg(s.args.back())) fail(K::header, "malformed stanza argument");
      if (sp == std::string::npos) break;
      p = sp + 1;
    }
    for (;;) {
      if (!read_line(line, raw)) fail(K::header, "header ends inside a stanza body");
      if (line.size() > 64) fail(K::header, "stanza body line longer than 64 columns");
      auto b = base64_decode(line, false);
      if (!b) fail(K::header, "malformed or non-canonical stanza body");
      s.body.insert(s.body.end(), b->begin(), b->end());
      if (line.size() < 64) break;
    }
    stanzas.push_back(std::move(s));
  }

  // Unwrap: each identity tries every stanza; only X25519 stanzas are ours, and a
  // malformed X25519 stanza fails the header rather than being skipped.
  uint8_t file_key[16];
  bool found = false;
  for (const AgeIdentity& id : identities) {
    for (const Stanza& s : stanzas) {
      if (s.args[0] != "X25519") continue;
      if (s.args.size() != 2) fail(K::header, "X25519 stanza needs exactly one argument");
      auto share = base64_decode(s.args[1], false);
      if (!share || share->size() != 32) fail(K::header, "X25519 share is not 32 bytes of canonical base64");
      if (s.body.size() != 32) fail(K::header, "X25519 stanza body is not 32 bytes");
      uint8_t shared[32], salt[64], wrap[32];
      if (crypto_scalarmult(shared, id.secret().data(), share->data()) != 0)
        fail(K::header, "X25519 shared secret is all zero (low-order share)");
      std::memcpy(salt, share->data(), 32);
      std::memcpy(salt + 32, id.recipient().public_key().data(), 32);
      hkdf_sha256_32(wrap, shared, sizeof shared, salt, sizeof salt, kX25519Label);
      const uint8_t zero_nonce[12] = {0};
      unsigned long long mlen = 0;
      int rc = crypto_aead_chacha20poly1305_ietf_decrypt(file_key, &mlen, nullptr, s.body.data(), s.body.size(),
                                                         nullptr, 0, zero_nonce, wrap);
      sodium_memzero(shared, sizeof shared);
      sodium_memzero(wrap, sizeof wrap);
      if (rc == 0 && mlen == 16) {
        found = true;
        break;
      }
    }
    if (found) break;
  }
  if (!found) fail(K::no_match, "no identity matches any recipient stanza");

  auto want = header_mac(file_key, raw.substr(0, mac_end));
  if (sodium_memcmp(want.data(), mac.data(), 32) != 0) {
    sodium_memzero(file_key, sizeof file_key);
    fail(K::hmac, "header MAC does not match");
  }
  uint8_t nonce[16];
  if (in_read(nonce, sizeof nonce) != sizeof nonce) {
    sodium_memzero(file_key, sizeof file_key);
    fail(K::header, "payload nonce missing or short");
  }
  hkdf_sha256_32(key_.data(), file_key, sizeof file_key, nonce, sizeof nonce, "payload");
  sodium_memzero(file_key, sizeof file_key);
  aead_ = aead_new(key_.data(), false);
}

bool AgeDecryptor::next_chunk(uint8_t* out, size_t& n) {
  using K = DecryptError::Kind;
  n = 0;
  if (state_ == State::done) return false;
  if (state_ == State::check_eof) {
    uint8_t b;
    if (in_read(&b, 1) != 0) fail(K::payload, "trailing data after the final chunk");
    state_ = State::done;
    return false;
  }
  // A full chunk in place when the source holds it in memory, else copied in.
  const uint8_t* ct = pending_pos_ >= pending_.size() ? in_.view(kEncChunk) : nullptr;
  size_t got = kEncChunk;
  if (!ct) {
    got = in_read(cipher_.get(), kEncChunk);
    ct = cipher_.get();
  }
  auto where = [&] { return "chunk " + std::to_string(counter_); };
  if (got < kEncChunk) {
    // End of input: this must be the final chunk.
    if (got == 0) fail(K::payload, counter_ == 0 ? "no payload chunk" : "truncated: the final chunk is missing");
    if (got < kAgeTagSize) fail(K::payload, "truncated " + where());
    if (got == kAgeTagSize && counter_ > 0) fail(K::payload, "empty final chunk");
    set_nonce(nonce_, counter_, true);
    if (!aead_open(aead_, out, ct, got - kAgeTagSize, ct + got - kAgeTagSize, nonce_))
      fail(K::payload, where() + " failed authentication (damaged or truncated)");
    state_ = State::done;
  } else {
    // A full chunk is either a middle chunk or a full final one.
    set_nonce(nonce_, counter_, false);
    if (!aead_open(aead_, out, ct, kAgeChunkSize, ct + kAgeChunkSize, nonce_)) {
      set_nonce(nonce_, counter_, true);
      if (!aead_open(aead_, out, ct, kAgeChunkSize, ct + kAgeChunkSize, nonce_))
        fail(K::payload, where() + " failed authentication");
      state_ = State::check_eof;
    }
  }
  ++counter_;
  n = got - kAgeTagSize;
  total_ += n;
  return true;
}

std::pair<const uint8_t*, size_t> AgeDecryptor::next_chunk() {
  size_t n = 0;
  if (!next_chunk(plain_.get(), n)) return {nullptr, 0};
  return {plain_.get(), n};
}

size_t AgeDecryptor::read(void* buf, size_t n) {
  while (avail_ == 0) {
    if (state_ == State::done) return 0;
    auto c = next_chunk();
    if (!c.first) return 0;
    pos_ = 0;
    avail_ = c.second;
  }
  size_t k = std::min(n, avail_);
  std::memcpy(buf, plain_.get() + pos_, k);
  pos_ += k;
  avail_ -= k;
  return k;
}

uint64_t age_encrypt(const std::vector<AgeRecipient>& recipients, Source& in, Sink& out) {
  AgeEncryptor enc(recipients, out);
  std::unique_ptr<uint8_t[]> buf(new uint8_t[4 * kAgeChunkSize]);
  for (;;) {
    size_t n = read_full(in, buf.get(), 4 * kAgeChunkSize);
    if (n == 0) break;
    enc.write(buf.get(), n);
    if (n < 4 * kAgeChunkSize) break;
  }
  enc.finish();
  return enc.plaintext_bytes();
}

uint64_t age_decrypt(const std::vector<AgeIdentity>& identities, Source& in, Sink& out) {
  AgeDecryptor dec(identities, in);
  for (;;) {
    auto c = dec.next_chunk();
    if (!c.first) break;
    if (c.second) out.write(c.first, c.second);
  }
  return dec.plaintext_bytes();
}

}  // namespace fedseg::crypto
