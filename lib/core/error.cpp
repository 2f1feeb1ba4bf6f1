#include "core/error.h"

#include <cstring>

namespace fedseg {

const std::vector<ExitCodeInfo>& exit_code_table() {
  static const std::vector<ExitCodeInfo> table = {
      {kExitOk, "OK", "done, or nothing to do"},
      {kExitUsage, "USAGE", "the command line is wrong"},
      {kExitDataErr, "DATAERR", "bad data: a corrupt or truncated file, a bad signature, a failed check (retrying will not help)"},
      {kExitNoInput, "NOINPUT", "an input file is missing or cannot be read"},
      {kExitUnavailable, "UNAVAILABLE", "a service or feature is permanently unavailable"},
      {kExitSoftware, "SOFTWARE", "internal error (a bug: please report it)"},
      {kExitCantCreate, "CANTCREAT", "an output cannot be created, or exists already (see --force)"},
      {kExitIoErr, "IOERR", "an I/O error while reading or writing"},
      {kExitTempFail, "TEMPFAIL", "not ready or transient failure (quorum not met, lock held, server busy): retry later"},
      {kExitProtocol, "PROTOCOL", "unexpected reply from a server"},
      {kExitNoPerm, "NOPERM", "not permitted"},
      {kExitConfig, "CONFIG", "bad configuration"},
  };
  return table;
}

static std::string compose(const std::string& what, const std::string& subject, const std::string& why) {
  std::string m = what;
  if (!subject.empty()) m += " '" + subject + "'";
  if (!why.empty()) m += ": " + why;
  return m;
}

Error::Error(int code, std::string what, std::string subject, std::string why)
    : std::runtime_error(compose(what, subject, why)),
      code_(code),
      what_(std::move(what)),
      subject_(std::move(subject)),
      why_(std::move(why)) {}

Error& Error::add_context(std::string line) {
  context_.push_back(std::move(line));
  return *this;
}

std::string Error::message() const { return compose(what_, subject_, why_); }

void throw_errno(int code, const std::string& what, const std::string& path, int errnum) {
  throw Error(code, what, path, std::strerror(errnum));
}

}  // namespace fedseg
