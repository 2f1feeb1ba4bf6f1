// fedseg-agetool (tests only, not installed): drives fedseg::crypto from the shell
// so that tests can run the age CCTV vectors and interoperate with Debian's `age`
// and `minisign`. One mode per run:
//   --age-keygen -o ID_FILE                      write an age identity (0600), print its recipient
//   --minisign-keygen -p PUB -s SEC [--password-file F] write a minisign key pair (unencrypted unless F)
//   --encrypt -r AGE1... [-r ...] [IN] [-o OUT]  age-encrypt (stdin/stdout when omitted)
//   --decrypt -i ID_FILE [IN] [-o OUT]           age-decrypt; OUT appears only on success
//   --sign -s SEC [-t COMMENT] [--password-file F | --password-env VAR] FILE [-x SIG]
//   --verify -p PUB FILE [-x SIG]                prints the trusted comment
//   --cctv VECTOR                                run one age CCTV vector: exit 0 pass, 65 mismatch,
//                                                77 skipped (kind on stdout)
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <memory>

#include "core/atomic_file.h"
#include "core/sha256.h"
#include "core/tool.h"
#include "crypto/age.h"
#include "crypto/minisign.h"

namespace fedseg::tools {
namespace {

using namespace fedseg::crypto;

struct Options {
  bool age_keygen = false, minisign_keygen = false, encrypt = false, decrypt = false, sign = false, verify = false;
  std::string cctv;
  std::vector<std::string> recipients;
  std::string identity, out, pub, sec, sig, comment, password_file, password_env, untrusted;
  std::string input;
};

class Sha256Sink : public Sink {
 public:
  void write(const void* buf, size_t n) override { h.update(buf, n); }
  Sha256 h;
};

std::string inflate_all(const std::string& in, const std::string& name) {
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) throw Error(kExitSoftware, "zlib init failed");
  std::string out;
  char buf[65536];
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error(kExitDataErr, "bad zlib data", name);
    }
    out.append(buf, sizeof buf - zs.avail_out);
  } while (rc != Z_STREAM_END);
  inflateEnd(&zs);
  return out;
}

const char* expect_class(const std::string& e) {
  if (e == "success") return "success";
  if (e == "no match") return "no_match";
  if (e == "HMAC failure") return "hmac";
  if (e == "header failure") return "header";
  if (e == "payload failure") return "payload";
  if (e == "armor failure") return "armor";
  return "unknown";
}

int run_cctv(const std::string& path) {
  std::string text = read_file(path);
  size_t sep = text.find("\n\n");
  if (sep == std::string::npos) throw Error(kExitDataErr, "not a CCTV vector", path, "no blank line");
  std::string head = text.substr(0, sep + 1), body = text.substr(sep + 2);
  std::string expect, payload, compressed;
  std::vector<std::string> ids;
  bool armored = false, passphrase = false;
  size_t start = 0;
  while (start < head.size()) {
    size_t nl = head.find('\n', start);
    std::string line = head.substr(start, nl - start);
    start = nl + 1;
    size_t c = line.find(": ");
    if (c == std::string::npos) continue;
    std::string k = line.substr(0, c), v = line.substr(c + 2);
    if (k == "expect") expect = v;
    else if (k == "payload") payload = v;
    else if (k == "identity") ids.push_back(v);
    else if (k == "armored") armored = v == "yes";
    else if (k == "passphrase") passphrase = true;
    else if (k == "compressed") compressed = v;
  }
  if (armored) { std::printf("skip armor\n"); return 77; }
  if (passphrase) { std::printf("skip scrypt\n"); return 77; }
  std::vector<AgeIdentity> identities;
  for (const auto& s : ids) {
    if (s.rfind("AGE-SECRET-KEY-PQ-", 0) == 0) { std::printf("skip post-quantum\n"); return 77; }
    identities.push_back(AgeIdentity::parse(s));
  }
  if (compressed == "zlib") body = inflate_all(body, path);
  else if (!compressed.empty()) throw Error(kExitDataErr, "unknown compression", path, compressed);
  std::string got = "success";
  Sha256Sink sink;
  try {
    StringSource in(body);
    age_decrypt(identities, in, sink);
  } catch (const DecryptError& e) {
    got = e.kind_name();
  }
  std::string sha = sink.h.hex();
  std::string want = expect_class(expect);
  bool ok = got == want && (payload.empty() || sha == payload);
  std::printf("%s got=%s want=%s payload=%s\n", ok ? "pass" : "FAIL", got.c_str(), want.c_str(),
              sha == payload ? "match" : ("differs:" + sha).c_str());
  return ok ? kExitOk : kExitDataErr;
}

