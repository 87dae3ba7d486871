// What takes snapshots besides the API: the process's observability start
// (event ring size, allocation events, live socket, snapshot at exit) and
// out-of-memory errors. See snapshot.hpp.
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/observe/live_socket.hpp"
#include "allocator/observe/snapshot.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/vm/device_context.hpp"
#include "vmmalloc/snapshot.hpp"

namespace vmm {

namespace {

std::atomic<const Config*> g_process_config{nullptr};
std::atomic<pid_t> g_started_by{0};

void snapshot_at_exit() {
  const Config* c = g_process_config.load(std::memory_order_acquire);
  if (c == nullptr || c->snapshot_at_exit.empty()) return;
  // A child forked after vmmalloc started inherits this handler but not the
  // threads that may have held the layers' locks at the fork: no snapshot.
  if (::getpid() != g_started_by.load()) return;
  try {
    const std::string path = write_snapshot_file(c->snapshot_at_exit, "exit");
    log(LogLevel::info, "snapshot at exit written to %s", path.c_str());
  } catch (const std::exception& e) {
    log(LogLevel::error, "snapshot at exit: %s", e.what());
  }
}

}  // namespace

const Config* process_observability_config() noexcept {
  return g_process_config.load(std::memory_order_acquire);
}

void start_process_observability(const Config& config) noexcept {
  static std::once_flag once;
  try {
    std::call_once(once, [&] {
      auto* kept = new Config(config);  // never destroyed: read by exit handlers
      events::configure_ring(kept->event_ring_size);
      // On if configured; never turned off here (the API may have turned it on).
      if (kept->allocation_events) events::set_allocation_events(true);
      g_started_by.store(::getpid());
      g_process_config.store(kept, std::memory_order_release);
      if (kept->live_socket) live::start_server(kept->live_socket_dir);
      // Registered after the socket's own handler, so it runs before it.
      if (!kept->snapshot_at_exit.empty()) std::atexit(snapshot_at_exit);
    });
  } catch (const std::exception& e) {
    log(LogLevel::warn, "starting snapshots and the live socket failed: %s", e.what());
  }
}

void note_out_of_memory(DeviceContext& context, std::size_t bytes, Stream stream,
                        bool workspace) noexcept {
  events::record_oom(context.device(), bytes, stream, workspace);
  const std::string& path = context.config().snapshot_on_oom;
  if (path.empty()) return;
  try {
    const std::string written = write_snapshot_file(path, "oom");
    log(LogLevel::warn, "out of memory on device %d: snapshot written to %s", context.device(),
        written.c_str());
  } catch (const std::exception& e) {
    log(LogLevel::error, "out of memory on device %d: writing the snapshot failed: %s",
        context.device(), e.what());
  }
}

// ------------------------------------------------------------ the C++ API

std::string snapshot_json() { return snapshot_json("api", SnapshotDetail::full); }

std::string write_snapshot(const std::string& path) { return write_snapshot_file(path, "api"); }

void set_allocation_events(bool on) noexcept { events::set_allocation_events(on); }

bool allocation_events() noexcept { return events::allocation_events_on(); }

}  // namespace vmm
