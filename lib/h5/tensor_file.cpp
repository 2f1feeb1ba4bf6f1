#include "h5/tensor_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <limits>
#include <mutex>

#include "core/buffer.h"
#include "core/half.h"
#include "core/error.h"
#include "core/sha256.h"
#include "h5/zstd_filter.h"

namespace fedseg::h5 {
namespace {

// RAII for HDF5 identifiers.
class Hid {
 public:
  Hid() = default;
  Hid(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  ~Hid() { reset(); }
  Hid(Hid&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      closer_ = o.closer_;
      o.id_ = -1;
    }
    return *this;
  }
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = -1;
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

// HDF5 prints its error stack to stderr unless told not to; the setting is per
// thread in a thread-safe build, so every entry point calls this.
void quiet() {
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

herr_t collect_error(unsigned, const H5E_error2_t* e, void* data) {
  auto* v = static_cast<std::vector<std::string>*>(data);
  if (e->desc && *e->desc) v->push_back(e->desc);
  return 0;
}

// The innermost message of HDF5's error stack ("truncated file: eof = ..."),
// or `fallback`. Clears the stack.
std::string h5_reason(const std::string& fallback) {
  std::vector<std::string> msgs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &msgs);
  H5Eclear2(H5E_DEFAULT);
  for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) {
    // Some innermost messages are generic; prefer a specific one.
    if (*it != "can't read data" && *it != "unable to read raw data chunk") return *it;
  }
  return msgs.empty() ? fallback : msgs.back();
}

hid_t half_type() {
  static hid_t t = [] {
    hid_t h = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(h, 15, 10, 5, 0, 10);
    H5Tset_size(h, 2);
    H5Tset_ebias(h, 15);
    H5Tlock(h);
    return h;
  }();
  return t;
}

// Little-endian types: the stored form, and the memory form on the x86/arm hosts
// fedseg runs on.
hid_t le_type(DType t) {
  switch (t) {
    case DType::f16: return half_type();
    case DType::f32: return H5T_IEEE_F32LE;
    case DType::f64: return H5T_IEEE_F64LE;
    case DType::u8: return H5T_STD_U8LE;
    case DType::i8: return H5T_STD_I8LE;
    case DType::u16: return H5T_STD_U16LE;
    case DType::i16: return H5T_STD_I16LE;
    case DType::u32: return H5T_STD_U32LE;
    case DType::i32: return H5T_STD_I32LE;
    case DType::u64: return H5T_STD_U64LE;
    case DType::i64: return H5T_STD_I64LE;
  }
  return -1;
}

std::optional<DType> dtype_of_h5(hid_t type) {
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return std::nullopt;
    if (size == 2 && esize == 5 && msize == 10) return DType::f16;
    if (size == 4 && esize == 8 && msize == 23) return DType::f32;
    if (size == 8 && esize == 11 && msize == 52) return DType::f64;
    return std::nullopt;
  }
  if (cls == H5T_INTEGER) {
    bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    switch (size) {
      case 1: return is_signed ? DType::i8 : DType::u8;
      case 2: return is_signed ? DType::i16 : DType::u16;
      case 4: return is_signed ? DType::i32 : DType::u32;
      case 8: return is_signed ? DType::i64 : DType::u64;
      default: return std::nullopt;
    }
  }
  return std::nullopt;
}

std::string describe_h5_type(hid_t type) {
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: return "integer (" + std::to_string(H5Tget_size(type)) + " bytes)";
    case H5T_FLOAT: return "float (" + std::to_string(H5Tget_size(type)) + " bytes)";
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length";
    case H5T_OPAQUE: return "opaque";
    case H5T_BITFIELD: return "bitfield";
    case H5T_REFERENCE: return "reference";
    default: return "unknown type";
  }
}

std::string slash(const std::string& name) { return name.empty() || name[0] != '/' ? "/" + name : name; }
std::string unslash(const std::string& name) { return !name.empty() && name[0] == '/' ? name.substr(1) : name; }

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  if (const char* sde = std::getenv("SOURCE_DATE_EPOCH")) {
    char* end = nullptr;
    long long v = std::strtoll(sde, &end, 10);
    if (end && *end == 0 && v >= 0) t = static_cast<std::time_t>(v);
  }
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Hid file_access_plist() {
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // Outputs are private temp files renamed into place, so HDF5's own locking buys
  // nothing, and it fails on NFS/SMB mounts where hospitals share folders.
  H5Pset_file_locking(fapl.get(), false, true);
  return fapl;
}

Shape auto_chunks(const Shape& shape, size_t esize) {
  Shape c = shape;
  const uint64_t target = uint64_t(1) << 20;
  while (numel(c) * esize > target) {
    auto it = std::max_element(c.begin(), c.end());
    if (*it <= 1) break;
    *it = (*it + 1) / 2;
  }
  for (auto& v : c) v = std::max<uint64_t>(v, 1);
  return c;
}

}  // namespace

const std::vector<std::string>& known_kinds() {
  static const std::vector<std::string> k = {"global", "update", "dataset", "metrics", "checkpoint", "partial"};
  return k;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f16: return "float16";
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::u8: return "uint8";
    case DType::i8: return "int8";
    case DType::u16: return "uint16";
    case DType::i16: return "int16";
    case DType::u32: return "uint32";
    case DType::i32: return "int32";
    case DType::u64: return "uint64";
    case DType::i64: return "int64";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::u8:
    case DType::i8: return 1;
    case DType::f16:
    case DType::u16:
    case DType::i16: return 2;
    case DType::f32:
    case DType::u32:
    case DType::i32: return 4;
    default: return 8;
  }
}

