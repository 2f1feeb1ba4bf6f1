// fedseg::package: packages (DESIGN.md §4). A package is NAME.age (age v1 to one
// or more X25519 recipients, payload = the HDF5 bytes, optionally zstd-compressed
// first) and NAME.age.minisig (minisign "ED" signature by the sender over the
// .age bytes) whose trusted comment binds, on one line, in this order:
//
//   fedseg1 fed=<id> round=<n> site=<id|-> kind=<update|metrics|global>
//           base=<sha256|-> plain=<sha256> enc=<age|zstd+age> ts=<unix> nonce=<hex128>
//
// Parsed strictly: exactly these ten fields, in this order, separated by single
// spaces; ids as valid_id(); round and ts decimal without leading zeros; hashes 64
// lower-case hex; nonce 32 lower-case hex. Anything else is a `fields` failure.
// The same values are root attributes of the HDF5 inside (federation, round, site,
// kind, base_sha256), checked after decryption (defeats re-signing of another
// site's ciphertext). kind=global has no site attribute and site=- (its signer is
// the roster's aggregator key); a missing base_sha256 is base=-.
//
// Checking order, fail closed (each failure a PackageError, exit 65, with its class;
// docs/formats.md, "Verification order"):
//   size → signature, first half (the .minisig is canonical, its key id is known,
//   the global signature verifies: the trusted comment is authentic) → fields
//   (comment grammar, signer ↔ site, expected federation/round/site/kind/base,
//   (site, round) not already accepted, nonce unseen) — all before any bulk read;
//   then signature, second half (the signature over BLAKE2b-512 of the .age bytes;
//   the file's kernel identity — inode, size, mtime, ctime — must not change while
//   it is read) → decrypt (to a temp file) → hash (sha256 = plain, which binds the
//   bytes decrypted to the signed plaintext) → inner (the HDF5 is opened only now;
//   its attributes must equal the comment). check_and_unpack() runs the second
//   half of the signature step and decrypt concurrently over one read of the file,
//   into a private temp file, and decides in this order afterwards: a signature
//   failure outranks everything the decrypt stages found. Plaintext appears under
//   its final name only after every check passed; on failure no file is left.
//
// Depends on core, crypto and h5.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/buffer.h"
#include "core/error.h"
#include "crypto/age.h"
#include "crypto/minisign.h"
#include "package/roster.h"

namespace fedseg::package {

constexpr const char* kProfile = "fedseg1";
constexpr uint64_t kDefaultMaxSize = uint64_t(16) << 30;        // 16 GiB of .age
constexpr uint64_t kDefaultMaxPlainSize = uint64_t(64) << 30;   // 64 GiB of decompressed HDF5

// Why a package was rejected (all exit 65).
enum class FailClass { size, signature, fields, decrypt, hash, inner };
const char* fail_class_name(FailClass c);  // "size", "signature", ...

class PackageError : public Error {
 public:
  // `what`: what was rejected, for the message "<what> rejected (<class>)": a package,
  // or a file published in the clear ("global model", "LATEST", ...).
  PackageError(FailClass cls, const std::string& subject, const std::string& why, const std::string& what = "package");
  FailClass fail_class() const noexcept { return cls_; }
  const char* class_name() const noexcept { return fail_class_name(cls_); }

 private:
  FailClass cls_;
};

// The signed fields of a package.
struct Fields {
  std::string federation;
  int64_t round = 0;
  std::string site = "-";
  std::string kind;
  std::string base = "-";
  std::string plain;
  std::string enc = "age";
  int64_t ts = 0;
  std::string nonce;

