// Helpers shared by the Config test files (config_tests.cpp,
// config_values_tests.cpp): catching a ConfigError with its key and message,
// the check of a bad value's message, a to_string() split into key -> value,
// and a valid Config with every option away from its default.
#pragma once

#include <map>
#include <sstream>
#include <string>
#include <string_view>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm::test {

struct Caught {
  std::string key;
  std::string message;
};

// Runs f, which must throw ConfigError; returns its key and message.
template <typename F>
Caught config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    CHECK(e.status() == VMM_ERROR_CONFIG);
    return {e.key(), e.what()};
  }
  FAIL("no ConfigError thrown");
  return {};
}

inline Caught parse_error(const std::string& conf) {
  INFO("conf: " << conf);
  return config_error([&] { (void)Config::parse(conf); });
}

// A bad value for `key`: the message names the key, quotes the value, and
// says what is accepted (`expected`), plus `reason` if given.
inline void check_bad_value(const std::string& key, const std::string& value,
                            std::string_view expected, std::string_view reason = {}) {
  INFO("key: " << key << ", value: \"" << value << "\"");
  const Caught c = parse_error(key + ":" + value);
  INFO("message: " << c.message);
  CHECK(c.key == key);
  CHECK(contains(c.message, "VMMALLOC_CONF: bad value \"" + value + "\" for " + key + ": "));
  CHECK(contains(c.message, "expected " + std::string(expected)));
  if (!reason.empty()) CHECK(contains(c.message, reason));
}

// key -> value of a to_string() output.
inline std::map<std::string, std::string> split_conf(const std::string& conf) {
  std::map<std::string, std::string> out;
  std::stringstream ss(conf);
  std::string segment;
  while (std::getline(ss, segment, ',')) {
    const auto colon = segment.find(':');
    REQUIRE(colon != std::string::npos);
    out[segment.substr(0, colon)] = segment.substr(colon + 1);
  }
  return out;
}

// A valid config with every option away from its default.
inline Config non_default_config() {
  Config c;
  c.chunk_sizes = {4 * MiB, 64 * MiB, 2 * GiB};
  c.pool_cache_limit = 3 * MiB + 5;
  c.memory_cap_bytes = 40 * GiB;
  c.va_reservation_size = 96 * GiB;
  c.va_reservation_factor = 2.5;
  c.log_level = LogLevel::debug;
  c.backend = BackendKind::host;
  c.host_device_memory = 80 * GiB;
  c.peer_access = PeerAccessMode::list;
  c.peer_access_devices = {1, 3};
  c.live_socket = false;
  c.live_socket_dir = "/run/vmm";
  c.snapshot_at_exit = "/tmp/exit-%p.json";
  c.snapshot_on_oom = "/tmp/oom.json";
  c.allocation_events = true;
  c.event_ring_size = 100;
  c.ipc_peer_mode = vmm::IpcPeerMode::list;
  c.ipc_peer_uid_list = {1000, 65534};
  c.ipc_timeout_ms = 1500;
  return c;
}

inline constexpr std::string_view kChunkExpected =
    "sizes like 2M+32M+512M (powers of two, multiples of 2 MiB, ascending)";

}  // namespace vmm::test
