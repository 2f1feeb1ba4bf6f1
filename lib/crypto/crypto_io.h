// fedseg::crypto byte streams: the reader/writer interfaces the age and minisign
// code streams through, so that encryption, decryption, signing and verification
// run in bounded memory whatever the file size. Implementations over file
// descriptors, paths, strings and callbacks.
// Part of the crypto module: depends on fedseg core and libsodium only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace fedseg::crypto {

// Something bytes are read from.
class Source {
 public:
  virtual ~Source() = default;
  // Reads up to n bytes into buf; returns how many (fewer than n is fine), 0 only
  // at end of input. Throws Error 74 on read errors.
  virtual size_t read(void* buf, size_t n) = 0;
  // For sources whose bytes are already in memory: when the next n bytes lie there
  // contiguously, consumes them and returns where they are (valid until the next
  // call on this source), so that a reader can use them in place; otherwise
  // nullptr, consuming nothing: use read(). The default never can.
  virtual const uint8_t* view(size_t n) {
    (void)n;
    return nullptr;
  }
  // A name for error messages (a path, "stdin", "<memory>").
  virtual std::string name() const { return "<input>"; }
};

// Something bytes are written to.
class Sink {
 public:
  virtual ~Sink() = default;
  // Writes all n bytes or throws (Error 74 for I/O errors).
  virtual void write(const void* buf, size_t n) = 0;
  virtual std::string name() const { return "<output>"; }
};

// Reads until n bytes or end of input; returns the count (< n only at EOF).
size_t read_full(Source& in, void* buf, size_t n);

// A file descriptor that the caller owns (not closed here).
class FdSource : public Source {
 public:
  explicit FdSource(int fd, std::string name = "<fd>") : fd_(fd), name_(std::move(name)) {}
  size_t read(void* buf, size_t n) override;
  std::string name() const override { return name_; }

 private:
  int fd_;
  std::string name_;
};

class FdSink : public Sink {
 public:
  explicit FdSink(int fd, std::string name = "<fd>") : fd_(fd), name_(std::move(name)) {}
  void write(const void* buf, size_t n) override;
  std::string name() const override { return name_; }

 private:
  int fd_;
  std::string name_;
};

// Opens a path for reading ("-" is stdin). Throws Error 66 if it cannot be opened.
class FileSource : public Source {
 public:
  explicit FileSource(const std::string& path);
  ~FileSource() override;
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;
  size_t read(void* buf, size_t n) override;
  std::string name() const override { return path_; }
  int fd() const { return fd_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool owned_ = false;
};

// In-memory input (the string must outlive the source).
class StringSource : public Source {
 public:
  explicit StringSource(const std::string& s) : data_(s.data()), size_(s.size()) {}
  StringSource(const void* data, size_t size) : data_(static_cast<const char*>(data)), size_(size) {}
  // A temporary would dangle: refuse it at compile time.
  explicit StringSource(std::string&&) = delete;
  explicit StringSource(const char*) = delete;
  size_t read(void* buf, size_t n) override;
  const uint8_t* view(size_t n) override;
  std::string name() const override { return "<memory>"; }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Appends to a string.
class StringSink : public Sink {
 public:
  void write(const void* buf, size_t n) override { data.append(static_cast<const char*>(buf), n); }
  std::string name() const override { return "<memory>"; }
  std::string data;
};

// Adapters for callers with their own I/O (a compressor, a socket, AtomicFile).
class CallbackSource : public Source {
 public:
  using Fn = std::function<size_t(void*, size_t)>;
  explicit CallbackSource(Fn fn, std::string name = "<callback>") : fn_(std::move(fn)), name_(std::move(name)) {}
  size_t read(void* buf, size_t n) override { return fn_(buf, n); }
  std::string name() const override { return name_; }

 private:
  Fn fn_;
  std::string name_;
};

class CallbackSink : public Sink {
 public:
  using Fn = std::function<void(const void*, size_t)>;
  explicit CallbackSink(Fn fn, std::string name = "<callback>") : fn_(std::move(fn)), name_(std::move(name)) {}
  void write(const void* buf, size_t n) override { fn_(buf, n); }
  std::string name() const override { return name_; }

 private:
  Fn fn_;
  std::string name_;
};

}  // namespace fedseg::crypto
