// fedseg::core error type: an exception that carries a sysexits exit code, the
// thing it is about (usually a path) and context lines. Only the shared tool
// main turns it into an exit status; library code throws, never exits.
// Must not depend on HDF5, LibTorch or libcurl.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace fedseg {

// Exit codes of every tool (DESIGN.md §6, sysexits.h). Documented in every man page
// from exit_code_table(); never CLI11's 100-127, never a bare 1.
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 64,        // bad command line
  kExitDataErr = 65,      // bad data: corrupt file, bad signature, failed check (do not retry)
  kExitNoInput = 66,      // an input is missing or unreadable
  kExitUnavailable = 69,  // permanently unavailable
  kExitSoftware = 70,     // internal error (a bug)
  kExitCantCreate = 73,   // cannot create an output
  kExitIoErr = 74,        // I/O error
  kExitTempFail = 75,     // not ready or transient: retry later
  kExitProtocol = 76,     // unexpected reply from a server
  kExitNoPerm = 77,       // not permitted
  kExitConfig = 78,       // bad configuration
};

struct ExitCodeInfo {
  int code;
  const char* name;
  const char* meaning;
};

// The whole table, in ascending order of code.
const std::vector<ExitCodeInfo>& exit_code_table();

// An error a tool reports as one line `fedseg-<verb>: error: <what> '<subject>': <why>`
// followed by indented context lines, and exits with code().
class Error : public std::runtime_error {
 public:
  // subject may be empty (then the quotes are left out); why may be empty.
  Error(int code, std::string what, std::string subject = {}, std::string why = {});

  int code() const noexcept { return code_; }
  const std::string& what_part() const noexcept { return what_; }
  const std::string& subject() const noexcept { return subject_; }
  const std::string& why() const noexcept { return why_; }
  const std::vector<std::string>& context() const noexcept { return context_; }

  // Adds a context line (printed indented below the error line). Returns *this so
  // that a catch block can `throw e.add_context(...)`-style rethrow with `throw;`.
  Error& add_context(std::string line);

  // The error line without the tool prefix, e.g. "cannot open 'x.h5': no such file".
  std::string message() const;

 private:
  int code_;
  std::string what_, subject_, why_;
  std::vector<std::string> context_;
};

// Throws Error(code, what, path, strerror(errnum)).
[[noreturn]] void throw_errno(int code, const std::string& what, const std::string& path, int errnum);

}  // namespace fedseg
