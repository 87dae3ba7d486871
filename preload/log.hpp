// Logging of the LD_PRELOAD interposer: the library's logger
// (allocator/base/log.hpp, exported from libvmmalloc.so for this) with
// "preload: " before each message - "vmmalloc[<pid>] <level>: preload: <message>".
// One level for both: the interposer applies VMMALLOC_CONF's log_level when
// it starts, the library when a device context starts.
//
// This header does not include allocator/base/log.hpp: vmm::log, found by
// argument-dependent lookup through LogLevel, would make every log() call of
// the interposer ambiguous. Only log.cpp includes it.
#pragma once

#include "vmmalloc/config.hpp"

namespace vmm::preload {

// vmm::set_log_level: the library's level, shared by both.
void set_log_level(LogLevel level) noexcept;
// vmm::vlog with the component "preload": printf-style; never throws, never
// allocates, leaves errno unchanged.
void log(LogLevel level, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

}  // namespace vmm::preload