std::optional<DType> dtype_from_name(const std::string& name) {
  for (DType t : {DType::f16, DType::f32, DType::f64, DType::u8, DType::i8, DType::u16, DType::i16, DType::u32,
                  DType::i32, DType::u64, DType::i64})
    if (name == dtype_name(t)) return t;
  return std::nullopt;
}

bool dtype_is_float(DType t) { return t == DType::f16 || t == DType::f32 || t == DType::f64; }

uint64_t numel(const Shape& s) {
  uint64_t n = 1;
  for (auto d : s) {
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / d) return std::numeric_limits<uint64_t>::max();
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

std::string attr_to_string(const Attr& a) {
  struct V {
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const {
      char b[32];
      std::snprintf(b, sizeof b, "%.17g", v);
      return b;
    }
    std::string operator()(const std::string& v) const { return v; }
    std::string operator()(const std::vector<int64_t>& v) const {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
      return s + "]";
    }
    std::string operator()(const std::vector<double>& v) const {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + (*this)(v[i]);
      return s + "]";
    }
  };
  return std::visit(V{}, a);
}

void register_zstd_filter() {
  static std::once_flag once;
  std::call_once(once, [] {
    quiet();
    if (H5Zfilter_avail(FEDSEG_H5Z_FILTER_ZSTD) <= 0 && H5Zregister(&fedseg_h5z_zstd_class) < 0)
      throw Error(kExitSoftware, "cannot register the HDF5 zstd filter", "", h5_reason("H5Zregister failed"));
  });
}

std::string plugin_hint() {
#ifdef FEDSEG_PLUGIN_DIR
  return FEDSEG_PLUGIN_DIR;
#else
  return "";
#endif
}

// ---------------------------------------------------------------- File

File::~File() {
  try {
    close();
  } catch (...) {
  }
}

File::File(File&& o) noexcept
    : id_(o.id_), path_(std::move(o.path_)), kind_(std::move(o.kind_)), format_(o.format_), writable_(o.writable_),
      image_(std::move(o.image_)) {
  o.id_ = -1;
}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    try {
      close();
    } catch (...) {
    }
    id_ = o.id_;
    path_ = std::move(o.path_);
    kind_ = std::move(o.kind_);
    format_ = o.format_;
    writable_ = o.writable_;
    image_ = std::move(o.image_);
    o.id_ = -1;
  }
  return *this;
}

void File::close() {
  if (id_ < 0) return;
  quiet();
  hid_t id = id_;
  id_ = -1;
  std::shared_ptr<ImageBytes> bytes = std::move(image_);  // until HDF5 let go of the image
  if (H5Fclose(id) < 0) throw Error(writable_ ? kExitIoErr : kExitDataErr, "cannot close", path_, h5_reason("H5Fclose failed"));
}

File File::open(const std::string& path, const OpenOptions& opts) {
  quiet();
  register_zstd_filter();
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw_errno(kExitNoInput, "cannot open", path, errno);
  if (S_ISDIR(st.st_mode)) throw Error(kExitNoInput, "cannot open", path, "is a folder");
  if (::access(path.c_str(), R_OK) != 0) throw_errno(kExitNoInput, "cannot open", path, errno);
  htri_t is = H5Fis_hdf5(path.c_str());
  H5Eclear2(H5E_DEFAULT);
  if (is <= 0) throw Error(kExitDataErr, "cannot read", path, "not an HDF5 file");
  Hid fapl = file_access_plist();
  File f;
  f.path_ = path;
  f.id_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (f.id_ < 0) throw Error(kExitDataErr, "cannot read", path, "corrupt HDF5 file: " + h5_reason("H5Fopen failed"));
  f.check_schema(opts);
  return f;
}

struct ImageBytes {
  void* data;
  size_t size;
};

namespace {

// HDF5's file image callbacks for an image used where it lies: read-only, never
// copied, grown or freed (the caller owns the bytes). HDF5 hands the image from the
// property list to the core driver through "malloc" and "memcpy"; both are the
// caller's bytes themselves. udata (the ImageBytes, owned by the File) outlives the file.
void* image_malloc(size_t size, H5FD_file_image_op_t, void* udata) {
  auto* b = static_cast<ImageBytes*>(udata);
  return size == b->size ? b->data : nullptr;
}
void* image_memcpy(void* dest, const void* src, size_t, H5FD_file_image_op_t, void*) {
  return dest == src ? dest : nullptr;  // a real copy is never needed, and refused
}
void* image_realloc(void*, size_t, H5FD_file_image_op_t, void*) { return nullptr; }
herr_t image_free(void*, H5FD_file_image_op_t, void*) { return 0; }
void* udata_copy(void* udata) { return udata; }
herr_t udata_free(void*) { return 0; }

}  // namespace

File File::open_image(const void* data, size_t size, const std::string& label, const OpenOptions& opts) {
  quiet();
  register_zstd_filter();
  bool signature = false;  // at 0, 512, 1024, 2048, ... (after a user block), as HDF5 looks for it
  for (size_t at = 0; at + 8 <= size && !signature; at = at ? 2 * at : 512)
    signature = std::memcmp(static_cast<const char*>(data) + at, "\x89HDF\r\n\x1a\n", 8) == 0;
  if (!signature) throw Error(kExitDataErr, "cannot read", label, "not an HDF5 file");
  File f;
  f.path_ = label;
  // Read-only, neither copied nor freed by HDF5: the caller keeps `data` until close().
  f.image_ = std::make_shared<ImageBytes>(ImageBytes{const_cast<void*>(data), size});
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5FD_file_image_callbacks_t cb{image_malloc, image_memcpy, image_realloc, image_free,
                                 udata_copy,   udata_free,   f.image_.get()};
  if (H5Pset_fapl_core(fapl.get(), 1 << 20, false) < 0 || H5Pset_file_image_callbacks(fapl.get(), &cb) < 0 ||
      H5Pset_file_image(fapl.get(), const_cast<void*>(data), size) < 0)
    throw Error(kExitSoftware, "cannot set up an HDF5 file image for", label, h5_reason("H5Pset_file_image failed"));
  // A name of its own: the core driver tells open files apart by name.
  static std::atomic<uint64_t> counter{0};
  const std::string name = "fedseg-image-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  f.id_ = H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (f.id_ < 0) throw Error(kExitDataErr, "cannot read", label, "corrupt HDF5 file: " + h5_reason("H5Fopen of the image failed"));
  f.check_schema(opts);
  return f;
}

