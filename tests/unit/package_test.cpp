// fedseg::package: the trusted comment's strict grammar, the roster reader, pack
// + check + unpack round trips across block and chunk boundaries (with and
// without zstd), and the aggregator entry point's fail-closed classes (replay by
// (site, round) and by nonce, base, federation, wrong identity), each leaving no
// plaintext behind; a valid .minisig beside other ciphertext fails as signature
// whatever decryption made of it, with every thread count.
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "core/atomic_file.h"
#include "core/sha256.h"
#include "crypto/age.h"
#include "crypto/minisign.h"
#include "h5/tensor_file.h"
#include "package/package.h"
#include "package/roster.h"
#include "test_util.h"

namespace fedseg::package {
namespace {

using fedseg::test::error_code;
using fedseg::test::tmpdir;

const std::string kBase(64, 'b');

Fields sample() {
  Fields f;
  f.federation = "fed1";
  f.round = 7;
  f.site = "hospital-a";
  f.kind = "update";
  f.base = kBase;
  f.plain = std::string(64, 'a');
  f.enc = "zstd+age";
  f.ts = 1700000000;
  f.nonce = std::string(32, '0');
  return f;
}

FailClass class_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const PackageError& e) {
    EXPECT_EQ(e.code(), kExitDataErr);
    return e.fail_class();
  }
  ADD_FAILURE() << "no PackageError";
  return FailClass::size;
}

TEST(PackageFields, RoundTripAndCanonical) {
  Fields f = sample();
  std::string c = f.comment();
  EXPECT_EQ(c, "fedseg1 fed=fed1 round=7 site=hospital-a kind=update base=" + kBase + " plain=" + std::string(64, 'a') +
                   " enc=zstd+age ts=1700000000 nonce=" + std::string(32, '0'));
  Fields g = Fields::parse(c, "x");
  EXPECT_EQ(g.comment(), c);
  EXPECT_EQ(g.round, 7);
  EXPECT_EQ(g.to_json()["site"], "hospital-a");
}

TEST(PackageFields, StrictGrammar) {
  const std::string c = sample().comment();
  auto bad = [&](const std::string& from, const std::string& to) {
    std::string s = c;
    size_t p = s.find(from);
    ASSERT_NE(p, std::string::npos) << from;
    s.replace(p, from.size(), to);
    EXPECT_EQ(class_of([&] { Fields::parse(s, "x"); }), FailClass::fields) << s;
  };
  bad("fedseg1 ", "fedseg2 ");
  bad(" round=7", " round=07");
  bad(" round=7", " round=-7");
  bad(" round=7", " round=7 round=7");
  bad(" nonce=", "  nonce=");
  bad(" nonce=" + std::string(32, '0'), " nonce=" + std::string(31, '0'));
  bad(" nonce=" + std::string(32, '0'), " nonce=" + std::string(32, 'A'));
  bad("kind=update", "kind=dataset");
  bad("enc=zstd+age", "enc=gzip");
  bad("site=hospital-a", "site=-");           // only a global model has no site
  bad("site=hospital-a", "site=hospital a");
  bad("fed=fed1", "fed=");
  bad(" ts=1700000000", "");                  // missing field
  bad(" ts=1700000000", " ts=1700000000 x=1");  // unknown field
  bad("base=" + kBase, "base=" + std::string(64, 'B'));
  EXPECT_EQ(class_of([&] { Fields::parse(c + " ", "x"); }), FailClass::fields);
  EXPECT_EQ(class_of([&] { Fields::parse("", "x"); }), FailClass::fields);
  Fields g = sample();
  g.kind = "global";
  g.site = "-";
  g.base = "-";
  EXPECT_NO_THROW(Fields::parse(g.comment(), "x"));
}

struct Ids {
  crypto::AgeIdentity age = crypto::AgeIdentity::generate();
  crypto::MinisignSecretKey sign = crypto::MinisignSecretKey::generate();
};

nlohmann::json member(const Ids& i) {
  return {{"age_recipient", i.age.recipient().to_string()}, {"minisign_public_key", i.sign.public_key().to_base64()}};
}

