// fedseg-report: a round-by-round report of a federation (participation, Dice, update
// norms, training loss) as one self-contained HTML file and/or one JSON document, from
// the files the aggregator publishes (DESIGN.md §5): federation.json, LATEST and
// rounds/<r>/report.json, each verified against the aggregator's key before use, plus
// the sites' unsigned round receipts as hints.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/tool.h"
#include "fed/exchange.h"
#include "fed/plan.h"
#include "fed/published.h"
#include "package/package.h"
#include "package/roster.h"

namespace fedseg::tools {
namespace {

using nlohmann::json;

struct Options {
  std::string exchange, out, aggregator_pub;
  bool unverified = false;
};

// Regions in the order the report shows them (nested: whole tumour outermost).
const char* const kRegions[] = {"WT", "TC", "ET"};

// A file that failed verification (or could not be read): listed, counted, never used.
struct Problem {
  std::string file, cls, message;
};

// ---------------------------------------------------------------- small helpers

std::string esc(const std::string& s) {
  std::string o;
  o.reserve(s.size() + 8);
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML/HTML text.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') o += ' ';
        else o += c;
    }
  }
  return o;
}

// A state ("not aggregated") as one CSS class name ("not-aggregated").
std::string css_class(std::string s) {
  std::replace(s.begin(), s.end(), ' ', '-');
  return esc(s);
}

std::string fmt(double x, int sig = 4) {
  if (!std::isfinite(x)) return "n/a";
  char b[48];
  std::snprintf(b, sizeof b, "%.*g", sig, x);
  return b;
}

// Fixed-point coordinates keep the SVG small and the output deterministic.
std::string px(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", x);
  return b;
}

// A finite number from a JSON value, or nothing (null, NaN, wrong type).
std::optional<double> num(const json& j) {
  if (!j.is_number()) return std::nullopt;
  const double x = j.get<double>();
  if (!std::isfinite(x)) return std::nullopt;
  return x;
}

// j[key] when j is an object holding key, else null (reports from other versions
// or hand-made ones must not crash the reader).
const json& member(const json& j, const char* key) {
  static const json null_json;
  if (!j.is_object()) return null_json;
  auto it = j.find(key);
  return it == j.end() ? null_json : *it;
}