void File::check_schema(const OpenOptions& opts) {
  File& f = *this;
  const std::string& path = path_;
  if (!opts.check_schema) {
    if (f.has_attr("/", "fedseg_format") && f.has_attr("/", "kind")) {
      try {
        f.format_ = f.attr_int("/", "fedseg_format");
        f.kind_ = f.attr_string("/", "kind");
      } catch (const Error&) {
      }
    }
    return;
  }
  if (!f.has_attr("/", "fedseg_format"))
    throw Error(kExitDataErr, "cannot read", path, "not a fedseg file (no 'fedseg_format' attribute)");
  f.format_ = f.attr_int("/", "fedseg_format");
  if (f.format_ > kFormatVersion)
    throw Error(kExitDataErr, "cannot read", path,
                "format version " + std::to_string(f.format_) + " is newer than this fedseg reads (" +
                    std::to_string(kFormatVersion) + "); upgrade fedseg");
  if (f.format_ < 1) throw Error(kExitDataErr, "cannot read", path, "invalid format version " + std::to_string(f.format_));
  if (!f.has_attr("/", "kind")) throw Error(kExitDataErr, "cannot read", path, "no 'kind' attribute");
  f.kind_ = f.attr_string("/", "kind");
  const auto& kinds = known_kinds();
  if (std::find(kinds.begin(), kinds.end(), f.kind_) == kinds.end())
    throw Error(kExitDataErr, "cannot read", path, "unknown kind '" + f.kind_ + "'");
  if (!opts.expect_kind.empty() && f.kind_ != opts.expect_kind)
    throw Error(kExitDataErr, "wrong kind of file", path, "is a " + f.kind_ + " file, expected " + opts.expect_kind);
}

File File::create(const std::string& path, const std::string& kind, const std::string& tool,
                  const std::string& provenance_json, int64_t format) {
  quiet();
  register_zstd_filter();
  Hid fapl = file_access_plist();
  Hid fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  File f;
  f.path_ = path;
  f.writable_ = true;
  f.id_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (f.id_ < 0) throw Error(kExitCantCreate, "cannot create", path, h5_reason("H5Fcreate failed"));
  f.kind_ = kind;
  f.format_ = format;
  f.set_attr("/", "fedseg_format", format);
  f.set_attr("/", "kind", kind);
  f.set_attr("/", "created", utc_now());
  f.set_attr("/", "tool", tool);
  f.set_attr("/", "provenance", provenance_json.empty() ? std::string("{}") : provenance_json);
  return f;
}