struct Federation {
  Ids agg, a, b;
  std::string dir = tmpdir();
  nlohmann::json doc() const {
    nlohmann::json sa = member(a), sb = member(b);
    sa["id"] = "hospital-a";
    sb["id"] = "hospital-b";
    return {{"fedseg_federation", 1}, {"federation", "fed1"}, {"aggregator", member(agg)}, {"sites", {sa, sb}},
            {"plan", {{"rounds", 3}}}};
  }
  Roster roster() const { return Roster::parse(doc().dump(), "federation.json"); }
  // An update of `bytes` bytes of tensor data (uncompressed HDF5, so sizes cross blocks).
  std::string update(const std::string& name, const std::string& site, int64_t round, size_t floats) {
    std::string path = dir + "/" + name;
    h5::Output out(path, "update", "test", "{}", true);
    out.file().set_attr("/", "fedseg_format", h5::kFormatVersion);
    out.file().set_attr("/", "federation", std::string("fed1"));
    out.file().set_attr("/", "round", round);
    out.file().set_attr("/", "site", site);
    out.file().set_attr("/", "base_sha256", kBase);
    std::vector<float> v(floats);
    for (size_t i = 0; i < floats; ++i) v[i] = static_cast<float>((i * 2654435761u) % 1000) * 0.001f;
    h5::WriteOptions wo;
    wo.compress = false;
    if (floats) out.file().write("delta/w", h5::Shape{floats}, v.data(), wo);
    out.commit();
    return path;
  }
};

bool has_plaintext(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("out", 0) == 0 || n.find("fedseg-tmp") != std::string::npos) found = true;
  }
  ::closedir(d);
  return found;
}

TEST(PackageRoster, ParseAndLookup) {
  Federation fed;
  Roster r = fed.roster();
  EXPECT_EQ(r.federation(), "fed1");
  ASSERT_EQ(r.sites().size(), 2u);
  ASSERT_NE(r.by_key_id(fed.b.sign.key_id()), nullptr);
  EXPECT_EQ(r.by_key_id(fed.b.sign.key_id())->id, "hospital-b");
  EXPECT_EQ(r.by_key_id(fed.agg.sign.key_id())->id, "-");
  EXPECT_EQ(r.by_key_id(crypto::MinisignSecretKey::generate().key_id()), nullptr);

  auto broken = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = fed.doc();
    edit(j);
    return error_code([&] { Roster::parse(j.dump(), "f.json"); });
  };
  EXPECT_EQ(broken([](nlohmann::json& j) { j["fedseg_federation"] = 2; }), 65);
  EXPECT_EQ(broken([](nlohmann::json& j) { j.erase("aggregator"); }), 65);
  EXPECT_EQ(broken([](nlohmann::json& j) { j["sites"][1]["id"] = "hospital-a"; }), 65);
  EXPECT_EQ(broken([&](nlohmann::json& j) { j["sites"][1]["minisign_public_key"] = j["sites"][0]["minisign_public_key"]; }), 65);
  EXPECT_EQ(broken([&](nlohmann::json& j) { j["sites"][1]["minisign_public_key"] = j["aggregator"]["minisign_public_key"]; }), 65);
  EXPECT_EQ(broken([](nlohmann::json& j) { j["sites"][0]["age_recipient"] = "age1nope"; }), 65);
  EXPECT_EQ(broken([](nlohmann::json& j) { j["federation"] = "bad id"; }), 65);
  EXPECT_EQ(error_code([] { Roster::parse("not json", "f.json"); }), 65);
}

TEST(PackageRoster, PinnedAggregatorKey) {
  Federation fed;
  std::string path = fed.dir + "/federation.json";
  std::string text = fed.doc().dump();
  write_file_atomic(path, text, true);
  EXPECT_EQ(error_code([&] { Roster::load(path, fed.agg.sign.public_key()); }), 66);  // no .minisig
  write_file_atomic(path + ".minisig", crypto::sign_file(fed.agg.sign, path, "roster"), true);
  EXPECT_NO_THROW(Roster::load(path, fed.agg.sign.public_key()));
  EXPECT_EQ(error_code([&] { Roster::load(path, fed.a.sign.public_key()); }), 65);
  // Signed by the pinned key, but naming another aggregator.
  nlohmann::json j = fed.doc();
  j["aggregator"] = member(fed.b);
  write_file_atomic(path, j.dump(), true);
  write_file_atomic(path + ".minisig", crypto::sign_file(fed.agg.sign, path, "roster"), true);
  EXPECT_EQ(error_code([&] { Roster::load(path, fed.agg.sign.public_key()); }), 65);
}

