#include "fed/ledger.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/sha256.h"

namespace fedseg::fed {

using nlohmann::json;

Ledger Ledger::load(const std::string& path) {
  Ledger l;
  l.path_ = path;
  if (!path_exists(path)) return l;
  std::string text = read_file(path, size_t(1) << 30);
  // A last line without its newline is an append torn by a crash: ignored here and
  // cut off by the next append (the round it belonged to is then recorded again).
  size_t complete = text.rfind('\n');
  complete = complete == std::string::npos ? 0 : complete + 1;
  l.valid_bytes_ = complete;
  text.resize(complete);
  std::istringstream in(text);
  std::string line, prev(64, '0');
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      return Error(kExitDataErr, "broken ledger", path, "line " + std::to_string(n) + ": " + why);
    };
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw bad("not a JSON object (a torn or edited line?)");
    if (!j.contains("index") || !j["index"].is_number_integer() || j["index"].get<int64_t>() != int64_t(l.entries_.size()))
      throw bad("index is not " + std::to_string(l.entries_.size()));
    if (!j.contains("prev") || j["prev"] != prev) throw bad("'prev' is not the sha256 of the line before: the chain is broken");
    if (!j.contains("round") || !j["round"].is_number_integer()) throw bad("no round");
    LedgerEntry e{j, line, sha256_hex(line)};
    prev = e.sha256;
    l.entries_.push_back(std::move(e));
  }
  return l;
}

const LedgerEntry* Ledger::for_round(int64_t round) const {
  for (const auto& e : entries_)
    if (e.doc["round"].get<int64_t>() == round) return &e;
  return nullptr;
}

std::set<std::pair<std::string, int64_t>> Ledger::accepted() const {
  std::set<std::pair<std::string, int64_t>> s;
  for (const auto& e : entries_)
    for (const auto& a : e.doc.value("accepted", json::array())) s.insert({a.value("site", ""), e.doc["round"].get<int64_t>()});
  return s;
}

std::set<std::string> Ledger::nonces() const {
  std::set<std::string> s;
  for (const auto& e : entries_)
    for (const auto& a : e.doc.value("accepted", json::array())) s.insert(a.value("nonce", ""));
  return s;
}

std::string Ledger::append(json entry) {
  entry["index"] = int64_t(entries_.size());
  entry["prev"] = entries_.empty() ? std::string(64, '0') : entries_.back().sha256;
  std::string line = entry.dump();
  std::string bytes = line + "\n";
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno(kExitCantCreate, "cannot open the ledger", path_, errno);
  if (::ftruncate(fd, off_t(valid_bytes_)) != 0 || ::lseek(fd, off_t(valid_bytes_), SEEK_SET) < 0) {
    int e = errno;
    ::close(fd);
    throw_errno(kExitIoErr, "cannot append to the ledger", path_, e);
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw_errno(kExitIoErr, "cannot append to the ledger", path_, e);
    }
    done += size_t(w);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    throw_errno(kExitIoErr, "cannot sync the ledger", path_, e);
  }
  ::close(fd);
  valid_bytes_ += bytes.size();
  LedgerEntry e{entry, line, sha256_hex(line)};
  entries_.push_back(e);
  return e.sha256;
}

}  // namespace fedseg::fed
