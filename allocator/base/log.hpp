// Minimal logging to stderr, filtered by one process-wide level
// (Config::log_level, applied with set_log_level). A filtered-out call costs
// one relaxed atomic load; the arguments are still evaluated, so guard
// expensive ones with log_enabled().
//
// One logger for the library and the LD_PRELOAD interposer (preload/, its own
// shared library): these functions are exported from libvmmalloc.so
// (VMM_API) for the interposer only, which logs through vlog() with the
// component "preload". They are not part of the public API (no header in
// include/). They need no initialisation, take no lock and never allocate,
// so they may be called from any hook, before the library has been set up.
#pragma once

#include <cstdarg>

#include "vmmalloc/config.hpp"
#include "vmmalloc/export.h"

namespace vmm {

// Messages at `level` or more severe are written from now on; off silences
// all. Thread-safe. The initial level is Config's default, warn.
VMM_API void set_log_level(LogLevel level) noexcept;
VMM_API LogLevel log_level() noexcept;
// Whether log(level, ...) would write anything.
VMM_API bool log_enabled(LogLevel level) noexcept;

// printf-style. Writes "vmmalloc[<pid>] <level>: <message>\n" to stderr in a
// single write() so lines from several threads or processes do not
// interleave; messages over ~4 KiB are truncated. log(LogLevel::off, ...)
// never writes. Never throws; leaves errno unchanged.
VMM_API void log(LogLevel level, const char* fmt, ...) noexcept
    __attribute__((format(printf, 2, 3)));
// The same with a va_list, and with "<component>: " before the message
// unless `component` is null: "vmmalloc[<pid>] <level>: <component>: ...".
VMM_API void vlog(LogLevel level, const char* component, const char* fmt, va_list args) noexcept
    __attribute__((format(printf, 3, 0)));

}  // namespace vmm
