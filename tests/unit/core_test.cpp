#include <gtest/gtest.h>

#include "test_util.h"
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/half.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/tool.h"

namespace fedseg {
namespace {

using fedseg::test::error_code;
using fedseg::test::tmpdir;

int count_prefix(const std::string& dir, const std::string& prefix) {
  int n = 0;
  std::string cmd;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d))
      if (std::string(e->d_name).rfind(prefix, 0) == 0) ++n;
    ::closedir(d);
  }
  return n;
}

TEST(Error, MessageFormatAndContext) {
  Error e(kExitDataErr, "cannot read", "a.h5", "truncated");
  EXPECT_EQ(e.message(), "cannot read 'a.h5': truncated");
  EXPECT_EQ(e.code(), 65);
  e.add_context("while checking x");
  ASSERT_EQ(e.context().size(), 1u);
  EXPECT_EQ(Error(kExitUsage, "bad option").message(), "bad option");
}

TEST(Error, ExitCodeTableIsSysexits) {
  std::set<int> codes;
  int last = -1;
  for (const auto& e : exit_code_table()) {
    EXPECT_GT(e.code, last);
    last = e.code;
    codes.insert(e.code);
  }
  EXPECT_EQ(codes, (std::set<int>{0, 64, 65, 66, 69, 70, 73, 74, 75, 76, 77, 78}));
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(std::string("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Incremental equals one-shot across a buffer boundary.
  std::string big(3 << 20, 'x');
  Sha256 h;
  h.update(big.data(), 1000);
  h.update(big.data() + 1000, big.size() - 1000);
  EXPECT_EQ(h.hex(), sha256_hex(big));
}

TEST(Sha256, File) {
  std::string dir = tmpdir();
  std::string p = dir + "/f";
  std::ofstream(p) << "abc";
  EXPECT_EQ(sha256_file(p), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  try {
    sha256_file(dir + "/missing");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitNoInput);
  }
}

TEST(AtomicFile, CommitWritesAndLeavesNoTemp) {
  std::string dir = tmpdir();
  std::string p = dir + "/out.bin";
  {
    AtomicFile f(p, false);
    f.write("hello", 5);
    EXPECT_FALSE(path_exists(p));
    EXPECT_TRUE(path_exists(f.temp_path()));
    f.commit();
  }
  EXPECT_EQ(read_file(p), "hello");
  EXPECT_EQ(count_prefix(dir, ".out.bin.fedseg-tmp-"), 0);
}

TEST(AtomicFile, NoCommitRemovesTemp) {
  std::string dir = tmpdir();
  std::string p = dir + "/out.bin";
  {
    AtomicFile f(p, false);
    f.write("partial", 7);
  }
  EXPECT_FALSE(path_exists(p));
  EXPECT_EQ(count_prefix(dir, ".out.bin.fedseg-tmp-"), 0);
}

TEST(AtomicFile, RefusesToClobberWithoutOverwrite) {
  std::string dir = tmpdir();
  std::string p = dir + "/out.bin";
  write_file_atomic(p, "one", false);
  try {
    write_file_atomic(p, "two", false);
    FAIL() << "clobbered";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCantCreate);
  }
  EXPECT_EQ(read_file(p), "one");
  write_file_atomic(p, "two", true);
  EXPECT_EQ(read_file(p), "two");
}

TEST(AtomicFile, NoReplaceRaceIsDetectedAtCommit) {
  std::string dir = tmpdir();
  std::string p = dir + "/out.bin";
  AtomicFile f(p, false);
  f.write("mine", 4);
  write_file_atomic(p, "theirs", false);  // another writer wins meanwhile
  try {
    f.commit();
    FAIL() << "replaced another writer's file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCantCreate);
  }
  EXPECT_EQ(read_file(p), "theirs");
}

TEST(AtomicFile, StaleTempOfDeadWriterIsRemoved) {
  std::string dir = tmpdir();
  std::string p = dir + "/out.bin";
  // A child creates a temp file and dies without cleaning up (as under SIGKILL).
  pid_t pid = ::fork();
  if (pid == 0) {
    auto* f = new AtomicFile(p, false);  // never destroyed
    f->write("x", 1);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_EQ(count_prefix(dir, ".out.bin.fedseg-tmp-"), 1);
  EXPECT_EQ(AtomicFile::remove_stale(p), 1);
  EXPECT_EQ(count_prefix(dir, ".out.bin.fedseg-tmp-"), 0);
}

TEST(AtomicFile, StaleTempOfReusedPidIsRemoved) {
  std::string dir = tmpdir();
  std::string p = dir + "/out.bin";
  // A temp file named for this (live) process: its own while it is being written...
  AtomicFile* mine = new AtomicFile(p, false);
  mine->write("x", 1);
  EXPECT_EQ(AtomicFile::remove_stale(p), 0);
  ASSERT_EQ(count_prefix(dir, ".out.bin.fedseg-tmp-"), 1);
  // ...but last written before this process started: a dead writer's, its pid reused.
  struct timeval old[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(::utimes(mine->temp_path().c_str(), old), 0);
  EXPECT_EQ(AtomicFile::remove_stale(p), 1);
  EXPECT_EQ(count_prefix(dir, ".out.bin.fedseg-tmp-"), 0);
  mine->discard();
  delete mine;
}

TEST(AtomicFile, ReadFileErrors) {
  std::string dir = tmpdir();
  try {
    read_file(dir + "/nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitNoInput);
    EXPECT_NE(e.message().find(dir + "/nope"), std::string::npos);
  }
  write_file_atomic(dir + "/big", std::string(100, 'a'), false);
  try {
    read_file(dir + "/big", 10);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitDataErr);
  }
}

TEST(Half, BulkConversionEqualsScalarRounding) {
  std::vector<float> v;
  for (uint32_t bits = 0; bits < 0xffffffffu - 4093; bits += 4093) {  // a sweep over every exponent
    float f;
    std::memcpy(&f, &bits, 4);
    v.push_back(f);
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 5.960464477539063e-08f, 2.980232238769531e-08f,
                  2.9802326e-08f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, INFINITY, -INFINITY})
    v.push_back(f);
  std::vector<uint16_t> bulk(v.size());
  floats_to_halves(v.data(), bulk.data(), v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) {
      EXPECT_EQ(bulk[i] & 0x7c00, 0x7c00);
      EXPECT_NE(bulk[i] & 0x3ff, 0);
      continue;
    }
    ASSERT_EQ(bulk[i], float_to_half(v[i])) << v[i];
    EXPECT_EQ(half_to_float(bulk[i]), half_to_float(float_to_half(v[i])));
  }
  EXPECT_EQ(float_to_half(1.0f + 1.0f / 2048), 0x3c00);  // tie to even
  EXPECT_EQ(float_to_half(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);
}

TEST(Progress, Format) {
  EXPECT_EQ(Progress::format("reading", 0, 10, Progress::Unit::items, 0.0), "reading   0% 0/10");
  std::string s = Progress::format("reading", 5, 10, Progress::Unit::items, 10.0);
  EXPECT_EQ(s, "reading  50% 5/10 0/s ETA 0:10") << s;
  EXPECT_EQ(Progress::format("x", 2000000, 0, Progress::Unit::bytes, 0.1), "x 2.0 MB");
  EXPECT_EQ(human_duration(3725), "1:02:05");
}

// A tool definition for exercising the shared main.
const ToolDef& dummy_tool() {
  static const ToolDef def{
      {"dummy", "a test tool", "[ARG]", "Does nothing.", {}, {}, {{65, "the argument was 'bad'"}}, "", {}},
      [](CLI::App& app) -> RunFn {
        auto arg = std::make_shared<std::string>();
        app.add_option("ARG", *arg, "what to do");
        return [arg](const ToolContext& ctx) -> int {
          if (*arg == "bad") throw Error(kExitDataErr, "bad argument", *arg, "it is bad");
          if (*arg == "bug") throw std::runtime_error("oops");
          if (*arg == "threads") return ctx.threads() >= 1 ? 0 : 1;
          return 0;
        };
      },
  };
  return def;
}

TEST(ToolMain, ExitCodes) {
  EXPECT_EQ(run_tool(dummy_tool(), {}), 0);
  EXPECT_EQ(run_tool(dummy_tool(), {"--help"}), 0);
  EXPECT_EQ(run_tool(dummy_tool(), {"--version"}), 0);
  EXPECT_EQ(run_tool(dummy_tool(), {"--no-such-flag"}), kExitUsage);
  EXPECT_EQ(run_tool(dummy_tool(), {"--threads", "x"}), kExitUsage);
  EXPECT_EQ(run_tool(dummy_tool(), {"a", "b"}), kExitUsage);
  EXPECT_EQ(run_tool(dummy_tool(), {"bad"}), kExitDataErr);
  EXPECT_EQ(run_tool(dummy_tool(), {"bug"}), kExitSoftware);
  EXPECT_EQ(run_tool(dummy_tool(), {"threads"}), 0);
  EXPECT_EQ(run_tool(dummy_tool(), {"-q", "--json", "--force", "--no-progress", "-v", "--threads", "2", "x"}), 0);
}

TEST(ToolMain, ConfigFile) {
  std::string dir = tmpdir();
  std::ofstream(dir + "/c.ini") << "threads = 3\nquiet = true\n";
  EXPECT_EQ(run_tool(dummy_tool(), {"--config", dir + "/c.ini", "x"}), 0);
  std::ofstream(dir + "/bad.ini") << "no_such_option = 1\n";
  EXPECT_EQ(run_tool(dummy_tool(), {"--config", dir + "/bad.ini", "x"}), kExitConfig);
  EXPECT_EQ(run_tool(dummy_tool(), {"--config", dir + "/missing.ini", "x"}), kExitNoInput);
}

TEST(ToolMain, ManPageAndJsonFromOneDefinition) {
  std::string man = man_page(dummy_tool());
  EXPECT_NE(man.find(".TH FEDSEG-DUMMY 1"), std::string::npos);
  EXPECT_NE(man.find("\\-\\-threads N"), std::string::npos);
  EXPECT_NE(man.find("the argument was 'bad'"), std::string::npos);
  EXPECT_NE(man.find(".SH EXIT STATUS"), std::string::npos);
  auto j = help_json(dummy_tool());
  EXPECT_EQ(j["tool"], "fedseg-dummy");
  bool has_threads = false, has_arg = false;
  for (const auto& o : j["options"]) {
    has_threads |= o["name"] == "--threads N";
    has_arg |= o["name"] == "ARG" && o["positional"] == true;
  }
  EXPECT_TRUE(has_threads);
  EXPECT_TRUE(has_arg);
}

}  // namespace
}  // namespace fedseg