std::string str_member(const json& j, const char* key) {
  const json& v = member(j, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

bool contains_str(const json& arr, const std::string& s) {
  if (!arr.is_array()) return false;
  for (const auto& x : arr)
    if (x.is_string() && x.get<std::string>() == s) return true;
  return false;
}

// ---------------------------------------------------------------- reading the exchange

struct Reader {
  const Options& o;
  std::optional<crypto::MinisignPublicKey> key;  // none with --unverified
  std::vector<Problem> problems;

  // Reads a published file and verifies it (signature, fields, sha256 of the bytes
  // read); nullopt and a problem when it does not verify. Error 66 is returned as
  // nullopt without a problem (the caller decides what a missing file means).
  std::optional<std::string> read_published(const std::string& path, const std::string& kind, const std::string& fed,
                                            std::optional<int64_t> round) {
    if (!path_exists(path)) return std::nullopt;
    try {
      std::string text = read_file(path, size_t(64) << 20);
      if (!key) return text;
      package::Fields f = fed::verify_published(*key, path, {fed, round, kind});
      // verify_published hashed the file as it was then: the bytes used must be those.
      if (sha256_hex(text) != f.plain)
        throw package::PackageError(package::FailClass::hash, path, "the file changed while it was read", fed::published_what(kind));
      return text;
    } catch (const package::PackageError& e) {
      add(path, e.class_name(), e);
    } catch (const Error& e) {
      add(path, e.code() == kExitNoInput ? "missing" : "read", e);
    }
    return std::nullopt;
  }

  void add(const std::string& path, const std::string& cls, const Error& e) {
    report_error(e);
    problems.push_back({path, cls, e.message()});
  }
};

// At most max_bytes of s, cut at a UTF-8 character boundary (s is valid UTF-8: parsed JSON).
std::string utf8_prefix(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

// A site's receipt for a round (unsigned: a hint only, docs/formats.md "Round receipts").
json read_receipt(const std::string& exchange, int64_t round, const std::string& site, const std::string& fed) {
  const std::string p = fed::round_dir(exchange, round) + "/receipts/" + site + ".json";
  if (!path_exists(p)) return nullptr;
  json j;
  try {
    j = json::parse(read_file(p, 1 << 16), nullptr, false);
  } catch (const Error& e) {
    log::debug("receipt " + p + " ignored: " + e.message());
    return nullptr;
  }
  if (!j.is_object() || !member(j, "round").is_number_integer() || member(j, "round").get<int64_t>() != round ||
      str_member(j, "site") != site || (!str_member(j, "federation").empty() && str_member(j, "federation") != fed)) {
    log::debug("receipt " + p + " ignored: not a receipt of site " + site + " for round " + std::to_string(round));
    return nullptr;
  }
  json r{{"file", "rounds/" + std::to_string(round) + "/receipts/" + site + ".json"}, {"signed", false}};
  for (const char* k : {"status", "step", "exit_code", "exit_class", "message", "finished"}) {
    const json& v = member(j, k);
    if (v.is_string()) r[k] = utf8_prefix(v.get<std::string>(), 300);
    else if (v.is_number_integer()) r[k] = v;
    else r[k] = nullptr;
  }
  return r;
}

// One round as the report shows it, from its verified report.json.
json round_entry(const json& rep, int64_t r, const std::vector<std::string>& sites) {
  json e{{"round", r}, {"status", "aggregated"}, {"report", "rounds/" + std::to_string(r) + "/report.json"}};
  const json& rule = member(rep, "rule");
  e["rule"] = rule.is_object() ? member(rule, "rule") : rule.is_string() ? rule : json(nullptr);
  e["update_norm"] = member(rep, "update_norm");
  e["privacy"] = member(rep, "privacy");
  e["created"] = member(rep, "created");
  const json& q = member(rep, "quorum");
  e["quorum"] = {{"expected", member(q, "expected")}, {"reported", member(q, "reported")},
                 {"missing", member(q, "missing")}, {"min_sites", member(q, "min_sites")}};

  const json& m = member(rep, "metrics");
  const json& mfed = member(m, "federation");
  json dice = json::object();
  for (const char* g : kRegions) {
    const json& s = member(member(mfed, "dice"), g);
    dice[g] = s.is_object() ? json{{"mean", member(s, "mean")}, {"median", member(s, "median")}, {"std", member(s, "std")},
                                   {"n", member(s, "n")}}
                            : json(nullptr);
  }
  e["dice"] = m.is_object() ? dice : json(nullptr);
  e["metrics_cases"] = member(mfed, "num_cases");

  json out = json::object();
  for (const auto& s : sites) {
    json x{{"participation", "unknown"}};
    // Participation, from the signed report: accepted, rejected (with why), missing.
    const json& acc = member(rep, "accepted");
    bool found = false;
    if (acc.is_array())
      for (const auto& a : acc)
        if (str_member(a, "site") == s) {
          found = true;
          x["participation"] = "accepted";
          for (const char* k : {"num_examples", "weight", "norm", "cosine", "clip_factor", "flags"}) x[k] = member(a, k);
          const json& el = member(member(a, "train"), "epoch_loss");
          x["epoch_loss"] = el.is_array() ? el : json(nullptr);
          x["loss"] = el.is_array() && !el.empty() ? el.back() : json(nullptr);
          break;
        }
    const json& rej = member(rep, "rejected");
    if (!found && rej.is_array())
      for (const auto& a : rej) {
        std::string rs = str_member(a, "site");
        if (rs.empty()) {  // --packages: only the file name tells
          rs = basename_of(str_member(a, "package"));
          if (rs.size() > 4 && rs.compare(rs.size() - 4, 4, ".age") == 0) rs.resize(rs.size() - 4);
        }
        if (rs == s) {
          found = true;
          x["participation"] = "rejected";
          x["class"] = member(a, "class");
          x["reason"] = member(a, "reason");
          break;
        }
      }
    if (!found) {
      if (contains_str(member(q, "missing"), s)) x["participation"] = "missing";
      else if (member(q, "expected").is_array() && !contains_str(member(q, "expected"), s)) x["participation"] = "not expected";
    }
    // The site's evaluation of round r's global model.
    x["dice"] = nullptr;
    x["metrics"] = nullptr;
    if (m.is_object()) {
      x["metrics"] = contains_str(member(m, "missing"), s) ? json("missing") : json(nullptr);
      const json& ms = member(m, "sites");
      if (ms.is_array())
        for (const auto& a : ms)
          if (str_member(a, "site") == s) {
            json d = json::object();
            for (const char* g : kRegions) d[g] = member(member(a, "dice"), g);
            x["dice"] = d;
            x["metrics"] = "accepted";
            x["num_cases"] = member(a, "num_cases");
          }
      const json& mr = member(m, "rejected");
      if (mr.is_array() && x["metrics"].is_null())
        for (const auto& a : mr)
          if (str_member(a, "site") == s) {
            x["metrics"] = "rejected";
            x["metrics_reason"] = member(a, "reason");
          }
    }
    out[s] = x;
  }
  e["sites"] = out;
  return e;
}

// ---------------------------------------------------------------- SVG plots

const char* const kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                "#b07aa1", "#9c755f", "#ff9da7", "#edc948", "#bab0ac"};
const char* const kDash[] = {"", "6 3", "2 3", "8 3 2 3"};
const char* const kFedColour = "#222222";

struct Series {
  std::string name, colour, dash;
  bool federation = false;
  std::vector<std::optional<double>> y;     // per x position
  std::vector<std::string> tip;             // per x position (hover text)
  std::vector<std::optional<double>> band;  // ± this around y (federation std), optional
};

Series site_series(size_t k, const std::string& name, size_t n) {
  Series s;
  s.name = name;
  s.colour = kPalette[k % 10];
  s.dash = kDash[(k / 10) % 4];
  s.y.resize(n);
  s.tip.resize(n);
  return s;
}

// Ticks at 1, 2 or 5 times a power of ten covering [lo, hi].
std::vector<double> nice_ticks(double& lo, double& hi, int want = 5) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    lo = 0;
    hi = 1;
  }
  // A range of a few ulps (0.1 against 0.10000000000000002) is one value: a step that
  // small would not move v below.
  if (!(hi - lo > 1e-9 * std::max(std::fabs(lo), std::fabs(hi)))) {
    hi = lo = std::max(lo, hi);
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / want;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  double step = p;
  for (double f : {1.0, 2.0, 5.0, 10.0})
    if (f * p >= raw) {
      step = f * p;
      break;
    }
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> t;
  for (int i = 0; i <= 4 * want; ++i) {
    const double v = lo + i * step;
    if (v > hi + step * 1e-6) break;
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

struct PlotSpec {
  std::string id, title, ylabel, empty_message;
  std::vector<int64_t> rounds;  // x positions
  std::optional<double> ymin, ymax;
  double width = 820;  // user units, drawn 1:1 up to the page's width
};

std::string line_plot(const PlotSpec& p, const std::vector<Series>& series) {
  size_t longest = 0;
  for (const auto& se : series) longest = std::max(longest, se.name.size());
  const double W = p.width, ml = 60, mt = 16, mb = 48;
  const double mr = std::min(W / 3, std::max(100.0, 44 + 7.2 * double(longest)));  // the legend
  const double H = std::max(300.0, mt + 20.0 * double(series.size()) + 24);
  const double pw = W - ml - mr, ph = H - mt - mb;
  const size_t n = p.rounds.size();
  double lo = 1e300, hi = -1e300;
  bool any = false;
  for (const auto& s : series)
    for (size_t i = 0; i < s.y.size(); ++i)
      if (s.y[i]) {
        const double b = i < s.band.size() && s.band[i] ? *s.band[i] : 0;
        lo = std::min(lo, *s.y[i] - b);
        hi = std::max(hi, *s.y[i] + b);
        any = true;
      }
  if (!any) lo = 0, hi = 1;
  if (p.ymin) lo = *p.ymin;
  if (p.ymax) hi = *p.ymax;
  std::vector<double> ticks = nice_ticks(lo, hi);
  auto X = [&](size_t i) { return ml + (double(i) + 0.5) * pw / double(std::max<size_t>(n, 1)); };
  auto Y = [&](double v) { return mt + ph - (v - lo) / (hi - lo) * ph; };

  std::ostringstream s;
  s << "<svg class=\"plot\" id=\"" << esc(p.id) << "\" viewBox=\"0 0 " << px(W) << " " << px(H) << "\" width=\"" << px(W)
    << "\" height=\"" << px(H) << "\" role=\"img\" aria-labelledby=\"" << esc(p.id) << "-title\">\n";
  s << "<title id=\"" << esc(p.id) << "-title\">" << esc(p.title) << "</title>\n";
  // Grid and y axis.
  for (double t : ticks) {
    s << "<line class=\"grid\" x1=\"" << px(ml) << "\" x2=\"" << px(ml + pw) << "\" y1=\"" << px(Y(t)) << "\" y2=\"" << px(Y(t))
      << "\"/>";
    s << "<text class=\"tick\" x=\"" << px(ml - 6) << "\" y=\"" << px(Y(t) + 4) << "\" text-anchor=\"end\">" << fmt(t, 6)
      << "</text>\n";
  }
  s << "<line class=\"axis\" x1=\"" << px(ml) << "\" x2=\"" << px(ml) << "\" y1=\"" << px(mt) << "\" y2=\"" << px(mt + ph)
    << "\"/>";
  s << "<line class=\"axis\" x1=\"" << px(ml) << "\" x2=\"" << px(ml + pw) << "\" y1=\"" << px(mt + ph) << "\" y2=\""
    << px(mt + ph) << "\"/>\n";
  // x ticks: every round, thinned to about 15 labels.
  const size_t every = std::max<size_t>(1, (n + 14) / 15);
  for (size_t i = 0; i < n; ++i) {
    s << "<line class=\"axis\" x1=\"" << px(X(i)) << "\" x2=\"" << px(X(i)) << "\" y1=\"" << px(mt + ph) << "\" y2=\""
      << px(mt + ph + 4) << "\"/>";
    if (i % every == 0)
      s << "<text class=\"tick\" x=\"" << px(X(i)) << "\" y=\"" << px(mt + ph + 17) << "\" text-anchor=\"middle\">"
        << p.rounds[i] << "</text>";
    s << "\n";
  }
  s << "<text class=\"label\" x=\"" << px(ml + pw / 2) << "\" y=\"" << px(H - 8) << "\" text-anchor=\"middle\">round</text>\n";
  s << "<text class=\"label\" transform=\"translate(16," << px(mt + ph / 2) << ") rotate(-90)\" text-anchor=\"middle\">"
    << esc(p.ylabel) << "</text>\n";
  if (!any) {
    s << "<text class=\"empty\" x=\"" << px(ml + pw / 2) << "\" y=\"" << px(mt + ph / 2) << "\" text-anchor=\"middle\">"
      << esc(p.empty_message) << "</text>\n";
  }
  // Federation band (mean ± std) under everything else.
  for (const auto& se : series) {
    if (se.band.empty()) continue;
    std::vector<std::pair<size_t, size_t>> runs;  // contiguous stretches with a value and a band
    for (size_t i = 0; i < n; ++i) {
      const bool ok = se.y[i] && i < se.band.size() && se.band[i];
      if (ok && (runs.empty() || runs.back().second != i)) runs.push_back({i, i + 1});
      else if (ok) runs.back().second = i + 1;
    }
    for (const auto& [a, b] : runs) {
      if (b - a < 2) continue;
      s << "<polygon class=\"band\" fill=\"" << se.colour << "\" points=\"";
      for (size_t i = a; i < b; ++i) s << px(X(i)) << "," << px(Y(std::min(hi, *se.y[i] + *se.band[i]))) << " ";
      for (size_t i = b; i-- > a;) s << px(X(i)) << "," << px(Y(std::max(lo, *se.y[i] - *se.band[i]))) << " ";
      s << "\"/>\n";
    }
  }
  // Lines (broken where a value is missing), sites first, then the federation on top.
  auto draw = [&](const Series& se) {
    const std::string g = se.federation ? "federation" : "site";
    s << "<g class=\"series " << g << "\" data-series=\"" << esc(se.name) << "\">\n";
    std::string pts;
    auto flush = [&] {
      if (!pts.empty() && pts.find(' ') != pts.rfind(' '))
        s << "<polyline fill=\"none\" stroke=\"" << se.colour << "\" stroke-width=\"" << (se.federation ? "3.5" : "1.8")
          << "\"" << (se.dash.empty() ? "" : " stroke-dasharray=\"" + se.dash + "\"") << " points=\"" << pts << "\"/>\n";
      pts.clear();
    };
    for (size_t i = 0; i < n; ++i) {
      if (se.y[i]) pts += px(X(i)) + "," + px(Y(*se.y[i])) + " ";
      else flush();
    }
    flush();
    for (size_t i = 0; i < n; ++i) {
      if (!se.y[i]) continue;
      s << "<circle class=\"pt\" cx=\"" << px(X(i)) << "\" cy=\"" << px(Y(*se.y[i])) << "\" r=\""
        << (se.federation ? "4.5" : "3.5") << "\" fill=\"" << se.colour << "\" data-site=\"" << esc(se.name)
        << "\" data-round=\"" << p.rounds[i] << "\" data-value=\"" << fmt(*se.y[i], 17) << "\"><title>"
        << esc(se.tip[i].empty() ? se.name + ", round " + std::to_string(p.rounds[i]) + ": " + fmt(*se.y[i]) : se.tip[i])
        << "</title></circle>\n";
    }
    s << "</g>\n";
  };
  for (const auto& se : series)
    if (!se.federation) draw(se);
  for (const auto& se : series)
    if (se.federation) draw(se);
  // Legend.
  double ly = mt + 8;
  s << "<g class=\"legend\">\n";
  for (const auto& se : series) {
    const double lx = ml + pw + 16;
    s << "<line x1=\"" << px(lx) << "\" x2=\"" << px(lx + 22) << "\" y1=\"" << px(ly) << "\" y2=\"" << px(ly) << "\" stroke=\""
      << se.colour << "\" stroke-width=\"" << (se.federation ? "3.5" : "1.8") << "\""
      << (se.dash.empty() ? "" : " stroke-dasharray=\"" + se.dash + "\"") << "/>";
    s << "<circle cx=\"" << px(lx + 11) << "\" cy=\"" << px(ly) << "\" r=\"3\" fill=\"" << se.colour << "\"/>";
    s << "<text x=\"" << px(lx + 28) << "\" y=\"" << px(ly + 4) << "\">" << esc(se.name) << "</text>\n";
    ly += 20;
  }
  s << "</g>\n</svg>\n";
  return s.str();
}

// Participation states: colour, symbol (not colour alone), label.
struct StateStyle {
  const char* state;
  const char* fill;
  const char* symbol;
  const char* label;
};
const StateStyle kStates[] = {
    {"accepted", "#59a14f", "\u2713", "accepted"},
    {"rejected", "#e15759", "\u2717", "rejected"},
    {"missing", "#f2c14e", "\u2013", "missing (no package)"},
    {"not expected", "#f4f4f4", "", "not expected"},
    {"pending", "#ffffff", "\u2026", "open round (not aggregated yet)"},
    {"not aggregated", "#eeeeee", "\u00b7", "round not aggregated (no report)"},
    {"unknown", "#d9d9d9", "?", "report failed verification"},
};

const StateStyle& style_of(const std::string& st) {
  for (const auto& s : kStates)
    if (st == s.state) return s;
  return kStates[std::size(kStates) - 1];
}

std::string receipt_hint(const json& rc) {
  if (!rc.is_object()) return {};
  std::string h = "unsigned receipt: " + str_member(rc, "status");
  if (!str_member(rc, "step").empty()) h += " at step " + str_member(rc, "step");
  if (!str_member(rc, "exit_class").empty()) h += " (" + str_member(rc, "exit_class") + ")";
  if (!str_member(rc, "message").empty()) h += ": " + str_member(rc, "message");
  return h;
}

std::string cell_text(const json& x) {
  const std::string st = str_member(x, "participation");
  std::string t = style_of(st).label;
  if (st == "rejected") {
    t += " (" + str_member(x, "class") + ")";
    if (!str_member(x, "reason").empty()) t += ": " + str_member(x, "reason");
  }
  return t;
}

std::string participation_plot(const json& rounds, const std::vector<std::string>& sites) {
  const size_t n = rounds.size();
  const double ml = 130, mt = 34;
  const double cw = n == 0 ? 36 : std::max(8.0, std::min(36.0, 640.0 / double(n))), ch = 24;
  const double W = std::max(560.0, ml + cw * double(n) + 20), gh = ch * double(sites.size());
  // Legend entries (state styles, then the receipt mark), wrapped into rows of W.
  std::vector<std::pair<double, double>> lpos;  // x, row
  {
    double lx = 10, row = 0;
    for (size_t i = 0; i <= std::size(kStates); ++i) {
      const double w = 30 + 6.8 * double(i < std::size(kStates) ? std::string(kStates[i].label).size() : 28);
      if (lx + w > W && lx > 10) lx = 10, row += 1;
      lpos.push_back({lx, row});
      lx += w;
    }
  }
  const double H = mt + gh + 40 + 20 * lpos.back().second;
  std::ostringstream s;
  s << "<svg class=\"plot\" id=\"participation\" viewBox=\"0 0 " << px(W) << " " << px(H) << "\" width=\"" << px(W)
    << "\" height=\"" << px(H) << "\" role=\"img\" aria-labelledby=\"participation-title\">\n";
  s << "<title id=\"participation-title\">Participation: site by round</title>\n";
  s << "<text class=\"label\" x=\"" << px(ml + cw * double(n) / 2) << "\" y=\"12\" text-anchor=\"middle\">round</text>\n";
  const size_t every = std::max<size_t>(1, size_t(std::ceil(22.0 / cw)));
  for (size_t i = 0; i < n; ++i)
    if (i % every == 0)
      s << "<text class=\"tick\" x=\"" << px(ml + cw * (double(i) + 0.5)) << "\" y=\"" << px(mt - 6)
        << "\" text-anchor=\"middle\">" << rounds[i]["round"].get<int64_t>() << "</text>\n";
  for (size_t k = 0; k < sites.size(); ++k) {
    const double y = mt + ch * double(k);
    s << "<text class=\"tick\" x=\"" << px(ml - 8) << "\" y=\"" << px(y + ch / 2 + 4) << "\" text-anchor=\"end\">"
      << esc(sites[k]) << "</text>\n";
    for (size_t i = 0; i < n; ++i) {
      const json& x = rounds[i]["sites"][sites[k]];
      const std::string st = str_member(x, "participation");
      const StateStyle& ss = style_of(st);
      std::string tip = sites[k] + ", round " + std::to_string(rounds[i]["round"].get<int64_t>()) + ": " + cell_text(x);
      const std::string hint = receipt_hint(member(x, "receipt"));
      if (!hint.empty()) tip += "; " + hint;
      const double cx = ml + cw * double(i);
      s << "<g class=\"cell\" data-site=\"" << esc(sites[k]) << "\" data-round=\"" << rounds[i]["round"].get<int64_t>()
        << "\" data-state=\"" << esc(st) << "\"><title>" << esc(tip) << "</title>";
      s << "<rect x=\"" << px(cx + 1) << "\" y=\"" << px(y + 1) << "\" width=\"" << px(cw - 2) << "\" height=\"" << px(ch - 2)
        << "\" fill=\"" << ss.fill << "\" stroke=\"#999\"" << (st == "pending" ? " stroke-dasharray=\"3 2\"" : "") << "/>";
      if (cw >= 14 && *ss.symbol)
        s << "<text class=\"sym\" x=\"" << px(cx + cw / 2) << "\" y=\"" << px(y + ch / 2 + 5) << "\" text-anchor=\"middle\">"
          << ss.symbol << "</text>";
      if (!hint.empty() && cw >= 14)  // a receipt is there: a small corner mark
        s << "<circle cx=\"" << px(cx + cw - 5) << "\" cy=\"" << px(y + 5) << "\" r=\"2.2\" fill=\"#333\"/>";
      s << "</g>\n";
    }
  }
  if (n == 0 || sites.empty())
    s << "<text class=\"empty\" x=\"" << px(W / 2) << "\" y=\"" << px(mt + 16) << "\" text-anchor=\"middle\">no rounds yet</text>\n";
  // Legend.
  s << "<g class=\"legend\">\n";
  double lx = 0, ly = 0;
  for (size_t i = 0; i < std::size(kStates); ++i) {
    const StateStyle& st = kStates[i];
    lx = lpos[i].first;
    ly = mt + gh + 22 + 20 * lpos[i].second;
    s << "<rect x=\"" << px(lx) << "\" y=\"" << px(ly - 10) << "\" width=\"14\" height=\"14\" fill=\"" << st.fill
      << "\" stroke=\"#999\"/><text class=\"sym\" x=\"" << px(lx + 7) << "\" y=\"" << px(ly + 1)
      << "\" text-anchor=\"middle\">" << st.symbol << "</text><text x=\"" << px(lx + 19) << "\" y=\"" << px(ly + 1) << "\">"
      << st.label << "</text>\n";
  }
  lx = lpos.back().first;
  ly = mt + gh + 22 + 20 * lpos.back().second;
  s << "<circle cx=\"" << px(lx + 5) << "\" cy=\"" << px(ly - 3) << "\" r=\"2.2\" fill=\"#333\"/><text x=\"" << px(lx + 12)
    << "\" y=\"" << px(ly + 1) << "\">site receipt (unsigned hint)</text>\n";
  s << "</g>\n</svg>\n";
  return s.str();
}

// ---------------------------------------------------------------- HTML

const char* const kCss = R"CSS(
body{font:14px/1.45 "DejaVu Sans",system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fff;max-width:1180px;margin:0 auto;padding:12px 24px 40px}
h1{font-size:22px;margin:8px 0 4px}
h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin:14px 0 2px}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:2px 18px;margin:8px 0}
dl.summary dt{color:#555}
dl.summary dd{margin:0}
.note{color:#555;font-size:13px;max-width:900px}
.banner{padding:8px 12px;margin:10px 0;border-radius:3px}
.banner.bad{background:#fde8e8;border:1px solid #e15759}
.banner h2{margin-top:4px}
.banner.warn{background:#fff4e0;border:1px solid #f2a33a}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:4px 20px}
svg.plot{display:block;max-width:100%;height:auto;margin:4px 0 10px}
svg.plot text{font-size:12px;fill:#333;font-family:"DejaVu Sans",system-ui,sans-serif}
svg.plot text.label{font-size:13px;fill:#444}
svg.plot text.empty{font-size:14px;fill:#888}
svg.plot text.sym{font-size:13px;fill:#111}
svg.plot line.grid{stroke:#eaeaea;stroke-width:1}
svg.plot line.axis{stroke:#555;stroke-width:1}
svg.plot polygon.band{opacity:.10;stroke:none}
svg.plot circle.pt:hover{stroke:#000;stroke-width:2}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
caption{text-align:left;color:#555;padding:2px 0;font-size:13px}
tr.round th,tr.round td{border-top:2px solid #bbb}
th,td{border:1px solid #d8d8d8;padding:2px 7px;vertical-align:top}
th{background:#f5f5f5;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.accepted{background:#e6f2e3}
td.rejected{background:#fbe3e3}
td.missing{background:#fdf3dc}
td.unknown{background:#d9d9d9}
td.not-aggregated,td.not-expected{background:#f4f4f4;color:#666}
.hint{color:#666;font-style:italic}
footer{margin-top:30px;color:#777;font-size:12px}
)CSS";

std::string cell_num(const json& v, int sig = 4) {
  auto x = num(v);
  return "<td class=\"num\">" + (x ? fmt(*x, sig) : std::string("\u2014")) + "</td>";
}

std::string render_html(const json& doc, const std::vector<std::string>& sites) {
  const json& rounds = doc["rounds"];
  std::vector<int64_t> agg_rounds;  // x axis: rounds that should have a report (all but the open one)
  std::vector<const json*> agg;
  for (const auto& r : rounds)
    if (r["status"] != "open") {
      agg_rounds.push_back(r["round"].get<int64_t>());
      agg.push_back(&r);
    }
  const size_t n = agg.size();
  std::ostringstream h;
  const std::string fed = doc["federation"].get<std::string>();
  h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n"
    << "<meta name=\"generator\" content=\"fedseg-report " << esc(kVersion) << "\"/>\n"
    << "<title>fedseg report: " << esc(fed) << "</title>\n<style>" << kCss << "</style>\n</head>\n<body>\n";
  h << "<header>\n<h1>Federation " << esc(fed) << "</h1>\n<dl class=\"summary\">\n";
  auto row = [&](const std::string& k, const std::string& v_html) { h << "<dt>" << esc(k) << "</dt><dd>" << v_html << "</dd>\n"; };
  const json& latest = doc["latest"];
  row("rounds aggregated", std::to_string(doc["rounds_aggregated"].get<int64_t>()) + " of " + std::to_string(n));
  row("latest round (LATEST)", latest.is_object() ? std::to_string(latest["round"].get<int64_t>()) +
                                                        (str_member(latest, "published").empty()
                                                             ? std::string()
                                                             : ", published " + esc(str_member(latest, "published")))
                                                  : std::string("unknown (no verified LATEST)"));
  row("aggregation rule", esc(str_member(doc, "rule").empty() ? "?" : str_member(doc, "rule")));
  std::string site_list;
  for (const auto& s : sites) site_list += (site_list.empty() ? "" : ", ") + esc(s);
  row("sites", std::to_string(sites.size()) + ": " + site_list);
  const json& q = doc["quorum"];
  row("quorum", "min " + esc(member(q, "min_sites").dump()) + " sites of " +
                    std::to_string(member(q, "expected").is_array() ? member(q, "expected").size() : 0) +
                    " expected, deadline " + esc(member(q, "deadline_seconds").dump()) + " s, then " +
                    esc(str_member(q, "after_deadline")));
  const json& priv = doc["privacy"];
  if (priv.is_object())
    row("privacy", "\u03b5 = " + esc(fmt(num(member(priv, "epsilon")).value_or(NAN))) + " at \u03b4 = " +
                       esc(fmt(num(member(priv, "delta")).value_or(NAN))) + " after " + esc(member(priv, "rounds").dump()) +
                       " rounds (noise multiplier " + esc(fmt(num(member(priv, "noise_multiplier")).value_or(NAN))) +
                       ", clip norm " + esc(fmt(num(member(priv, "clip_norm")).value_or(NAN))) + ")");
  else
    row("privacy", "no differential privacy");
  const std::string ver = doc["verification"].get<std::string>();
  row("verification", ver == "none" ? "<strong>none (--unverified)</strong>"
                                    : "signatures verified with the aggregator key " + esc(str_member(doc, "aggregator_key")) +
                                          (ver == "pinned" ? " (pinned with --aggregator-pub)" : " (named by federation.json)"));
  row("generated", esc(doc["generated"].get<std::string>()) + " by fedseg-report " + esc(kVersion));
  h << "</dl>\n</header>\n";
  if (ver == "none")
    h << "<p class=\"banner warn\">Signatures were not checked (--unverified): nothing on this page is known to come "
         "from the aggregator.</p>\n";
  const json& probs = doc["problems"];
  if (!probs.empty()) {
    h << "<section id=\"problems\" class=\"banner bad\">\n<h2>Files that failed verification (" << probs.size()
      << ")</h2>\n<p>These files were not used.</p>\n<ul>\n";
    for (const auto& p : probs)
      h << "<li><code>" << esc(p["file"].get<std::string>()) << "</code> (" << esc(p["class"].get<std::string>()) << "): "
        << esc(p["message"].get<std::string>()) << "</li>\n";
    h << "</ul>\n</section>\n";
  }

  // Participation.
  h << "<section>\n<h2>Participation</h2>\n<p class=\"note\">From each round's signed report: accepted and rejected "
       "packages and the sites that sent none. Receipts (rounds/R/receipts/SITE.json) are written by the sites and "
       "not signed: they are shown as hints only.</p>\n";
  h << participation_plot(rounds, sites);
  h << "<table class=\"participation\">\n<tr><th>site</th>";
  for (const auto& r : rounds) h << "<th>" << r["round"].get<int64_t>() << "</th>";
  h << "</tr>\n";
  for (const auto& s : sites) {
    h << "<tr><th>" << esc(s) << "</th>";
    for (const auto& r : rounds) {
      const json& x = r["sites"][s];
      const std::string st = str_member(x, "participation");
      h << "<td class=\"" << css_class(st) << "\">" << esc(style_of(st).symbol) << " " << esc(st);
      if (st == "rejected")
        h << " (" << esc(str_member(x, "class")) << ")<br/><small>" << esc(str_member(x, "reason")) << "</small>";
      const std::string hint = st == "accepted" ? std::string() : receipt_hint(member(x, "receipt"));
      if (!hint.empty()) h << "<br/><small class=\"hint\">" << esc(hint) << "</small>";
      h << "</td>";
    }
    h << "</tr>\n";
  }
  h << "</table>\n</section>\n";

  // Dice.
  h << "<section>\n<h2>Dice</h2>\n<p class=\"note\">Each site's mean Dice over its validation cases for round R's "
       "global model, and the federation-wide mean over every case (thick line; the band is \u00b1 one standard "
       "deviation).</p>\n<div class=\"plots\">\n";
  for (const char* g : kRegions) {
    std::vector<Series> ser;
    for (size_t k = 0; k < sites.size(); ++k) {
      Series se = site_series(k, sites[k], n);
      for (size_t i = 0; i < n; ++i) {
        se.y[i] = num(member(member((*agg[i])["sites"][sites[k]], "dice"), g));
        if (se.y[i])
          se.tip[i] = sites[k] + ", round " + std::to_string(agg_rounds[i]) + ": Dice " + g + " " + fmt(*se.y[i]);
      }
      ser.push_back(std::move(se));
    }
    Series f = site_series(0, "federation", n);
    f.colour = kFedColour;
    f.federation = true;
    f.band.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const json& d = member(member((*agg[i]), "dice"), g);
      f.y[i] = num(member(d, "mean"));
      f.band[i] = num(member(d, "std"));
      if (f.y[i])
        f.tip[i] = "federation, round " + std::to_string(agg_rounds[i]) + ": Dice " + g + " mean " + fmt(*f.y[i]) +
                   ", median " + fmt(num(member(d, "median")).value_or(NAN)) + ", std " +
                   fmt(num(member(d, "std")).value_or(NAN)) + ", n " + member(d, "n").dump();
    }
    ser.push_back(std::move(f));
    h << "<div>\n<h3>Dice " << g << "</h3>\n";
    h << line_plot({std::string("dice-") + g, std::string("Dice ") + g + " per round", std::string("Dice ") + g,
                    n == 0 ? "no round aggregated yet" : "no site reported metrics", agg_rounds, 0.0, 1.0, 560},
                   ser);
    h << "</div>\n";
  }
  h << "</div>\n";
  h << "<table class=\"dice\">\n<caption>Federation-wide Dice (each site's values are in the last table)</caption>\n"
       "<tr><th rowspan=\"2\">round</th><th rowspan=\"2\">cases</th>";
  for (const char* g : kRegions) h << "<th colspan=\"4\">Dice " << g << "</th>";
  h << "</tr>\n<tr>";
  for (size_t g = 0; g < 3; ++g) h << "<th>mean</th><th>median</th><th>std</th><th>n</th>";
  h << "</tr>\n";
  for (size_t i = 0; i < n; ++i) {
    h << "<tr><th>" << agg_rounds[i] << "</th>" << cell_num(member(*agg[i], "metrics_cases"), 10);
    for (const char* g : kRegions) {
      const json& d = member(member(*agg[i], "dice"), g);
      h << cell_num(member(d, "mean")) << cell_num(member(d, "median")) << cell_num(member(d, "std"))
        << cell_num(member(d, "n"), 10);
    }
    h << "</tr>\n";
  }
  if (n == 0) h << "<tr><td colspan=\"14\">no round aggregated yet</td></tr>\n";
  h << "</table>\n</section>\n";

  // Update norms.
  {
    std::vector<Series> ser;
    for (size_t k = 0; k < sites.size(); ++k) {
      Series se = site_series(k, sites[k], n);
      for (size_t i = 0; i < n; ++i) {
        const json& x = (*agg[i])["sites"][sites[k]];
        se.y[i] = num(member(x, "norm"));
        if (se.y[i])
          se.tip[i] = sites[k] + ", round " + std::to_string(agg_rounds[i]) + ": update norm " + fmt(*se.y[i]) + ", weight " +
                      fmt(num(member(x, "weight")).value_or(NAN)) + ", cosine " + fmt(num(member(x, "cosine")).value_or(NAN));
      }
      ser.push_back(std::move(se));
    }
    Series f = site_series(0, "aggregate", n);
    f.colour = kFedColour;
    f.federation = true;
    for (size_t i = 0; i < n; ++i) {
      f.y[i] = num(member(*agg[i], "update_norm"));
      if (f.y[i]) f.tip[i] = "aggregate, round " + std::to_string(agg_rounds[i]) + ": update norm " + fmt(*f.y[i]);
    }
    ser.push_back(std::move(f));
    h << "<section>\n<h2>Update norms</h2>\n<p class=\"note\">L2 norm of each accepted update (before clipping) and of "
         "the aggregated update (thick line).</p>\n";
    h << line_plot({"norms", "Update norms per round", "L2 norm", n == 0 ? "no round aggregated yet" : "no accepted update",
                    agg_rounds, 0.0, std::nullopt},
                   ser);
    h << "</section>\n";
  }

  // Training loss.
  {
    std::vector<Series> ser;
    for (size_t k = 0; k < sites.size(); ++k) {
      Series se = site_series(k, sites[k], n);
      for (size_t i = 0; i < n; ++i) {
        const json& x = (*agg[i])["sites"][sites[k]];
        se.y[i] = num(member(x, "loss"));
        if (se.y[i]) {
          std::string curve;
          for (const auto& v : member(x, "epoch_loss")) curve += (curve.empty() ? "" : ", ") + fmt(num(v).value_or(NAN));
          se.tip[i] = sites[k] + ", round " + std::to_string(agg_rounds[i]) + ": last epoch loss " + fmt(*se.y[i]) +
                      " (epochs: " + curve + ")";
        }
      }
      ser.push_back(std::move(se));
    }
    // The federation line: the example-weighted mean of the accepted sites' last losses.
    Series f = site_series(0, "federation", n);
    f.colour = kFedColour;
    f.federation = true;
    for (size_t i = 0; i < n; ++i) {
      double sw = 0, sx = 0;
      for (const auto& s : sites) {
        const json& x = (*agg[i])["sites"][s];
        auto l = num(member(x, "loss"));
        auto w = num(member(x, "num_examples"));
        if (l && w && *w > 0) sw += *w, sx += *w * *l;
      }
      if (sw > 0) {
        f.y[i] = sx / sw;
        f.tip[i] = "federation, round " + std::to_string(agg_rounds[i]) + ": example-weighted mean loss " + fmt(sx / sw);
      }
    }
    ser.push_back(std::move(f));
    h << "<section>\n<h2>Training loss</h2>\n<p class=\"note\">Loss of the last local epoch of each accepted update, as "
         "the site's fedseg-train recorded it (hover a point for every epoch), and its example-weighted mean.</p>\n";
    h << line_plot({"loss", "Training loss per round", "loss (last epoch)",
                    n == 0 ? "no round aggregated yet" : "no update recorded its training loss", agg_rounds, std::nullopt,
                    std::nullopt},
                   ser);
    h << "</section>\n";
  }

  // Everything per site and round, as a table.
  h << "<section>\n<h2>Per site and round</h2>\n<table class=\"detail\">\n<tr><th>round</th><th>site</th><th>state</th>"
       "<th>examples</th><th>weight</th><th>norm</th><th>cosine</th><th>last loss</th><th>Dice WT</th><th>Dice TC</th>"
       "<th>Dice ET</th><th>notes</th></tr>\n";
  for (size_t i = 0; i < n; ++i) {
    const std::string rs = str_member(*agg[i], "status");
    h << "<tr class=\"round\"><th>" << agg_rounds[i] << "</th><th>federation</th><td class=\""
      << (rs == "aggregated" ? "accepted" : rs == "failed verification" ? "rejected" : "not-aggregated") << "\">" << esc(rs)
      << "</td><td></td><td></td>" << cell_num(member(*agg[i], "update_norm")) << "<td></td><td></td>";
    for (const char* g : kRegions) h << cell_num(member(member(member(*agg[i], "dice"), g), "mean"));
    h << "<td>" << esc(str_member(*agg[i], "problem")) << "</td></tr>\n";
    for (const auto& s : sites) {
      const json& x = (*agg[i])["sites"][s];
      const std::string st = str_member(x, "participation");
      h << "<tr><td></td><td>" << esc(s) << "</td><td class=\"" << css_class(st) << "\">" << esc(st) << "</td>"
        << cell_num(member(x, "num_examples"), 10) << cell_num(member(x, "weight")) << cell_num(member(x, "norm"))
        << cell_num(member(x, "cosine")) << cell_num(member(x, "loss"));
      for (const char* g : kRegions) h << cell_num(member(member(x, "dice"), g));
      std::string notes;
      if (st == "rejected") notes = esc(str_member(x, "class") + ": " + str_member(x, "reason"));
      const json& flags = member(x, "flags");
      if (flags.is_array())
        for (const auto& fl : flags)
          if (fl.is_string()) notes += (notes.empty() ? "" : "; ") + esc(fl.get<std::string>());
      const std::string ms = str_member(x, "metrics");
      if (ms == "rejected") notes += (notes.empty() ? "" : "; ") + esc("metrics rejected: " + str_member(x, "metrics_reason"));
      else if (ms == "missing") notes += (notes.empty() ? "" : "; ") + std::string("no metrics");
      const std::string hint = st == "accepted" ? std::string() : receipt_hint(member(x, "receipt"));
      if (!hint.empty()) notes += (notes.empty() ? "" : "<br/>") + ("<span class=\"hint\">" + esc(hint) + "</span>");
      h << "<td>" << notes << "</td></tr>\n";
    }
  }
  if (n == 0) h << "<tr><td colspan=\"12\">no round aggregated yet</td></tr>\n";
  h << "</table>\n</section>\n";
  h << "<footer>fedseg-report " << esc(kVersion) << ", " << esc(doc["generated"].get<std::string>()) << ", from "
    << esc(doc["exchange"].get<std::string>()) << "</footer>\n</body>\n</html>\n";
  return h.str();
}

// ---------------------------------------------------------------- run

int run(const Options& o, const ToolContext& ctx) {
  if (o.out.empty() && !ctx.json()) throw Error(kExitUsage, "nothing to write", {}, "give -o REPORT.html, --json or both");
  if (o.unverified && !o.aggregator_pub.empty()) throw Error(kExitUsage, "--unverified and --aggregator-pub exclude each other");
  if (!is_directory(o.exchange)) throw Error(kExitNoInput, "no exchange folder", o.exchange);
  if (!o.out.empty() && !ctx.force() && path_exists(o.out))
    throw Error(kExitCantCreate, "output exists", o.out, "use --force to replace it");

  Reader rd{o, std::nullopt, {}};
  const std::string fed_path = fed::federation_path(o.exchange);
  fed::Plan plan;
  std::string verification = "none";
  if (o.unverified) {
    log::warn("--unverified: signatures are not checked; the report says so");
    plan = fed::Plan::parse(read_file(fed_path, size_t(16) << 20), fed_path);
  } else {
    // The plan is the root of everything else: if it does not verify there is nothing to report.
    std::optional<crypto::MinisignPublicKey> pinned;
    if (!o.aggregator_pub.empty()) pinned = package::public_key_of(o.aggregator_pub);
    plan = fed::Plan::load(fed_path, pinned);
    rd.key = plan.roster.aggregator().key;
    verification = pinned ? "pinned" : "plan";
  }
  const std::string fed_id = plan.federation();
  std::vector<std::string> sites;
  for (const auto& m : plan.roster.sites()) sites.push_back(m.id);

  // Rounds: 0..LATEST (LATEST's round is open); without a usable LATEST, as far as
  // round folders go.
  std::optional<fed::Latest> latest;
  const std::string lp = fed::latest_path(o.exchange);
  if (!path_exists(lp)) {
    log::warn("no LATEST in " + o.exchange + ": rounds found by their folders");
  } else if (auto text = rd.read_published(lp, "latest", fed_id, std::nullopt)) {
    try {
      latest = fed::Latest::parse(*text, lp);
      if (latest->federation != fed_id)
        throw Error(kExitDataErr, "LATEST names another federation", lp, "'" + latest->federation + "'");
    } catch (const Error& e) {
      rd.add(lp, "malformed", e);
      latest.reset();
    }
  }
  int64_t open_round = -1, last = -1;
  if (latest) {
    open_round = latest->round;
    last = open_round;
  } else {
    while (last < 1000000 && is_directory(fed::round_dir(o.exchange, last + 1))) ++last;
  }

  json rounds = json::array();
  int64_t aggregated = 0;
  json privacy = nullptr;
  for (int64_t r = 0; r <= last; ++r) {
    json e;
    const std::string rp = fed::report_path(o.exchange, r);
    if (r == open_round) {
      e = {{"round", r}, {"status", "open"}, {"report", nullptr}};
    } else if (!path_exists(rp)) {
      e = {{"round", r}, {"status", "not aggregated"}, {"report", nullptr}};
    } else if (auto text = rd.read_published(rp, "report", fed_id, r)) {
      json rep = json::parse(*text, nullptr, false);
      if (!rep.is_object() || member(rep, "fedseg_report") != 1 || str_member(rep, "federation") != fed_id ||
          !member(rep, "round").is_number_integer() || member(rep, "round").get<int64_t>() != r) {
        rd.add(rp, "malformed", Error(kExitDataErr, "not a report of round " + std::to_string(r), rp));
        e = {{"round", r}, {"status", "failed verification"}, {"report", "rounds/" + std::to_string(r) + "/report.json"},
             {"problem", rd.problems.back().message}};
      } else {
        e = round_entry(rep, r, sites);
        ++aggregated;
        if (member(rep, "privacy").is_object()) privacy = rep["privacy"];
      }
    } else {
      e = {{"round", r}, {"status", "failed verification"}, {"report", "rounds/" + std::to_string(r) + "/report.json"},
           {"problem", rd.problems.empty() ? std::string() : rd.problems.back().message}};
    }
    if (!e.contains("sites")) {
      json ss = json::object();
      const std::string st = e["status"] == "open" ? "pending" : e["status"] == "not aggregated" ? "not aggregated" : "unknown";
      for (const auto& s : sites) ss[s] = {{"participation", st}};
      e["sites"] = ss;
    }
    for (const auto& s : sites) e["sites"][s]["receipt"] = read_receipt(o.exchange, r, s, fed_id);
    rounds.push_back(e);
  }

  json problems = json::array();
  for (const auto& p : rd.problems) problems.push_back({{"file", p.file}, {"class", p.cls}, {"message", p.message}});
  json doc{{"exchange", o.exchange},
           {"federation", fed_id},
           {"generated", fed::utc_now_iso()},
           {"verification", verification},
           {"aggregator_key", rd.key ? json(rd.key->key_id_hex()) : json(nullptr)},
           {"latest", latest ? json{{"round", latest->round}, {"global", latest->global}, {"published", latest->published}}
                             : json(nullptr)},
           {"rule", member(plan.aggregation, "rule")},
           {"aggregation", plan.aggregation},
           {"quorum", plan.quorum.to_json()},
           {"sites", sites},
           {"privacy", privacy},
           {"rounds_aggregated", aggregated},
           {"rounds", rounds},
           {"problems", problems},
           {"output", o.out.empty() ? json(nullptr) : json(o.out)}};
  if (!o.out.empty()) {
    write_file_atomic(o.out, render_html(doc, sites), ctx.force(), 0644);
    if (ctx.common().verbose > 0)
      log::info(o.out + ": " + std::to_string(aggregated) + " rounds aggregated, " + std::to_string(problems.size()) +
                " files failed verification");
  }
  if (ctx.json()) ctx.emit_json(doc);
  return problems.empty() ? kExitOk : kExitDataErr;
}

}  // namespace

const ToolDef& report() {
  static const ToolDef def{
      {
          "report",
          "write a round-by-round report of a federation: participation, Dice, update norms, training loss",
          "EXCHANGE_DIR (-o REPORT.html | --json) [--aggregator-pub PUB_DIR | --unverified] [--force]",
          "Reads what the aggregator publishes in EXCHANGE_DIR (a folder, or a local mirror of the exchange made "
          "with fedseg-fetch): federation.json, LATEST and rounds/R/report.json for every round R from 0 to "
          "LATEST's open round (no folder listing is needed); without a usable LATEST, as many rounds as there are "
          "round folders. A round without report.json is shown as not aggregated; LATEST's own round as open.\n\n"
          "Every file is verified before use, like fedseg-verify does: federation.json.minisig with the aggregator "
          "key pinned by --aggregator-pub (the aggregator's public folder or its minisign.pub; the plan must name "
          "the same key), or else with the key federation.json names (which catches damage, not a forged plan); "
          "then LATEST and each report.json with the plan's aggregator key (signature, kind, federation, round, "
          "sha256). If federation.json does not verify, nothing is written (exit 65). Any other file that fails is "
          "listed on the page and in the JSON document, counted, one error line each on stderr, and never used; "
          "the report is still written and the exit status is 65. --unverified reads everything without checking "
          "signatures (for an exchange you made yourself); the page says so.\n\n"
          "REPORT.html is one self-contained file (inline CSS and SVG, no scripts, nothing fetched) with: a "
          "header (federation, rounds, rule, sites, quorum, LATEST, privacy spent (epsilon) when the rule adds "
          "noise, time of generation); a participation matrix, site by round: accepted, rejected (with the "
          "rejection class and reason) or missing, as the signed reports say; Dice for WT, TC and ET per round, "
          "each site's mean over its validation cases and the federation-wide mean (with a band of one standard "
          "deviation) of the sites' evaluations of round R's global model (report.json \"metrics\"); the L2 norm "
          "of each accepted update and of the aggregated update; the loss of the last local epoch each update "
          "recorded; and a table of every value. Hovering a point shows its value. Site receipts "
          "(rounds/R/receipts/SITE.json, pushed by the site round script) are shown for sites that were missing "
          "or failed, labelled as unsigned hints: they are never taken as evidence of participation.\n\n"
          "The output is written atomically and never replaces an existing file without --force. Under cron the "
          "tool prints nothing when all is well (-v prints a summary line).",
          {{"fedseg-report /srv/exchange -o /var/www/fedseg/report.html --aggregator-pub /etc/fedseg/aggregator-pub --force",
            "Rewrite the federation's report page, e.g. from cron after each aggregation."},
           {"fedseg-report mirror --aggregator-pub pub/aggregator --json | jq '.rounds[] | {round, dice: .dice.WT.mean}'",
            "The federation-wide mean Dice of the whole tumour per round, as JSON."},
           {"fedseg-report demo/exchange --unverified -o report.html", "A report of a demo exchange, without checking signatures."}},
          {},
          {{0, "the report was written (and every file verified)"},
           {64, "invalid options (neither -o nor --json, or --unverified with --aggregator-pub)"},
           {65, "a file failed verification (the report is still written and lists it), or federation.json did not "
                "verify (nothing is written)"},
           {66, "the exchange folder, federation.json or the aggregator's public key is missing"},
           {73, "REPORT.html exists (use --force) or cannot be written"}},
          "A document {\"tool\", \"version\", \"exchange\", \"federation\", \"generated\", \"verification\" (pinned | "
          "plan | none), \"aggregator_key\", \"latest\" {round, global, published} | null, \"rule\", "
          "\"aggregation\", \"quorum\", \"sites\", \"privacy\" (the last report's, or null), \"rounds_aggregated\", "
          "\"rounds\" [{round, status (aggregated | not aggregated | open | failed verification), report, problem?, "
          "rule, update_norm, privacy, created, quorum, dice: {WT|TC|ET: {mean, median, std, n}} | null, "
          "metrics_cases, sites: {SITE: {participation (accepted | rejected | missing | not expected | pending | "
          "not aggregated | unknown: the report failed verification), class?, reason?, num_examples?, weight?, norm?, cosine?, clip_factor?, flags?, epoch_loss?, "
          "loss? (last epoch), dice: {WT, TC, ET} | null, metrics (accepted | rejected | missing | null), "
          "metrics_reason?, num_cases?, receipt: null | {file, signed: false, status, step, exit_code, exit_class, "
          "message, finished}}}}], \"problems\" [{file, class, message}], \"output\"}. Values are copied from the "
          "reports as they are (null where a report has none).",
          {"fedseg-aggregate", "fedseg-verify", "fedseg-fetch"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("EXCHANGE_DIR", o->exchange, "the exchange folder (or a local mirror of it)")
            ->required()
            ->type_name("EXCHANGE_DIR");
        app.add_option("-o,--output", o->out, "the HTML report to write")->type_name("REPORT.html");
        app.add_option("--aggregator-pub", o->aggregator_pub,
                       "pinned aggregator public folder (or minisign.pub): federation.json.minisig must verify with it")
            ->type_name("PUB_DIR");
        app.add_flag("--unverified", o->unverified, "do not check signatures (the report says so)");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
