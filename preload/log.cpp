// See log.hpp. Formats into a stack buffer and writes it with one write(2):
// no lock and no allocation, so it is safe inside any hook.
#include "preload/log.hpp"

#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>

namespace vmm::preload {
namespace {

std::atomic<LogLevel> g_level{LogLevel::warn};

const char* level_name(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::off: return "off";
    case LogLevel::error: return "error";
    case LogLevel::warn: return "warn";
    case LogLevel::info: return "info";
    case LogLevel::debug: return "debug";
  }
  return "?";
}

}  // namespace

void set_log_level(LogLevel level) noexcept { g_level.store(level, std::memory_order_relaxed); }

bool log_enabled(LogLevel level) noexcept {
  return level != LogLevel::off &&
         static_cast<int>(level) <= static_cast<int>(g_level.load(std::memory_order_relaxed));
}

void log(LogLevel level, const char* fmt, ...) noexcept {
  if (!log_enabled(level)) return;
  const int saved_errno = errno;
  std::array<char, 2048> buf;
  const std::size_t room = buf.size() - 1;  // keep one byte for '\n'
  int n = std::snprintf(buf.data(), room, "vmmalloc[%ld] %s: preload: ",
                        static_cast<long>(::getpid()), level_name(level));
  std::size_t len = n > 0 ? static_cast<std::size_t>(n) : 0;
  if (len < room) {
    va_list args;
    va_start(args, fmt);
    n = std::vsnprintf(buf.data() + len, room - len, fmt, args);
    va_end(args);
    if (n > 0) len += static_cast<std::size_t>(n);
  }
  if (len >= room) len = room - 1;  // truncated (vsnprintf wrote a NUL there)
  buf[len++] = '\n';
  ssize_t written;
  do {
    written = ::write(STDERR_FILENO, buf.data(), len);
  } while (written < 0 && errno == EINTR);
  errno = saved_errno;
}

}  // namespace vmm::preload
