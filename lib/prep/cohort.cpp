// Finding the cases of a cohort: folder naming conventions and CSV lists.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "prep/prep.h"

namespace fedseg::prep {
namespace {

bool is_directory(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno(kExitNoInput, "cannot read cohort folder", dir, errno);
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// "X.nii.gz" / "X.nii" -> "X"; anything else -> "".
std::string nifti_stem(const std::string& name) {
  for (const char* ext : {".nii.gz", ".nii"}) {
    std::string e = ext;
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
      return name.substr(0, name.size() - e.size());
  }
  return "";
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Suffix after the case id -> channel (0..3) or 4 for the label.
const std::map<std::string, int>& suffixes_2021() {
  static const std::map<std::string, int> m = {
      {"_t1", 0},       {"_t1ce", 1},       {"_t2", 2},       {"_flair", 3},       {"_seg", 4},
      {"_brain_t1", 0}, {"_brain_t1ce", 1}, {"_brain_t2", 2}, {"_brain_flair", 3}, {"_final_seg", 4},
      {"_t2flair", 3},  {"_brain_t2flair", 3}, {"_t1gd", 1},  {"_brain_t1gd", 1},  {"_labels", 4}};
  return m;
}
const std::map<std::string, int>& suffixes_2023() {
  static const std::map<std::string, int> m = {{"-t1n", 0}, {"-t1c", 1}, {"-t2w", 2}, {"-t2f", 3}, {"-seg", 4}};
  return m;
}

CaseFiles case_from_folder(const std::string& dir, const std::string& id) {
  CaseFiles c;
  c.id = id;
  bool any2021 = false, any2023 = false;
  const std::string lid = lower(id);
  for (const auto& name : list_dir(dir)) {
    std::string stem = nifti_stem(name);
    if (stem.empty()) continue;
    std::string ls = lower(stem);
    if (ls.compare(0, lid.size(), lid) != 0) continue;
    std::string suffix = ls.substr(lid.size());
    int slot = -1;
    if (auto it = suffixes_2021().find(suffix); it != suffixes_2021().end()) {
      slot = it->second;
      any2021 = true;
    } else if (auto it2 = suffixes_2023().find(suffix); it2 != suffixes_2023().end()) {
      slot = it2->second;
      any2023 = true;
    }
    if (slot < 0) continue;
    std::string& target = slot == 4 ? c.label : c.images[static_cast<size_t>(slot)];
    if (!target.empty()) {
      c.problem = "two files for " + std::string(slot == 4 ? "seg" : kChannels[static_cast<size_t>(slot)]) + ": '" +
                  target + "' and '" + dir + "/" + name + "'";
      return c;
    }
    target = dir + "/" + name;
  }
  c.naming = any2023 && !any2021 ? "brats2023" : "brats2021";
  if (any2021 && any2023) c.problem = "mixes BraTS 2021 and BraTS 2023 file names";
  for (size_t i = 0; i < 4 && c.problem.empty(); ++i)
    if (c.images[i].empty()) c.problem = std::string("missing modality ") + kChannels[i];
  return c;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char ch : line) {
    if (ch == '"') {
      quoted = !quoted;
    } else if (ch == ',' && !quoted) {
      out.push_back(cur);
      cur.clear();
    } else if (ch != '\r') {
      cur += ch;
    }
  }
  out.push_back(cur);
  for (auto& s : out) {
    size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
    s = a == std::string::npos ? "" : s.substr(a, b - a + 1);
  }
  return out;
}

std::vector<CaseFiles> cases_from_csv(const std::string& csv) {
  std::string text = read_file(csv, size_t(64) << 20);
  std::istringstream in(text);
  std::string line;
  std::vector<std::string> header;
  std::map<std::string, size_t> col;
  std::vector<CaseFiles> out;
  std::string base = dirname_of(csv);
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    auto f = split_csv_line(line);
    if (header.empty()) {
      header = f;
      for (size_t i = 0; i < f.size(); ++i) col[lower(f[i])] = i;
      for (const char* need : {"id", "t1", "t1ce", "t2", "flair"})
        if (!col.count(need))
          throw Error(kExitDataErr, "bad cohort list", csv, std::string("no '") + need + "' column in the header line");
      continue;
    }
    if (f.size() != header.size())
      throw Error(kExitDataErr, "bad cohort list", csv,
                  "line " + std::to_string(lineno) + " has " + std::to_string(f.size()) + " fields, the header " +
                      std::to_string(header.size()));
    CaseFiles c;
    c.naming = "csv";
    c.id = f[col["id"]];
    auto path = [&](const std::string& p) { return p.empty() || p[0] == '/' ? p : base + "/" + p; };
    for (size_t i = 0; i < 4; ++i) c.images[i] = path(f[col[kChannels[i]]]);
    if (col.count("seg")) c.label = path(f[col["seg"]]);
    if (c.id.empty()) throw Error(kExitDataErr, "bad cohort list", csv, "empty id on line " + std::to_string(lineno));
    for (size_t i = 0; i < 4 && c.problem.empty(); ++i)
      if (c.images[i].empty()) c.problem = std::string("missing modality ") + kChannels[i];
    out.push_back(c);
  }
  std::sort(out.begin(), out.end(), [](const CaseFiles& a, const CaseFiles& b) { return a.id < b.id; });
  for (size_t i = 1; i < out.size(); ++i)
    if (out[i].id == out[i - 1].id) throw Error(kExitDataErr, "bad cohort list", csv, "case id '" + out[i].id + "' appears twice");
  return out;
}

}  // namespace

std::vector<CaseFiles> find_cases(const std::string& cohort) {
  struct stat st;
  if (::stat(cohort.c_str(), &st) != 0) throw_errno(kExitNoInput, "cannot open cohort", cohort, errno);
  std::vector<CaseFiles> out;
  if (S_ISDIR(st.st_mode)) {
    for (const auto& name : list_dir(cohort)) {
      if (name[0] == '.') continue;
      std::string dir = cohort + "/" + name;
      if (is_directory(dir)) out.push_back(case_from_folder(dir, name));
    }
  } else {
    out = cases_from_csv(cohort);
  }
  if (out.empty()) throw Error(kExitDataErr, "no cases found in", cohort, "expected one folder per case, or a CSV list");
  return out;
}

}  // namespace fedseg::prep
