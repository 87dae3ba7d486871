// vmmalloc configuration: one table of options (allocator/base/config.cpp) drives
// parsing of VMMALLOC_CONF, setting from code, printing and the option list
// that docs/configuration.md documents (a test keeps the two in sync).
//
// Grammar (that of PYTORCH_CUDA_ALLOC_CONF): `key:value` pairs separated by
// commas, whitespace around tokens ignored, empty segments skipped, the last
// of a repeated key wins; lists joined with `+` (chunk_sizes:2M+32M+512M);
// sizes are an integer with an optional binary suffix K, M, G, T (also KB,
// KiB, ... in any case) or none: bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmmalloc/export.h"

namespace vmm {

enum class LogLevel { off, error, warn, info, debug };
enum class BackendKind { automatic, cuda, host };
enum class PeerAccessMode { none, all, list };
// What cudaFree/cuMemFree do under the LD_PRELOAD interposer (docs/preload.md).
enum class CudaFreeMode { fence, sync, order };
// Whose connections an IPC export serves (docs/ipc.md).
enum class IpcPeerMode { same, any, list };

// The fields may be set directly from code; validate() then checks them.
// The VMMALLOC_CONF key of each field is given in brackets.
struct VMM_API Config {
  // [chunk_sizes] Physical chunk classes, bytes: 1 to 24 powers of two, each
  // a multiple of the device granularity (2 MiB), strictly ascending.
  std::vector<std::size_t> chunk_sizes = default_chunk_sizes();
  // [pool_cache_limit] Free physical chunks kept cached (not released to the
  // device), bytes.
  std::size_t pool_cache_limit = std::size_t{1} << 30;
  // [fenced_free_limit] Free memory that no stream may take yet (it waits
  // for fences on other streams that used it), bytes: above it, an
  // allocation that would map new memory waits for the oldest of that work
  // instead (without the heap lock). 0: never wait.
  std::size_t fenced_free_limit = std::size_t{1} << 30;
  // [memory_cap] Cap on physical memory created: bytes (memory_cap_bytes, 0
  // or at least 2 MiB) or a fraction of the device's total memory
  // (memory_cap_fraction, 0 < f <= 1). At most one is non-zero; both 0
  // means no cap.
  std::size_t memory_cap_bytes = 0;
  double memory_cap_fraction = 0.0;
  // [va_reservation_size] Size of each VA reservation, a multiple of 2 MiB;
  // 0 means `va_reservation_factor` times the device's total memory (rounded
  // up to 1 GiB). More are added as needed. Sanitizer builds
  // (VMMALLOC_SANITIZER_BUILD) default to 8 GiB: their runtimes cannot map
  // huge PROT_NONE ranges.
  std::size_t va_reservation_size = default_va_reservation_size();
  // [va_reservation_factor] 0 < factor <= 64.
  double va_reservation_factor = 4.0;
  // [log_level]
  LogLevel log_level = LogLevel::warn;
  // [backend]
  BackendKind backend = BackendKind::automatic;
  // [host_device_memory] Simulated device memory of the host backend, bytes
  // (at least 2 MiB).
  std::size_t host_device_memory = std::size_t{16} << 30;
  // [peer_access] Devices granted read/write access to each device's memory
  // besides the device itself, for memory mapped now and later: none; all
  // (every device that can reach it: cuDeviceCanAccessPeer); or a list of
  // device ordinals joined with + (0+2+3, in peer_access_devices: 1 to 64
  // ordinals in 0..63, none twice), each of which must exist and reach it
  // (the device itself is skipped). peer_access_devices is empty unless the
  // mode is list.
  PeerAccessMode peer_access = PeerAccessMode::none;
  std::vector<int> peer_access_devices;
  // Observability (docs/snapshot.md). These are process-wide: they are read
  // from the process configuration (VMMALLOC_CONF or vmm_configure) when the
  // first device is used, except snapshot_on_oom, which each device context
  // reads from its own configuration.
  // [live_socket] Serve snapshots to vmmctl on a per-process Unix socket.
  bool live_socket = true;
  // [live_socket_dir] Absolute directory in which the per-user socket
  // directory vmmalloc-<uid> (mode 0700) is made; no ',' and no '%'.
  std::string live_socket_dir = "/tmp";
  // [snapshot_at_exit] Write a snapshot to this file at exit; "" (default):
  // none. "%p" is replaced by the process id, "%%" by "%"; no ','.
  std::string snapshot_at_exit;
  // [snapshot_on_oom] Write a snapshot to this file at every out-of-memory
  // error (each overwrites the last); "" (default): none. As snapshot_at_exit.
  std::string snapshot_on_oom;
  // [allocation_events] Record an event per allocate and free in the event
  // ring (map, unmap, grow, shrink and oom events are always recorded).
  bool allocation_events = false;
  // [event_ring_size] Recent events kept: 16 to 16777216.
  std::size_t event_ring_size = 4096;
  // LD_PRELOAD interposer (libvmmalloc_preload.so, docs/preload.md); the
  // library itself does not read these two.
  // [print_stats] Print a summary of what the interposer served at exit.
  bool print_stats = false;
  // [cudafree] order (the default): the free orders every later operation
  // on every stream of the device after every earlier one, on the GPU
  // (events and stream waits; the host waits for nothing), and the memory is
  // reused at once; with more than 8 non-blocking streams, or one of them
  // capturing, a free falls back to fence. fence: a cudaFree/cuMemFree of
  // vmmalloc memory waits for nothing, and the memory is reused only once
  // fences on the legacy stream and on every non-blocking stream of its
  // device, recorded after the free, have completed. sync: the free first
  // synchronizes the device, as CUDA's own cudaFree does.
  CudaFreeMode cudafree = CudaFreeMode::order;
  // IPC (docs/ipc.md). An export reads these from its workspace's device
  // context, an import made with WorkspaceImport(socket, device) from the
  // process configuration.
  // [ipc_peer_uids] Whose connections WorkspaceExport::serve() takes, by the
  // peer's uid (SO_PEERCRED): same (the exporter's effective uid only), any,
  // or a list of uids joined with + (1000+1001, in ipc_peer_uid_list: 1 to
  // 64 uids, none twice) allowed besides the exporter's own.
  // ipc_peer_uid_list is empty unless the mode is list.
  IpcPeerMode ipc_peer_mode = IpcPeerMode::same;
  std::vector<std::uint32_t> ipc_peer_uid_list;
  // [ipc_timeout_ms] Deadline of each IPC exchange, milliseconds (1 to
  // 3600000): an importer waits at most this long for the exporter's whole
  // answer; an exporter drops an importer that takes longer to send a whole
  // request or to take its answer.
  std::uint32_t ipc_timeout_ms = 60000;

