#include "package/roster.h"

#include <sys/stat.h>

#include <cctype>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/sha256.h"

namespace fedseg::package {

bool valid_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    char c = id[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
  }
  return true;
}

namespace {

std::string str_member(const nlohmann::json& j, const char* key, const std::string& name, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string())
    throw Error(kExitDataErr, "malformed roster", name, where + " lacks string member '" + key + "'");
  return j[key].get<std::string>();
}

RosterMember member(const nlohmann::json& j, const std::string& id, const std::string& name, const std::string& where) {
  std::string r = str_member(j, "age_recipient", name, where);
  std::string k = str_member(j, "minisign_public_key", name, where);
  try {
    return RosterMember{id, crypto::AgeRecipient::parse(r), crypto::MinisignPublicKey::parse(k, name)};
  } catch (const Error& e) {
    throw Error(kExitDataErr, "malformed roster", name, where + ": " + e.why());
  }
}

}  // namespace

Roster Roster::parse(const std::string& text, const std::string& name) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(kExitDataErr, "malformed roster", name, "not a JSON object");
  if (!j.contains("fedseg_federation") || !j["fedseg_federation"].is_number_integer())
    throw Error(kExitDataErr, "malformed roster", name, "no integer 'fedseg_federation' version");
  if (j["fedseg_federation"].get<int64_t>() != kVersion)
    throw Error(kExitDataErr, "unsupported roster version", name,
                std::to_string(j["fedseg_federation"].get<int64_t>()) + " (this build reads " + std::to_string(kVersion) + ")");
  Roster r;
  r.federation_ = str_member(j, "federation", name, "the roster");
  if (!valid_id(r.federation_)) throw Error(kExitDataErr, "malformed roster", name, "invalid federation id '" + r.federation_ + "'");
  if (!j.contains("aggregator")) throw Error(kExitDataErr, "malformed roster", name, "no 'aggregator'");
  r.aggregator_ = member(j["aggregator"], "-", name, "aggregator");
  if (!j.contains("sites") || !j["sites"].is_array()) throw Error(kExitDataErr, "malformed roster", name, "no 'sites' array");
  for (const auto& s : j["sites"]) {
    std::string id = str_member(s, "id", name, "a site");
    if (!valid_id(id)) throw Error(kExitDataErr, "malformed roster", name, "invalid site id '" + id + "'");
    if (r.site(id)) throw Error(kExitDataErr, "malformed roster", name, "site '" + id + "' listed twice");
    RosterMember m = member(s, id, name, "site '" + id + "'");
    if (r.by_key_id(m.key.key_id()))
      throw Error(kExitDataErr, "malformed roster", name, "key " + m.key.key_id_hex() + " of site '" + id + "' is used twice");
    r.sites_.push_back(std::move(m));
  }
  return r;
}

Roster Roster::load(const std::string& path, const std::optional<crypto::MinisignPublicKey>& pinned) {
  std::string text = read_file(path, size_t(64) << 20);
  if (pinned) {
    crypto::MinisignSignature sig = crypto::MinisignSignature::load(path + ".minisig");
    crypto::StringSource src(text);
    crypto::verify(*pinned, sig, src);
  }
  Roster r = parse(text, path);
  if (pinned && !(r.aggregator_.key == *pinned))
    throw Error(kExitDataErr, "roster names another aggregator", path,
                "its aggregator key " + r.aggregator_.key.key_id_hex() + " is not the pinned key " + pinned->key_id_hex());
  return r;
}

const RosterMember* Roster::by_key_id(const crypto::KeyId& id) const {
  if (aggregator_.key.key_id() == id) return &aggregator_;
  for (const auto& s : sites_)
    if (s.key.key_id() == id) return &s;
  return nullptr;
}

const RosterMember* Roster::site(const std::string& id) const {
  for (const auto& s : sites_)
    if (s.id == id) return &s;
  return nullptr;
}

}  // namespace fedseg::package

namespace fedseg::package {

std::string fingerprint(const crypto::AgeRecipient& recipient, const crypto::MinisignPublicKey& key) {
  Sha256 h;
  std::string msg = "fedseg1 identity\n" + recipient.to_string() + "\n" + key.to_base64() + "\n";
  h.update(msg.data(), msg.size());
  std::string hex = h.hex();
  std::string out;
  for (size_t i = 0; i < 32; i += 4) {
    if (i) out += ' ';
    for (size_t k = i; k < i + 4; ++k) out += static_cast<char>(std::toupper(static_cast<unsigned char>(hex[k])));
  }
  return out;
}

namespace {
}  // namespace

crypto::AgeRecipient recipient_of(const std::string& dir) {
  std::string path = is_directory(dir) ? dir + "/age.pub" : dir;
  auto r = crypto::parse_recipients(read_file(path, 1 << 16), path);
  if (r.empty()) throw Error(kExitDataErr, "no age recipient", path);
  return r.front();
}

crypto::MinisignPublicKey public_key_of(const std::string& dir_or_file) {
  return crypto::MinisignPublicKey::load(is_directory(dir_or_file) ? dir_or_file + "/minisign.pub" : dir_or_file);
}

}  // namespace fedseg::package
