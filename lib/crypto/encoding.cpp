#include "crypto/encoding.h"

#include "core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "core/error.h"

namespace fedseg::crypto {

void ensure_sodium() {
  static std::once_flag once;
  static int rc = 0;
  std::call_once(once, [] { rc = sodium_init(); });
  if (rc < 0) throw Error(kExitSoftware, "libsodium failed to initialise");
}

void wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(&s[0], s.size());
  s.clear();
}

// ---- base64 -----------------------------------------------------------------

std::string base64_encode(const void* data, size_t size, bool padded) {
  ensure_sodium();
  int variant = padded ? sodium_base64_VARIANT_ORIGINAL : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
  std::string out(sodium_base64_encoded_len(size, variant), '\0');
  sodium_bin2base64(&out[0], out.size(), static_cast<const unsigned char*>(data), size, variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::optional<Bytes> base64_decode(const std::string& text, bool padded) {
  ensure_sodium();
  int variant = padded ? sodium_base64_VARIANT_ORIGINAL : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
  Bytes out(text.size() / 4 * 3 + 3);
  size_t len = 0;
  const char* end = nullptr;
  // b64_end given and checked: libsodium then stops at the first invalid character
  // instead of failing, so a leftover character is caught here as well.
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &len, &end, variant) != 0)
    return std::nullopt;
  if (end != text.data() + text.size()) return std::nullopt;
  out.resize(len);
  // Round trip: rejects anything libsodium tolerated that is not the canonical form.
  if (base64_encode(out.data(), out.size(), padded) != text) return std::nullopt;
  return out;
}

// ---- Bech32 ----------------------------------------------------------------

namespace {

const char* kCharset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

uint32_t polymod(const std::vector<uint8_t>& v) {
  static const uint32_t gen[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
  uint32_t chk = 1;
  for (uint8_t x : v) {
    uint32_t b = chk >> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ x;
    for (int i = 0; i < 5; ++i)
      if ((b >> i) & 1) chk ^= gen[i];
  }
  return chk;
}

std::vector<uint8_t> hrp_expand(const std::string& hrp) {
  std::vector<uint8_t> v;
  v.reserve(hrp.size() * 2 + 1);
  for (char c : hrp) v.push_back(static_cast<uint8_t>(static_cast<unsigned char>(c) >> 5));
  v.push_back(0);
  for (char c : hrp) v.push_back(static_cast<uint8_t>(static_cast<unsigned char>(c) & 31));
  return v;
}

// Regroups bits; with pad=false, leftover bits must be fewer than `from` and zero.
bool convert_bits(const uint8_t* in, size_t n, int from, int to, bool pad, std::vector<uint8_t>& out) {
  uint32_t acc = 0;
  int bits = 0;
  const uint32_t maxv = (1u << to) - 1;
  for (size_t i = 0; i < n; ++i) {
    if (in[i] >> from) return false;
    acc = (acc << from) | in[i];
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push_back(static_cast<uint8_t>((acc >> bits) & maxv));
    }
  }
  if (pad) {
    if (bits) out.push_back(static_cast<uint8_t>((acc << (to - bits)) & maxv));
  } else if (bits >= from || ((acc << (to - bits)) & maxv)) {
    return false;
  }
  return true;
}

}  // namespace

std::string bech32_encode(const std::string& hrp_in, const void* data, size_t size) {
  std::string hrp;
  for (char c : hrp_in) hrp += static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
  std::vector<uint8_t> d5;
  convert_bits(static_cast<const uint8_t*>(data), size, 8, 5, true, d5);
  std::vector<uint8_t> v = hrp_expand(hrp);
  v.insert(v.end(), d5.begin(), d5.end());
  v.insert(v.end(), 6, 0);
  uint32_t mod = polymod(v) ^ 1;
  std::string out = hrp + "1";
  for (uint8_t x : d5) out += kCharset[x];
  for (int i = 0; i < 6; ++i) out += kCharset[(mod >> (5 * (5 - i))) & 31];
  return out;
}

std::optional<Bech32Decoded> bech32_decode(const std::string& text) {
  bool lower = false, upper = false;
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u < 33 || u > 126) return std::nullopt;
    if (c >= 'a' && c <= 'z') lower = true;
    if (c >= 'A' && c <= 'Z') upper = true;
  }
  if (lower && upper) return std::nullopt;
  std::string s = text;
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  size_t pos = s.rfind('1');
  if (pos == std::string::npos || pos < 1 || pos + 7 > s.size()) return std::nullopt;
  Bech32Decoded r;
  r.hrp = s.substr(0, pos);
  std::vector<uint8_t> d5;
  for (size_t i = pos + 1; i < s.size(); ++i) {
    const char* p = std::strchr(kCharset, s[i]);
    if (!p || !*p) return std::nullopt;
    d5.push_back(static_cast<uint8_t>(p - kCharset));
  }
  std::vector<uint8_t> v = hrp_expand(r.hrp);
  v.insert(v.end(), d5.begin(), d5.end());
  if (polymod(v) != 1) return std::nullopt;
  d5.resize(d5.size() - 6);
  if (!convert_bits(d5.data(), d5.size(), 5, 8, false, r.data)) return std::nullopt;
  return r;
}

