// Snapshots: the allocator's whole state as one JSON document - process,
// configuration, per device its counters (PyTorch's memory_stats names),
// totals, physical pool, address space, every region (workspaces and heap
// segments) with its chunks and blocks, the pending reclaims with their
// fences - and the recent events of the event ring (allocator/record/event_ring.hpp).
// The schema is versioned (kSnapshotSchemaVersion) and documented in
// docs/snapshot.md; `vmmctl` reads it.
//
// A snapshot reads every layer under that layer's own locks, one at a time
// (see allocator/record/inspect_registry.hpp for the order), and never calls the
// driver, so it may be taken from any thread, during a CUDA-graph capture
// too. Under concurrent allocation the parts are read at slightly different
// instants; in a quiet moment the totals add up exactly.
//
// Triggers (snapshot_triggers.cpp): the API (vmm::snapshot_json,
// vmm_snapshot_json, ...), exit and out-of-memory when configured
// (snapshot_at_exit, snapshot_on_oom), and the live socket
// (allocator/observe/live_socket.hpp).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "allocator/record/event_ring.hpp"
#include "vmmalloc/config.hpp"

namespace vmm {

class DeviceContext;

inline constexpr const char* kSnapshotSchema = "vmmalloc-snapshot";
inline constexpr int kSnapshotSchemaVersion = 1;

enum class SnapshotDetail {
  full,     // everything
  summary,  // no per-region, per-block, per-reclaim or per-event lists
};

// The snapshot as JSON text (compact). `reason` says what asked for it:
// "api", "live", "exit" or "oom". Bytes that are not UTF-8 (in a workspace
// name, the command line, ...) are replaced by U+FFFD. Throws std::bad_alloc
// only.
std::string snapshot_json(std::string_view reason, SnapshotDetail detail);

// The same text in pieces, for writers that should not hold all of it (the
// live socket, snapshot files): the document up to its event list, then the
// events a batch at a time (each written straight to text, with no JSON
// tree), then the closing brackets. The snapshot is taken when this is
// made; the event ring is copied then (64 bytes an event).
class SnapshotText {
 public:
  // Throws std::bad_alloc only.
  SnapshotText(std::string_view reason, SnapshotDetail detail);
  // Sets `piece` to the next piece and returns true, or clears it and
  // returns false after the last.
  bool next(std::string& piece);

 private:
  enum class Stage { head, events, done };
  Stage stage_ = Stage::head;
  bool has_events_ = false;  // full detail: the event list follows the head
  std::string head_;
  std::vector<Event> events_;
  std::size_t next_event_ = 0;
};

// `path` with "%p" replaced by the process id and "%%" by "%". Throws
// InvalidArgumentError for an empty path or any other "%" sequence.
std::string expand_snapshot_path(std::string_view path);

// Writes snapshot_json(reason, full) to expand_snapshot_path(path) through
// a PrivateFile (private_file.hpp): a temporary file of a random name beside
// it, mode 0600, renamed into place, so a reader never sees half a snapshot
// and a link planted at either name is never written through. Returns the
// path written. Throws InvalidArgumentError naming the path and the system
// error (or the bad path).
std::string write_snapshot_file(std::string_view path, std::string_view reason);

// The process configuration observability was started with, or nullptr
// before start_process_observability().
const Config* process_observability_config() noexcept;

// The process-wide observability, from the process configuration: the event
// ring's size, allocation events, the snapshot at exit and the live socket.
// Called when the first process-wide device context is made; later calls do
// nothing. Never throws (failures are logged).
void start_process_observability(const Config& config) noexcept;

// An allocation or workspace grow on `context` failed out of memory: records
// the oom event and, if the context's configuration names snapshot_on_oom,
// writes a snapshot there. Never throws.
void note_out_of_memory(DeviceContext& context, std::size_t bytes, Stream stream,
                        bool workspace) noexcept;

}  // namespace vmm