void File::set_attr(const std::string& obj, const std::string& name, const Attr& value) {
  quiet();
  Hid o(H5Oopen(id_, slash(obj).c_str(), H5P_DEFAULT), H5Oclose);
  if (!o.ok()) throw Error(kExitSoftware, "no object '" + obj + "' in", path_, h5_reason("H5Oopen failed"));
  if (H5Aexists(o.get(), name.c_str()) > 0) H5Adelete(o.get(), name.c_str());
  Hid space, type;
  const void* buf = nullptr;
  hid_t mem = -1;
  const char* cstr = nullptr;
  if (auto* i = std::get_if<int64_t>(&value)) {
    space = Hid(H5Screate(H5S_SCALAR), H5Sclose);
    mem = H5T_NATIVE_INT64;
    type = Hid(H5Tcopy(H5T_STD_I64LE), H5Tclose);
    buf = i;
  } else if (auto* d = std::get_if<double>(&value)) {
    space = Hid(H5Screate(H5S_SCALAR), H5Sclose);
    mem = H5T_NATIVE_DOUBLE;
    type = Hid(H5Tcopy(H5T_IEEE_F64LE), H5Tclose);
    buf = d;
  } else if (auto* s = std::get_if<std::string>(&value)) {
    space = Hid(H5Screate(H5S_SCALAR), H5Sclose);
    type = Hid(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type.get(), H5T_VARIABLE);
    H5Tset_cset(type.get(), H5T_CSET_UTF8);
    mem = type.get();
    cstr = s->c_str();
    buf = &cstr;
  } else if (auto* vi = std::get_if<std::vector<int64_t>>(&value)) {
    hsize_t n = vi->size();
    space = Hid(H5Screate_simple(1, &n, nullptr), H5Sclose);
    mem = H5T_NATIVE_INT64;
    type = Hid(H5Tcopy(H5T_STD_I64LE), H5Tclose);
    static const int64_t none = 0;  // H5Awrite refuses a null buffer, even for 0 values
    buf = vi->empty() ? &none : vi->data();
  } else if (auto* vd = std::get_if<std::vector<double>>(&value)) {
    hsize_t n = vd->size();
    space = Hid(H5Screate_simple(1, &n, nullptr), H5Sclose);
    mem = H5T_NATIVE_DOUBLE;
    type = Hid(H5Tcopy(H5T_IEEE_F64LE), H5Tclose);
    static const double none = 0;
    buf = vd->empty() ? &none : vd->data();
  }
  Hid a(H5Acreate2(o.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || H5Awrite(a.get(), mem, buf) < 0)
    throw Error(kExitIoErr, "cannot write attribute '" + name + "' to", path_, h5_reason("H5Awrite failed"));
}

bool File::has_attr(const std::string& obj, const std::string& name) const {
  quiet();
  htri_t r = H5Aexists_by_name(id_, slash(obj).c_str(), name.c_str(), H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

Attr File::attr(const std::string& obj, const std::string& name) const {
  quiet();
  const std::string where = "attribute '" + name + "'" + (obj == "/" || obj.empty() ? "" : " of '" + obj + "'");
  Hid a(H5Aopen_by_name(id_, slash(obj).c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok()) throw Error(kExitDataErr, "cannot read " + where + " in", path_, h5_reason("no such attribute"));
  Hid type(H5Aget_type(a.get()), H5Tclose);
  Hid space(H5Aget_space(a.get()), H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space.get());
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (n < 0 || rank < 0 || rank > 1 || n > (1 << 24))
    throw Error(kExitDataErr, "cannot read " + where + " in", path_, "unsupported shape");
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls == H5T_STRING) {
    if (n != 1) throw Error(kExitDataErr, "cannot read " + where + " in", path_, "string arrays are not used by fedseg");
    if (H5Tis_variable_str(type.get()) > 0) {
      Hid mem(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(mem.get(), H5T_VARIABLE);
      H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
      char* s = nullptr;
      if (H5Aread(a.get(), mem.get(), &s) < 0)
        throw Error(kExitDataErr, "cannot read " + where + " in", path_, h5_reason("H5Aread failed"));
      std::string out = s ? s : "";
      H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, &s);
      return out;
    }
    size_t size = H5Tget_size(type.get());
    if (size > (1u << 24)) throw Error(kExitDataErr, "cannot read " + where + " in", path_, "string too long");
    std::string out(size, '\0');
    Hid mem(H5Tcopy(type.get()), H5Tclose);
    if (H5Aread(a.get(), mem.get(), out.data()) < 0)
      throw Error(kExitDataErr, "cannot read " + where + " in", path_, h5_reason("H5Aread failed"));
    out.resize(std::strlen(out.c_str()));
    return out;
  }
  if (rank == 1 && n == 0) {  // an empty vector (H5Aread refuses a null buffer)
    if (cls == H5T_INTEGER) return std::vector<int64_t>{};
    if (cls == H5T_FLOAT) return std::vector<double>{};
  }
  if (cls == H5T_INTEGER) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    if (H5Aread(a.get(), H5T_NATIVE_INT64, v.data()) < 0)
      throw Error(kExitDataErr, "cannot read " + where + " in", path_, h5_reason("H5Aread failed"));
    if (rank == 0) return v.at(0);
    return v;
  }
  if (cls == H5T_FLOAT) {
    std::vector<double> v(static_cast<size_t>(n));
    if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, v.data()) < 0)
      throw Error(kExitDataErr, "cannot read " + where + " in", path_, h5_reason("H5Aread failed"));
    if (rank == 0) return v.at(0);
    return v;
  }
  throw Error(kExitDataErr, "cannot read " + where + " in", path_, "unsupported type " + describe_h5_type(type.get()));
}

std::string File::attr_string(const std::string& obj, const std::string& name) const {
  Attr a = attr(obj, name);
  if (auto* s = std::get_if<std::string>(&a)) return *s;
  throw Error(kExitDataErr, "attribute '" + name + "' is not a string in", path_);
}

int64_t File::attr_int(const std::string& obj, const std::string& name) const {
  Attr a = attr(obj, name);
  if (auto* i = std::get_if<int64_t>(&a)) return *i;
  if (auto* d = std::get_if<double>(&a); d && std::floor(*d) == *d && std::fabs(*d) < 9e15) return static_cast<int64_t>(*d);
  throw Error(kExitDataErr, "attribute '" + name + "' is not an integer in", path_);
}

double File::attr_double(const std::string& obj, const std::string& name) const {
  Attr a = attr(obj, name);
  if (auto* d = std::get_if<double>(&a)) return *d;
  if (auto* i = std::get_if<int64_t>(&a)) return static_cast<double>(*i);
  throw Error(kExitDataErr, "attribute '" + name + "' is not a number in", path_);
}

namespace {
herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}
}  // namespace

