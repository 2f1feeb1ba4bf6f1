#include "core/progress.h"

#include <cmath>
#include <cstdio>

#include "core/log.h"

namespace fedseg {
namespace {
std::atomic<bool> g_enabled{false};
constexpr auto kRedrawInterval = std::chrono::milliseconds(160);
}  // namespace

std::string human_bytes(double b) {
  static const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (std::fabs(b) >= 1000.0 && u < 4) {
    b /= 1000.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f %s", b, units[u]);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

std::string human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto total = static_cast<long long>(s + 0.5);
  char buf[32];
  if (total >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", total / 3600, (total / 60) % 60, total % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", total / 60, total % 60);
  return buf;
}

void Progress::set_enabled(bool on) { g_enabled = on; }
bool Progress::enabled() { return g_enabled; }

Progress::Progress(std::string label, uint64_t total, Unit unit)
    : label_(std::move(label)), total_(total), unit_(unit), start_(std::chrono::steady_clock::now()) {
  last_draw_ = start_ - kRedrawInterval;
}

Progress::~Progress() {
  if (drawn_) log::raw("\r\033[K");
}

void Progress::add(uint64_t n) {
  done_ += n;
  maybe_draw(false);
}

void Progress::set(uint64_t d) {
  done_ = d;
  maybe_draw(false);
}

void Progress::set_label(std::string label) {
  std::lock_guard<std::mutex> lock(mutex_);
  label_ = std::move(label);
}

std::string Progress::format(const std::string& label, uint64_t done, uint64_t total, Unit unit,
                             double elapsed) {
  std::string line = label;
  auto count = [&](double v) {
    if (unit == Unit::bytes) return human_bytes(v);
    char b[32];
    std::snprintf(b, sizeof b, "%.0f", v);
    return std::string(b);
  };
  char buf[64];
  if (total > 0) {
    std::snprintf(buf, sizeof buf, " %3d%% ", static_cast<int>(100.0 * static_cast<double>(done) / total));
    line += buf;
    line += count(static_cast<double>(done)) + "/" + count(static_cast<double>(total));
  } else {
    line += " " + count(static_cast<double>(done));
  }
  if (elapsed > 0.5 && done > 0) {
    double rate = static_cast<double>(done) / elapsed;
    line += " " + (unit == Unit::bytes ? human_bytes(rate) : count(rate)) + "/s";
    if (total > done) line += " ETA " + human_duration(static_cast<double>(total - done) / rate);
  }
  return line;
}

void Progress::maybe_draw(bool force) {
  if (!g_enabled) return;
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is drawing
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < kRedrawInterval) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  log::raw("\r" + format(label_, done_.load(), total_, unit_, elapsed) + "\033[K");
  drawn_ = true;
}

}  // namespace fedseg
