// fedseg::crypto minisign: Ed25519 keys in minisign's own file formats and
// prehashed ("ED", BLAKE2b-512) signatures with a trusted comment, streaming over
// the signed file. Files interoperate with Debian's `minisign` 0.11 both ways:
// `minisign -V` accepts our signatures, `minisign -S -s` uses our secret keys
// without a password, and we load keys made by `minisign -G` (password-protected,
// scrypt) and `minisign -G -W` (unencrypted).
// Legacy non-prehashed "Ed" signatures are rejected (SignatureError::Kind::legacy):
// they cannot be verified in bounded memory and fedseg never makes them.
// Part of the crypto module: depends on fedseg core and libsodium only.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "crypto/crypto_io.h"
#include "crypto/encoding.h"

namespace fedseg::crypto {

constexpr size_t kMaxTrustedComment = 8173;    // minisign 0.11 reads the line into 8192 bytes
constexpr size_t kMaxUntrustedComment = 1000;  // ... and untrusted comments into 1024

using KeyId = std::array<uint8_t, 8>;
// How minisign prints a key id: the 8 bytes read as a little-endian u64, in
// upper-case hex ("D1610CAEF479E1ED").
std::string key_id_hex(const KeyId& id);

// Why a signature did not verify (exit code 65).
//   malformed            not a .minisig file / bad base64 / unknown algorithm
//   legacy               a legacy "Ed" (not prehashed) signature
//   key_mismatch         signed by another key (key id differs)
//   bad_signature        the file does not match the signature
//   bad_trusted_comment  the trusted comment was altered (global signature fails)
class SignatureError : public Error {
 public:
  enum class Kind { malformed, legacy, key_mismatch, bad_signature, bad_trusted_comment };
  SignatureError(Kind kind, const std::string& subject, const std::string& why);
  Kind kind() const noexcept { return kind_; }
  const char* kind_name() const noexcept;

 private:
  Kind kind_;
};

class MinisignPublicKey {
 public:
  // From a public key file's text (untrusted comment line + base64 line) or from the
  // bare base64 line (`minisign -P`). Error 65 when malformed; `name` is for messages.
  static MinisignPublicKey parse(const std::string& text, const std::string& name = "<public key>");
  // Error 66 if missing, 65 if malformed. Public keys may be world-readable.
  static MinisignPublicKey load(const std::string& path);
  MinisignPublicKey(const KeyId& id, const std::array<uint8_t, 32>& pk) : id_(id), pk_(pk) {}

  const KeyId& key_id() const { return id_; }
  std::string key_id_hex() const { return crypto::key_id_hex(id_); }
  const std::array<uint8_t, 32>& ed25519() const { return pk_; }
  // base64("Ed" || key id || pk), 56 characters.
  std::string to_base64() const;
  // "untrusted comment: minisign public key <KEYID>\n<base64>\n", as minisign -G writes.
  std::string file_text() const;
  // Atomic write, mode 0644; Error 73 if it exists and !overwrite.
  void save(const std::string& path, bool overwrite) const;
  bool operator==(const MinisignPublicKey& o) const { return id_ == o.id_ && pk_ == o.pk_; }

 private:
  KeyId id_{};
  std::array<uint8_t, 32> pk_{};
};

// Where the password of a password-protected secret key comes from. file: the
// first line of that file (without the line end; the file must not be accessible
// to group or others, like a key). env: the value of that environment variable.
struct PasswordSource {
  std::string file;
  std::string env;
  bool empty() const { return file.empty() && env.empty(); }
};
// Error 78 when no source is given or the variable is unset, 66/77 for the file.
std::string read_password(const PasswordSource& src);

class MinisignSecretKey {
 public:
  static MinisignSecretKey generate();
  // Loads a secret key file. Refuses a file accessible to group or others (Error 77
  // naming it); Error 66 if missing; 65 if malformed or its key halves disagree.
  // A password-protected key (KDF "Sc", scrypt with the stored limits: minisign -G's
  // default takes ~1 GiB and a few seconds) needs `password`: Error 78 without one
  // or when it is wrong. Unencrypted keys (KDF 0x0000, minisign -G -W) need none.
  static MinisignSecretKey load(const std::string& path, const PasswordSource& password = {});
  static MinisignSecretKey parse(const std::string& text, const std::string& name, const PasswordSource& password = {});
  MinisignSecretKey(const MinisignSecretKey&) = default;
  MinisignSecretKey& operator=(const MinisignSecretKey&) = default;
  ~MinisignSecretKey();

