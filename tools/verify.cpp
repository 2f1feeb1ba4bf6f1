// fedseg-verify: checks a package's signature and signed fields against a public
// key or the federation roster, and with an identity decrypts it (DESIGN.md §4).
#include <sys/stat.h>

#include <ctime>
#include <iostream>

#include "core/atomic_file.h"
#include "core/buffer.h"
#include "core/error.h"
#include "core/tool.h"
#include "crypto/age.h"
#include "crypto/minisign.h"
#include "fed/published.h"
#include "package/package.h"
#include "package/roster.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string package, signature;
  std::string federation, pub, aggregator_pub;
  std::string identity, out;
  std::string expect_federation, expect_site, expect_kind, expect_base, field;
  int64_t expect_round = -1;
  uint64_t max_size = package::kDefaultMaxSize;
};

std::string utc(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool ends_with_str(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// Prints one field for --field (scripts: r=$(fedseg-verify LATEST ... --field round)).
int print_field(const nlohmann::json& fields, const std::string& name, const std::string& file) {
  if (!fields.contains(name)) throw Error(kExitUsage, "no field '" + name + "' in", file);
  const nlohmann::json& v = fields[name];
  std::cout << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  return kExitOk;
}

// A file the aggregator publishes in the clear (federation.json, global.h5, LATEST,
// report.json): signature by the aggregator key, fields, sha256 (fed::verify_published).
int run_published(const Options& o, const ToolContext& ctx) {
  const std::string key_src = !o.aggregator_pub.empty() ? o.aggregator_pub : o.pub;
  if (key_src.empty()) throw Error(kExitUsage, "a published file needs --aggregator-pub (or --pub)", o.package);
  if (!o.identity.empty() || !o.out.empty()) throw Error(kExitUsage, "published files are not encrypted", o.package, "drop --identity/-o");
  std::string kind = o.expect_kind;
  const std::string base = basename_of(o.package);
  if (kind.empty()) {
    if (base == "LATEST") kind = "latest";
    else if (ends_with_str(base, "federation.json")) kind = "federation";
    else if (ends_with_str(base, "report.json")) kind = "report";
    else if (ends_with_str(base, ".h5")) kind = "global";
    else throw Error(kExitUsage, "cannot tell the kind of", o.package, "use --expect-kind federation|global|latest|report");
  }
  fed::PublishedExpect ex{o.expect_federation, std::nullopt, kind};
  if (o.expect_round >= 0) ex.round = o.expect_round;
  const crypto::MinisignPublicKey key = package::public_key_of(key_src);
  package::Fields f;
  try {
    f = fed::verify_published(key, o.package, ex, o.signature);
  } catch (const package::PackageError& e) {
    if (ctx.json())
      ctx.emit_json({{"file", o.package}, {"ok", false}, {"error", {{"class", e.class_name()}, {"code", e.code()}, {"message", e.message()}}}});
    throw;
  }
  nlohmann::json fields = f.to_json();
  if (kind == "latest") {
    // LATEST's body must agree with its signed fields.
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(read_file(o.package, 1 << 16));
    } catch (const nlohmann::json::exception& e) {
      throw Error(kExitDataErr, "LATEST is not JSON", o.package, e.what());
    }
    if (!doc.is_object() || doc.value("fedseg_latest", 0) != 1 || !doc.contains("round") || !doc["round"].is_number_integer() ||
        doc["round"].get<int64_t>() != f.round || doc.value("federation", "") != f.federation ||
        !doc.contains("global") || !doc["global"].is_string() || !doc.contains("global_sha256") || !doc["global_sha256"].is_string())
      throw Error(kExitDataErr, "LATEST does not match its signature's fields", o.package);
    fields["global"] = doc["global"];
    fields["global_sha256"] = doc["global_sha256"];
  }
  if (!o.field.empty()) return print_field(fields, o.field, o.package);
  if (ctx.json()) {
    ctx.emit_json({{"file", o.package}, {"ok", true}, {"kind", kind}, {"key_id", key.key_id_hex()}, {"fields", fields}});
    return kExitOk;
  }
  if (ctx.common().quiet) return kExitOk;
  std::cout << o.package << ": good signature by the aggregator key " << key.key_id_hex() << "\n";
  for (auto it = fields.begin(); it != fields.end(); ++it)
    std::cout << "  " << it.key() << std::string(it.key().size() < 12 ? 12 - it.key().size() : 1, ' ')
              << (it.value().is_string() ? it.value().get<std::string>() : it.value().dump()) << "\n";
  return kExitOk;
}

int run(const Options& o, const ToolContext& ctx) {
  if (!ends_with_str(o.package, ".age")) return run_published(o, ctx);
  if (o.federation.empty() == o.pub.empty()) throw Error(kExitUsage, "give exactly one of --federation and --pub");
  if (!o.aggregator_pub.empty() && o.federation.empty()) throw Error(kExitUsage, "--aggregator-pub needs --federation");
  if (!o.out.empty() && o.identity.empty()) throw Error(kExitUsage, "-o needs --identity");
  if (o.expect_round < -1) throw Error(kExitUsage, "--expect-round must be >= 0");
  if (!o.expect_kind.empty() && o.expect_kind != "update" && o.expect_kind != "metrics" && o.expect_kind != "global")
    throw Error(kExitUsage, "invalid --expect-kind", o.expect_kind, "use update, metrics or global");
  // Refuse an existing output before any work (73).
  if (!o.out.empty() && !ctx.force() && path_exists(o.out))
    throw Error(kExitCantCreate, "output exists", o.out, "use --force to replace it");

  package::Signers signers;
  if (!o.federation.empty()) {
    std::optional<crypto::MinisignPublicKey> pinned;
    if (!o.aggregator_pub.empty()) pinned = package::public_key_of(o.aggregator_pub);
    signers = package::Signers::from_roster(package::Roster::load(o.federation, pinned));
  } else {
    signers = package::Signers::single(package::public_key_of(o.pub));
  }
  std::vector<crypto::AgeIdentity> ids;
  if (!o.identity.empty()) ids = crypto::load_identity_file(is_directory(o.identity) ? o.identity + "/age.key" : o.identity);

  package::Expect ex;
  ex.federation = o.expect_federation;
  if (o.expect_round >= 0) ex.round = o.expect_round;
  ex.site = o.expect_site;
  ex.kind = o.expect_kind;
  ex.base = o.expect_base;
  ex.max_size = o.max_size;

  package::Checked c;
  uint64_t plain_bytes = 0;
  try {
    if (o.identity.empty()) {
      c = package::check(o.package, o.signature, signers, ex, ctx.threads());
    } else if (o.out.empty()) {
      RawVector<uint8_t> plain;  // every check, nothing written
      c = package::check_and_unpack(o.package, o.signature, signers, ex, ids, plain, ctx.threads());
      plain_bytes = c.plain_bytes;
    } else {
      c = package::check_and_unpack(o.package, o.signature, signers, ex, ids, o.out, ctx.force(), ctx.threads());
      plain_bytes = c.plain_bytes;
    }
  } catch (const package::PackageError& e) {
    if (ctx.json())
      ctx.emit_json({{"package", o.package},
                     {"ok", false},
                     {"error", {{"class", e.class_name()}, {"code", e.code()}, {"message", e.message()}}}});
    throw;
  }
  const package::Fields& f = c.fields;
  if (!o.field.empty()) return print_field(f.to_json(), o.field, o.package);
  std::string signer = c.signer.empty() ? "" : (c.signer == "-" ? "the aggregator" : "site " + c.signer);
  if (ctx.json()) {
    ctx.emit_json({{"package", c.age_path},
                   {"signature", c.sig_path},
                   {"ok", true},
                   {"key_id", c.key_id},
                   {"signer", c.signer.empty() ? nlohmann::json(nullptr) : nlohmann::json(c.signer)},
                   {"age_bytes", c.age_bytes},
                   {"fields", f.to_json()},
                   {"unpacked", o.out.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.out)},
                   {"plain_bytes", o.identity.empty() ? nlohmann::json(nullptr) : nlohmann::json(plain_bytes)}});
    return kExitOk;
  }
  if (ctx.common().quiet) return kExitOk;
  std::cout << c.age_path << ": good signature by key " << c.key_id << (signer.empty() ? "" : " (" + signer + ")") << "\n"
            << "  federation  " << f.federation << "\n"
            << "  round       " << f.round << "\n"
            << "  site        " << f.site << "\n"
            << "  kind        " << f.kind << "\n"
            << "  base        " << f.base << "\n"
            << "  plain       " << f.plain << "\n"
            << "  enc         " << f.enc << "\n"
            << "  ts          " << f.ts << " (" << utc(f.ts) << ")\n"
            << "  nonce       " << f.nonce << "\n";
  if (!o.out.empty())
    std::cout << "  unpacked    " << o.out << " (" << plain_bytes << " bytes, sha256 and inner attributes match)\n";
  else if (!o.identity.empty())
    std::cout << "  decrypted   in memory (" << plain_bytes << " bytes, sha256 and inner attributes match; nothing written)\n";
  return kExitOk;
}

}  // namespace