  // The trusted comment (no validation: pack validates before signing).
  std::string comment() const;
  // Strict parse; PackageError{fields} naming `subject` on any deviation.
  static Fields parse(const std::string& comment, const std::string& subject);
  nlohmann::json to_json() const;
};

// The bound attributes of a fedseg HDF5 file (federation, round, site, kind,
// base_sha256); plain/enc/ts/nonce are left empty. Error 66/65 from h5; Error 65
// when an attribute is missing or invalid.
Fields read_bound_attributes(const std::string& h5_path);

struct PackOptions {
  std::string input;                            // the HDF5 file
  std::string output;                           // NAME.age; the signature goes to NAME.age.minisig
  std::vector<crypto::AgeRecipient> recipients; // at least one
  int zstd_level = 0;                           // 0: no compression; 1..19
  bool overwrite = false;
};

struct PackResult {
  Fields fields;
  std::string age_path, sig_path;
  uint64_t plain_bytes = 0, age_bytes = 0;
  std::string key_id;
};

// Packs: reads the bound attributes, streams the file (1 MiB blocks) through
// SHA-256, zstd and age encryption into NAME.age (atomic), signs it and writes
// NAME.age.minisig (atomic, last). Three threads (read + SHA-256 | zstd | age +
// BLAKE2b + write) joined by bounded queues: ~30 MB whatever the file size.
// Errors: 66 input missing, 65 not a packable fedseg file (kind dataset, bad
// attributes), 73 an output exists (without overwrite) or cannot be created, 74 I/O.
PackResult pack(const PackOptions& opts, const crypto::MinisignSecretKey& key);

// The keys a package may be signed with.
struct Signers {
  // From a roster: every site key (must sign as its own site id) and the
  // aggregator key (must sign kind=global with site=-).
  static Signers from_roster(const Roster& roster);
  // One key, with no site mapping (fedseg-verify --pub): the comment's site is
  // whatever the signer claims; use Expect::site to pin it.
  static Signers single(const crypto::MinisignPublicKey& key);
  std::optional<Roster> roster;
  std::optional<crypto::MinisignPublicKey> key;
};

// What the checker expects. Empty / nullopt: not checked.
struct Expect {
  std::string federation;
  std::optional<int64_t> round;
  std::string site;
  std::string kind;
  std::string base;
  std::set<std::pair<std::string, int64_t>> accepted;  // (site, round) already in the ledger
  std::set<std::string> nonces;                         // nonces already seen
  uint64_t max_size = kDefaultMaxSize;
  uint64_t max_plain_size = kDefaultMaxPlainSize;
};

// What the kernel says about a file's identity (device, inode, size, mtime, ctime
// in ns): any write to the file or its replacement changes it.
struct FileStamp {
  uint64_t dev = 0, ino = 0, size = 0;
  int64_t mtime_ns = 0, ctime_ns = 0;
  bool operator==(const FileStamp& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns && ctime_ns == o.ctime_ns;
  }
};

struct Checked {
  std::string age_path, sig_path;
  Fields fields;
  std::string signer;  // the roster member id ("-" aggregator), or "" with Signers::single
  std::string key_id;  // as minisign prints it
  uint64_t age_bytes = 0;
  crypto::Blake2b512::Digest digest{};  // of the .age bytes whose signature verified
  FileStamp stamp;                      // of the .age file when it was hashed
  uint64_t plain_bytes = 0;             // set by check_and_unpack()
};

// `threads`: 1 runs everything on the calling thread, in sequence; any other value
// (0, the default, included) the concurrent stages, up to five threads that keep
// two cores busy (more cores do not help).

// Steps size → signature → fields, then the pass over the .age bytes for the file
// signature (read and BLAKE2b-512 on two threads, or one with threads = 1).
// sig_path defaults to age_path + ".minisig". Throws PackageError (65); Error 66
// when a file is missing.
Checked check(const std::string& age_path, const std::string& sig_path, const Signers& signers, const Expect& expect,
              int threads = 0);

// Steps decrypt → hash → inner after check(): decrypts into a temp file next to
// out_path and renames it into place only when every check passed. Error 73 if
// out_path exists and !overwrite (checked before decrypting). Stages on three
// threads (read + decrypt | zstd -d | SHA-256 + write), or one with threads = 1.
// Returns the plaintext byte count.
uint64_t unpack(const Checked& checked, const std::vector<crypto::AgeIdentity>& identities, const std::string& out_path,
                const Expect& expect, bool overwrite, int threads = 0);

// check() then unpack() with one read of the .age file: size → signature (global
// signature) → fields before any bulk read; then one reader thread hashes every
// block for the file signature and hands it on to decrypt | zstd -d | SHA-256 +
// write into a private temp file (~30 MB of memory whatever the size). Verdict in the fixed
// order signature → decrypt → hash → inner; the temp file is removed on any
// failure and HDF5 opens it only after the file signature verified. With
// threads = 1: check() then unpack(), sequentially, on the calling thread (nothing
// is decrypted before the file signature verified). Error 73 as unpack(), after the
// preflight checks. Sets Checked::plain_bytes.
Checked check_and_unpack(const std::string& age_path, const std::string& sig_path, const Signers& signers,
                         const Expect& expect, const std::vector<crypto::AgeIdentity>& identities,
                         const std::string& out_path, bool overwrite, int threads = 0);
// The same into memory: `plain` receives the plaintext (an HDF5 file image, checked
// as above; h5::File::open_image opens it). Nothing is written to disk.
Checked check_and_unpack(const std::string& age_path, const std::string& sig_path, const Signers& signers,
                         const Expect& expect, const std::vector<crypto::AgeIdentity>& identities,
                         RawVector<uint8_t>& plain, int threads = 0);

// The aggregator's entry point: check_and_unpack() against the roster.
// expect.federation defaults to the roster's federation.
Checked verify_and_unpack(const std::string& age_path, const Roster& roster,
                          const std::vector<crypto::AgeIdentity>& identities, Expect expect,
                          const std::string& out_path, bool overwrite = false, int threads = 0);
// The same into memory (check_and_unpack() into `plain`).
Checked verify_and_unpack(const std::string& age_path, const Roster& roster,
                          const std::vector<crypto::AgeIdentity>& identities, Expect expect, RawVector<uint8_t>& plain,
                          int threads = 0);

}  // namespace fedseg::package
