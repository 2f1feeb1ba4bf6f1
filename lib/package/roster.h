// fedseg::package roster: who may sign packages in a federation, read from
// `federation.json` (DESIGN.md §5; written and signed by fedseg-init). Depends on
// core and crypto only.
//
// The part of federation.json read here (other members, the training plan, are
// ignored by this module):
//   {
//     "fedseg_federation": 1,
//     "federation": "<id>",
//     "aggregator": {"age_recipient": "age1...", "minisign_public_key": "<base64>"},
//     "sites": [{"id": "hospital-a", "age_recipient": "age1...", "minisign_public_key": "<base64>"}, ...]
//   }
// minisign_public_key is the second line of a minisign.pub file (56 base64
// characters: "Ed" || key id || Ed25519 key). Ids match [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
// Site ids and key ids are unique; a key may not serve two roles.
//
// Trust root: the roster is signed by the aggregator (federation.json.minisig).
// A checker that pins the aggregator's public key (obtained out of band, e.g. the
// fingerprint fedseg-keygen prints, read over the phone) loads the roster with
// `pinned`: the signature must verify with that key and the roster's own
// aggregator key must be the same key. Without a pinned key the roster file is
// trusted as the operator's local copy.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "crypto/age.h"
#include "crypto/minisign.h"

namespace fedseg::package {

// Federation and site ids: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
bool valid_id(const std::string& id);

struct RosterMember {
  std::string id;  // site id; "-" for the aggregator
  crypto::AgeRecipient recipient;
  crypto::MinisignPublicKey key;
};

class Roster {
 public:
  static constexpr int kVersion = 1;
  // Parses federation.json text. Error 65 (naming `name`) when it is not valid
  // JSON, of another version, or a member is missing or malformed.
  static Roster parse(const std::string& text, const std::string& name);
  // Loads a roster file: Error 66 if missing. With `pinned`, also verifies
  // `path + ".minisig"` (66 if missing, SignatureError 65 if it does not verify)
  // and requires the roster's aggregator key to equal `pinned` (65).
  static Roster load(const std::string& path, const std::optional<crypto::MinisignPublicKey>& pinned = std::nullopt);

  const std::string& federation() const { return federation_; }
  const RosterMember& aggregator() const { return aggregator_; }
  const std::vector<RosterMember>& sites() const { return sites_; }
  // The member (site or aggregator) whose minisign key has this id, or nullptr.
  const RosterMember* by_key_id(const crypto::KeyId& id) const;
  const RosterMember* site(const std::string& id) const;

 private:
  std::string federation_;
  RosterMember aggregator_{"-", crypto::AgeRecipient({}), crypto::MinisignPublicKey({}, {})};
  std::vector<RosterMember> sites_;
};

}  // namespace fedseg::package

namespace fedseg::package {

// A short fingerprint of an identity's public half (age recipient + minisign
// key) for two people to compare over the phone: 8 groups of 4 upper-case hex
// digits, the first 128 bits of SHA-256("fedseg1 identity\n" + recipient + "\n" +
// minisign base64 + "\n").
std::string fingerprint(const crypto::AgeRecipient& recipient, const crypto::MinisignPublicKey& key);

// Loads a public folder's age.pub (its first recipient) and minisign.pub (Error
// 66 if missing, 65 if malformed). `dir` may also name a minisign.pub file alone
// for public_key_of().
crypto::AgeRecipient recipient_of(const std::string& dir);
crypto::MinisignPublicKey public_key_of(const std::string& dir_or_file);

}  // namespace fedseg::package
