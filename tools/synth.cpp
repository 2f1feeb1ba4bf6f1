// fedseg-synth: writes a synthetic BraTS-layout cohort (four MR contrasts and a label
// map per case) for demos, tests and benchmarks; per-site profiles make sites differ.
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/tool.h"
#include "synth/synth.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string out;
  int64_t cases = 0;
  std::vector<int64_t> shape{240, 240, 155};
  uint64_t seed = 0;
  std::string profile = "standard";
  std::string anatomy;
  std::string naming = "brats2021";
  std::string prefix = "SYNTH";
  int64_t first_index = 0;
};

constexpr int64_t kMaxIndex = 99999;  // five digits

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

// mkdir -p; Error 73 naming the folder that could not be created.
void make_dirs(const std::string& path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) throw_errno(kExitCantCreate, "cannot create folder", cur, errno);
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno(kExitCantCreate, "cannot create folder", path, errno);
  if (!S_ISDIR(st.st_mode)) throw Error(kExitCantCreate, "cannot create folder", path, "a file of that name exists");
}

std::string profile_table() {
  std::string s;
  for (const auto& p : synth::profiles()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%-12s ", p.name.c_str());
    s += buf + p.summary + "\n";
  }
  return s;
}

nlohmann::json profile_json(const synth::Profile& p) {
  return {{"name", p.name},
          {"summary", p.summary},
          {"contrast", p.contrast},
          {"wm_gm_contrast", p.wm_gm},
          {"noise", p.noise},
          {"bias", p.bias},
          {"inplane_mm", p.inplane_mm},
          {"slice_mm", p.slice_mm},
          {"brain_scale", p.brain_scale},
          {"tumour_radius", {p.tumour_min, p.tumour_max}},
          {"oedema_ratio", {p.oedema_min, p.oedema_max}},
          {"intensity_scale", {p.scale_min, p.scale_max}}};
}

struct CaseJob {
  uint64_t index = 0;
  std::string id, dir;
  bool partial = false;  // some of its files exist (an interrupted run)
  // Results.
  bool done = false;
  std::unique_ptr<Error> error;
  uint64_t necrotic = 0, oedema = 0, enhancing = 0;
};

