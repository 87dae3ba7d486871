// Minimal logging to stderr, filtered by one process-wide level
// (Config::log_level, applied with set_log_level). A filtered-out call costs
// one relaxed atomic load; the arguments are still evaluated, so guard
// expensive ones with log_enabled().
#pragma once

#include "vmmalloc/config.hpp"

namespace vmm {

// Messages at `level` or more severe are written from now on; off silences
// all. Thread-safe. The initial level is Config's default, warn.
void set_log_level(LogLevel level) noexcept;
LogLevel log_level() noexcept;
// Whether log(level, ...) would write anything.
bool log_enabled(LogLevel level) noexcept;

// printf-style. Writes "vmmalloc[<pid>] <level>: <message>\n" to stderr in a
// single write() so lines from several threads or processes do not
// interleave; messages over ~4 KiB are truncated. log(LogLevel::off, ...)
// never writes. Never throws; leaves errno unchanged.
void log(LogLevel level, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

}  // namespace vmm
