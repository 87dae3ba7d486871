// A file written so that a reader never sees half of it and no one else
// can redirect or read it (snapshots, vmmctl's -o): the bytes go to a new
// temporary file beside the target - a random name, created with
// O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, so nothing already at that name
// (a planted symlink or file) is opened or touched - then fsync'd and renamed
// over the target. A symlink or hard link at the target is replaced, never
// written through. The final file has mode 0600 whatever the umask.
#pragma once

#include <string>
#include <string_view>

namespace vmm {

class PrivateFile {
 public:
  // Creates the temporary file. Throws std::system_error ("open <path>: ...").
  explicit PrivateFile(std::string target);
  // Removes the temporary file unless commit() succeeded.
  ~PrivateFile();
  PrivateFile(const PrivateFile&) = delete;
  PrivateFile& operator=(const PrivateFile&) = delete;

  // Throws std::system_error ("write <path>: ...").
  void write(std::string_view bytes);
  // fsync, close, rename over the target. Throws std::system_error naming
  // the step; the temporary file is removed then.
  void commit();

 private:
  std::string target_;
  std::string temporary_;
  int fd_ = -1;
};

}  // namespace vmm
