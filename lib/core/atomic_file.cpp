#include "core/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cctype>
#include <cstring>

#include "core/error.h"

namespace fedseg {
namespace {

// Live temp files, readable from a signal handler: fixed slots, no allocation.
constexpr int kSlots = 64;
constexpr size_t kPathMax = 4096;
char g_paths[kSlots][kPathMax];
std::atomic<bool> g_used[kSlots];

int register_temp(const std::string& path) {
  if (path.size() >= kPathMax) return -1;
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (g_used[i].compare_exchange_strong(expected, true)) {
      // The slot is marked used before the path is complete; the handler may
      // then unlink a half-written name, which cannot match another file of ours.
      std::memcpy(g_paths[i], path.c_str(), path.size() + 1);
      return i;
    }
  }
  return -1;  // more than 64 concurrent outputs: still correct, just not signal-cleaned
}

void unregister_temp(int slot) {
  if (slot >= 0) g_used[slot] = false;
}

extern "C" void cleanup_and_reraise(int sig) {
  for (int i = 0; i < kSlots; ++i)
    if (g_used[i].load()) ::unlink(g_paths[i]);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

std::string host_tag() {
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) != 0) return "host";
  std::string h;
  for (char* p = host; *p; ++p) h += (std::isalnum(static_cast<unsigned char>(*p)) || *p == '-') ? *p : '_';
  return h.empty() ? "host" : h;
}

}  // namespace

void fsync_dir(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;  // some filesystems (SMB) refuse: the rename is still done
  if (::fsync(dfd) != 0 && errno != EINVAL && errno != EROFS) {
    int e = errno;
    ::close(dfd);
    throw_errno(kExitIoErr, "cannot sync folder", dir, e);
  }
  ::close(dfd);
}

std::string dirname_of(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string basename_of(const std::string& path) {
  auto pos = path.find_last_of('/');
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void install_cleanup_handlers() {
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) return;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = cleanup_and_reraise;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

std::string AtomicFile::temp_prefix(const std::string& final_path) {
  std::string dir = dirname_of(final_path);
  return (dir == "." && final_path.find('/') == std::string::npos ? std::string() : dir + "/") + "." +
         basename_of(final_path) + ".fedseg-tmp-" + host_tag() + "-";
}

bool AtomicFile::rename_no_replace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  if (errno == EEXIST) return false;
  if (errno != EINVAL && errno != ENOSYS) throw_errno(kExitIoErr, "cannot rename into place", to, errno);
  if (::link(from.c_str(), to.c_str()) == 0) {
    ::unlink(from.c_str());
    return true;
  }
  if (errno == EEXIST) return false;
  if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS) throw_errno(kExitIoErr, "cannot link into place", to, errno);
  if (path_exists(to)) return false;
  if (::rename(from.c_str(), to.c_str()) != 0) throw_errno(kExitIoErr, "cannot rename into place", to, errno);
  return true;
}

namespace {

// When process pid started (seconds since the epoch, from /proc), or -1 if unknown.
double process_start(long pid) {
  std::string stat;
  try {
    stat = read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  } catch (const Error&) {
    return -1;
  }
  // Field 22 (starttime, clock ticks after boot) counts from the last ')' (the name may hold any).
  size_t at = stat.rfind(')');
  if (at == std::string::npos) return -1;
  const char* q = stat.c_str() + at + 1;
  for (int field = 3; field < 22 && *q; ++field) {
    while (*q == ' ') ++q;
    while (*q && *q != ' ') ++q;
  }
  char* end = nullptr;
  const double ticks = std::strtod(q, &end);
  static const double boot = [] {
    try {
      const std::string s = read_file("/proc/stat", 1 << 20);
      size_t b = s.find("\nbtime ");
      return b == std::string::npos ? -1.0 : std::strtod(s.c_str() + b + 7, nullptr);
    } catch (const Error&) {
      return -1.0;
    }
  }();
  const long hz = ::sysconf(_SC_CLK_TCK);
  if (end == q || boot < 0 || hz <= 0) return -1;
  return boot + ticks / double(hz);
}

}  // namespace

