// fedseg-inspect: what a fedseg file is, its attributes and tensors, and with
// --check whether every value reads back.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/tool.h"
#include "h5/tensor_file.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::vector<std::string> files;
  bool check = false;
  bool all_tensors = false;
};

constexpr size_t kDefaultTensorRows = 40;

nlohmann::json attr_json(const h5::Attr& a) {
  if (auto* d = std::get_if<double>(&a)) return std::isfinite(*d) ? nlohmann::json(*d) : nlohmann::json(nullptr);
  if (auto* i = std::get_if<int64_t>(&a)) return *i;
  if (auto* s = std::get_if<std::string>(&a)) return *s;
  if (auto* vi = std::get_if<std::vector<int64_t>>(&a)) return *vi;
  nlohmann::json arr = nlohmann::json::array();
  for (double d : std::get<std::vector<double>>(a)) arr.push_back(std::isfinite(d) ? nlohmann::json(d) : nlohmann::json(nullptr));
  return arr;
}

std::string one_line(std::string s, size_t max) {
  for (auto& c : s)
    if (c == '\n' || c == '\t') c = ' ';
  if (s.size() > max) s = s.substr(0, max - 3) + "...";
  return s;
}

// Inspects one file; returns its JSON record. Throws Error for a file that cannot
// be read or fails the check.
nlohmann::json inspect_file(const std::string& path, const Options& o, const ToolContext& ctx, std::string& text) {
  h5::File f = h5::File::open(path);
  struct stat st {};
  ::stat(path.c_str(), &st);
  nlohmann::json rec = {{"path", path}, {"kind", f.kind()}, {"format", f.format()}, {"size", st.st_size}};
  auto attrs = f.attrs("/");
  nlohmann::json jattrs = nlohmann::json::object();
  for (const auto& [k, v] : attrs) jattrs[k] = attr_json(v);
  rec["attributes"] = jattrs;

  auto tensors = f.tensors();
  uint64_t values = 0, bytes = 0, stored = 0;
  for (const auto& t : tensors) {
    values += h5::numel(t.shape);
    bytes += t.bytes;
    stored += t.stored_bytes;
  }
  char buf[256];
  text += path + ": fedseg " + f.kind() + " file, format " + std::to_string(f.format()) + ", " +
          human_bytes(static_cast<double>(st.st_size)) + "\n";
  size_t width = 0;
  for (const auto& [k, v] : attrs) width = std::max(width, k.size());
  for (const auto& [k, v] : attrs) {
    std::string val = h5::attr_to_string(v);
    if (!log::enabled(log::Level::debug)) val = one_line(val, 100);
    std::snprintf(buf, sizeof buf, "  %-*s  ", static_cast<int>(width), k.c_str());
    text += buf + val + "\n";
  }
  std::snprintf(buf, sizeof buf, "  tensors: %zu, %llu values, %s", tensors.size(),
                static_cast<unsigned long long>(values), human_bytes(static_cast<double>(bytes)).c_str());
  text += buf;
  if (bytes > 0 && stored > 0) {
    std::snprintf(buf, sizeof buf, " (%s stored, ratio %.2f)", human_bytes(static_cast<double>(stored)).c_str(),
                  static_cast<double>(bytes) / static_cast<double>(stored));
    text += buf;
  }
  text += "\n";

  nlohmann::json jt = nlohmann::json::array();
  size_t name_w = 0;
  for (const auto& t : tensors) name_w = std::max(name_w, std::min<size_t>(t.name.size(), 60));
  std::unique_ptr<Progress> progress;
  if (o.check) progress = std::make_unique<Progress>("checking " + path, bytes, Progress::Unit::bytes);
  uint64_t nonfinite_total = 0;
  std::vector<std::string> bad;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    nlohmann::json r = {{"name", t.name},       {"dtype", t.type_desc}, {"shape", t.shape},
                        {"bytes", t.bytes},     {"stored_bytes", t.stored_bytes},
                        {"chunks", t.chunks},   {"filters", t.filters}};
    std::string filters;
    for (const auto& fl : t.filters) filters += (filters.empty() ? "" : "+") + fl;
    if (o.check) {
      h5::TensorCheck c = h5::check_tensor(f, t.name);
      r["sha256"] = c.sha256;
      r["nonfinite"] = c.nonfinite;
      r["min"] = c.min;
      r["max"] = c.max;
      nonfinite_total += c.nonfinite;
      if (c.nonfinite > 0) bad.push_back("tensor '" + t.name + "' has " + std::to_string(c.nonfinite) + " non-finite values");
      progress->add(t.bytes);
    }
    jt.push_back(r);
    if (o.all_tensors || i < kDefaultTensorRows) {
      std::snprintf(buf, sizeof buf, "    %-*s  %-8s %-18s %10s  %s\n", static_cast<int>(name_w), t.name.c_str(),
                    t.type_desc.c_str(), h5::shape_str(t.shape).c_str(), human_bytes(static_cast<double>(t.bytes)).c_str(),
                    filters.empty() ? "-" : filters.c_str());
      text += buf;
    } else if (i == kDefaultTensorRows) {
      text += "    ... " + std::to_string(tensors.size() - kDefaultTensorRows) + " more (--all shows them)\n";
    }
  }
  progress.reset();
  rec["tensors"] = jt;
  rec["totals"] = {{"tensors", tensors.size()}, {"values", values}, {"bytes", bytes}, {"stored_bytes", stored}};
  if (o.check) {
    for (const char* required : {"created", "tool", "provenance"})
      if (!attrs.count(required)) bad.push_back(std::string("root attribute '") + required + "' is missing");
    if (attrs.count("provenance")) {
      const auto* s = std::get_if<std::string>(&attrs.at("provenance"));
      if (!s || !nlohmann::json::accept(*s)) bad.push_back("root attribute 'provenance' is not JSON");
    }
    rec["check"] = {{"ok", bad.empty()}, {"nonfinite", nonfinite_total}, {"problems", bad}};
    if (!bad.empty()) {
      Error e(kExitDataErr, "check failed", path, bad.front());
      for (size_t i = 1; i < bad.size(); ++i) e.add_context(bad[i]);
      throw e;
    }
    text += "  check: ok, every value read back" + std::string(nonfinite_total ? "" : ", all finite") + "\n";
  }
  (void)ctx;
  return rec;
}

