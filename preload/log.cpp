// See log.hpp.
#include "preload/log.hpp"

#include <cstdarg>

#include "allocator/base/log.hpp"

namespace vmm::preload {

void set_log_level(LogLevel level) noexcept { vmm::set_log_level(level); }

void log(LogLevel level, const char* fmt, ...) noexcept {
  if (!vmm::log_enabled(level)) return;
  va_list args;
  va_start(args, fmt);
  vmm::vlog(level, "preload", fmt, args);
  va_end(args);
}

}  // namespace vmm::preload
