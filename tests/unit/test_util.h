// Helpers shared by the GoogleTest files: temp folders that are removed when the
// test binary exits, and the exit code of a fedseg::Error a call throws.
#pragma once

#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"

namespace fedseg::test {

inline std::vector<std::string>& temp_dirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

inline int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

inline void remove_temp_dirs() {
  for (const auto& d : temp_dirs()) ::nftw(d.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// A new empty folder under /tmp, removed at exit.
inline std::string tmpdir() {
  static std::once_flag once;
  std::call_once(once, [] {
    temp_dirs();  // constructed first, so destroyed after the handler ran
    std::atexit(remove_temp_dirs);
  });
  char tmpl[] = "/tmp/fedseg-test-XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  if (!d) throw std::runtime_error("mkdtemp failed");
  temp_dirs().push_back(d);
  return d;
}

// The exit code of the fedseg::Error that fn throws (its message into *msg), or 0.
inline int error_code(const std::function<void()>& fn, std::string* msg = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (msg) *msg = e.message();
    return e.code();
  }
  return 0;
}

}  // namespace fedseg::test