int run(const Options& o, const ToolContext&) {
  int modes = o.age_keygen + o.minisign_keygen + o.encrypt + o.decrypt + o.sign + o.verify + !o.cctv.empty();
  if (modes != 1) throw Error(kExitUsage, "give exactly one mode option");
  if (!o.cctv.empty()) return run_cctv(o.cctv);
  if (o.age_keygen) {
    if (o.out.empty()) throw Error(kExitUsage, "--age-keygen needs -o");
    AgeIdentity id = AgeIdentity::generate();
    save_identity_file(o.out, id, false);
    std::printf("%s\n", id.recipient().to_string().c_str());
    return kExitOk;
  }
  if (o.minisign_keygen) {
    if (o.pub.empty() || o.sec.empty()) throw Error(kExitUsage, "--minisign-keygen needs -p and -s");
    MinisignSecretKey k = MinisignSecretKey::generate();
    std::string text = o.password_file.empty() ? k.file_text()
                                               : k.encrypted_file_text(read_password({o.password_file, ""}));
    MinisignSecretKey::save_text(o.sec, text, false);
    k.public_key().save(o.pub, false);
    std::printf("%s\n", k.public_key().key_id_hex().c_str());
    return kExitOk;
  }
  std::unique_ptr<FileSource> in;
  if (o.encrypt || o.decrypt) in = std::make_unique<FileSource>(o.input.empty() ? "-" : o.input);
  if (o.encrypt) {
    std::vector<AgeRecipient> rs;
    for (const auto& r : o.recipients) rs.push_back(AgeRecipient::parse(r));
    if (o.out.empty()) {
      FdSink sink(1, "stdout");
      age_encrypt(rs, *in, sink);
    } else {
      AtomicFile f(o.out, true);
      CallbackSink sink([&f](const void* b, size_t n) { f.write(b, n); }, o.out);
      age_encrypt(rs, *in, sink);
      f.commit();
    }
    return kExitOk;
  }
  if (o.decrypt) {
    if (o.identity.empty()) throw Error(kExitUsage, "--decrypt needs -i");
    auto ids = load_identity_file(o.identity);
    if (o.out.empty()) {
      FdSink sink(1, "stdout");
      age_decrypt(ids, *in, sink);
    } else {
      AtomicFile f(o.out, true, 0600);
      CallbackSink sink([&f](const void* b, size_t n) { f.write(b, n); }, o.out);
      age_decrypt(ids, *in, sink);
      f.commit();
    }
    return kExitOk;
  }
  PasswordSource pw{o.password_file, o.password_env};
  if (o.sign) {
    if (o.sec.empty() || o.input.empty()) throw Error(kExitUsage, "--sign needs -s and FILE");
    MinisignSecretKey k = MinisignSecretKey::load(o.sec, pw);
    std::string sig = o.untrusted.empty() ? sign_file(k, o.input, o.comment) : sign_file(k, o.input, o.comment, o.untrusted);
    write_file_atomic(o.sig.empty() ? o.input + ".minisig" : o.sig, sig, true);
    return kExitOk;
  }
  if (o.pub.empty() || o.input.empty()) throw Error(kExitUsage, "--verify needs -p and FILE");
  Verified v = verify_file(MinisignPublicKey::load(o.pub), o.input, o.sig);
  std::printf("%s\n", v.trusted_comment.c_str());
  return kExitOk;
}

}  // namespace

const ToolDef& agetool() {
  static const ToolDef def{
      {"agetool", "drive the age and minisign library from the shell (tests only)", "MODE [options] [FILE]",
       "For tests: one mode per run (--age-keygen, --minisign-keygen, --encrypt, --decrypt, --sign, --verify, --cctv).",
       {}, {}, {}, "", {}},
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_flag("--age-keygen", o->age_keygen, "write an age identity file (-o), print its recipient");
        app.add_flag("--minisign-keygen", o->minisign_keygen, "write a minisign key pair (-p, -s)");
        app.add_flag("--encrypt", o->encrypt, "age-encrypt FILE (or stdin) to -r recipients");
        app.add_flag("--decrypt", o->decrypt, "age-decrypt FILE (or stdin) with -i identities");
        app.add_flag("--sign", o->sign, "minisign FILE with -s key");
        app.add_flag("--verify", o->verify, "verify FILE's minisign signature with -p key");
        app.add_option("--cctv", o->cctv, "run one age CCTV test vector");
        app.add_option("-r", o->recipients, "age recipient (repeatable)")->allow_extra_args(false);
        app.add_option("-i", o->identity, "age identity file");
        app.add_option("-o", o->out, "output file");
        app.add_option("-p", o->pub, "minisign public key file");
        app.add_option("-s", o->sec, "minisign secret key file");
        app.add_option("-x", o->sig, "signature file (default FILE.minisig)");
        app.add_option("-t", o->comment, "trusted comment");
        app.add_option("-c", o->untrusted, "untrusted comment");
        app.add_option("--password-file", o->password_file, "password of the secret key: first line of this file");
        app.add_option("--password-env", o->password_env, "password of the secret key: this environment variable");
        app.add_option("FILE", o->input, "input file");
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