std::map<std::string, Attr> File::attrs(const std::string& obj) const {
  quiet();
  std::vector<std::string> names;
  hsize_t idx = 0;
  if (H5Aiterate_by_name(id_, slash(obj).c_str(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, &names,
                         H5P_DEFAULT) < 0)
    throw Error(kExitDataErr, "cannot list attributes of '" + obj + "' in", path_, h5_reason("H5Aiterate failed"));
  std::map<std::string, Attr> out;
  for (const auto& n : names) out.emplace(n, attr(obj, n));
  return out;
}

namespace {
// Creates the missing groups above `name` without modification times, so that the
// same content gives the same bytes (intermediate groups made by HDF5 itself would
// carry the creation time).
void ensure_parent_groups(hid_t file, const std::string& name) {
  std::string rest = unslash(name);
  size_t pos = 0;
  while ((pos = rest.find('/', pos)) != std::string::npos) {
    std::string g = "/" + rest.substr(0, pos);
    ++pos;
    htri_t e = H5Lexists(file, g.c_str(), H5P_DEFAULT);
    if (e > 0) continue;
    Hid gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    H5Pset_obj_track_times(gcpl.get(), false);
    Hid gid(H5Gcreate2(file, g.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
    if (!gid.ok()) throw Error(kExitIoErr, "cannot create group '" + g + "'", "", h5_reason("H5Gcreate failed"));
  }
}
}  // namespace

namespace {
// The chunk shape write() uses: opts.chunks (or about 1 MiB) clipped to the shape.
Shape resolve_chunks(const std::string& name, const Shape& shape, DType stored, const WriteOptions& opts) {
  Shape chunks = opts.chunks.empty() ? auto_chunks(shape, dtype_size(stored)) : opts.chunks;
  if (chunks.size() != shape.size()) throw Error(kExitSoftware, "chunk rank differs from tensor rank", name);
  for (size_t i = 0; i < chunks.size(); ++i) chunks[i] = std::max<uint64_t>(1, std::min(chunks[i], shape[i]));
  return chunks;
}

// Creates the dataset of a tensor (its chunks, filters and creation properties),
// shared by both write() paths so that they make the same file.
Hid create_dataset(hid_t file, const std::string& path, const std::string& name, DType stored, const Shape& shape,
                   bool compress, const Shape& chunks, int zstd_level) {
  auto fail = [&](const char* fallback) {
    return Error(kExitIoErr, "cannot write tensor '" + name + "' to", path, h5_reason(fallback));
  };
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Hid space(shape.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
            H5Sclose);
  if (!space.ok()) throw fail("bad shape");
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  H5Pset_char_encoding(lcpl.get(), H5T_CSET_UTF8);
  Hid dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_obj_track_times(dcpl.get(), false);  // same inputs, same bytes
  H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);  // every value is written: no fill pass
  if (compress) {
    std::vector<hsize_t> cd(chunks.begin(), chunks.end());
    H5Pset_chunk(dcpl.get(), static_cast<int>(cd.size()), cd.data());
    if (dtype_size(stored) > 1) H5Pset_shuffle(dcpl.get());
    unsigned level = static_cast<unsigned>(zstd_level);  // negative levels as two's complement
    if (H5Pset_filter(dcpl.get(), FEDSEG_H5Z_FILTER_ZSTD, H5Z_FLAG_MANDATORY, 1, &level) < 0) throw fail("zstd filter");
  }
  ensure_parent_groups(file, name);
  Hid ds(H5Dcreate2(file, slash(name).c_str(), le_type(stored), space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
         H5Dclose);
  if (!ds.ok()) throw fail("H5Dcreate failed");
  return ds;
}

// HDF5's byte shuffle (H5Z_FILTER_SHUFFLE): byte b of element i goes to b * n + i.
void shuffle_bytes(const unsigned char* in, size_t esize, size_t nbytes, unsigned char* out) {
  const size_t n = nbytes / esize;
  if (esize <= 1 || n <= 1) {
    std::memcpy(out, in, nbytes);
    return;
  }
  if (esize == 2) {
    unsigned char* lo = out;
    unsigned char* hi = out + n;
    for (size_t i = 0; i < n; ++i) {
      lo[i] = in[2 * i];
      hi[i] = in[2 * i + 1];
    }
  } else if (esize == 4) {
    for (size_t i = 0; i < n; ++i)
      for (size_t b = 0; b < 4; ++b) out[b * n + i] = in[4 * i + b];
  } else {
    for (size_t i = 0; i < n; ++i)
      for (size_t b = 0; b < esize; ++b) out[b * n + i] = in[esize * i + b];
  }
  std::memcpy(out + n * esize, in + n * esize, nbytes - n * esize);  // leftover bytes stay (none here)
}
}  // namespace

void File::write(const std::string& name, DType stored, const Shape& shape, const void* data, DType mem,
                 const WriteOptions& opts) {
  quiet();
  auto fail = [&](const char* fallback) {
    return Error(kExitIoErr, "cannot write tensor '" + name + "' to", path_, h5_reason(fallback));
  };
  uint64_t n = numel(shape);
  const bool compress = opts.compress && !shape.empty() && n > 0;
  Hid ds = create_dataset(id_, path_, name, stored, shape, compress,
                          compress ? resolve_chunks(name, shape, stored, opts) : Shape{}, opts.zstd_level);
  if (n == 0) return;
  if (stored == DType::f16 && (mem == DType::f32 || mem == DType::f64)) {
    RawVector<uint16_t> half(n);
    if (mem == DType::f32) {
      floats_to_halves(static_cast<const float*>(data), half.data(), n);
    } else {
      for (uint64_t i = 0; i < n; ++i) half[i] = float_to_half(static_cast<float>(static_cast<const double*>(data)[i]));
    }
    if (H5Dwrite(ds.get(), le_type(DType::f16), H5S_ALL, H5S_ALL, H5P_DEFAULT, half.data()) < 0) throw fail("H5Dwrite failed");
    return;
  }
  if (H5Dwrite(ds.get(), le_type(mem), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) throw fail("H5Dwrite failed");
}

void encode(DType t, const Shape& shape, const ChunkFill& fill, const WriteOptions& opts, EncodedTensor& out) {
  const uint64_t n = numel(shape);
  if (!opts.compress || shape.empty() || n == 0)
    throw Error(kExitSoftware, "cannot encode a tensor without chunks", shape_str(shape));
  out.dtype = t;
  out.shape = shape;
  out.chunks = resolve_chunks("", shape, t, opts);
  out.zstd_level = opts.zstd_level;
  out.bytes.clear();
  out.ends.clear();
  const size_t esize = dtype_size(t);
  const size_t chunk_bytes = static_cast<size_t>(numel(out.chunks)) * esize;
  const size_t bound = fedseg_h5z_zstd_bound(chunk_bytes);
  // Per-thread scratch, reused from tensor to tensor.
  thread_local RawVector<unsigned char> raw, shuffled;
  raw.resize(chunk_bytes);
  shuffled.resize(chunk_bytes);
  const size_t rank = shape.size();
  // Room for every chunk's worst case, reserved (not touched): no reallocation and
  // copy as the output grows, and fresh pages only for what is written. Twice that
  // when it grows, so that a buffer reused for a somewhat larger tensor keeps its pages.
  uint64_t nchunks = 1;
  for (size_t d = 0; d < rank; ++d) nchunks *= (shape[d] + out.chunks[d] - 1) / out.chunks[d];
  const size_t need = static_cast<size_t>(nchunks) * bound;
  if (out.bytes.capacity() < need) out.bytes.reserve(2 * need);
  Shape start(rank, 0);
  for (;;) {
    fill(start, out.chunks, raw.data());
    const unsigned char* src = raw.data();
    if (esize > 1) {
      shuffle_bytes(raw.data(), esize, chunk_bytes, shuffled.data());
      src = shuffled.data();
    }
    const size_t at = out.bytes.size();
    out.bytes.resize(at + bound);
    const size_t z = fedseg_h5z_zstd_compress(opts.zstd_level, src, chunk_bytes, out.bytes.data() + at, bound);
    if (z == 0) throw Error(kExitSoftware, "zstd compression failed", shape_str(shape));
    out.bytes.resize(at + z);
    out.ends.push_back(at + z);
    // Next chunk in C order of the chunk grid.
    size_t d = rank;
    while (d > 0) {
      --d;
      start[d] += out.chunks[d];
      if (start[d] < shape[d]) break;
      start[d] = 0;
      if (d == 0) return;
    }
  }
}

void encode(DType t, const Shape& shape, const void* data, const WriteOptions& opts, EncodedTensor& out) {
  const size_t esize = dtype_size(t);
  const auto* base = static_cast<const unsigned char*>(data);
  const size_t rank = shape.size();
  encode(t, shape, [&](const Shape& start, const Shape& dims, void* dst) {
    // Rows along axis m together with every trailing axis the chunk spans whole (one
    // copy per [m, rank) block, not per innermost row: a conv weight's last axis is 3
    // values); everything beyond the shape is 0.
    auto* o = static_cast<unsigned char*>(dst);
    size_t m = rank - 1;
    uint64_t inner = 1;  // values of the whole trailing axes after m
    while (m > 0 && dims[m] == shape[m]) inner *= shape[m--];
    const uint64_t rows = numel(dims) / (dims[m] * inner);
    const uint64_t row_in = std::min(dims[m], shape[m] - start[m]) * inner;
    const size_t row_bytes = static_cast<size_t>(dims[m] * inner) * esize;
    Shape idx(m, 0);
    for (uint64_t r = 0; r < rows; ++r, o += row_bytes) {
      bool inside = true;
      uint64_t off = 0;
      for (size_t d = 0; d < m; ++d) {
        const uint64_t i = start[d] + idx[d];
        inside &= i < shape[d];
        off = off * shape[d] + i;
      }
      off = (off * shape[m] + start[m]) * inner;
      if (inside) {
        std::memcpy(o, base + off * esize, static_cast<size_t>(row_in) * esize);
        std::memset(o + row_in * esize, 0, row_bytes - static_cast<size_t>(row_in) * esize);
      } else {
        std::memset(o, 0, row_bytes);
      }
      for (size_t d = m; d-- > 0;) {  // next row: the axes before m
        if (++idx[d] < dims[d]) break;
        idx[d] = 0;
      }
    }
  }, opts, out);
}

void File::write(const std::string& name, const EncodedTensor& t) {
  quiet();
  auto fail = [&](const char* fallback) {
    return Error(kExitIoErr, "cannot write tensor '" + name + "' to", path_, h5_reason(fallback));
  };
  Hid ds = create_dataset(id_, path_, name, t.dtype, t.shape, true, t.chunks, t.zstd_level);
  const size_t rank = t.shape.size();
  std::vector<hsize_t> start(rank, 0);
  uint64_t at = 0;
  for (uint64_t end : t.ends) {
    if (H5Dwrite_chunk(ds.get(), H5P_DEFAULT, 0, start.data(), static_cast<size_t>(end - at), t.bytes.data() + at) < 0)
      throw fail("H5Dwrite_chunk failed");
    at = end;
    for (size_t d = rank; d-- > 0;) {
      start[d] += t.chunks[d];
      if (start[d] < t.shape[d]) break;
      start[d] = 0;
    }
  }
}

bool File::exists(const std::string& name) const {
  quiet();
  // Check each path component: H5Lexists fails on a missing intermediate group.
  std::string p;
  std::string rest = unslash(name);
  size_t pos = 0;
  while (true) {
    size_t next = rest.find('/', pos);
    p = "/" + rest.substr(0, next);
    htri_t r = H5Lexists(id_, p.c_str(), H5P_DEFAULT);
    if (r <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (next == std::string::npos) return true;
    pos = next + 1;
  }
}

TensorInfo File::info(const std::string& name) const {
  quiet();
  TensorInfo ti;
  ti.name = unslash(name);
  Hid ds(H5Dopen2(id_, slash(name).c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) throw Error(kExitDataErr, "no tensor '" + ti.name + "' in", path_, h5_reason("H5Dopen failed"));
  Hid type(H5Dget_type(ds.get()), H5Tclose);
  Hid space(H5Dget_space(ds.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || rank > 32) throw Error(kExitDataErr, "bad shape of tensor '" + ti.name + "' in", path_, h5_reason("rank"));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  ti.shape.assign(dims.begin(), dims.end());
  ti.dtype = dtype_of_h5(type.get());
  ti.type_desc = ti.dtype ? dtype_name(*ti.dtype) : describe_h5_type(type.get());
  uint64_t n = numel(ti.shape);
  size_t esize = H5Tget_size(type.get());
  ti.bytes = n > std::numeric_limits<uint64_t>::max() / std::max<size_t>(esize, 1) ? std::numeric_limits<uint64_t>::max()
                                                                                    : n * esize;
  ti.stored_bytes = H5Dget_storage_size(ds.get());
  Hid dcpl(H5Dget_create_plist(ds.get()), H5Pclose);
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
    std::vector<hsize_t> cd(static_cast<size_t>(rank));
    H5Pget_chunk(dcpl.get(), rank, cd.data());
    ti.chunks.assign(cd.begin(), cd.end());
  }
  int nf = H5Pget_nfilters(dcpl.get());
  for (int i = 0; i < nf; ++i) {
    unsigned flags = 0, cd_values[8];
    size_t cd_n = 8;
    char fname[64];
    H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &cd_n, cd_values, sizeof fname, fname, nullptr);
    switch (id) {
      case H5Z_FILTER_DEFLATE: ti.filters.push_back("deflate"); break;
      case H5Z_FILTER_SHUFFLE: ti.filters.push_back("shuffle"); break;
      case H5Z_FILTER_FLETCHER32: ti.filters.push_back("fletcher32"); break;
      case FEDSEG_H5Z_FILTER_ZSTD: ti.filters.push_back("zstd"); break;
      default: ti.filters.push_back("filter " + std::to_string(id)); break;
    }
  }
  H5Eclear2(H5E_DEFAULT);
  return ti;
}

namespace {
struct VisitState {
  hid_t file;
  std::string prefix;
  std::vector<std::string> names;
};

herr_t visit_link(hid_t group, const char* name, const H5L_info_t* info, void* data) {
  auto* st = static_cast<VisitState*>(data);
  if (info->type != H5L_TYPE_HARD) return 0;  // never follow soft or external links
  hid_t o = H5Oopen(group, name, H5P_DEFAULT);
  if (o < 0) return -1;
  bool is_ds = H5Iget_type(o) == H5I_DATASET;
  H5Oclose(o);
  if (is_ds) st->names.push_back(st->prefix + name);
  return 0;
}

herr_t list_child(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}
}  // namespace

std::vector<TensorInfo> File::tensors(const std::string& group) const {
  quiet();
  std::string g = slash(group);
  Hid gid(H5Gopen2(id_, g.c_str(), H5P_DEFAULT), H5Gclose);
  if (!gid.ok()) throw Error(kExitDataErr, "no group '" + group + "' in", path_, h5_reason("H5Gopen failed"));
  VisitState st{id_, unslash(g).empty() ? "" : unslash(g) + "/", {}};
  if (H5Lvisit(gid.get(), H5_INDEX_NAME, H5_ITER_INC, visit_link, &st) < 0)
    throw Error(kExitDataErr, "cannot list", path_, "corrupt HDF5 structure: " + h5_reason("H5Lvisit failed"));
  std::sort(st.names.begin(), st.names.end());
  std::vector<TensorInfo> out;
  out.reserve(st.names.size());
  for (const auto& n : st.names) out.push_back(info(n));
  return out;
}

std::vector<std::string> File::children(const std::string& group) const {
  quiet();
  std::vector<std::string> names;
  hsize_t idx = 0;
  if (H5Literate_by_name(id_, slash(group).c_str(), H5_INDEX_NAME, H5_ITER_INC, &idx, list_child, &names, H5P_DEFAULT) < 0)
    throw Error(kExitDataErr, "cannot list group '" + group + "' in", path_, h5_reason("H5Literate failed"));
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t File::checked_numel(const TensorInfo& ti) const {
  uint64_t n = numel(ti.shape);
  if (!ti.dtype) throw Error(kExitDataErr, "tensor '" + ti.name + "' has a type fedseg does not use in", path_, ti.type_desc);
  if (n > kMaxReadBytes / 8) throw Error(kExitDataErr, "tensor '" + ti.name + "' is implausibly large in", path_, shape_str(ti.shape));
  return n;
}

void File::read(const std::string& name, DType mem, void* out, size_t out_bytes) const {
  quiet();
  TensorInfo ti = info(name);
  uint64_t n = checked_numel(ti);
  if (n * dtype_size(mem) > out_bytes) throw Error(kExitSoftware, "read buffer too small for tensor '" + ti.name + "' of", path_);
  if (n == 0) return;
  Hid ds(H5Dopen2(id_, slash(name).c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok() || H5Dread(ds.get(), le_type(mem), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    throw Error(kExitDataErr, "cannot read tensor '" + ti.name + "' in", path_, "corrupt data: " + h5_reason("H5Dread failed"));
}

bool library_thread_safe() {
  hbool_t yes = 0;
  return H5is_library_threadsafe(&yes) >= 0 && yes;
}

const float* File::f32_in_image(const std::string& name) const {
  if (!image_ || id_ < 0) return nullptr;
  quiet();
  Hid ds(H5Dopen2(id_, slash(name).c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) return nullptr;
  Hid dcpl(H5Dget_create_plist(ds.get()), H5Pclose);
  Hid type(H5Dget_type(ds.get()), H5Tclose);
  Hid space(H5Dget_space(ds.get()), H5Sclose);
  if (!dcpl.ok() || !type.ok() || !space.ok() || H5Pget_layout(dcpl.get()) != H5D_CONTIGUOUS ||
      H5Pget_nfilters(dcpl.get()) != 0 || H5Tequal(type.get(), H5T_IEEE_F32LE) <= 0)
    return nullptr;
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  const haddr_t at = H5Dget_offset(ds.get());  // HADDR_UNDEF when no space was allocated
  H5Eclear2(H5E_DEFAULT);
  if (n <= 0 || at == HADDR_UNDEF || at % alignof(float) != 0 || at > image_->size ||
      uint64_t(n) > (image_->size - at) / sizeof(float))
    return nullptr;
  return reinterpret_cast<const float*>(static_cast<const unsigned char*>(image_->data) + at);
}

void File::read_slab(const std::string& name, const Shape& start, const Shape& count, DType mem, void* out) const {
  quiet();
  Hid ds(H5Dopen2(id_, slash(name).c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) throw Error(kExitDataErr, "no tensor '" + unslash(name) + "' in", path_, h5_reason("H5Dopen failed"));
  Hid fspace(H5Dget_space(ds.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(fspace.get());
  if (rank != static_cast<int>(start.size()) || start.size() != count.size())
    throw Error(kExitSoftware, "slab rank differs from tensor '" + unslash(name) + "' in", path_);
  if (numel(count) == 0) return;
  std::vector<hsize_t> st(start.begin(), start.end()), ct(count.begin(), count.end());
  Hid mspace(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, ct.data(), nullptr), H5Sclose);
  if (rank > 0 && H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, st.data(), nullptr, ct.data(), nullptr) < 0)
    throw Error(kExitSoftware, "slab outside tensor '" + unslash(name) + "' in", path_, h5_reason("hyperslab"));
  if (H5Dread(ds.get(), le_type(mem), mspace.get(), fspace.get(), H5P_DEFAULT, out) < 0)
    throw Error(kExitDataErr, "cannot read tensor '" + unslash(name) + "' in", path_, "corrupt data: " + h5_reason("H5Dread failed"));
}

void File::copy_from(const File& src, const std::string& name) {
  quiet();
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  if (H5Ocopy(src.id_, slash(name).c_str(), id_, slash(name).c_str(), H5P_DEFAULT, lcpl.get()) < 0)
    throw Error(kExitIoErr, "cannot copy '" + unslash(name) + "' from '" + src.path_ + "' to", path_,
                h5_reason("H5Ocopy failed"));
}

// ---------------------------------------------------------------- Output

Output::Output(const std::string& final_path, const std::string& kind, const std::string& tool,
               const std::string& provenance_json, bool overwrite)
    : atomic_(final_path, overwrite),
      file_(File::create(atomic_.temp_path(), kind, tool, provenance_json)) {}

void Output::commit() {
  file_.close();
  atomic_.commit();
}

// ---------------------------------------------------------------- check

namespace {
template <class T>
void scan_values(const T* v, size_t n, TensorCheck& c, bool& any) {
  for (size_t i = 0; i < n; ++i) {
    double x = static_cast<double>(v[i]);
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(v[i])) {
        ++c.nonfinite;
        continue;
      }
    }
    if (!any || x < c.min) c.min = x;
    if (!any || x > c.max) c.max = x;
    any = true;
  }
}
}  // namespace

TensorCheck check_tensor(const File& f, const std::string& name) {
  TensorInfo ti = f.info(name);
  TensorCheck c;
  c.name = ti.name;
  if (!ti.dtype) throw Error(kExitDataErr, "tensor '" + ti.name + "' has a type fedseg does not use in", f.path(), ti.type_desc);
  const DType t = *ti.dtype;
  const size_t esize = dtype_size(t);
  const uint64_t budget = uint64_t(32) << 20;
  Sha256 h;
  bool any = false;
  std::vector<unsigned char> buf;
  auto consume = [&](const Shape& start, const Shape& count) {
    uint64_t n = numel(count);
    buf.resize(n * esize);
    f.read_slab(ti.name, start, count, t, buf.data());
    h.update(buf.data(), buf.size());
    switch (t) {
      case DType::f16: {
        for (size_t i = 0; i < n; ++i) {
          uint16_t bits;
          std::memcpy(&bits, buf.data() + 2 * i, 2);
          float x = half_to_float(bits);
          scan_values(&x, 1, c, any);
        }
        break;
      }
      case DType::f32: scan_values(reinterpret_cast<const float*>(buf.data()), n, c, any); break;
      case DType::f64: scan_values(reinterpret_cast<const double*>(buf.data()), n, c, any); break;
      case DType::u8: scan_values(reinterpret_cast<const uint8_t*>(buf.data()), n, c, any); break;
      case DType::i8: scan_values(reinterpret_cast<const int8_t*>(buf.data()), n, c, any); break;
      case DType::u16: scan_values(reinterpret_cast<const uint16_t*>(buf.data()), n, c, any); break;
      case DType::i16: scan_values(reinterpret_cast<const int16_t*>(buf.data()), n, c, any); break;
      case DType::u32: scan_values(reinterpret_cast<const uint32_t*>(buf.data()), n, c, any); break;
      case DType::i32: scan_values(reinterpret_cast<const int32_t*>(buf.data()), n, c, any); break;
      case DType::u64: scan_values(reinterpret_cast<const uint64_t*>(buf.data()), n, c, any); break;
      case DType::i64: scan_values(reinterpret_cast<const int64_t*>(buf.data()), n, c, any); break;
    }
  };
  // Walk the tensor in C order, in boxes of at most `budget` bytes: split the
  // outermost dimension that makes a box small enough, one index at a time above it.
  std::function<void(Shape, Shape, size_t)> walk = [&](Shape start, Shape count, size_t d) {
    uint64_t bytes = numel(count) * esize;
    if (bytes <= budget || d >= count.size()) {
      consume(start, count);
      return;
    }
    uint64_t inner = bytes / count[d];
    uint64_t step = inner > budget ? 1 : budget / inner;
    for (uint64_t i = 0; i < count[d]; i += step) {
      Shape s = start, k = count;
      s[d] += i;
      k[d] = std::min(step, count[d] - i);
      if (inner > budget)
        walk(s, k, d + 1);
      else
        consume(s, k);
    }
  };
  if (numel(ti.shape) > 0) walk(Shape(ti.shape.size(), 0), ti.shape, 0);
  c.sha256 = h.hex();
  return c;
}

}  // namespace fedseg::h5
