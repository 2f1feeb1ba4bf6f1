#include "core/tool.h"

#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <memory>
#include <new>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"

namespace fedseg {

#ifndef FEDSEG_VERSION
#define FEDSEG_VERSION "0.0.0"
#endif
const char* const kVersion = FEDSEG_VERSION;

namespace {

const char* kCommonGroup = "Common options";

std::string program_name(const ToolDoc& doc) { return "fedseg-" + doc.verb; }

struct Built {
  std::unique_ptr<CLI::App> app;
  RunFn run;
};

// The one place where the standard options and the tool's options meet. Used for
// parsing, --help, --help-man and --help-json alike.
Built build_app(const ToolDef& def, CommonOptions& common) {
  Built b;
  const std::string prog = program_name(def.doc);
  b.app = std::make_unique<CLI::App>(def.doc.summary, prog);
  CLI::App& app = *b.app;
  app.set_help_flag("-h,--help", "print this help and exit");
  app.set_version_flag("--version", prog + " " + kVersion, "print the version and exit");
  app.option_defaults()->always_capture_default();
  app.allow_config_extras(CLI::config_extras_mode::error);
  b.run = def.setup(app);

  app.add_flag("-q,--quiet", common.quiet, "print nothing but errors")->group(kCommonGroup);
  app.add_flag("-v,--verbose", common.verbose, "print more detail (repeat for more)")->group(kCommonGroup);
  app.add_flag("--json", common.json, "print the result as one JSON document on stdout")->group(kCommonGroup);
  app.set_config("--config", "", "read options from FILE (TOML or INI: name = value), as for cron jobs")
      ->group(kCommonGroup)
      ->type_name("FILE");
  app.add_flag("--force", common.force, "replace existing outputs")->group(kCommonGroup);
  app.add_option("--threads", common.threads, "worker threads (0: all available cores)")
      ->group(kCommonGroup)
      ->check(CLI::Range(0, 4096).description(""))
      ->type_name("N");
  app.add_flag_callback("--progress", [&common] { common.progress = 1; }, "show progress on stderr even when it is not a terminal")
      ->group(kCommonGroup);
  app.add_flag_callback("--no-progress", [&common] { common.progress = 0; }, "never show progress")->group(kCommonGroup);
  // Empty containers and strings are no default worth showing.
  for (CLI::Option* o : app.get_options()) {
    const std::string d = o->get_default_str();
    if (d == "[]" || d == "\"\"" || d == "{}") o->default_str("");
  }
  app.footer("Exit status: 0 done, 64 usage, 65 bad data, 66 missing input, 70 internal error, 73 cannot create "
             "output, 74 I/O error, 75 retry later; see " + prog + "(1).");
  return b;
}

std::string roff_escape(const std::string& s) {
  std::string out;
  bool line_start = true;
  for (char c : s) {
    if (line_start && (c == '.' || c == '\'')) out += "\\&";
    if (c == '\\')
      out += "\\e";
    else if (c == '-')
      out += "\\-";
    else
      out += c;
    line_start = (c == '\n');
  }
  return out;
}

std::string option_label(const CLI::Option* o) {
  if (o->get_positional()) return o->get_name(true, false);
  std::string label;
  for (const auto& s : o->get_snames()) label += (label.empty() ? "-" : ", -") + s;
  for (const auto& l : o->get_lnames()) label += (label.empty() ? "--" : ", --") + l;
  if (o->get_type_size_max() > 0 || o->get_configurable() == false) {
    std::string t = o->get_type_name();
    if (!t.empty() && o->get_type_size_max() > 0) label += " " + t;
  }
  return label;
}

std::string option_help_line(const CLI::Option* o) {
  std::string d = o->get_description();
  std::string def = o->get_default_str();
  if (!o->get_positional() && o->get_type_size_max() > 0 && !def.empty() && def != "[]" && def != "\"\"")
    d += " (default: " + def + ")";
  if (o->get_required()) d += " (required)";
  return d;
}

std::vector<const CLI::Option*> visible_options(const CLI::App& app, bool positional) {
  return app.get_options([positional](const CLI::Option* o) {
    return !o->get_group().empty() && o->get_positional() == positional;
  });
}

std::vector<std::pair<int, std::string>> exit_codes_for(const ToolDoc& doc) {
  std::vector<std::pair<int, std::string>> out;
  for (const auto& e : exit_code_table()) {
    std::string meaning = e.meaning;
    for (const auto& t : doc.exit_codes)
      if (t.first == e.code) meaning = t.second;
    out.emplace_back(e.code, meaning);
  }
  return out;
}

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

int run_parsed(const ToolDef& def, std::vector<std::string> args) {
  const std::string prog = program_name(def.doc);
  log::set_program(prog);
  if (!args.empty() && args[0] == "--help-man") {
    std::cout << man_page(def);
    return kExitOk;
  }
  if (!args.empty() && args[0] == "--help-json") {
    std::cout << help_json(def).dump(2) << "\n";
    return kExitOk;
  }
  CommonOptions common;
  Built b = build_app(def, common);
  try {
    std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
    b.app->parse(args);
  } catch (const CLI::FileError& e) {  // --config FILE missing or unreadable
    log::error(e.what());
    return kExitNoInput;
  } catch (const CLI::ConfigError& e) {  // --config FILE names unknown options or bad values
    log::error(std::string("bad configuration: ") + e.what());
    return kExitConfig;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return b.app->exit(e, std::cout, std::cerr) == 0 ? kExitOk : kExitUsage;
    log::error(e.what());
    log::raw("Try '" + prog + " --help' for more information.\n");
    return kExitUsage;
  }
  if (common.quiet)
    log::set_level(log::Level::error);
  else if (common.verbose > 0)
    log::set_level(log::Level::debug);
  else
    log::set_level(log::Level::info);
  bool progress = common.progress == 1 ||
                  (common.progress == -1 && ::isatty(2) && !common.quiet && !common.json);
  Progress::set_enabled(progress);
  install_cleanup_handlers();
  common.threads = resolve_threads(common.threads);
  ToolContext ctx(common, prog);
  try {
    return b.run(ctx);
  } catch (const Error& e) {
    report_error(e);
    return e.code();
  } catch (const std::bad_alloc&) {
    log::error("out of memory");
    return kExitSoftware;
  } catch (const std::exception& e) {
    log::error(std::string("internal error: ") + e.what());
    return kExitSoftware;
  } catch (...) {
    log::error("internal error: unknown exception");
    return kExitSoftware;
  }
}

}  // namespace

void report_error(const Error& e) {
  log::error(e.message());
  for (const auto& c : e.context()) log::raw("    " + c + "\n");
}

int ToolContext::threads() const { return resolve_threads(opts_.threads); }

void ToolContext::emit_json(nlohmann::json doc) const {
  nlohmann::json out = {{"tool", program_}, {"version", kVersion}};
  out.update(doc);
  std::cout << out.dump(2) << "\n" << std::flush;
}

int run_tool(const ToolDef& def, const std::vector<std::string>& args) { return run_parsed(def, args); }

int tool_main(int argc, char** argv, const ToolDef& def) {
  // Tools work case by case on buffers of tens of megabytes. glibc serves those
  // with fresh mmaps and returns them on free, so every case paid page faults
  // and zero-filling again (most of fedseg-prep's time). Keep freed memory for reuse.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  std::vector<std::string> args(argv + 1, argv + argc);
  int rc = run_parsed(def, std::move(args));
  std::cout.flush();
  if (!std::cout.good()) {
    log::error("cannot write to standard output");
    return rc == 0 ? kExitIoErr : rc;
  }
  return rc;
}

std::string man_page(const ToolDef& def) {
  const ToolDoc& doc = def.doc;
  CommonOptions common;
  Built b = build_app(def, common);
  const std::string prog = program_name(doc);
  std::string upper;
  for (char c : prog) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::ostringstream m;
  m << ".\\\" Generated by " << prog << " --help-man from the tool's definition; do not edit.\n";
  m << ".TH " << upper << " 1 \"\" \"fedseg " << kVersion << "\" \"fedseg manual\"\n";
  m << ".SH NAME\n" << roff_escape(prog) << " \\- " << roff_escape(doc.summary) << "\n";
  m << ".SH SYNOPSIS\n.B " << roff_escape(prog) << "\n[\\fIOPTIONS\\fR] " << roff_escape(doc.synopsis) << "\n";
  m << ".SH DESCRIPTION\n";
  std::istringstream paras(doc.description);
  std::string line, para;
  auto flush_para = [&] {
    if (!para.empty()) m << ".PP\n" << roff_escape(para) << "\n";
    para.clear();
  };
  while (std::getline(paras, line)) {
    if (line.empty())
      flush_para();
    else
      para += (para.empty() ? "" : "\n") + line;
  }
  flush_para();
  auto emit_opts = [&](const std::vector<const CLI::Option*>& opts) {
    for (const auto* o : opts) m << ".TP\n.B " << roff_escape(option_label(o)) << "\n" << roff_escape(option_help_line(o)) << "\n";
  };
  auto positional = visible_options(*b.app, true);
  if (!positional.empty()) {
    m << ".SH ARGUMENTS\n";
    emit_opts(positional);
  }
  auto named = visible_options(*b.app, false);
  std::vector<const CLI::Option*> own, shared;
  for (const auto* o : named) (o->get_group() == kCommonGroup ? shared : own).push_back(o);
  m << ".SH OPTIONS\n";
  emit_opts(own);
  m << ".SS Common options\n";
  m << ".TP\n.B \\-h, \\-\\-help\nprint the help and exit\n.TP\n.B \\-\\-version\nprint the version and exit\n";
  emit_opts(shared);
  if (!doc.json_doc.empty()) m << ".SH JSON OUTPUT\n" << roff_escape(doc.json_doc) << "\n";
  m << ".SH EXIT STATUS\n";
  for (const auto& [code, meaning] : exit_codes_for(doc)) m << ".TP\n.B " << code << "\n" << roff_escape(meaning) << "\n";
  if (!doc.environment.empty()) {
    m << ".SH ENVIRONMENT\n";
    for (const auto& [var, meaning] : doc.environment) m << ".TP\n.B " << roff_escape(var) << "\n" << roff_escape(meaning) << "\n";
  }
  if (!doc.examples.empty()) {
    m << ".SH EXAMPLES\n";
    for (const auto& [cmd, what] : doc.examples) m << ".PP\n" << roff_escape(what) << "\n.PP\n.RS\n.nf\n" << roff_escape(cmd) << "\n.fi\n.RE\n";
  }
  m << ".SH SEE ALSO\n";
  std::vector<std::string> see = doc.see_also;
  if (see.empty()) see.push_back("fedseg-inspect");
  for (size_t i = 0; i < see.size(); ++i) m << (i ? ",\n" : "") << ".BR " << roff_escape(see[i]) << " (1)";
  m << "\n";
  return m.str();
}

nlohmann::json help_json(const ToolDef& def) {
  CommonOptions common;
  Built b = build_app(def, common);
  nlohmann::json opts = nlohmann::json::array();
  for (bool positional : {true, false}) {
    for (const auto* o : visible_options(*b.app, positional)) {
      opts.push_back({{"name", option_label(o)},
                      {"positional", positional},
                      {"common", o->get_group() == kCommonGroup},
                      {"takes_value", o->get_type_size_max() > 0},
                      {"type", o->get_type_name()},
                      {"default", o->get_default_str()},
                      {"required", o->get_required()},
                      {"description", o->get_description()}});
    }
  }
  nlohmann::json codes = nlohmann::json::array();
  for (const auto& [code, meaning] : exit_codes_for(def.doc)) codes.push_back({{"code", code}, {"meaning", meaning}});
  return {{"tool", program_name(def.doc)}, {"version", kVersion},      {"summary", def.doc.summary},
          {"synopsis", def.doc.synopsis},  {"options", opts},          {"exit_codes", codes},
          {"json_output", def.doc.json_doc}};
}

}  // namespace fedseg
