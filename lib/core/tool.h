// fedseg tool framework: one definition per tool (documentation + CLI11 options +
// run function) from which the shared main derives --help, --version, the man page
// (--help-man), a machine-readable description (--help-json), the standard options,
// exit-code mapping and error printing. A tool's main() is one line:
//   int main(int argc, char** argv) { return fedseg::tool_main(argc, argv, fedseg::tools::inspect()); }
// Must not depend on HDF5, LibTorch or libcurl.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace fedseg {

extern const char* const kVersion;

// Options every tool takes (DESIGN.md §6).
struct CommonOptions {
  int verbose = 0;
  bool quiet = false;
  bool json = false;
  bool force = false;
  int threads = 0;   // 0: all cores available to the process
  int progress = -1; // -1 auto (stderr is a terminal), 0 off, 1 on
};

// What run() gets besides its own options.
class ToolContext {
 public:
  explicit ToolContext(CommonOptions o, std::string program) : opts_(o), program_(std::move(program)) {}
  const CommonOptions& common() const { return opts_; }
  bool json() const { return opts_.json; }
  bool force() const { return opts_.force; }
  int threads() const;  // resolved: >= 1
  const std::string& program() const { return program_; }
  // Prints a --json result document on stdout (one document per run), adding
  // "tool" and "version".
  void emit_json(nlohmann::json doc) const;

 private:
  CommonOptions opts_;
  std::string program_;
};

using RunFn = std::function<int(const ToolContext&)>;

struct ToolDoc {
  std::string verb;         // "inspect" -> fedseg-inspect
  std::string summary;      // one line, lower case, no full stop
  std::string synopsis;     // "FILE..." (after the tool name)
  std::string description;  // paragraphs separated by blank lines
  std::vector<std::pair<std::string, std::string>> examples;     // command, what it does
  std::vector<std::pair<std::string, std::string>> environment;  // variable, meaning
  std::vector<std::pair<int, std::string>> exit_codes;  // tool-specific meaning of codes it uses
  std::string json_doc;     // what --json prints
  std::vector<std::string> see_also;  // other tools, "fedseg-verify"
};

struct ToolDef {
  ToolDoc doc;
  // Adds the tool's own options to app and returns the function that runs it with
  // the values parsed into them.
  std::function<RunFn(CLI::App&)> setup;
};

// Prints an error as the shared main does (one line, then indented context),
// for batch tools that report a bad member and go on.
void report_error(const Error& e);

// Parses, runs, maps errors to exit codes. Never throws.
int tool_main(int argc, char** argv, const ToolDef& def);

// The same on a vector of arguments (without argv[0]), for in-process tests.
int run_tool(const ToolDef& def, const std::vector<std::string>& args);

// Generated documentation (also reachable as --help-man / --help-json).
std::string man_page(const ToolDef& def);
nlohmann::json help_json(const ToolDef& def);

}  // namespace fedseg
