// fedseg::Progress: an RAII progress line on stderr for long steps. Shown only
// when enabled (the shared main enables it when stderr is a terminal and neither
// --quiet, --json nor --no-progress was given); redrawn at most ~6 times a second,
// with rate and ETA; cleared when the object goes away. Thread-safe: add() may be
// called from worker threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace fedseg {

class Progress {
 public:
  enum class Unit { items, bytes };

  Progress(std::string label, uint64_t total, Unit unit = Unit::items);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(uint64_t n = 1);
  void set(uint64_t done);
  void set_label(std::string label);
  uint64_t done() const { return done_.load(); }

  static void set_enabled(bool on);
  static bool enabled();

  // The line as it would be drawn, for tests: "label  42% 21/50 3.1/s ETA 0:09".
  static std::string format(const std::string& label, uint64_t done, uint64_t total, Unit unit,
                            double elapsed_s);

 private:
  void maybe_draw(bool force);

  std::string label_;
  uint64_t total_;
  Unit unit_;
  std::atomic<uint64_t> done_{0};
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex mutex_;
  bool drawn_ = false;
};

// Human-readable sizes and durations shared by tools ("12.3 MB", "1:02:03").
std::string human_bytes(double bytes);
std::string human_duration(double seconds);

}  // namespace fedseg
