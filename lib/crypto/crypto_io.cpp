#include "crypto/crypto_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace fedseg::crypto {

size_t read_full(Source& in, void* buf, size_t n) {
  auto* p = static_cast<unsigned char*>(buf);
  size_t got = 0;
  while (got < n) {
    size_t r = in.read(p + got, n - got);
    if (r == 0) break;
    got += r;
  }
  return got;
}

size_t FdSource::read(void* buf, size_t n) {
  for (;;) {
    ssize_t r = ::read(fd_, buf, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EINTR) continue;
    throw_errno(kExitIoErr, "cannot read", name_, errno);
  }
}

void FdSink::write(const void* buf, size_t n) {
  const auto* p = static_cast<const unsigned char*>(buf);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno(kExitIoErr, "cannot write", name_, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

FileSource::FileSource(const std::string& path) : path_(path) {
  if (path == "-") {
    fd_ = 0;
    path_ = "stdin";
    return;
  }
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw_errno(errno == ENOENT || errno == EACCES ? kExitNoInput : kExitIoErr, "cannot open", path, errno);
  owned_ = true;
}

FileSource::~FileSource() {
  if (owned_ && fd_ >= 0) ::close(fd_);
}

size_t FileSource::read(void* buf, size_t n) {
  for (;;) {
    ssize_t r = ::read(fd_, buf, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EINTR) continue;
    throw_errno(errno == EISDIR ? kExitNoInput : kExitIoErr, "cannot read", path_, errno);
  }
}

size_t StringSource::read(void* buf, size_t n) {
  size_t k = std::min(n, size_ - pos_);
  if (k) std::memcpy(buf, data_ + pos_, k);
  pos_ += k;
  return k;
}

const uint8_t* StringSource::view(size_t n) {
  if (size_ - pos_ < n) return nullptr;
  const char* p = data_ + pos_;
  pos_ += n;
  return reinterpret_cast<const uint8_t*>(p);
}

}  // namespace fedseg::crypto
