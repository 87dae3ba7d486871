// PrivateFile: see private_file.hpp.
#include "allocator/observe/private_file.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <system_error>

namespace vmm {

namespace {

[[noreturn]] void fail(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

// 12 random hex digits (from getrandom; the clock and pid if it fails), so
// no one can plant a file at the name before it is made.
std::string random_suffix(unsigned attempt) {
  unsigned char bytes[6] = {};
  if (::getrandom(bytes, sizeof bytes, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof bytes)) {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const unsigned long long v = static_cast<unsigned long long>(ts.tv_nsec) ^
                                 (static_cast<unsigned long long>(::getpid()) << 30) ^ attempt;
    for (int i = 0; i < 6; ++i) bytes[i] = static_cast<unsigned char>(v >> (8 * i));
  }
  char text[13];
  for (int i = 0; i < 6; ++i) std::snprintf(text + 2 * i, 3, "%02x", bytes[i]);
  return text;
}

}  // namespace

PrivateFile::PrivateFile(std::string target) : target_(std::move(target)) {
  // A name taken (by anything: a file, a link, a directory) is skipped.
  for (unsigned attempt = 0; attempt < 100; ++attempt) {
    temporary_ = target_ + ".tmp." + random_suffix(attempt);
    fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ >= 0) break;
    if (errno != EEXIST) fail(errno, "open " + temporary_);
  }
  if (fd_ < 0) fail(EEXIST, "open " + temporary_);
  if (::fchmod(fd_, 0600) != 0) {  // the umask may have removed our own bits
    const int err = errno;
    ::close(fd_);
    ::unlink(temporary_.c_str());
    fd_ = -1;
    fail(err, "chmod " + temporary_);
  }
}

PrivateFile::~PrivateFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!temporary_.empty()) ::unlink(temporary_.c_str());
}

void PrivateFile::write(std::string_view bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno, "write " + temporary_);
    }
    done += static_cast<std::size_t>(n);
  }
}

void PrivateFile::commit() {
  if (::fsync(fd_) != 0) fail(errno, "fsync " + temporary_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail(errno, "close " + temporary_);
  if (::rename(temporary_.c_str(), target_.c_str()) != 0) fail(errno, "rename to " + target_);
  temporary_.clear();  // now the target: nothing to remove
}

}  // namespace vmm