  const KeyId& key_id() const { return id_; }
  MinisignPublicKey public_key() const;
  bool was_encrypted() const { return was_encrypted_; }
  const std::array<uint8_t, 64>& ed25519() const { return sk_; }

  // Unencrypted key file text (KDF 0x0000, zero salt and limits, as minisign -G -W
  // writes; the checksum is filled in, which minisign accepts), for cron jobs.
  std::string file_text() const;
  // Password-protected key file text, as minisign -G writes (scrypt, random salt).
  // The defaults are minisign's (crypto_pwhash_scryptsalsa208sha256 *_SENSITIVE).
  std::string encrypted_file_text(const std::string& password, uint64_t opslimit = 33554432,
                                  uint64_t memlimit = 1073741824) const;
  // Writes text atomically with mode 0600; Error 73 if it exists and !overwrite.
  static void save_text(const std::string& path, std::string text, bool overwrite);

 private:
  MinisignSecretKey() = default;
  KeyId id_{};
  std::array<uint8_t, 64> sk_{};
  bool was_encrypted_ = false;
};

// A parsed .minisig file.
struct MinisignSignature {
  // Error: SignatureError{malformed} when text is not a minisign signature.
  static MinisignSignature parse(const std::string& text, const std::string& name = "<signature>");
  static MinisignSignature load(const std::string& path);  // + Error 66 if missing
  std::array<uint8_t, 2> algorithm{};  // "ED" (prehashed) or "Ed" (legacy)
  KeyId key_id{};
  std::array<uint8_t, 64> signature{};
  std::string untrusted_comment;  // without prefix
  std::string trusted_comment;    // without prefix
  std::array<uint8_t, 64> global_signature{};
  std::string name;
};

// Signs the BLAKE2b-512 digest of a file and returns the .minisig text exactly as
// minisign 0.11 writes it:
//   untrusted comment: <uc>\n<base64("ED" || key id || sig)>\ntrusted comment: <tc>\n<base64(global sig)>\n
// Error 64 if a comment holds a line break or is too long.
std::string sign_prehashed(const MinisignSecretKey& key, const Blake2b512::Digest& digest,
                           const std::string& trusted_comment,
                           const std::string& untrusted_comment = "signature from minisign secret key");
std::string sign(const MinisignSecretKey& key, Source& data, const std::string& trusted_comment,
                 const std::string& untrusted_comment = "signature from minisign secret key");
std::string sign_file(const MinisignSecretKey& key, const std::string& path, const std::string& trusted_comment,
                      const std::string& untrusted_comment = "signature from minisign secret key");

// What a successful verification vouches for.
struct Verified {
  std::string trusted_comment;
  KeyId key_id{};
};

// The cheap half of a verification, before any pass over the file: algorithm "ED",
// key id, and the global signature over signature || trusted comment, which
// authenticates the trusted comment (and the signature bytes). A valid result says
// nothing about the file yet: verify_prehashed() must follow. Throws SignatureError.
Verified verify_trusted_comment(const MinisignPublicKey& key, const MinisignSignature& sig);

// Checks, in order: algorithm "ED", key id, the signature over the digest, the
// global signature over signature || trusted comment. Throws SignatureError.
Verified verify_prehashed(const MinisignPublicKey& key, const MinisignSignature& sig, const Blake2b512::Digest& digest);
Verified verify(const MinisignPublicKey& key, const MinisignSignature& sig, Source& data);
// data_path is streamed; sig_path defaults to data_path + ".minisig".
Verified verify_file(const MinisignPublicKey& key, const std::string& data_path, const std::string& sig_path = {});

}  // namespace fedseg::crypto