TEST(PackageRoundTrip, SizesAcrossBlocksWithAndWithoutZstd) {
  Federation fed;
  // HDF5 overhead + 0 bytes, ~64 KiB (age chunk), ~1 MiB (pipeline block), ~3.3 MiB.
  for (size_t floats : {size_t(0), size_t(16384), size_t(262144), size_t(262145), size_t(870000)}) {
    std::string in = fed.update("u" + std::to_string(floats) + ".h5", "hospital-a", 2, floats);
    for (int level : {0, 1, 3}) {
      {
        PackOptions o;
        o.input = in;
        o.output = fed.dir + "/p.age";
        o.recipients = {fed.agg.age.recipient(), fed.b.age.recipient()};
        o.zstd_level = level;
        o.overwrite = true;
        PackResult r = pack(o, fed.a.sign);
        EXPECT_EQ(r.fields.plain, sha256_file(in));
        EXPECT_EQ(r.fields.enc, level ? "zstd+age" : "age");
        Expect ex;
        ex.round = 2;
        std::string out = fed.dir + "/out.h5";
        Checked c = verify_and_unpack(o.output, fed.roster(), {fed.b.age}, ex, out, true);
        EXPECT_EQ(c.signer, "hospital-a");
        EXPECT_EQ(sha256_file(out), r.fields.plain) << floats << " " << level;
        for (int threads : {0, 1}) {  // into memory: the same bytes, the file's image opens
          RawVector<uint8_t> plain;
          plain.assign(3, 7);  // emptied first
          Checked m = verify_and_unpack(o.output, fed.roster(), {fed.b.age}, ex, plain, threads);
          EXPECT_EQ(m.plain_bytes, plain.size());
          EXPECT_EQ(sha256_hex(plain.data(), plain.size()), r.fields.plain) << floats << " " << level << " " << threads;
          EXPECT_EQ(h5::File::open_image(plain.data(), plain.size(), "image", {"update", true}).kind(), "update");
        }
        // The standard decryption of the same file (no zstd) gives the same bytes.
        if (level == 0) {
          crypto::FileSource src(o.output);
          crypto::StringSink sink;
          crypto::age_decrypt({fed.agg.age}, src, sink);
          EXPECT_EQ(sha256_hex(sink.data), r.fields.plain);
        }
      }
    }
  }
}

TEST(PackageAggregator, FailClosedClasses) {
  Federation fed;
  std::string in = fed.update("a.h5", "hospital-a", 3, 50000);
  PackOptions o;
  o.input = in;
  o.output = fed.dir + "/a.age";
  o.recipients = {fed.agg.age.recipient()};
  o.zstd_level = 3;
  PackResult r = pack(o, fed.a.sign);
  const std::string out = fed.dir + "/out.h5";
  // Into a file, and into memory (the aggregator's way) with and without threads: the
  // same class each time.
  auto run = [&](Expect ex, std::vector<crypto::AgeIdentity> ids) {
    FailClass to_file = class_of([&] { verify_and_unpack(o.output, fed.roster(), ids, ex, out); });
    for (int threads : {0, 1}) {
      RawVector<uint8_t> plain;
      EXPECT_EQ(class_of([&] { verify_and_unpack(o.output, fed.roster(), ids, ex, plain, threads); }), to_file)
          << "in memory, threads " << threads;
    }
    return to_file;
  };
  Expect ok;
  ok.round = 3;
  ok.base = kBase;
  {
    Expect ex = ok;
    ex.accepted = {{"hospital-a", 3}};
    EXPECT_EQ(run(ex, {fed.agg.age}), FailClass::fields);
  }
  {
    Expect ex = ok;
    ex.nonces = {r.fields.nonce};
    EXPECT_EQ(run(ex, {fed.agg.age}), FailClass::fields);
  }
  {
    Expect ex = ok;
    ex.round = 4;
    EXPECT_EQ(run(ex, {fed.agg.age}), FailClass::fields);
  }
  {
    Expect ex = ok;
    ex.base = std::string(64, 'c');
    EXPECT_EQ(run(ex, {fed.agg.age}), FailClass::fields);
  }
  {
    Expect ex = ok;
    ex.federation = "fed2";
    EXPECT_EQ(run(ex, {fed.agg.age}), FailClass::fields);
  }
  {
    Expect ex = ok;
    ex.max_size = 100;
    EXPECT_EQ(run(ex, {fed.agg.age}), FailClass::size);
  }
  {
    Expect ex = ok;
    ex.max_plain_size = 1000;
    EXPECT_EQ(run(ex, {fed.agg.age}), FailClass::size);
  }
  EXPECT_EQ(run(ok, {fed.b.age}), FailClass::decrypt);
  EXPECT_FALSE(has_plaintext(fed.dir));
  // The aggregator key signs global models only; a site's key cannot claim another site.
  o.overwrite = true;
  pack(o, fed.agg.sign);
  EXPECT_EQ(run(ok, {fed.agg.age}), FailClass::fields);
  pack(o, fed.b.sign);
  EXPECT_EQ(run(ok, {fed.agg.age}), FailClass::fields);
  // An unknown key.
  pack(o, crypto::MinisignSecretKey::generate());
  EXPECT_EQ(run(ok, {fed.agg.age}), FailClass::signature);
  EXPECT_FALSE(has_plaintext(fed.dir));
  // And the good package goes through, once.
  pack(o, fed.a.sign);
  EXPECT_NO_THROW(verify_and_unpack(o.output, fed.roster(), {fed.agg.age}, ok, out));
  EXPECT_EQ(sha256_file(out), sha256_file(in));
  // Hash: another update of the same site, re-signed with the first one's fields (a
  // valid signature, fields and ciphertext; the plaintext is not the signed one).
  {
    std::string other = fed.update("b.h5", "hospital-a", 3, 50001);
    PackOptions p2 = o;
    p2.input = other;
    p2.output = fed.dir + "/b.age";
    pack(p2, fed.a.sign);
    std::rename((fed.dir + "/b.age").c_str(), o.output.c_str());
    write_file_atomic(o.output + ".minisig", crypto::sign_file(fed.a.sign, o.output, r.fields.comment()), true);
    std::remove(out.c_str());
    EXPECT_EQ(run(ok, {fed.agg.age}), FailClass::hash);
    EXPECT_FALSE(has_plaintext(fed.dir));
  }
}