int run(const Options& o, const ToolContext& ctx) {
  nlohmann::json files = nlohmann::json::array();
  int rc = kExitOk;
  size_t failed = 0;
  for (const auto& path : o.files) {
    std::string text;
    try {
      nlohmann::json rec = inspect_file(path, o, ctx, text);
      rec["ok"] = true;
      files.push_back(rec);
      if (!ctx.json()) std::cout << text << std::flush;
    } catch (const Error& e) {
      report_error(e);
      if (rc == kExitOk) rc = e.code();
      ++failed;
      files.push_back({{"path", path}, {"ok", false}, {"error", {{"code", e.code()}, {"message", e.message()}}}});
    }
  }
  if (ctx.json()) ctx.emit_json({{"files", files}, {"ok", o.files.size() - failed}, {"failed", failed}});
  return rc;
}

}  // namespace

const ToolDef& inspect() {
  static const ToolDef def{
      {
          "inspect",
          "show what a fedseg file is, its metadata, and whether it is intact",
          "FILE...",
          "Prints, for each FILE, the kind of fedseg file it is (global model, update, dataset, metrics, "
          "checkpoint), its format version, its root attributes and its tensors (name, data type, shape, size, "
          "compression), with totals.\n\n"
          "With --check every tensor is read back in full (in bounded memory), which decodes every compressed "
          "chunk; a tensor holding NaN or infinite values, or a missing schema attribute, fails the check. "
          "The check also reports, per tensor, the SHA-256 of its values as little-endian bytes of the stored "
          "data type in C order, a content hash that does not depend on chunking or compression.\n\n"
          "Files that are missing, truncated, not HDF5, not fedseg files, of an unknown kind or of a newer "
          "format version are reported on one line each and skipped; the other files are still inspected. The "
          "exit status is that of the first file that failed.",
          {{"fedseg-inspect rounds/3/global.h5", "Show a global model's attributes and tensors."},
           {"fedseg-inspect --check --json dataset.h5 | jq '.files[0].check'", "Verify a dataset file for a script."}},
          {{"HDF5_PLUGIN_PATH",
            "not needed by fedseg; other HDF5 programs (h5py, h5dump) read fedseg's zstd-compressed files when it "
            "names the folder holding libh5zstd_fedseg.so"}},
          {{65, "a file is not HDF5, truncated, corrupt, not a fedseg file, of an unknown kind or newer format, or "
                "failed --check"},
           {66, "a file is missing or cannot be read"}},
          "A document {\"tool\", \"version\", \"files\": [...], \"ok\": N, \"failed\": N}. Each file: path, ok, "
          "kind, format, size, attributes, tensors (name, dtype, shape, bytes, stored_bytes, chunks, filters; "
          "with --check also sha256, nonfinite, min, max), totals, check; or, when it failed, error {code, "
          "message}.",
          {"fedseg-inspect"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("FILE", o->files, "fedseg HDF5 files (model, update, dataset, metrics)")->required()->type_name("FILE");
        app.add_flag("--check", o->check, "read every value back and verify the file's schema");
        app.add_flag("--all", o->all_tensors, "list every tensor (default: the first 40)");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
