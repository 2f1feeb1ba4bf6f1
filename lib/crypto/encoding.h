// fedseg::crypto building blocks shared by age and minisign: base64 (the strict
// forms each format uses), Bech32 (BIP-173 without the 90-character limit),
// HKDF-SHA-256 (RFC 5869, built on HMAC-SHA-256 because libsodium 1.0.18 has no
// HKDF), streaming BLAKE2b-512, and reading secret key files with a permission check.
// Part of the crypto module: depends on fedseg core and libsodium only.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <sodium.h>

#include "crypto/crypto_io.h"

namespace fedseg::crypto {

// Calls sodium_init() once; throws Error 70 if libsodium cannot start. Every
// entry point of this module calls it, callers need not.
void ensure_sodium();

using Bytes = std::vector<uint8_t>;

// Standard base64 alphabet. `padded` selects RFC 4648 with '=' (minisign) or
// without (age). Decoding accepts only the canonical encoding (no whitespace,
// no non-zero trailing bits, padding exactly as the variant wants); returns
// nullopt otherwise.
std::string base64_encode(const void* data, size_t size, bool padded);
std::optional<Bytes> base64_decode(const std::string& text, bool padded);

// Bech32 (BIP-173 checksum, constant 1) of 8-bit data. encode() writes lower case
// (callers upper-case it where a format wants that, e.g. AGE-SECRET-KEY-1...).
std::string bech32_encode(const std::string& hrp, const void* data, size_t size);
struct Bech32Decoded {
  std::string hrp;  // lower case
  Bytes data;       // 8-bit bytes
};
// Accepts all-lower or all-upper strings with a valid checksum and zero padding
// bits; no length limit. Returns nullopt otherwise.
std::optional<Bech32Decoded> bech32_decode(const std::string& text);

// HKDF-SHA-256 (RFC 5869): extract with salt (empty = 32 zero bytes), expand with
// info to out_len bytes (at most 255*32; throws Error 70 beyond).
Bytes hkdf_sha256(const void* ikm, size_t ikm_len, const void* salt, size_t salt_len, const std::string& info,
                  size_t out_len);
// The 32-byte form age uses, without allocation.
void hkdf_sha256_32(uint8_t out[32], const void* ikm, size_t ikm_len, const void* salt, size_t salt_len,
                    const std::string& info);

// Streaming BLAKE2b-512 (minisign's prehash). Also a Sink, so a writer can hash
// what it writes (hash a .age file while encrypting it).
class Blake2b512 : public Sink {
 public:
  static constexpr size_t kBytes = 64;
  using Digest = std::array<uint8_t, kBytes>;
  Blake2b512();
  void update(const void* data, size_t size);
  void write(const void* data, size_t size) override { update(data, size); }
  Digest final();  // the object is then spent

 private:
  crypto_generichash_state st_;
  bool done_ = false;
};
// Hashes everything from a source (64 KiB buffer) or a file (Error 66 if missing).
Blake2b512::Digest blake2b512(Source& in);
Blake2b512::Digest blake2b512_file(const std::string& path);

// Reads a secret key file, refusing it when group or others may read or write it
// (mode & 077): Error 77 naming the file. Error 66 if missing, 65 if larger than
// max_bytes. The returned string should be wiped by the caller (wipe()).
std::string read_secret_file(const std::string& path, size_t max_bytes = 1 << 16);

// sodium_memzero over a string's bytes.
void wipe(std::string& s);

// Writes a secret key file atomically with mode 0600 and wipes `text` afterwards,
// whether or not the write succeeded. Error 73 if it exists and !overwrite.
void write_secret_file(const std::string& path, std::string text, bool overwrite);

}  // namespace fedseg::crypto