TEST(PackageAggregator, ChangedAfterCheckIsRejected) {
  Federation fed;
  std::string in = fed.update("a.h5", "hospital-a", 3, 1000);
  PackOptions o;
  o.input = in;
  o.output = fed.dir + "/a.age";
  o.recipients = {fed.agg.age.recipient()};
  pack(o, fed.a.sign);
  Checked c = check(o.output, {}, Signers::from_roster(fed.roster()), {});
  // Another valid age file (anyone can encrypt to the aggregator) swapped in after the check.
  std::string swapped = read_file(o.output);
  {
    crypto::StringSink sink;
    crypto::StringSource s2(swapped);
    crypto::age_encrypt({fed.agg.age.recipient()}, s2, sink);
    write_file_atomic(o.output, sink.data, true);
  }
  std::string out = fed.dir + "/out.h5";
  EXPECT_EQ(class_of([&] { unpack(c, {fed.agg.age}, out, {}, false); }), FailClass::signature);
  EXPECT_FALSE(has_plaintext(fed.dir));
}

TEST(PackageAggregator, ValidCommentWithOtherCiphertextIsSignature) {
  // The trusted comment is checked before the .age is read, then the file signature
  // and decryption run together: a valid .minisig beside other ciphertext must fail
  // as signature whatever decryption made of it, leaving nothing behind. Without
  // zstd the .age spans several pipeline blocks.
  Federation fed;
  std::string in = fed.update("a.h5", "hospital-a", 3, 700000);
  const std::string out = fed.dir + "/out.h5";
  for (int level : {0, 3}) {
    PackOptions o;
    o.input = in;
    o.output = fed.dir + "/a.age";
    o.recipients = {fed.agg.age.recipient()};
    o.zstd_level = level;
    o.overwrite = true;
    pack(o, fed.a.sign);
    PackOptions o2 = o;
    o2.output = fed.dir + "/again.age";  // the same plaintext, other ciphertext
    pack(o2, fed.a.sign);
    const std::string sig = read_file(o.output + ".minisig");
    const std::string real = read_file(o.output);
    std::string junk(200000, 'x');
    for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>(i * 2654435761u >> 13);
    for (const std::string& age : {read_file(o2.output), junk, real.substr(0, real.size() - 1000)}) {
      write_file_atomic(fed.dir + "/t.age", age, true);
      write_file_atomic(fed.dir + "/t.age.minisig", sig, true);
      for (int threads : {0, 1, 2, 4}) {
        EXPECT_EQ(class_of([&] {
                    verify_and_unpack(fed.dir + "/t.age", fed.roster(), {fed.agg.age}, {}, out, false, threads);
                  }),
                  FailClass::signature)
            << level << " " << threads;
        EXPECT_FALSE(has_plaintext(fed.dir)) << threads;
        // A wrong identity as well: decryption fails at once, the signature still decides.
        EXPECT_EQ(class_of([&] {
                    check_and_unpack(fed.dir + "/t.age", {}, Signers::single(fed.a.sign.public_key()), {}, {fed.b.age},
                                     out, false, threads);
                  }),
                  FailClass::signature)
            << level << " " << threads;
        EXPECT_FALSE(has_plaintext(fed.dir)) << threads;
      }
    }
    // Fields are checked before the bulk pass: a valid comment for the wrong round
    // fails as fields even beside other ciphertext.
    Expect ex;
    ex.round = 4;
    EXPECT_EQ(class_of([&] { verify_and_unpack(fed.dir + "/t.age", fed.roster(), {fed.agg.age}, ex, out); }),
              FailClass::fields);
    // And the real pair goes through with every thread count, to the same bytes.
    for (int threads : {0, 1, 2, 4}) {
      Checked c = verify_and_unpack(o.output, fed.roster(), {fed.agg.age}, {}, out, true, threads);
      EXPECT_EQ(sha256_file(out), sha256_file(in)) << level << " " << threads;
      EXPECT_EQ(c.plain_bytes, read_file(in).size()) << threads;
      EXPECT_EQ(c.key_id, fed.a.sign.public_key().key_id_hex());
      Checked d = check(o.output, {}, Signers::from_roster(fed.roster()), {}, threads);
      EXPECT_EQ(d.digest, c.digest) << threads;
      EXPECT_EQ(d.age_bytes, real.size()) << threads;
    }
    ::unlink(out.c_str());
  }
}

