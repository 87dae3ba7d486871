// Logging of the LD_PRELOAD interposer: the library's format
// ("vmmalloc[<pid>] <level>: preload: <message>", one write(2) per line),
// filtered by VMMALLOC_CONF's log_level, which the interposer applies when it
// starts (set_log_level). The interposer cannot use the library's logger: it
// is internal to libvmmalloc.so.
#pragma once

#include "vmmalloc/config.hpp"

namespace vmm::preload {

void set_log_level(LogLevel level) noexcept;
bool log_enabled(LogLevel level) noexcept;
// printf-style; never throws, leaves errno unchanged.
void log(LogLevel level, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

}  // namespace vmm::preload
