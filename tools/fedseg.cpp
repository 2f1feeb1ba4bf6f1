// fedseg: the front door. `fedseg VERB ARGS...` runs fedseg-VERB ARGS... (the one next
// to this executable first, then PATH), as git runs git-VERB; `fedseg help` lists the
// tools with one line each; `fedseg site-round CONFIG` and `fedseg aggregator-round
// CONFIG` run the round scripts from share/fedseg.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tool.h"

namespace {

// Each tool's ToolDoc summary (a test checks them against fedseg-VERB --help-json).
const std::vector<std::pair<const char*, const char*>> kTools = {
    {"synth", "generate a synthetic BraTS-layout cohort of brain tumour cases"},
    {"prep", "preprocess a NIfTI cohort into a dataset file for training and evaluation"},
    {"keygen", "create a site's or the aggregator's identity: an age key and a minisign key"},
    {"init", "create a federation: its signed plan and the round-0 global model"},
    {"train", "train the round's global model on this site's dataset and write the update"},
    {"pack", "encrypt and sign an update, metrics or global model file into a package"},
    {"verify", "check a package's signature and signed fields, and optionally decrypt it"},
    {"aggregate", "verify a round's packages and publish the next global model"},
    {"eval", "BraTS metrics of a model on a dataset, or of prediction files against labels"},
    {"predict", "segment NIfTI scans with a model, in each case's own grid"},
    {"fetch", "copy a file from a shared folder, HTTP(S) server or S3 store to a local path, atomically"},
    {"push", "copy a local file to a shared folder, HTTP(S) server or S3 store, write-once"},
    {"inspect", "show what a fedseg file is, its metadata, and whether it is intact"},
    {"report", "write a round-by-round report of a federation: participation, Dice, update norms, training loss"},
    {"doctor", "check that this machine is ready for a site's first round"},
};
const std::vector<std::pair<const char*, const char*>> kScripts = {
    {"site-round", "a site's part of the current round, for cron (share/fedseg/site-round)"},
    {"aggregator-round", "the aggregator's part of the current round, for cron (share/fedseg/aggregator-round)"},
};

std::string self_dir() {
  std::vector<char> buf(4096);
  ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return {};
  std::string p(buf.data(), size_t(n));
  return p.substr(0, p.rfind('/'));
}

bool executable(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

// Where a round script lives: BINDIR/../share/fedseg (installed) or the source tree's
// share/fedseg (a build folder).
std::string find_script(const std::string& name) {
  const std::string dir = self_dir();
  for (const std::string& d : {dir + "/../share/fedseg", std::string(FEDSEG_SOURCE_SHARE)})
    if (executable(d + "/" + name)) return d + "/" + name;
  return {};
}

int usage_list() {
  std::printf("usage: fedseg VERB [ARGS...]   (fedseg-VERB ARGS..., see fedseg-VERB --help and man fedseg-VERB)\n\n");
  std::printf("tools:\n");
  for (const auto& [v, s] : kTools) std::printf("  %-17s %s\n", v, s);
  std::printf("\nround scripts:\n");
  for (const auto& [v, s] : kScripts) std::printf("  %-17s %s\n", v, s);
  std::printf("\nfedseg help VERB shows a tool's help; fedseg --version the version.\n");
  return fedseg::kExitOk;
}

[[noreturn]] void run(const std::string& path, const std::string& argv0, int argc, char** argv, int first) {
  std::vector<char*> args;
  std::string a0 = argv0;
  args.push_back(a0.data());
  for (int i = first; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  if (path.find('/') != std::string::npos) ::execv(path.c_str(), args.data());
  else ::execvp(path.c_str(), args.data());
  std::fprintf(stderr, "fedseg: cannot run %s: %s\n", path.c_str(), std::strerror(errno));
  std::exit(errno == ENOENT ? fedseg::kExitUnavailable : errno == EACCES ? fedseg::kExitNoPerm : fedseg::kExitSoftware);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage_list();
    return fedseg::kExitUsage;
  }
  std::string verb = argv[1];
  int first = 2;
  if (verb == "help" || verb == "-h" || verb == "--help") {
    if (argc < 3) return usage_list();
    verb = argv[2];
    static char help[] = "--help";
    static char* help_argv[] = {help};
    argv = help_argv;
    argc = 1;
    first = 0;
  } else if (verb == "--version") {
    std::printf("fedseg %s\n", fedseg::kVersion);
    return fedseg::kExitOk;
  }
  for (const auto& [v, s] : kScripts)
    if (verb == v) {
      const std::string p = find_script(verb);
      if (p.empty()) {
        std::fprintf(stderr, "fedseg: the round script %s is not installed (looked in %s/../share/fedseg)\n", verb.c_str(),
                     self_dir().c_str());
        return fedseg::kExitUnavailable;
      }
      // The scripts run fedseg-* tools by name: the ones beside this front door come first
      // (as git puts its exec-path first), also when they are not on PATH.
      const char* path = std::getenv("PATH");
      const std::string with_self = self_dir() + (path && *path ? ":" + std::string(path) : std::string());
      ::setenv("PATH", with_self.c_str(), 1);
      run(p, verb, argc, argv, first);
    }
  if (verb.empty() || verb[0] == '-' || verb.find('/') != std::string::npos) {
    std::fprintf(stderr, "fedseg: '%s' is not a verb (fedseg help lists them)\n", verb.c_str());
    return fedseg::kExitUsage;
  }
  const std::string tool = "fedseg-" + verb;
  const std::string beside = self_dir() + "/" + tool;
  if (executable(beside)) run(beside, tool, argc, argv, first);
  // On PATH?
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    size_t i = 0;
    while (i <= p.size()) {
      size_t j = p.find(':', i);
      if (j == std::string::npos) j = p.size();
      std::string d = p.substr(i, j - i);
      if (!d.empty() && executable(d + "/" + tool)) run(d + "/" + tool, tool, argc, argv, first);
      i = j + 1;
    }
  }
  std::fprintf(stderr, "fedseg: '%s' is not a fedseg tool (fedseg help lists them)\n", verb.c_str());
  return fedseg::kExitUsage;
}
