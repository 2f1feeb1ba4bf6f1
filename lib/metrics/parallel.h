// fedseg::metrics internal: splits [0, n) into contiguous ranges run on up to
// `threads` std::threads (the caller's thread takes the first range). Ranges are
// at least min_chunk long, so small volumes stay on one thread. An exception in a
// range is rethrown in the caller after every thread has joined.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace fedseg::metrics::detail {

template <class F>
void parallel_for(int64_t n, int threads, int64_t min_chunk, F&& fn) {
  if (n <= 0) return;
  int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, n / std::max<int64_t>(1, min_chunk)));
  if (parts <= 1) {
    fn(int64_t(0), n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(parts));
  std::vector<std::thread> pool;
  pool.reserve(size_t(parts - 1));
  auto range = [&](int64_t i) {
    const int64_t b = n * i / parts, e = n * (i + 1) / parts;
    try {
      fn(b, e);
    } catch (...) {
      errors[size_t(i)] = std::current_exception();
    }
  };
  for (int64_t i = 1; i < parts; ++i) {
    try {
      pool.emplace_back(range, i);
    } catch (...) {  // no thread: run the range here
      range(i);
    }
  }
  range(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace fedseg::metrics::detail
