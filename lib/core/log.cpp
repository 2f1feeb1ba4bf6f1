#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <mutex>

namespace fedseg::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::info)};
std::string g_program = "fedseg";
std::mutex g_mutex;

void write_all(const std::string& s) {
  const char* p = s.data();
  size_t left = s.size();
  while (left > 0) {
    ssize_t n = ::write(2, p, left);
    if (n <= 0) return;  // stderr closed: nothing sensible to do
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void emit(Level lv, const char* tag, const std::string& msg) {
  if (!enabled(lv)) return;
  raw(g_program + ": " + tag + msg + "\n");
}
}  // namespace

void set_level(Level level) { g_level = static_cast<int>(level); }
Level level() { return static_cast<Level>(g_level.load()); }
void set_program(std::string name) { g_program = std::move(name); }
const std::string& program() { return g_program; }
bool enabled(Level lv) { return static_cast<int>(lv) <= g_level.load(); }

void raw(const std::string& text) {
  std::lock_guard<std::mutex> lock(g_mutex);
  write_all(text);
}

void error(const std::string& msg) { emit(Level::error, "error: ", msg); }
void warn(const std::string& msg) { emit(Level::warn, "warning: ", msg); }
void info(const std::string& msg) { emit(Level::info, "", msg); }
void debug(const std::string& msg) { emit(Level::debug, "debug: ", msg); }

}  // namespace fedseg::log
