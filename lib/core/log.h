// fedseg::log: messages to stderr, prefixed with the tool name, filtered by level.
// stdout is reserved for data; nothing here writes to it. No macros (LibTorch and
// GoogleTest define LOG/CHECK/FAIL): plain functions taking a formatted string.
#pragma once

#include <string>

namespace fedseg::log {

enum class Level { quiet = 0, error = 1, warn = 2, info = 3, debug = 4 };

void set_level(Level level);
Level level();
void set_program(std::string name);  // "fedseg-inspect"
const std::string& program();

bool enabled(Level level);
void error(const std::string& msg);  // "<prog>: error: msg"
void warn(const std::string& msg);   // "<prog>: warning: msg"
void info(const std::string& msg);   // "<prog>: msg"
void debug(const std::string& msg);  // "<prog>: debug: msg"

// Writes raw text to stderr under the log mutex (used by the progress display so
// that a log line and a progress redraw never interleave).
void raw(const std::string& text);

}  // namespace fedseg::log
