// fedseg::Sha256: SHA-256 of buffers and files (libsodium), as lowercase hex.
#pragma once

#include <cstdint>
#include <string>

#include <sodium.h>

namespace fedseg {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  // Finishes and returns 64 lowercase hex digits; the object is then spent.
  std::string hex();
  // The raw 32 bytes.
  std::string digest();

 private:
  crypto_hash_sha256_state st_;
  bool done_ = false;
};

std::string sha256_hex(const void* data, size_t size);
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }

// Streams the file; Error 66 if it cannot be opened, 74 on read errors.
std::string sha256_file(const std::string& path);

std::string to_hex(const void* data, size_t size);

}  // namespace fedseg
