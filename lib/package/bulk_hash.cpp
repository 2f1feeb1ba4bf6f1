#include "package/bulk_hash.h"

#include <openssl/evp.h>

#include "core/error.h"

namespace fedseg::package {

BulkHash::BulkHash(Algo) {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  if (!c || EVP_DigestInit_ex(c, EVP_blake2b512(), nullptr) != 1) {
    EVP_MD_CTX_free(c);
    throw Error(kExitSoftware, "cannot start a hash", {}, "OpenSSL EVP_DigestInit_ex failed");
  }
  ctx_ = c;
}

BulkHash::~BulkHash() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void BulkHash::update(const void* data, size_t size) {
  if (size && EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size) != 1)
    throw Error(kExitSoftware, "hash update failed");
}

std::string BulkHash::final_bytes() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out, &n) != 1) throw Error(kExitSoftware, "hash final failed");
  return std::string(reinterpret_cast<char*>(out), n);
}

}  // namespace fedseg::package