const ToolDef& verify() {
  static const ToolDef def{
      {
          "verify",
          "check a package's signature and signed fields, and optionally decrypt it",
          "NAME.age (--federation federation.json [--aggregator-pub PUB_DIR] | --pub PUB_DIR) "
          "[--identity ID_DIR [-o PLAIN.h5]] [--expect-federation F] [--expect-round R] [--expect-site S]",
          "Checks the package NAME.age and its signature NAME.age.minisig, in this order, and stops at the first "
          "failure (fail closed):\n\n"
          "size: NAME.age is not larger than --max-size. signature: the .minisig is exactly the four lines "
          "minisign writes, with minisign's default untrusted comment; its key is the --pub key or a key listed in "
          "the roster; the global signature over the trusted comment verifies (the comment is authentic). fields: "
          "the trusted comment is exactly 'fedseg1 fed=<id> round=<n> "
          "site=<id|-> kind=<update|metrics|global> base=<sha256|-> plain=<sha256> enc=<age|zstd+age> ts=<unix> "
          "nonce=<32 hex>' (fields in this order, single spaces, nothing else); with a roster its federation is "
          "the roster's, a site key signs only as its own site id and the aggregator key only kind=global with "
          "site=-; and the --expect-* values match (a package of an old round replayed fails "
          "--expect-round). All of this happens before a byte of NAME.age is read. Then the prehashed (ED) "
          "signature over the NAME.age bytes must verify (class signature); the file must not change while it is "
          "read (same inode, size, modification and change times).\n\n"
          "With --identity and -o the same read of NAME.age also decrypts it (steps decrypt, hash, inner): one "
          "reader hashes each block for the signature and hands it on to decryption, which runs at the same time "
          "(after zstd when enc=zstd+age) into a private temp file next to PLAIN.h5. The verdict is taken in a "
          "fixed order once both are done: a signature failure outranks whatever decryption found; then decrypt "
          "failures; then the plaintext's SHA-256 must equal plain= (which binds the bytes decrypted to the signed "
          "plaintext); only then is the temp file opened as HDF5: its root attributes federation, round, site, "
          "kind and base_sha256 must equal the signed fields (another site cannot re-sign a package it did not "
          "make). PLAIN.h5 (mode 0600) appears only when every check passed; on any failure the temp file is "
          "removed and no plaintext is left behind. When the signature fails, decryption is stopped at once. "
          "--identity without -o runs the same steps with the plaintext in memory (as much memory as the "
          "plaintext is large) and writes nothing: a complete check of a package that leaves no plaintext on "
          "disk.\n\n"
          "--threads 1 runs every step on one thread, one after the other: the whole NAME.age is hashed and its "
          "signature verified before anything is decrypted; same result, slower. Any other value runs the "
          "concurrent stages: five threads (read + BLAKE2b, decrypt, zstd -d, SHA-256 + write, and one that "
          "flushes PLAIN.h5 to disk as it is written), which keep two cores busy; more cores do not make it "
          "faster.\n\n"
          "Every failure exits 65 with one line naming its class: 'package rejected (size|signature|fields|"
          "decrypt|hash|inner)', or for a file published in the clear 'global model|LATEST|round report|"
          "federation plan rejected (signature|fields|hash)'.\n\n"
          "The roster (--federation) is the federation.json that fedseg-init writes; this tool reads "
          "{\"fedseg_federation\": 1, \"federation\": ID, \"aggregator\": {\"age_recipient\": \"age1...\", "
          "\"minisign_public_key\": BASE64}, \"sites\": [{\"id\": ID, \"age_recipient\": ..., "
          "\"minisign_public_key\": ...}, ...]} and ignores other members; BASE64 is the second line of a "
          "minisign.pub file. Trust root: with --aggregator-pub (the aggregator's public folder, its fingerprint "
          "checked over the phone with fedseg-keygen --fingerprint), federation.json.minisig must verify with "
          "that key and the roster's aggregator key must be the same; without it the roster file is trusted as "
          "the operator's own local copy.\n\n"
          "A FILE not ending in .age is a file the aggregator publishes in the clear (federation.json, "
          "rounds/R/global.h5, LATEST, rounds/R/report.json): it is checked against the aggregator's key "
          "(--aggregator-pub, or --pub): signature, the trusted comment's fields (kind=federation|global|latest|"
          "report from the file name or --expect-kind, site=-, enc=none, --expect-federation, --expect-round) and "
          "sha256 = plain; for LATEST also that its JSON body names the signed federation and round. --field NAME "
          "prints one value only, for scripts: `round=$(fedseg-verify mirror/LATEST --aggregator-pub pub/aggregator "
          "--field round)`.\n\n"
          "Hospital IT can make the same checks with Debian's tools: `minisign -Vm NAME.age -p "
          "SITE_PUB_DIR/minisign.pub` and `age -d -i ID_DIR/age.key NAME.age | sha256sum` (through `zstd -d` "
          "when enc=zstd+age).",
          {{"fedseg-verify rounds/7/updates/hospital-a.age --pub pub/hospital-a --expect-round 7",
            "Check a package's origin and round without decrypting it."},
           {"fedseg-verify hospital-a.age --federation federation.json --aggregator-pub pub/aggregator "
            "--identity /etc/fedseg/aggregator -o hospital-a.h5 --json",
            "Check against the signed roster, decrypt and unpack, with a JSON report."},
           {"fedseg-verify exchange/LATEST --aggregator-pub pub/aggregator --field round",
            "Check the aggregator's signature on LATEST and print the current round."}},
          {},
          {{64, "bad options (neither or both of --federation and --pub, -o without --identity)"},
           {65, "the package failed a check (size, signature, fields, decrypt, hash, inner), or the roster, a key "
                "or the roster's signature is malformed or does not verify"},
           {66, "the package, its signature, the roster, a key or the identity is missing"},
           {73, "PLAIN.h5 exists (use --force) or cannot be created"},
           {77, "the identity file is readable by group or others"}},
          "A document {\"tool\", \"version\", \"package\", \"signature\", \"ok\": true, \"key_id\", \"signer\" "
          "(roster member id, \"-\" for the aggregator, null with --pub), \"age_bytes\", \"fields\": {federation, "
          "round, site, kind, base, plain, enc, ts, nonce}, \"unpacked\", \"plain_bytes\"}; when a check fails, "
          "{\"tool\", \"version\", \"package\", \"ok\": false, \"error\": {\"class\", \"code\", \"message\"}}.",
          {"fedseg-pack", "fedseg-keygen", "age", "minisign"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("PACKAGE", o->package, "the package NAME.age, or a file the aggregator published")->required()->type_name("FILE");
        app.add_option("--signature", o->signature, "the signature file (default: NAME.age.minisig)")->type_name("FILE");
        app.add_option("--federation", o->federation, "the roster (federation.json) listing the sites' keys")
            ->type_name("FILE");
        app.add_option("--aggregator-pub", o->aggregator_pub,
                       "pinned aggregator public folder (or minisign.pub): federation.json.minisig must verify with it")
            ->type_name("PUB_DIR");
        app.add_option("--pub", o->pub, "the signer's public folder (its minisign.pub) or a minisign.pub file")
            ->type_name("PUB_DIR");
        app.add_option("--identity", o->identity, "an identity folder (its age.key) or age identity file: decrypt too")
            ->type_name("ID_DIR");
        app.add_option("-o,--output", o->out, "where to write the decrypted HDF5 file (needs --identity)")
            ->type_name("PLAIN.h5");
        app.add_option("--expect-federation", o->expect_federation, "fail unless the package is for this federation")
            ->type_name("F");
        app.add_option("--expect-round", o->expect_round, "fail unless the package is for this round")->type_name("R");
        app.add_option("--expect-site", o->expect_site, "fail unless the package is from this site")->type_name("S");
        app.add_option("--expect-kind", o->expect_kind, "fail unless the package is of this kind")->type_name("KIND");
        app.add_option("--expect-base", o->expect_base, "fail unless the package's base is this sha256")->type_name("SHA256");
        app.add_option("--field", o->field,
                       "print only this signed field's value (round, federation, site, kind, plain, ...; for LATEST also "
                       "global and global_sha256)")
            ->type_name("NAME");
        app.add_option("--max-size", o->max_size, "largest NAME.age accepted, in bytes (default 16 GiB)")
            ->type_name("BYTES");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