// ---- HKDF-SHA-256 ------------------------------------------------------------

namespace {

void hkdf_extract(uint8_t prk[32], const void* ikm, size_t ikm_len, const void* salt, size_t salt_len) {
  // An empty salt is a zero-length HMAC key, which HMAC pads to the same block as
  // RFC 5869's default of HashLen zero bytes.
  // libsodium declares the key non-null even when its length is 0.
  static const unsigned char kNoSalt = 0;
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, salt_len ? static_cast<const unsigned char*>(salt) : &kNoSalt, salt_len);
  crypto_auth_hmacsha256_update(&st, static_cast<const unsigned char*>(ikm), ikm_len);
  crypto_auth_hmacsha256_final(&st, prk);
  sodium_memzero(&st, sizeof st);
}

}  // namespace

void hkdf_sha256_32(uint8_t out[32], const void* ikm, size_t ikm_len, const void* salt, size_t salt_len,
                    const std::string& info) {
  ensure_sodium();
  uint8_t prk[32];
  hkdf_extract(prk, ikm, ikm_len, salt, salt_len);
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, prk, sizeof prk);
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(info.data()), info.size());
  const unsigned char one = 1;
  crypto_auth_hmacsha256_update(&st, &one, 1);
  crypto_auth_hmacsha256_final(&st, out);
  sodium_memzero(&st, sizeof st);
  sodium_memzero(prk, sizeof prk);
}

Bytes hkdf_sha256(const void* ikm, size_t ikm_len, const void* salt, size_t salt_len, const std::string& info,
                  size_t out_len) {
  ensure_sodium();
  if (out_len > 255 * 32) throw Error(kExitSoftware, "HKDF output too long");
  uint8_t prk[32];
  hkdf_extract(prk, ikm, ikm_len, salt, salt_len);
  Bytes out;
  out.reserve(out_len);
  uint8_t t[32];
  size_t tlen = 0;
  for (unsigned i = 1; out.size() < out_len; ++i) {
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, prk, sizeof prk);
    crypto_auth_hmacsha256_update(&st, t, tlen);
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(info.data()), info.size());
    const auto c = static_cast<unsigned char>(i);
    crypto_auth_hmacsha256_update(&st, &c, 1);
    crypto_auth_hmacsha256_final(&st, t);
    tlen = 32;
    size_t k = std::min<size_t>(32, out_len - out.size());
    out.insert(out.end(), t, t + k);
  }
  sodium_memzero(t, sizeof t);
  sodium_memzero(prk, sizeof prk);
  return out;
}

// ---- BLAKE2b-512 --------------------------------------------------------------

Blake2b512::Blake2b512() {
  ensure_sodium();
  crypto_generichash_init(&st_, nullptr, 0, kBytes);
}

void Blake2b512::update(const void* data, size_t size) {
  crypto_generichash_update(&st_, static_cast<const unsigned char*>(data), size);
}

Blake2b512::Digest Blake2b512::final() {
  if (done_) throw Error(kExitSoftware, "BLAKE2b finished twice");
  done_ = true;
  Digest d;
  crypto_generichash_final(&st_, d.data(), d.size());
  return d;
}

Blake2b512::Digest blake2b512(Source& in) {
  Blake2b512 h;
  std::vector<uint8_t> buf(1 << 16);
  for (;;) {
    size_t n = in.read(buf.data(), buf.size());
    if (n == 0) break;
    h.update(buf.data(), n);
  }
  return h.final();
}

Blake2b512::Digest blake2b512_file(const std::string& path) {
  FileSource in(path);
  return blake2b512(in);
}

// ---- secret files ------------------------------------------------------------

std::string read_secret_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno == ENOENT || errno == EACCES ? kExitNoInput : kExitIoErr, "cannot open secret key", path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw_errno(kExitIoErr, "cannot stat secret key", path, e);
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error(kExitNoPerm, "refusing secret key readable by others", path,
                std::string("mode ") + mode + "; run chmod 600 on it");
  }
  std::string out;
  out.reserve(max_bytes);  // no reallocation, so no stray copies of the secret
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      sodium_memzero(buf, sizeof buf);
      wipe(out);
      throw_errno(e == EISDIR ? kExitNoInput : kExitIoErr, "cannot read secret key", path, e);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      ::close(fd);
      sodium_memzero(buf, sizeof buf);
      wipe(out);
      throw Error(kExitDataErr, "not a secret key file", path, "larger than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  sodium_memzero(buf, sizeof buf);
  return out;
}

void write_secret_file(const std::string& path, std::string text, bool overwrite) {
  try {
    write_file_atomic(path, text, overwrite, 0600);
  } catch (...) {
    wipe(text);
    throw;
  }
  wipe(text);
}

}  // namespace fedseg::crypto
