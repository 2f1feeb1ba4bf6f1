// fedseg::AtomicFile: an output that appears under its final name complete or not
// at all. It is written to a temp file in the target folder, fsynced, renamed into
// place and the folder fsynced. The temp file is removed on error (destructor
// without commit()) and on SIGINT/SIGTERM/SIGHUP; temp files left by writers that
// were killed outright (SIGKILL, power loss) are removed by the next writer of the
// same output on the same host. An existing output is never replaced unless
// `overwrite` (the tools' --force) is set, and then atomically.
#pragma once

#include <string>
#include <vector>

namespace fedseg {

class AtomicFile {
 public:
  // Reserves a temp file next to final_path (created empty with O_EXCL, the given
  // mode). Throws Error 73 when final_path exists and !overwrite, or when the
  // temp file cannot be created.
  AtomicFile(std::string final_path, bool overwrite, unsigned mode = 0644);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& final_path() const { return final_; }
  const std::string& temp_path() const { return temp_; }

  // Appends bytes through the file descriptor held open since construction.
  // Throws Error 74 on a write error. Writers that open temp_path() themselves
  // (HDF5) need not use this.
  void write(const void* data, size_t size);

  // fsync the temp file (unless sync() did), rename it to the final name, fsync the
  // folder (unless !sync_dir: the caller commits another file there right after).
  // Throws Error 73 if the final name appeared meanwhile and !overwrite, 74 on I/O errors.
  void commit(bool sync_dir = true);
  // fsync the temp file now, so that commit() only renames.
  void sync();
  // Removes the temp file now (also done by the destructor when not committed).
  void discard();

  // The temp-file prefix of this host for final_path ("dir/.name.fedseg-tmp-HOST-"),
  // followed by the writer's pid, so that remove_stale() can tell dead writers' leftovers.
  static std::string temp_prefix(const std::string& final_path);

  // Renames from to to unless to exists, atomically where the filesystem allows:
  // renameat2(RENAME_NOREPLACE), else link() + unlink() (NFS, SMB), else, without hard
  // links either (FAT), a check then rename(). Returns false, leaving from, when to
  // exists; throws Error (74) on other failures. The folder is not synced.
  static bool rename_no_replace(const std::string& from, const std::string& to);

  // Removes temp files for final_path left by dead processes of this host.
  // Returns how many were removed.
  static int remove_stale(const std::string& final_path);

 private:
  std::string final_, temp_;
  bool overwrite_;
  int fd_ = -1;
  int slot_ = -1;
  bool done_ = false, synced_ = false;
};

// Convenience: writes bytes to path atomically.
void write_file_atomic(const std::string& path, const std::string& bytes, bool overwrite,
                       unsigned mode = 0644);

// Reads a whole (small) file; Error 66 if missing, 74 on read errors, 65 if it is
// larger than max_bytes.
std::string read_file(const std::string& path, size_t max_bytes = size_t(1) << 30);

// Installs the SIGINT/SIGTERM/SIGHUP handlers that remove live temp files and then
// die of the same signal. Called by the shared tool main; idempotent.
void install_cleanup_handlers();

// Path helpers.
std::string dirname_of(const std::string& path);
// fsync of a folder (after a rename into it). A folder that cannot be opened or
// synced on this filesystem (SMB: EINVAL, EROFS) is skipped; other failures: Error 74.
void fsync_dir(const std::string& dir);
std::string basename_of(const std::string& path);
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);  // follows symlinks

}  // namespace fedseg
