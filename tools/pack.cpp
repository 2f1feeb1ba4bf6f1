// fedseg-pack: an update, metrics or global-model HDF5 file -> an encrypted,
// signed package NAME.age + NAME.age.minisig (DESIGN.md §4).
#include <sys/stat.h>

#include <iostream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/tool.h"
#include "crypto/age.h"
#include "crypto/minisign.h"
#include "package/package.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string input, key, out;
  std::vector<std::string> to;
  int zstd = 0;
  std::string password_file, password_env;
};

std::vector<crypto::AgeRecipient> recipients(const std::vector<std::string>& to) {
  std::vector<crypto::AgeRecipient> out;
  for (const auto& t : to) {
    if (t.rfind("age1", 0) == 0 && !path_exists(t)) {
      out.push_back(crypto::AgeRecipient::parse(t));
      continue;
    }
    std::string path = is_directory(t) ? t + "/age.pub" : t;
    auto r = crypto::parse_recipients(read_file(path, 1 << 20), path);
    if (r.empty()) throw Error(kExitDataErr, "no age recipient", path);
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

int run(const Options& o, const ToolContext& ctx) {
  if (o.zstd < 0 || o.zstd > 19) throw Error(kExitUsage, "--zstd level out of range", std::to_string(o.zstd), "use 1..19");
  package::PackOptions po;
  po.input = o.input;
  po.output = o.out;
  po.recipients = recipients(o.to);
  po.zstd_level = o.zstd;
  po.overwrite = ctx.force();
  if (!path_exists(o.input)) throw Error(kExitNoInput, "cannot open", o.input, "no such file");
  std::string key_path = is_directory(o.key) ? o.key + "/minisign.key" : o.key;
  crypto::MinisignSecretKey key = crypto::MinisignSecretKey::load(key_path, {o.password_file, o.password_env});
  package::PackResult r = package::pack(po, key);
  if (ctx.json()) {
    nlohmann::json rec = r.fields.to_json();
    ctx.emit_json({{"package", r.age_path},
                   {"signature", r.sig_path},
                   {"key_id", r.key_id},
                   {"plain_bytes", r.plain_bytes},
                   {"age_bytes", r.age_bytes},
                   {"recipients", po.recipients.size()},
                   {"fields", rec},
                   {"trusted_comment", r.fields.comment()}});
  } else {
    std::cout << r.age_path << "\n" << r.sig_path << "\n";
    if (ctx.common().verbose > 0)
      std::cerr << "fedseg-pack: " << human_bytes(static_cast<double>(r.plain_bytes)) << " -> "
                << human_bytes(static_cast<double>(r.age_bytes)) << ", signed by key " << r.key_id << ": "
                << r.fields.comment() << "\n";
  }
  return kExitOk;
}

}  // namespace

const ToolDef& pack() {
  static const ToolDef def{
      {
          "pack",
          "encrypt and sign an update, metrics or global model file into a package",
          "FILE.h5 --key SITE_ID_DIR --to RECIPIENT_OR_PUB_DIR... -o NAME.age",
          "Writes NAME.age, FILE.h5 encrypted with age (X25519, 64 KiB ChaCha20-Poly1305 chunks) to every --to "
          "recipient (the aggregator, and optional escrow keys), and NAME.age.minisig, a minisign prehashed (ED) "
          "signature over the NAME.age bytes by the site's key. With --zstd the HDF5 bytes are compressed with "
          "zstd before encryption.\n\n"
          "The signature's trusted comment binds, on one line: fedseg1 fed=<federation> round=<n> site=<site> "
          "kind=<update|metrics|global> base=<sha256 or -> plain=<sha256 of FILE.h5> enc=<age|zstd+age> "
          "ts=<unix time> nonce=<32 hex digits>. federation, round, site, kind and base are read from the root "
          "attributes of FILE.h5 (federation, round, site, kind, base_sha256); a global model has no site "
          "attribute and is signed with site=-; a file without base_sha256 gets base=-. The aggregator checks "
          "the same attributes inside the package after decryption, so another site cannot re-sign it. The "
          "untrusted comment is minisign's default.\n\n"
          "The file is streamed once in 1 MiB blocks through three threads (read and SHA-256; zstd; encryption, "
          "the signature's BLAKE2b-512 and writing), so memory stays bounded whatever its size. Both outputs are written "
          "atomically, the signature last: its presence means the package is complete. Existing outputs are "
          "replaced only with --force (the old signature is removed first).\n\n"
          "Hospital IT can audit a package with Debian's tools: `minisign -Vm NAME.age -p SITE_PUB_DIR/minisign.pub` "
          "prints the trusted comment, `age -d -i AGGREGATOR_ID_DIR/age.key NAME.age` (then `zstd -d` when "
          "enc=zstd+age) gives back FILE.h5, whose sha256sum equals plain=.",
          {{"fedseg-pack update.h5 --key /etc/fedseg/hospital-a --to pub/aggregator -o rounds/7/updates/hospital-a.age",
            "Package a site's update for the aggregator."},
           {"fedseg-pack update.h5 --key site --to age1... --to escrow/age.pub --zstd -o out.age",
            "Compress first (level 3) and encrypt to the aggregator and an escrow key."}},
          {},
          {{64, "bad options (no --to, zstd level out of range)"},
           {65, "FILE.h5 is not a fedseg update, metrics or global file, lacks a bound attribute, or a key or "
                "recipient is malformed"},
           {66, "FILE.h5, the key or a recipient file is missing"},
           {73, "NAME.age or NAME.age.minisig exists (use --force) or cannot be created"},
           {77, "the secret key file is readable by group or others"},
           {78, "the key is password-protected and no (or a wrong) password was given"}},
          "A document {\"tool\", \"version\", \"package\", \"signature\", \"key_id\", \"plain_bytes\", "
          "\"age_bytes\", \"recipients\", \"fields\": {federation, round, site, kind, base, plain, enc, ts, "
          "nonce}, \"trusted_comment\"}.",
          {"fedseg-keygen", "fedseg-verify", "age", "minisign"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("FILE", o->input, "the update, metrics or global model HDF5 file")->required()->type_name("FILE.h5");
        app.add_option("--key", o->key, "the signer's identity folder (its minisign.key) or a minisign secret key file")
            ->required()
            ->type_name("ID_DIR");
        app.add_option("--to", o->to, "recipient: an age1... string, a public folder holding age.pub, or a recipients file")
            ->required()
            ->type_name("RECIPIENT");
        app.add_option("-o,--output", o->out, "the package NAME.age (the signature goes to NAME.age.minisig)")
            ->required()
            ->type_name("NAME.age");
        app.add_flag("--zstd{3}", o->zstd, "compress with zstd before encrypting (level 1-19, default 3)")
            ->type_name("LEVEL");
        app.add_option("--password-file", o->password_file, "password of a password-protected minisign key (first line)")
            ->type_name("FILE");
        app.add_option("--password-env", o->password_env, "environment variable holding that password")->type_name("VAR");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
