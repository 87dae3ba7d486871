// vmmalloc configuration: one table of options (allocator/config.cpp) drives
// parsing of VMMALLOC_CONF, setting from code, printing and docs/configuration.md.
//
// Grammar (that of PYTORCH_CUDA_ALLOC_CONF): `key:value` pairs separated by
// commas; lists joined with `+` (chunk_sizes:2M+32M+512M); sizes with binary
// suffixes K, M, G, T (or none: bytes); booleans 0/1/true/false.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vmmalloc/export.h"

namespace vmm {

enum class LogLevel { off, error, warn, info, debug };
enum class BackendKind { automatic, cuda, host };

struct VMM_API Config {
  // Physical chunk classes, bytes, ascending powers of two, each a multiple
  // of the device granularity (2 MiB).
  std::vector<std::size_t> chunk_sizes = default_chunk_sizes();
  // Free physical chunks kept cached (not released to the device), bytes.
  std::size_t pool_cache_limit = std::size_t{1} << 30;
  // Cap on physical memory created: bytes (memory_cap_bytes) or a fraction
  // of the device's total memory (memory_cap_fraction); 0 means no cap.
  std::size_t memory_cap_bytes = 0;
  double memory_cap_fraction = 0.0;
  // Size of each VA reservation; 0 means `va_reservation_factor` times the
  // device's total memory (rounded up to 1 GiB). More are added as needed.
  std::size_t va_reservation_size = 0;
  double va_reservation_factor = 4.0;
  LogLevel log_level = LogLevel::warn;
  BackendKind backend = BackendKind::automatic;
  // Simulated device memory of the host backend, bytes.
  std::size_t host_device_memory = std::size_t{16} << 30;

  static std::vector<std::size_t> default_chunk_sizes();

  // Parses a configuration string over the defaults. Throws ConfigError
  // naming the key and the accepted values on an unknown key or bad value.
  static Config parse(std::string_view conf);
  // Config::parse(getenv("VMMALLOC_CONF")), or the defaults if unset.
  static Config from_environment();

  // Sets one option by name from its text form, as in VMMALLOC_CONF.
  // Throws ConfigError; on error *this is unchanged.
  void set(std::string_view key, std::string_view value);
  // Every option in force, in VMMALLOC_CONF's grammar.
  std::string to_string() const;
  // Checks cross-option consistency (chunk classes sorted, powers of two...);
  // throws ConfigError naming the offending key.
  void validate() const;
};

}  // namespace vmm
