// Logging implementation: format into a stack buffer and emit with one
// write(2), no locks and no allocation, so it is safe to call from any layer
// while that layer holds its own mutex.
#include "allocator/base/log.hpp"

#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace vmm {

namespace {

std::atomic<LogLevel> g_level{LogLevel::warn};

}  // namespace

void set_log_level(LogLevel level) noexcept { g_level.store(level, std::memory_order_relaxed); }

LogLevel log_level() noexcept { return g_level.load(std::memory_order_relaxed); }

bool log_enabled(LogLevel level) noexcept {
  return level != LogLevel::off &&
         static_cast<int>(level) <= static_cast<int>(g_level.load(std::memory_order_relaxed));
}

void log(LogLevel level, const char* fmt, ...) noexcept {
  if (!log_enabled(level)) return;  // before va_start: a filtered-out call stays one load
  va_list args;
  va_start(args, fmt);
  vlog(level, nullptr, fmt, args);
  va_end(args);
}

void vlog(LogLevel level, const char* component, const char* fmt, va_list args) noexcept {
  if (!log_enabled(level)) return;
  const int saved_errno = errno;

  std::array<char, 4096> buf;
  constexpr std::size_t kEllipsis = 4;  // "...\n"
  const std::size_t room = buf.size() - kEllipsis;
  int n =
      component == nullptr
          ? std::snprintf(buf.data(), room, "vmmalloc[%ld] %s: ", static_cast<long>(::getpid()),
                          log_level_name(level))
          : std::snprintf(buf.data(), room, "vmmalloc[%ld] %s: %s: ", static_cast<long>(::getpid()),
                          log_level_name(level), component);
  std::size_t len = n > 0 ? static_cast<std::size_t>(n) : 0;
  if (len < room) {
    n = std::vsnprintf(buf.data() + len, room - len, fmt, args);
    if (n > 0) len += static_cast<std::size_t>(n);
  }
  if (len >= room) {
    // Truncated: vsnprintf left a NUL at room - 1; mark the cut.
    len = room - 1;
    std::memcpy(buf.data() + len, "...", 3);
    len += 3;
  }
  buf[len++] = '\n';

  ssize_t written;
  do {
    written = ::write(STDERR_FILENO, buf.data(), len);
  } while (written < 0 && errno == EINTR);
  errno = saved_errno;
}

}  // namespace vmm
