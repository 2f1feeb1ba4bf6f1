// fedseg::crypto age v1 (age-encryption.org/v1) with X25519 recipients, on
// libsodium 1.0.18: keys (Bech32 age1... / AGE-SECRET-KEY-1...), identity files
// as age-keygen writes them, and streaming encryption/decryption in 64 KiB STREAM
// chunks with bounded memory. Files interoperate with Debian's `age` (1.1.1).
// Out of scope (their test vectors are skipped): scrypt passphrase stanzas, ASCII armor,
// post-quantum recipients.
// Part of the crypto module: depends on fedseg core and libsodium, and on OpenSSL's
// libcrypto for the payload's ChaCha20-Poly1305 only (about 3x libsodium's here).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "crypto/crypto_io.h"

namespace fedseg::crypto {

constexpr size_t kAgeChunkSize = 65536;  // plaintext bytes per STREAM chunk
constexpr size_t kAgeTagSize = 16;

// Why a file did not decrypt (exit code 65). kind() lets callers print a class:
//   header   malformed header, unsupported version or stanza form, non-canonical
//            base64, all-zero X25519 shared secret, missing/short payload nonce
//   hmac     a file key was unwrapped but the header MAC does not match
//   no_match no identity unwraps any stanza
//   payload  a chunk failed authentication, the stream is truncated, has trailing
//            data, or has an empty final chunk where the spec forbids it
class DecryptError : public Error {
 public:
  enum class Kind { header, hmac, no_match, payload };
  DecryptError(Kind kind, const std::string& subject, const std::string& why);
  Kind kind() const noexcept { return kind_; }
  // "header", "hmac", "no_match", "payload".
  const char* kind_name() const noexcept { return kind_name(kind_); }
  static const char* kind_name(Kind k) noexcept;

 private:
  Kind kind_;
};

// An X25519 recipient (public key), "age1..." in lower case.
class AgeRecipient {
 public:
  // Throws Error 65 when text is not a valid age1 X25519 recipient.
  static AgeRecipient parse(const std::string& text);
  explicit AgeRecipient(const std::array<uint8_t, 32>& pk) : pk_(pk) {}
  std::string to_string() const;
  const std::array<uint8_t, 32>& public_key() const { return pk_; }
  bool operator==(const AgeRecipient& o) const { return pk_ == o.pk_; }

 private:
  std::array<uint8_t, 32> pk_{};
};

// An X25519 identity (secret key), "AGE-SECRET-KEY-1..." in upper case. The
// secret is wiped on destruction.
class AgeIdentity {
 public:
  static AgeIdentity generate();
  // Throws Error 65 when text is not a valid AGE-SECRET-KEY-1 identity.
  static AgeIdentity parse(const std::string& text);
  explicit AgeIdentity(const std::array<uint8_t, 32>& sk);
  AgeIdentity(const AgeIdentity&) = default;
  AgeIdentity& operator=(const AgeIdentity&) = default;
  ~AgeIdentity();
  std::string to_string() const;
  AgeRecipient recipient() const;
  const std::array<uint8_t, 32>& secret() const { return sk_; }

 private:
  std::array<uint8_t, 32> sk_{};
  std::array<uint8_t, 32> pk_{};
};

// Identity files in age's format (`age -i`): '#' comment lines, blank lines and
// one AGE-SECRET-KEY-1 per line. load_identity_file refuses a file that group or
// others may access (Error 77 naming it), Error 66 if missing, 65 if malformed or
// holding no identity.
std::vector<AgeIdentity> load_identity_file(const std::string& path);
std::vector<AgeIdentity> parse_identities(const std::string& text, const std::string& name);
// The text age-keygen writes: "# created: <UTC>\n# public key: age1...\nAGE-SECRET-KEY-1...\n".
std::string identity_file_text(const AgeIdentity& id);
// Writes identity_file_text atomically with mode 0600 (Error 73 if it exists and !overwrite).
void save_identity_file(const std::string& path, const AgeIdentity& id, bool overwrite);
// Recipients files (`age -R`): '#' comments, blank lines, one age1 per line; Error 65 if malformed.
std::vector<AgeRecipient> parse_recipients(const std::string& text, const std::string& name);

// Streaming encryption. The header is written to `out` by the constructor; feed the
// plaintext with write() (any sizes) and call finish() once at the end. Holds two
// 64 KiB buffers, nothing per chunk. Throws Error 64/70 for misuse, whatever the
// sink throws for output errors.
class AgeEncryptor : public Sink {
 public:
  AgeEncryptor(const std::vector<AgeRecipient>& recipients, Sink& out);
  ~AgeEncryptor() override;
  AgeEncryptor(const AgeEncryptor&) = delete;
  AgeEncryptor& operator=(const AgeEncryptor&) = delete;
  void write(const void* data, size_t size) override;
  // Encrypts the final chunk. Without it the output is a truncated (invalid) file.
  void finish();
  uint64_t plaintext_bytes() const { return total_; }
  std::string name() const override { return out_.name(); }

