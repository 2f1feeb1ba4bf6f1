// fedseg-keygen: a site's or the aggregator's identity (age X25519 identity +
// minisign Ed25519 key) and its public half, in the standard tools' own formats.
#include <sys/stat.h>

#include <cerrno>
#include <iostream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/tool.h"
#include "crypto/age.h"
#include "crypto/minisign.h"
#include "package/roster.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string out;
  std::string site;
  std::string show;
};

const char* const kFiles[] = {"age.key", "age.pub", "minisign.key", "minisign.pub"};

int report(const ToolContext& ctx, const std::string& dir, const std::string& label,
           const crypto::AgeRecipient& r, const crypto::MinisignPublicKey& k, bool created) {
  std::string fp = package::fingerprint(r, k);
  if (ctx.json()) {
    nlohmann::json files = nlohmann::json::array();
    for (const char* f : kFiles)
      if (created || std::string(f).find(".pub") != std::string::npos) files.push_back(dir + "/" + f);
    ctx.emit_json({{"dir", dir},
                   {"site", label.empty() ? nlohmann::json(nullptr) : nlohmann::json(label)},
                   {"created", created},
                   {"age_recipient", r.to_string()},
                   {"minisign_public_key", k.to_base64()},
                   {"minisign_key_id", k.key_id_hex()},
                   {"fingerprint", fp},
                   {"files", files}});
  } else {
    std::cout << "age recipient:    " << r.to_string() << "\n"
              << "minisign key:     " << k.to_base64() << " (key id " << k.key_id_hex() << ")\n"
              << "fingerprint:      " << fp << "\n";
  }
  return kExitOk;
}

int run(const Options& o, const ToolContext& ctx) {
  if (!o.show.empty()) {
    if (!o.out.empty()) throw Error(kExitUsage, "--fingerprint and -o exclude each other");
    return report(ctx, o.show, "", package::recipient_of(o.show), package::public_key_of(o.show), false);
  }
  if (o.out.empty()) throw Error(kExitUsage, "no output folder", {}, "use -o ID_DIR");
  if (!o.site.empty() && !package::valid_id(o.site))
    throw Error(kExitUsage, "invalid --site", o.site, "ids match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
  // Never overwrite an identity, not even with --force: losing a key loses a site.
  for (const char* f : kFiles) {
    std::string p = o.out + "/" + f;
    if (path_exists(p))
      throw Error(kExitCantCreate, "identity file exists", p, "fedseg-keygen never overwrites keys; use another folder");
  }
  if (::mkdir(o.out.c_str(), 0755) != 0 && errno != EEXIST) throw_errno(kExitCantCreate, "cannot create folder", o.out, errno);
  crypto::AgeIdentity id = crypto::AgeIdentity::generate();
  crypto::MinisignSecretKey sk = crypto::MinisignSecretKey::generate();
  const std::string label = o.site.empty() ? "" : "# fedseg identity of " + o.site + "\n";
  // Secret halves first (0600), then the public ones (0644): a folder with a
  // public key always has its secret key.
  crypto::MinisignSecretKey::save_text(o.out + "/age.key", label + crypto::identity_file_text(id), false);
  crypto::MinisignSecretKey::save_text(o.out + "/minisign.key", sk.file_text(), false);
  write_file_atomic(o.out + "/age.pub", label + id.recipient().to_string() + "\n", false, 0644);
  sk.public_key().save(o.out + "/minisign.pub", false);
  if (ctx.common().quiet && !ctx.json()) return kExitOk;  // -q: the files are the result
  if (!ctx.json()) std::cerr << "fedseg-keygen: wrote " << o.out << "/{age.key,minisign.key} (secret, 0600) and "
                             << "{age.pub,minisign.pub}\n";
  return report(ctx, o.out, o.site, id.recipient(), sk.public_key(), true);
}

}  // namespace

const ToolDef& keygen() {
  static const ToolDef def{
      {
          "keygen",
          "create a site's or the aggregator's identity: an age key and a minisign key",
          "-o ID_DIR [--site NAME] | --fingerprint PUB_DIR",
          "Creates ID_DIR (if needed) and writes four files, each in its standard tool's own format: age.key, an "
          "age X25519 identity (`age -d -i ID_DIR/age.key`); age.pub, its recipient (`age -R ID_DIR/age.pub`); "
          "minisign.key, an unencrypted minisign Ed25519 secret key (`minisign -S -s ID_DIR/minisign.key`, as "
          "`minisign -G -W` writes, so cron jobs need no password); minisign.pub, its public key (`minisign -V -p "
          "ID_DIR/minisign.pub`). The secret files have mode 0600, the public ones 0644. Copy only age.pub and "
          "minisign.pub to others (the public folder, PUB_DIR).\n\n"
          "An existing identity is never overwritten, not even with --force: if any of the four files exists in "
          "ID_DIR the tool writes nothing and exits 73.\n\n"
          "It prints the age recipient, the minisign public key and its key id, and a fingerprint of both: eight "
          "groups of four hex digits (the first 128 bits of SHA-256 over \"fedseg1 identity\", the recipient and "
          "the minisign key, one per line). When a site sends its public folder to the aggregator (or the "
          "aggregator its own to the sites), the two people read the fingerprint to each other over the phone; "
          "the receiver computes it with --fingerprint PUB_DIR. A checker that pins the aggregator key this way "
          "uses it as the trust root for the roster (fedseg-verify --aggregator-pub).\n\n"
          "--site NAME only labels the age files with a comment line.",
          {{"fedseg-keygen -o /etc/fedseg/hospital-a --site hospital-a", "Create hospital-a's identity."},
           {"fedseg-keygen --fingerprint incoming/hospital-a", "Show the fingerprint of public files received."}},
          {},
          {{65, "--fingerprint: a public file is malformed"},
           {66, "--fingerprint: age.pub or minisign.pub is missing"},
           {73, "an identity file exists in ID_DIR, or the folder or a file cannot be created"}},
          "A document {\"tool\", \"version\", \"dir\", \"site\", \"created\", \"age_recipient\", "
          "\"minisign_public_key\", \"minisign_key_id\", \"fingerprint\", \"files\"}.",
          {"fedseg-pack", "fedseg-verify", "age", "minisign"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("-o,--output", o->out, "folder for the identity (created if missing)")->type_name("ID_DIR");
        app.add_option("--site", o->site, "label the identity with this site id")->type_name("NAME");
        app.add_option("--fingerprint", o->show, "print the fingerprint of a public folder's age.pub and minisign.pub")
            ->type_name("PUB_DIR");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