int run(const Options& o, const ToolContext& ctx) {
  if (o.profile == "list") {
    if (ctx.json()) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& p : synth::profiles()) arr.push_back(profile_json(p));
      ctx.emit_json({{"profiles", arr}});
    } else {
      std::cout << profile_table() << std::flush;
    }
    return kExitOk;
  }
  if (o.out.empty()) throw Error(kExitUsage, "-o COHORT_DIR is required");
  if (o.cases < 1) throw Error(kExitUsage, "bad --cases", std::to_string(o.cases), "must be at least 1");
  if (o.shape.size() != 3) throw Error(kExitUsage, "bad --shape", shape_str(o.shape), "give three sizes X,Y,Z");
  for (auto n : o.shape)
    if (n < synth::kMinSize || n > synth::kMaxSize)
      throw Error(kExitUsage, "bad --shape", shape_str(o.shape),
                  "each size must be " + std::to_string(synth::kMinSize) + " to " + std::to_string(synth::kMaxSize));
  const synth::Profile* profile = synth::find_profile(o.profile);
  if (!profile) {
    std::string names;
    for (const auto& p : synth::profiles()) names += (names.empty() ? "" : ", ") + p.name;
    throw Error(kExitUsage, "unknown profile", o.profile, "known profiles: " + names);
  }
  synth::Naming naming;
  if (!synth::parse_naming(o.naming, naming))
    throw Error(kExitUsage, "unknown naming", o.naming, "use brats2021 or brats2023");
  if (o.prefix.empty() || o.prefix.find('/') != std::string::npos || o.prefix[0] == '.')
    throw Error(kExitUsage, "bad --prefix", o.prefix, "must be a non-empty file name not starting with '.'");
  if (o.first_index < 0 || o.first_index + o.cases - 1 > kMaxIndex)
    throw Error(kExitUsage, "bad --first-index", std::to_string(o.first_index),
                "case numbers must stay within 0.." + std::to_string(kMaxIndex));

  std::unique_ptr<synth::Anatomy> anatomy;
  if (!o.anatomy.empty()) {
    anatomy = std::make_unique<synth::Anatomy>(synth::load_anatomy(o.anatomy));
    char buf[200];
    std::snprintf(buf, sizeof buf, "anatomy '%s': class means CSF %.1f, GM %.1f, WM %.1f; brain %.0f x %.0f x %.0f mm",
                  o.anatomy.c_str(), anatomy->csf, anatomy->gm, anatomy->wm, anatomy->extent_mm[0],
                  anatomy->extent_mm[1], anatomy->extent_mm[2]);
    log::debug(buf);
  }

  make_dirs(o.out);
  std::vector<CaseJob> jobs(static_cast<size_t>(o.cases));
  std::vector<size_t> pending;
  for (size_t k = 0; k < jobs.size(); ++k) {
    auto& j = jobs[k];
    j.index = static_cast<uint64_t>(o.first_index) + k;
    j.id = synth::case_id(o.prefix, j.index, naming);
    j.dir = o.out + "/" + j.id;
    size_t present = 0;
    for (const auto& f : synth::case_files(j.id, naming)) present += path_exists(j.dir + "/" + f);
    if (present == 5 && !ctx.force()) continue;
    j.partial = present > 0;
    pending.push_back(k);
  }

  const std::array<int64_t, 3> shape{o.shape[0], o.shape[1], o.shape[2]};
  const auto t0 = std::chrono::steady_clock::now();
  if (!pending.empty()) {
    Progress progress("generating " + std::to_string(pending.size()) + " cases", pending.size());
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t t; (t = next.fetch_add(1)) < pending.size();) {
        CaseJob& j = jobs[pending[t]];
        try {
          synth::CaseParams p;
          p.shape = shape;
          p.seed = o.seed;
          p.index = j.index;
          p.profile = profile;
          p.naming = naming;
          p.anatomy = anatomy.get();
          synth::Case c = synth::generate(p);
          make_dirs(j.dir);
          std::string descrip = "fedseg-synth " + o.profile + " seed " + std::to_string(o.seed) + " case " +
                                std::to_string(j.index) + (anatomy ? " anatomy" : "");
          // An incomplete case is an interrupted run's: its files are regenerated.
          synth::write_case(c, j.dir, j.id, naming, ctx.force() || j.partial, descrip);
          j.necrotic = c.necrotic;
          j.oedema = c.oedema;
          j.enhancing = c.enhancing;
          j.done = true;
        } catch (const Error& e) {
          j.error = std::make_unique<Error>(e);
        } catch (const std::bad_alloc&) {
          j.error = std::make_unique<Error>(kExitSoftware, "cannot generate case", j.id, "out of memory");
        } catch (const std::exception& e) {
          j.error = std::make_unique<Error>(kExitSoftware, "cannot generate case", j.id, e.what());
        }
        progress.add();
      }
    };
    const size_t nthreads = std::min(pending.size(), static_cast<size_t>(std::max(1, ctx.threads())));
    std::vector<std::thread> pool;
    for (size_t i = 1; i < nthreads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  int rc = kExitOk;
  size_t written = 0, failed = 0;
  const std::string et = std::to_string(synth::enhancing_label(naming));
  nlohmann::json jcases = nlohmann::json::array();
  for (auto& j : jobs) {
    nlohmann::json r = {{"id", j.id}, {"index", j.index}, {"dir", j.dir}};
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : synth::case_files(j.id, naming)) files.push_back(j.dir + "/" + f);
    if (j.error) {
      report_error(*j.error);
      if (rc == kExitOk) rc = j.error->code();
      ++failed;
      r["status"] = "failed";
      r["error"] = {{"code", j.error->code()}, {"message", j.error->message()}};
    } else if (j.done) {
      ++written;
      r["status"] = "written";
      r["files"] = files;
      // 1 mm voxels: 1000 voxels = 1 mL.
      r["tumour_voxels"] = {{"1", j.necrotic}, {"2", j.oedema}, {et, j.enhancing}};
      r["tumour_ml"] = {{"1", static_cast<double>(j.necrotic) / 1000.0},
                        {"2", static_cast<double>(j.oedema) / 1000.0},
                        {et, static_cast<double>(j.enhancing) / 1000.0}};
    } else {
      r["status"] = "skipped";
      r["files"] = files;
    }
    jcases.push_back(r);
  }
  const size_t skipped = jobs.size() - written - failed;
  if (ctx.json()) {
    ctx.emit_json({{"cohort", o.out},
                   {"profile", o.profile},
                   {"naming", o.naming},
                   {"seed", o.seed},
                   {"shape", o.shape},
                   {"anatomy", o.anatomy.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.anatomy)},
                   {"written", written},
                   {"skipped", skipped},
                   {"failed", failed},
                   {"cases", jcases}});
  }
  if (written == 0 && failed == 0) {
    log::info("nothing to do: all " + std::to_string(skipped) + " cases are already in '" + o.out +
              "' (--force regenerates them)");
  } else {
    char buf[64];
    std::snprintf(buf, sizeof buf, " in %.1f s", secs);
    std::string line = "wrote " + std::to_string(written) + " case" + (written == 1 ? "" : "s") + " (" + o.profile +
                       ", " + shape_str(o.shape) + ", seed " + std::to_string(o.seed) + ") to '" + o.out + "'" + buf;
    if (skipped) line += ", skipped " + std::to_string(skipped) + " already complete";
    if (failed) line += ", " + std::to_string(failed) + " failed";
    log::info(line);
  }
  return rc;
}

}  // namespace