 private:
  void flush_chunk(bool last);
  Sink& out_;
  std::array<uint8_t, 32> key_{};
  std::array<uint8_t, 12> nonce_{};
  std::unique_ptr<uint8_t[]> plain_, cipher_;
  void* aead_ = nullptr;  // EVP_CIPHER_CTX, keyed with key_
  size_t fill_ = 0;
  uint64_t counter_ = 0, total_ = 0;
  bool finished_ = false;
};

// Streaming decryption. The constructor reads and checks the header (parse, stanza
// unwrapping with each identity in turn, header MAC, payload nonce) and throws
// DecryptError{header, hmac, no_match}. Then next_chunk()/read() release plaintext
// one authenticated chunk at a time: no byte of a chunk is released before its tag
// verified. A payload DecryptError is thrown at the first chunk that fails, or
// when the stream is truncated or followed by trailing data; chunks released
// before remain valid but the file as a whole is not: decrypt to a temp file and
// keep it only if the end was reached without error.
class AgeDecryptor : public Source {
 public:
  AgeDecryptor(const std::vector<AgeIdentity>& identities, Source& in);
  ~AgeDecryptor() override;
  AgeDecryptor(const AgeDecryptor&) = delete;
  AgeDecryptor& operator=(const AgeDecryptor&) = delete;
  // The next chunk's plaintext (valid until the next call), or {nullptr, 0} once
  // the authenticated end has been reached.
  std::pair<const uint8_t*, size_t> next_chunk();
  // The same, decrypting straight into `out` (room for kAgeChunkSize bytes): true
  // with the chunk's plaintext size in n, false once the authenticated end has been
  // reached. When it throws, `out` may hold unauthenticated bytes: discard them.
  bool next_chunk(uint8_t* out, size_t& n);
  // Source interface over next_chunk() (copies).
  size_t read(void* buf, size_t n) override;
  bool finished() const { return state_ == State::done; }
  uint64_t plaintext_bytes() const { return total_; }
  std::string name() const override { return in_.name(); }

 private:
  enum class State { chunks, check_eof, done };
  [[noreturn]] void fail(DecryptError::Kind k, const std::string& why) const;
  void read_header(const std::vector<AgeIdentity>& identities);
  bool read_line(std::string& line, std::string& raw);
  size_t in_read(uint8_t* buf, size_t n);

  Source& in_;
  std::string pending_;  // bytes read past the header, consumed before in_
  size_t pending_pos_ = 0;
  std::array<uint8_t, 32> key_{};
  std::array<uint8_t, 12> nonce_{};
  std::unique_ptr<uint8_t[]> cipher_, plain_;
  void* aead_ = nullptr;  // EVP_CIPHER_CTX, keyed with key_ once the header checked
  size_t avail_ = 0, pos_ = 0;  // unread plaintext in plain_ for read()
  uint64_t counter_ = 0, total_ = 0;
  State state_ = State::chunks;
};

// Whole-stream conveniences; return the plaintext byte count. age_decrypt writes
// released chunks to `out` as they verify, then throws on a payload failure.
uint64_t age_encrypt(const std::vector<AgeRecipient>& recipients, Source& in, Sink& out);
uint64_t age_decrypt(const std::vector<AgeIdentity>& identities, Source& in, Sink& out);

}  // namespace fedseg::crypto
