// The logger (allocator/base/log.hpp): the line format, filtering by level,
// truncation of long messages, and errno kept across a log call.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <string>

#include "allocator/base/log.hpp"
#include "tests/common/catch.hpp"

using vmm::LogLevel;

namespace {

// What f writes to stderr (fd 2).
template <typename F>
std::string capture_stderr(F&& f) {
  std::fflush(stderr);
  std::FILE* tmp = std::tmpfile();
  REQUIRE(tmp != nullptr);
  const int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  ::dup2(::fileno(tmp), STDERR_FILENO);
  f();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::rewind(tmp);
  std::string out;
  char buf[512];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, tmp)) > 0) out.append(buf, n);
  std::fclose(tmp);
  return out;
}

class LogLevelGuard {
 public:
  LogLevelGuard() : saved_(vmm::log_level()) {}
  ~LogLevelGuard() { vmm::set_log_level(saved_); }
  LogLevelGuard(const LogLevelGuard&) = delete;
  LogLevelGuard& operator=(const LogLevelGuard&) = delete;

 private:
  LogLevel saved_;
};

}  // namespace

TEST_CASE("log: format and filtering", "[log]") {
  LogLevelGuard guard;
  const std::string pid = std::to_string(::getpid());

  vmm::set_log_level(LogLevel::warn);
  CHECK(vmm::log_level() == LogLevel::warn);
  CHECK(vmm::log_enabled(LogLevel::error));
  CHECK(vmm::log_enabled(LogLevel::warn));
  CHECK(!vmm::log_enabled(LogLevel::info));
  CHECK(!vmm::log_enabled(LogLevel::off));

  CHECK(capture_stderr([] { vmm::log(LogLevel::warn, "mapped %s in %d calls", "2 MiB", 3); }) ==
        "vmmalloc[" + pid + "] warn: mapped 2 MiB in 3 calls\n");
  CHECK(capture_stderr([] { vmm::log(LogLevel::error, "boom"); }) ==
        "vmmalloc[" + pid + "] error: boom\n");
  CHECK(capture_stderr([] { vmm::log(LogLevel::info, "quiet"); }).empty());
  CHECK(capture_stderr([] { vmm::log(LogLevel::debug, "quiet"); }).empty());
  CHECK(capture_stderr([] { vmm::log(LogLevel::off, "never"); }).empty());

  vmm::set_log_level(LogLevel::debug);
  CHECK(capture_stderr([] { vmm::log(LogLevel::debug, "x=%zu", std::size_t{7}); }) ==
        "vmmalloc[" + pid + "] debug: x=7\n");
  CHECK(capture_stderr([] { vmm::log(LogLevel::off, "never"); }).empty());

  vmm::set_log_level(LogLevel::off);
  CHECK(capture_stderr([] { vmm::log(LogLevel::error, "silenced"); }).empty());

  CHECK(std::string(vmm::log_level_name(LogLevel::info)) == "info");
  CHECK(std::string(vmm::log_level_name(static_cast<LogLevel>(17))) == "?");
}

TEST_CASE("log: long messages are truncated to one line; errno is kept", "[log]") {
  LogLevelGuard guard;
  vmm::set_log_level(LogLevel::warn);
  const std::string big(10000, 'x');
  errno = ERANGE;
  const std::string out = capture_stderr([&] { vmm::log(LogLevel::warn, "%s", big.c_str()); });
  CHECK(errno == ERANGE);
  CHECK(out.size() <= 4096);
  CHECK(out.size() > 4000);
  CHECK(out.substr(out.size() - 4) == "...\n");
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
}