const ToolDef& synth() {
  static const ToolDef def{
      {
          "synth",
          "generate a synthetic BraTS-layout cohort of brain tumour cases",
          "-o COHORT_DIR --cases N [--shape X,Y,Z] [--seed S] [--profile NAME] [--anatomy T1.nii.gz]",
          "Writes N cases into COHORT_DIR, each in its own folder COHORT_DIR/ID with four skull-stripped MR "
          "contrasts and a label map, laid out as the BraTS challenge data: ID_t1, ID_t1ce, ID_t2, ID_flair and "
          "ID_seg .nii.gz (labels 0 background, 1 necrotic core, 2 oedema, 4 enhancing tumour), or with "
          "--naming brats2023 ID-t1n, ID-t1c, ID-t2w, ID-t2f and ID-seg .nii.gz with label 3 for enhancing "
          "tumour. Case IDs are PREFIX_NNNNN (brats2023: PREFIX-NNNNN-000), numbered from --first-index. "
          "Images are int16, labels uint8, on a 1 mm grid in LPS voxel order like BraTS (affine diagonal "
          "-1, -1, 1), with sform and qform set; voxels outside the brain are exactly 0.\n\n"
          "Each case is a brain (an ellipsoid with a smoothly deformed surface, folded cortical grey matter, "
          "white matter, sulcal CSF, a midline fissure, lateral ventricles and deep grey matter) with a tumour: "
          "a necrotic core (dark on T1ce, bright on T2) inside an enhancing rim (bright on T1ce) inside oedema "
          "(bright on T2 and FLAIR) that reaches further along white matter. Sizes, positions, shapes, "
          "contrasts, the multiplicative bias field and the Rician noise are drawn from the seed and the case "
          "number, so a case is the same whatever --threads, --first-index of the other cases, or how many "
          "cases are made; the same options give the same bytes.\n\n"
          "With --anatomy, a real skull-stripped T1 brain (for example ch2bet.nii.gz from Debian's mricron-data "
          "package) replaces the phantom: it is resampled trilinearly onto the grid (shrunk to fit when the "
          "grid is smaller than the brain, never enlarged, with a small random rotation and scaling per case), "
          "split into CSF, grey and white matter by intensity (3-class k-means), and the four contrasts are "
          "derived from those classes while keeping the image's own texture.\n\n"
          "A profile models one site's scanner and patients, so that federated sites differ (non-IID): tissue "
          "contrast, noise, bias field strength, acquisition resolution (simulated as blur on the 1 mm grid, "
          "as after resampling a thick-slice scan), brain size and the distribution of tumour and oedema sizes. "
          "--profile list prints them:\n\n" +
              profile_table() +
              "\nA case is complete when its five files exist; complete cases are skipped (rerunning does nothing "
              "and exits 0), --force regenerates them. A case with only some of its files (an interrupted run) is "
              "regenerated. Every file is written atomically. A case that fails is reported and skipped; the "
              "others are still written, and the exit status is that of the first failure.",
          {{"fedseg-synth -o demo --cases 20 --seed 1", "Twenty 240x240x155 cases with the standard profile."},
           {"fedseg-synth -o site2 --cases 30 --seed 2 --profile lowfield",
            "A second site with an older scanner, for a non-IID federation."},
           {"fedseg-synth -o tiny --cases 3 --shape 32,32,24 --seed 7", "A small cohort for tests."},
           {"fedseg-synth -o real --cases 5 --seed 3 --anatomy $(dpkg -L mricron-data | grep /ch2bet.nii.gz)",
            "Tumours in a real brain."},
           {"fedseg-synth --profile list", "List the site profiles."}},
          {},
          {{64, "bad options: a shape outside 16..1024 per axis, an unknown profile or naming, too many cases for "
                "five-digit IDs"},
           {65, "the --anatomy file is not a readable NIfTI image or holds no usable brain"},
           {66, "the --anatomy file is missing"},
           {73, "the cohort folder, a case folder or a file cannot be created"},
           {74, "an I/O error while writing"}},
          "A document {\"tool\", \"version\", \"cohort\", \"profile\", \"naming\", \"seed\", \"shape\", "
          "\"anatomy\", \"written\", \"skipped\", \"failed\", \"cases\": [...]}. Each case: id, index, dir, status "
          "(written, skipped or failed), files; when written, tumour_voxels and tumour_ml per label (\"1\", \"2\" "
          "and \"4\" or \"3\"); when failed, error {code, message}. With --profile list: {\"profiles\": [...]} "
          "with each profile's parameters.",
          {"fedseg-prep", "fedseg-inspect"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("-o,--output", o->out, "cohort folder to write (created if missing)")->type_name("COHORT_DIR");
        app.add_option("--cases", o->cases, "number of cases to generate")->type_name("N");
        app.add_option("--shape", o->shape, "grid size in voxels (1 mm)")
            ->delimiter(',')
            ->expected(3)
            ->type_name("X,Y,Z")
            ->capture_default_str();
        app.add_option("--seed", o->seed, "random seed (0 to 2^64-1)")
            ->type_name("S")
            ->check(CLI::Validator(
                [](std::string& v) {
                  return !v.empty() && v.find_first_not_of("0123456789") == std::string::npos
                             ? std::string()
                             : std::string("must be a whole number from 0 to 2^64-1");
                },
                "", "seed"))
            ->capture_default_str();
        app.add_option("--profile", o->profile, "site profile ('list' lists them)")
            ->type_name("NAME")
            ->capture_default_str();
        app.add_option("--anatomy", o->anatomy, "real skull-stripped T1 brain to use instead of the phantom")
            ->type_name("T1.nii.gz");
        app.add_option("--naming", o->naming, "file names and labels: brats2021 or brats2023")
            ->type_name("SCHEME")
            ->capture_default_str();
        app.add_option("--prefix", o->prefix, "case ID prefix")->capture_default_str();
        app.add_option("--first-index", o->first_index, "number of the first case")->type_name("N")->capture_default_str();
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