TEST(PackageRoundTrip, LargeEnoughForTheFlushingThread) {
  // 24 MiB: pack's and unpack's outputs pass the 8 MiB steps at which a helper thread
  // flushes them to disk while they are written.
  Federation fed;
  std::string in = fed.update("big.h5", "hospital-a", 2, size_t(6) << 20);
  const std::string out = fed.dir + "/out.h5";
  for (int level : {0, 1}) {
    PackOptions o;
    o.input = in;
    o.output = fed.dir + "/big.age";
    o.recipients = {fed.agg.age.recipient()};
    o.zstd_level = level;
    o.overwrite = true;
    PackResult r = pack(o, fed.a.sign);
    for (int threads : {0, 1}) {
      Checked c = verify_and_unpack(o.output, fed.roster(), {fed.agg.age}, {}, out, true, threads);
      EXPECT_EQ(c.plain_bytes, r.plain_bytes) << level << " " << threads;
      EXPECT_EQ(sha256_file(out), r.fields.plain) << level << " " << threads;
    }
  }
}

TEST(PackagePack, RefusesExistingOutputsAndUnpackableFiles) {
  Federation fed;
  std::string in = fed.update("a.h5", "hospital-a", 3, 10);
  PackOptions o;
  o.input = in;
  o.output = fed.dir + "/a.age";
  o.recipients = {fed.agg.age.recipient()};
  pack(o, fed.a.sign);
  EXPECT_EQ(error_code([&] { pack(o, fed.a.sign); }), 73);
  o.input = fed.dir + "/missing.h5";
  o.output = fed.dir + "/b.age";
  EXPECT_EQ(error_code([&] { pack(o, fed.a.sign); }), 66);
  o.recipients.clear();
  EXPECT_EQ(error_code([&] { pack(o, fed.a.sign); }), 64);
}

TEST(PackageFingerprint, StableAndDistinct) {
  Ids a, b;
  std::string fa = fingerprint(a.age.recipient(), a.sign.public_key());
  EXPECT_EQ(fa.size(), 39u);
  EXPECT_EQ(fa, fingerprint(a.age.recipient(), a.sign.public_key()));
  EXPECT_NE(fa, fingerprint(b.age.recipient(), a.sign.public_key()));
  EXPECT_NE(fa, fingerprint(a.age.recipient(), b.sign.public_key()));
}

}  // namespace
}  // namespace fedseg::package
