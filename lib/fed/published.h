// fedseg::fed published files: what the aggregator publishes in the clear
// (federation.json, rounds/<r>/global.h5, LATEST, report.json), each with a
// minisign signature FILE.minisig by the aggregator key whose trusted comment uses
// the package grammar (package/package.h) with enc=none:
//
//   fedseg1 fed=<id> round=<n> site=- kind=<federation|global|latest|report>
//           base=- plain=<sha256 of FILE> enc=none ts=<unix> nonce=<hex128>
//
// so `minisign -Vm FILE -p aggregator/minisign.pub` audits it. Checking order, fail
// closed: the signature's key and its global signature (which authenticates the
// trusted comment) → fields (grammar, kind, federation, round) → the signature over
// the file's BLAKE2b-512 → sha256 = plain (one read of the file computes both
// hashes). A reader opens the file (HDF5) only after verify_published() (or
// check_published()) returned.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "crypto/minisign.h"
#include "package/package.h"

namespace fedseg::fed {

struct PublishedExpect {
  std::string federation;        // empty: any
  std::optional<int64_t> round;  // nullopt: any
  std::string kind;              // required
};

// A file's BLAKE2b-512 (what its minisign signature signs) and SHA-256 (plain=), from
// one read (the two on two threads). Error 66/74 when it cannot be read.
struct PublishedHashes {
  crypto::Blake2b512::Digest blake{};
  std::string sha256;
};
PublishedHashes hash_published(const std::string& path);

// Signs `path` (already written) and writes path + ".minisig" atomically (mode
// 0644). Error 73 if the signature exists and !overwrite. With `hashes`: those of the
// bytes now at `path` (taken, say, from its temp file while it was synced to disk).
package::Fields sign_published(const crypto::MinisignSecretKey& key, const std::string& path,
                               const std::string& federation, int64_t round, const std::string& kind,
                               bool overwrite);
package::Fields sign_published(const crypto::MinisignSecretKey& key, const std::string& path,
                               const std::string& federation, int64_t round, const std::string& kind,
                               bool overwrite, const PublishedHashes& hashes);
// Writes `content` to path and its signature (as sign_published) to path.minisig: both
// made and synced under temp names first, then renamed one right after the other, so
// that a crash leaves them out of step only between two renames (readers retry; the
// aggregator's next run repairs it), not for the time of a signature and two fsyncs.
package::Fields publish_signed(const crypto::MinisignSecretKey& key, const std::string& path, const std::string& content,
                               const std::string& federation, int64_t round, const std::string& kind);

// Verifies path against sig_path (default path + ".minisig") and `key`. Error 66
// when a file is missing; package::PackageError (exit 65, class signature, fields
// or hash) naming the file otherwise. Returns the signed fields; `sha256` of the
// file is fields.plain. The same as open_published() then check_published().
package::Fields verify_published(const crypto::MinisignPublicKey& key, const std::string& path,
                                 const PublishedExpect& expect, const std::string& sig_path = {});

// What a published file of this kind is called in messages ("global model", "LATEST",
// "round report", "federation plan").
std::string published_what(const std::string& kind);

// verify_published in two halves, for a caller with other work to do while a large
// file is hashed. open_published(): the signature file read and everything checked
// that needs no pass over `path` (key id, the trusted comment's own signature, the
// fields against `expect`), so the fields it returns are the aggregator's; nothing is
// known of the file's bytes yet. check_published(): one read of `path` for BLAKE2b-512
// (the signature) and SHA-256 (= fields.plain). Only then may the file be opened.
struct PublishedSignature {
  std::string path, sig_path;
  std::string what;  // for messages: "global model rejected (hash)", "LATEST rejected (...)"
  crypto::MinisignSignature sig;
  package::Fields fields;
};
PublishedSignature open_published(const crypto::MinisignPublicKey& key, const std::string& path,
                                  const PublishedExpect& expect, const std::string& sig_path = {});
void check_published(const crypto::MinisignPublicKey& key, const PublishedSignature& s);

// The minisign secret key of an identity folder (ID_DIR/minisign.key) or a key
// file; errors as crypto::MinisignSecretKey::load.
crypto::MinisignSecretKey load_signing_key(const std::string& id_dir_or_file, const crypto::PasswordSource& password = {});

}  // namespace fedseg::fed
