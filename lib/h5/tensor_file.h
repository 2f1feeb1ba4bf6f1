// fedseg::h5: fedseg's HDF5 files (DESIGN.md §3): named N-D tensors with
// attributes, chunked with byte shuffle + zstd (filter 32015), and the root schema
// attributes fedseg_format, kind, created, tool and provenance.
// Depends on core and HDF5 only (no LibTorch, no curl). Every failure is a
// fedseg::Error: 66 missing input, 65 corrupt/truncated/unknown file, 73/74 write
// errors. HDF5's own error printing is switched off; its innermost message becomes
// the error's reason.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/atomic_file.h"
#include "core/buffer.h"

namespace fedseg::h5 {

// The format version this build writes and the newest it reads.
constexpr int64_t kFormatVersion = 1;

// The kinds of file fedseg knows (the root attribute `kind`).
const std::vector<std::string>& known_kinds();

enum class DType : uint8_t { f16, f32, f64, u8, i8, u16, i16, u32, i32, u64, i64 };
const char* dtype_name(DType t);       // "float32", "uint8", ...
size_t dtype_size(DType t);
std::optional<DType> dtype_from_name(const std::string& name);
bool dtype_is_float(DType t);

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<int8_t>() { return DType::i8; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::u16; }
template <> constexpr DType dtype_of<int16_t>() { return DType::i16; }
template <> constexpr DType dtype_of<uint32_t>() { return DType::u32; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<uint64_t>() { return DType::u64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }

using Shape = std::vector<uint64_t>;
uint64_t numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[30,4,3,3,3]"

struct TensorInfo {
  std::string name;  // full path without the leading '/': "params/enc.0.conv1.weight"
  std::optional<DType> dtype;  // empty: a type fedseg does not use
  std::string type_desc;       // HDF5's view, for types fedseg does not use
  Shape shape;
  Shape chunks;                // empty: contiguous
  uint64_t bytes = 0;          // logical size in the stored dtype
  uint64_t stored_bytes = 0;   // on disk
  std::vector<std::string> filters;  // "shuffle", "zstd", "deflate", ...
};

using Attr = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>>;
std::string attr_to_string(const Attr& a);

struct WriteOptions {
  bool compress = true;  // shuffle + zstd; false: contiguous, no filters
  int zstd_level = 3;
  Shape chunks;          // empty: chosen automatically (about 1 MiB per chunk)
};

// A tensor chunked, shuffled and zstd-compressed in memory exactly as write() stores
// it, for writers that compress on worker threads while one thread writes the file
// (File::write(name, EncodedTensor)). Its buffers are reused when encoded again.
struct EncodedTensor {
  DType dtype = DType::u8;
  Shape shape, chunks;
  int zstd_level = 3;
  RawVector<unsigned char> bytes;  // the compressed chunks, back to back
  std::vector<uint64_t> ends;      // end of each chunk in bytes, chunk grid in C order
};

// Fills one chunk: `out` holds the chunk shape `dims` in C order and receives the
// tensor's values from `start` on; positions beyond the tensor's shape must be 0.
using ChunkFill = std::function<void(const Shape& start, const Shape& dims, void* out)>;

// Encodes a tensor of `t` values given chunk by chunk (opts.compress must be set;
// opts.chunks as for File::write). Byte shuffle and zstd as the filters would apply.
void encode(DType t, const Shape& shape, const ChunkFill& fill, const WriteOptions& opts, EncodedTensor& out);
// The same from numel(shape) values of `t` in C order.
void encode(DType t, const Shape& shape, const void* data, const WriteOptions& opts, EncodedTensor& out);

// Registers filter 32015 in this process (idempotent, thread-safe).
void register_zstd_filter();

// Whether the HDF5 library may be called from several threads at once (Debian's is
// built so; a build without --enable-threadsafe is not).
bool library_thread_safe();

// Opening options for File::open.
struct OpenOptions {
  std::string expect_kind;  // non-empty: Error 65 unless the file's kind is this
  bool check_schema = true; // false: any HDF5 file (inspect shows what it is)
};

struct ImageBytes;  // a file image File::open_image() uses in place

class File {
 public:
  // Opens read-only. Error 66 if missing, 65 if not HDF5, truncated, corrupt, not a
  // fedseg file, of an unknown kind or a newer format version.
  static File open(const std::string& path, const OpenOptions& opts = {});
  // The same from a file image in memory (read-only, not copied: `data` must outlive
  // the File). `label` names it in errors.
  static File open_image(const void* data, size_t size, const std::string& label, const OpenOptions& opts = {});
  // Creates (truncating) path and writes the root schema attributes. `tool` is
  // e.g. "fedseg-train 0.1.0"; provenance a JSON string.
  static File create(const std::string& path, const std::string& kind, const std::string& tool,
                     const std::string& provenance_json, int64_t format = kFormatVersion);

  File() = default;
  ~File();
  File(File&& o) noexcept;
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // Flushes and closes; Error 74 on failure. Called by the destructor (errors then ignored).
  void close();
  bool is_open() const { return id_ >= 0; }
  const std::string& path() const { return path_; }
  // Schema (empty / 0 when opened with check_schema=false on a foreign file).
  const std::string& kind() const { return kind_; }
  int64_t format() const { return format_; }

  // Attributes of "/" or of any group or tensor path.
  void set_attr(const std::string& obj, const std::string& name, const Attr& value);
  bool has_attr(const std::string& obj, const std::string& name) const;
  Attr attr(const std::string& obj, const std::string& name) const;  // Error 65 if absent
  std::string attr_string(const std::string& obj, const std::string& name) const;
  int64_t attr_int(const std::string& obj, const std::string& name) const;
  double attr_double(const std::string& obj, const std::string& name) const;
  std::map<std::string, Attr> attrs(const std::string& obj = "/") const;

  // Writes a tensor (creating intermediate groups). `data` holds numel(shape)
  // values of `mem`; HDF5 converts them to `stored` (e.g. float32 -> float16).
  void write(const std::string& name, DType stored, const Shape& shape, const void* data, DType mem,
             const WriteOptions& opts = {});
  template <class T>
  void write(const std::string& name, const Shape& shape, const T* data, const WriteOptions& opts = {}) {
    write(name, dtype_of<T>(), shape, data, dtype_of<T>(), opts);
  }
  // Writes an encoded tensor: the same dataset as write() makes, its chunks stored
  // as they are (H5Dwrite_chunk), without HDF5's filter pipeline.
  void write(const std::string& name, const EncodedTensor& t);

  bool exists(const std::string& name) const;
  TensorInfo info(const std::string& name) const;
  // All tensors below group ("" = whole file), sorted by name.
  std::vector<TensorInfo> tensors(const std::string& group = "") const;
  // Names of the direct children (groups and tensors) of a group, sorted.
  std::vector<std::string> children(const std::string& group) const;

  // Reads a whole tensor converted to `mem` into out (out_bytes must fit).
  void read(const std::string& name, DType mem, void* out, size_t out_bytes) const;
  // For a file opened with open_image(): where a tensor's values lie in the image when
  // they can be used in place (contiguous, no filters, little-endian float32, wholly
  // inside the image), else nullptr (read() it).
  const float* f32_in_image(const std::string& name) const;
  template <class T>
  std::vector<T> read_as(const std::string& name) const {
    TensorInfo ti = info(name);
    std::vector<T> v(checked_numel(ti));
    read(name, dtype_of<T>(), v.data(), v.size() * sizeof(T));
    return v;
  }
  // Copies a tensor or group (with attributes) from another open file, creating
  // intermediate groups. Used to carry unchanged parts into a rewritten file.
  void copy_from(const File& src, const std::string& name);

  // Reads the box [start, start+count) converted to `mem`.
  void read_slab(const std::string& name, const Shape& start, const Shape& count, DType mem, void* out) const;

  // Largest tensor read_as() allocates; more is treated as corrupt (Error 65).
  static constexpr uint64_t kMaxReadBytes = uint64_t(1) << 34;

 private:
  void check_schema(const OpenOptions& opts);  // the schema part of open()
  uint64_t checked_numel(const TensorInfo& ti) const;
  hid_t id_ = -1;
  std::string path_, kind_;
  int64_t format_ = 0;
  bool writable_ = false;
  std::shared_ptr<ImageBytes> image_;  // open_image()'s bytes (HDF5's image callbacks see them)
};

// A fedseg HDF5 file written atomically: created under a temp name in the target
// folder, and only commit() closes it, syncs it and renames it into place. Error
// 73 when the output exists and !overwrite.
class Output {
 public:
  Output(const std::string& final_path, const std::string& kind, const std::string& tool,
         const std::string& provenance_json, bool overwrite);
  File& file() { return file_; }
  // Closes the HDF5 file: temp_path() then holds its final bytes (commit() still
  // syncs and renames it into place).
  void close() { file_.close(); }
  const std::string& temp_path() const { return atomic_.temp_path(); }
  void sync() { atomic_.sync(); }
  void commit();

 private:
  AtomicFile atomic_;
  File file_;
};

// The result of checking one tensor (File::verify).
struct TensorCheck {
  std::string name;
  std::string sha256;         // of the values as little-endian stored dtype, C order
  uint64_t nonfinite = 0;     // NaN/Inf count (float tensors)
  double min = 0, max = 0;    // over finite values (0,0 when none)
};

// Reads every value of the tensor in bounded memory; Error 65 if a chunk does not decode.
TensorCheck check_tensor(const File& f, const std::string& name);

// The directory holding the loadable plugin in this build or installation (for messages).
std::string plugin_hint();

}  // namespace fedseg::h5