  // 2 MiB, 4 MiB, ... 1 GiB.
  static std::vector<std::size_t> default_chunk_sizes();
  // 0 (auto), or 8 GiB in sanitizer builds of the library.
  static std::size_t default_va_reservation_size();

  // Parses a configuration string over the defaults, then validate()s the
  // result. "" gives the defaults. Throws ConfigError naming the key and the
  // accepted values on an unknown key or bad value.
  static Config parse(std::string_view conf);
  // Config::parse(getenv("VMMALLOC_CONF")), or the defaults if unset.
  // Throws ConfigError as parse() does.
  static Config from_environment();

  // Applies a configuration string over *this (keys it does not name keep
  // their current values), then validate()s the result. Throws ConfigError
  // as parse() does; on error *this is unchanged.
  void apply(std::string_view conf);

  // Sets one option by name from its text form, as in VMMALLOC_CONF
  // (set("memory_cap", "40G")). Checks the value on its own, not against the
  // other options (validate() does that). Throws ConfigError naming the key,
  // quoting the value and saying what is accepted; on error *this is
  // unchanged.
  void set(std::string_view key, std::string_view value);
  // Every option in force, in VMMALLOC_CONF's grammar, so that
  // parse(c.to_string()) == c for any valid c.
  std::string to_string() const;
  // Checks every field (ranges, chunk classes sorted powers of two, ...) and
  // their consistency (not both memory_cap fields set); throws ConfigError
  // naming the offending key. Does nothing else.
  void validate() const;

  bool operator==(const Config&) const = default;
};

// One row of the option table, for docs and tools (vmmctl).
struct OptionInfo {
  const char* name;          // the VMMALLOC_CONF key: "chunk_sizes"
  const char* type;          // "size list", "size", "size or fraction", ...
  const char* default_text;  // the default as to_string() prints it
  const char* description;   // one sentence: meaning and accepted values
};

// Every option, in the order to_string() prints them.
VMM_API std::span<const OptionInfo> config_options();

// The log_level value as VMMALLOC_CONF writes it ("off", "error", "warn",
// "info", "debug"), or "?" for a value outside the enum.
VMM_API const char* log_level_name(LogLevel level) noexcept;

// The cudafree value as VMMALLOC_CONF writes it ("fence", "sync", "order"),
// or "?" for a value no mode has.
VMM_API const char* cudafree_mode_name(CudaFreeMode mode) noexcept;

}  // namespace vmm