int AtomicFile::remove_stale(const std::string& final_path) {
  std::string dir = dirname_of(final_path);
  std::string prefix = basename_of(temp_prefix(final_path));
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  int removed = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid <= 0) continue;
    const std::string path = dir + "/" + name;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) {
      // A live process of that pid is the writer only if it started before the temp
      // file was last written: pids are reused (a crash test starts thousands).
      struct stat st;
      const double started = process_start(pid);
      if (started < 0 || ::stat(path.c_str(), &st) != 0 || started <= double(st.st_mtime) + 2) continue;
    }
    if (::unlink(path.c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

AtomicFile::AtomicFile(std::string final_path, bool overwrite, unsigned mode)
    : final_(std::move(final_path)), overwrite_(overwrite) {
  if (final_.empty()) throw Error(kExitUsage, "empty output path");
  struct stat st;
  if (::stat(final_.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw Error(kExitCantCreate, "cannot write output", final_, "is a folder");
    if (!overwrite_) throw Error(kExitCantCreate, "output exists", final_, "use --force to replace it");
  }
  remove_stale(final_);
  if (sodium_init() < 0) throw Error(kExitSoftware, "libsodium failed to initialise");
  for (int attempt = 0; attempt < 16; ++attempt) {
    char rnd[9];
    std::snprintf(rnd, sizeof rnd, "%08x", randombytes_random());
    std::string dir = dirname_of(final_);
    temp_ = dir + "/." + basename_of(final_) + ".fedseg-tmp-" + host_tag() + "-" +
            std::to_string(::getpid()) + "-" + rnd;
    slot_ = register_temp(temp_);
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd_ >= 0) return;
    int e = errno;
    unregister_temp(slot_);
    slot_ = -1;
    if (e != EEXIST) throw_errno(kExitCantCreate, "cannot create output", final_, e);
  }
  throw Error(kExitCantCreate, "cannot create output", final_, "no free temp name");
}

AtomicFile::~AtomicFile() {
  if (!done_) discard();
}

void AtomicFile::write(const void* data, size_t size) {
  synced_ = false;
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(kExitIoErr, "cannot write", final_, errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::sync() {
  if (done_) throw Error(kExitSoftware, "output synced after its commit", final_);
  // Sync through a fresh descriptor too: another library (HDF5) may have written
  // the file through its own.
  int fd = ::open(temp_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(kExitIoErr, "temp file vanished", temp_, errno);
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    throw_errno(kExitIoErr, "cannot sync", final_, e);
  }
  ::close(fd);
  synced_ = true;
}

void AtomicFile::commit(bool sync_dir) {
  if (done_) throw Error(kExitSoftware, "output committed twice", final_);
  if (!synced_) sync();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!overwrite_) {
    if (!rename_no_replace(temp_, final_))
      throw Error(kExitCantCreate, "output exists", final_, "another writer created it meanwhile");
  } else if (::rename(temp_.c_str(), final_.c_str()) != 0) {
    throw_errno(kExitIoErr, "cannot rename into place", final_, errno);
  }
  done_ = true;
  unregister_temp(slot_);
  slot_ = -1;
  if (sync_dir) fsync_dir(dirname_of(final_));
}

void AtomicFile::discard() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!done_) ::unlink(temp_.c_str());
  done_ = true;
  unregister_temp(slot_);
  slot_ = -1;
}

void write_file_atomic(const std::string& path, const std::string& bytes, bool overwrite, unsigned mode) {
  AtomicFile f(path, overwrite, mode);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

std::string read_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno == ENOENT ? kExitNoInput : (errno == EACCES ? kExitNoInput : kExitIoErr),
                          "cannot open", path, errno);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw_errno(e == EISDIR ? kExitNoInput : kExitIoErr, "cannot read", path, e);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      ::close(fd);
      throw Error(kExitDataErr, "file too large", path, "more than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace fedseg
