// vmm::WorkspaceImport (include/vmmalloc/ipc.hpp): maps another process's
// exported workspace into this one.
//
// The import reserves the exporter's capacity in its device context's
// address space and follows the exporter's layout: each chunk is imported
// from its descriptor (Backend::import_handle), mapped at the same offset,
// granted access (the context's backend grants the device and its peers) and
// its handle released at once - the mapping keeps the memory alive, and
// unmapping it is then all it takes to let go. Pieces the exporter no longer
// has are unmapped after a fence on the caller's stream; close() hands every
// mapping (as an alias: nothing goes to the pool) and the range to the
// reclaimer with a fence, so it never waits.
//
// Thread-safety: mutex_ serialises update() and close(); data(), size() and
// mapped_bytes() read atomics.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/ipc/protocol.hpp"
#include "allocator/observe/process_context.hpp"
#include "allocator/vm/chunk_mapper.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/vm/fence.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/ipc.hpp"

namespace vmm {

namespace {

// A piece of the exporter's workspace mapped here.
struct Piece {
  std::size_t offset = 0;
  std::size_t bytes = 0;
  std::uint64_t serial = 0;
};

// `socket`'s device context; closes the socket if there is none.
DeviceContext& context_or_close(int socket, int device) {
  ipc::UniqueFd guard(socket);
  DeviceContext& context = process_context(device);
  (void)guard.release();
  return context;
}

}  // namespace

struct WorkspaceImport::State {
  DeviceContext& context;
  ipc::UniqueFd socket;
  std::chrono::milliseconds timeout = kDefaultTimeout;

  std::mutex mutex;
  VaRange range;
  std::size_t capacity = 0;
  std::vector<Piece> pieces;  // ascending offsets
  bool resend_all = true;     // ask for every descriptor (first sync, after an error)
  bool closed = false;
  std::atomic<std::uintptr_t> base{0};
  std::atomic<std::size_t> size{0};
  std::atomic<std::size_t> mapped{0};

  State(DeviceContext& c, int s) : context(c), socket(s) {}

  Backend& backend() { return context.backend(); }

  // Follows `received`. Lock held. See update() for the guarantees.
  void apply(ipc::ReceivedLayout& received, Stream stream) {
    const SharedLayout& layout = received.layout;
    const std::size_t g = backend().granularity();
    if (layout.capacity != capacity) {
      throw DriverError(ipc::kIpcCall, EPROTO,
                        "vmmalloc IPC: protocol error: the exported workspace's capacity changed "
                        "from " +
                            std::to_string(capacity) + " to " + std::to_string(layout.capacity) +
                            " bytes");
    }
    for (const SharedChunk& c : layout.chunks) {
      if (c.offset % g != 0 || c.bytes % g != 0 || c.offset + c.bytes > range.bytes) {
        throw NotSupportedError("vmmalloc IPC: the exporter's chunk of " + std::to_string(c.bytes) +
                                " bytes at offset " + std::to_string(c.offset) +
                                " does not fit this device's " + std::to_string(g) +
                                "-byte granularity within the " + std::to_string(range.bytes) +
                                " bytes reserved here");
      }
    }

    // Which pieces stay (same offset, same memory), which go, which are new.
    auto same = [](const Piece& p, const SharedChunk& c) {
      return p.offset == c.offset && p.serial == c.serial && p.bytes == c.bytes;
    };
    std::vector<Piece> stale;
    for (const Piece& p : pieces) {
      const bool kept = std::any_of(layout.chunks.begin(), layout.chunks.end(),
                                    [&](const SharedChunk& c) { return same(p, c); });
      if (!kept) stale.push_back(p);
    }
    std::vector<std::size_t> fresh;  // indices into layout.chunks
    for (std::size_t i = 0; i < layout.chunks.size(); ++i) {
      const SharedChunk& c = layout.chunks[i];
      const bool have =
          std::any_of(pieces.begin(), pieces.end(), [&](const Piece& p) { return same(p, c); });
      if (have) continue;
      if (!received.fds[i]) {
        throw DriverError(ipc::kIpcCall, EPROTO,
                          "vmmalloc IPC: protocol error: no descriptor came for the chunk at "
                          "offset " +
                              std::to_string(c.offset) + ", which is not mapped here");
      }
      fresh.push_back(i);
    }

    // Import first: until the unmaps below, a failure changes nothing here.
    std::vector<PhysicalHandle> handles;
    auto release_handles = [&] {
      for (PhysicalHandle h : handles) {
        try {
          backend().release(h);
        } catch (const Error& e) {
          log(LogLevel::error, "workspace import: releasing an imported handle failed: %s",
              e.what());
        }
      }
      handles.clear();
    };
    try {
      for (std::size_t i : fresh) {
        handles.push_back(backend().import_handle(received.fds[i].get(), layout.chunks[i].bytes));
      }
    } catch (...) {
      release_handles();
      throw;
    }

    // Pieces the exporter dropped: unmapped once the work queued on `stream`
    // is done. Their offsets may be about to receive new chunks, so this
    // waits (for that fence only) instead of deferring.
    if (!stale.empty()) {
      try {
        Fence::record(backend(), stream).wait();
        for (const Piece& p : stale) {
          backend().unmap(range.base + p.offset, p.bytes);
          pieces.erase(std::find_if(pieces.begin(), pieces.end(),
                                    [&](const Piece& q) { return q.offset == p.offset; }));
          mapped.fetch_sub(p.bytes, std::memory_order_acq_rel);
        }
      } catch (...) {
        release_handles();
        throw;
      }
    }

    // Map the new chunks (access granted once per contiguous run; undone on
    // failure), then let the mappings alone hold the memory.
    std::vector<Mapping> placed;
    for (std::size_t k = 0; k < fresh.size(); ++k) {
      const SharedChunk& c = layout.chunks[fresh[k]];
      Mapping m;
      m.va = range.base + c.offset;
      m.chunk.handle = handles[k];
      m.chunk.bytes = c.bytes;
      placed.push_back(m);
    }
    try {
      map_chunks(backend(), placed, "workspace import");
    } catch (...) {
      release_handles();
      throw;
    }
    release_handles();  // mapped: the memory lives until the unmap

    for (std::size_t i : fresh) {
      const SharedChunk& c = layout.chunks[i];
      pieces.push_back(Piece{c.offset, c.bytes, c.serial});
      mapped.fetch_add(c.bytes, std::memory_order_acq_rel);
    }
    std::sort(pieces.begin(), pieces.end(),
              [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
    size.store(layout.size, std::memory_order_release);
  }

  void update(Stream stream) {
    std::lock_guard lock(mutex);
    if (closed) throw InvalidArgumentError("workspace import was closed");
    try {
      ipc::ReceivedLayout received = ipc::request_layout(socket.get(), timeout, resend_all);
      apply(received, stream);
      resend_all = false;
    } catch (...) {
      resend_all = true;  // what the exporter thinks we hold may be off now
      throw;
    }
  }

  // Everything to the reclaimer (after a fence on `stream`). Lock held.
  void close_locked(Stream stream) {
    if (closed) return;
    std::vector<Mapping> mappings;
    for (const Piece& p : pieces) {
      Mapping m;
      m.va = range.base + p.offset;
      m.chunk.bytes = p.bytes;
      m.alias = true;  // unmap only: the handle was released, nothing goes to the pool
      mappings.push_back(m);
    }
    if (mappings.empty()) {
      context.address_space().deallocate(range);
    } else {
      std::vector<Fence> fences{Fence::record(backend(), stream)};  // throws: nothing changed
      context.reclaimer().submit(std::move(fences), std::move(mappings), range);
    }
    closed = true;
    pieces.clear();
    base.store(0, std::memory_order_release);
    size.store(0, std::memory_order_release);
    mapped.store(0, std::memory_order_release);
    socket.reset();
  }
};

WorkspaceImport::WorkspaceImport(int socket, int device) {
  DeviceContext& context = context_or_close(socket, device);
  *this =
      WorkspaceImport(context, socket, std::chrono::milliseconds(context.config().ipc_timeout_ms));
}

WorkspaceImport::WorkspaceImport(DeviceContext& context, int socket,
                                 std::chrono::milliseconds timeout) {
  auto state = std::make_unique<State>(context, socket);  // owns the socket from here
  state->timeout = timeout;
  ipc::check_socket(socket, "socket");
  ipc::ReceivedLayout received =
      ipc::request_layout(state->socket.get(), state->timeout, /*resend_all=*/true);
  state->capacity = received.layout.capacity;
  if (state->capacity == 0) {
    throw DriverError(ipc::kIpcCall, EPROTO,
                      "vmmalloc IPC: protocol error: the exported workspace has no capacity");
  }
  state->range = context.address_space().allocate(state->capacity);
  try {
    // Nothing is mapped yet, so nothing is waited for; on a throw apply()
    // has unmapped what it mapped.
    state->apply(received, nullptr);
  } catch (...) {
    context.address_space().deallocate(state->range);
    throw;
  }
  state->resend_all = false;
  state->base.store(state->range.base, std::memory_order_release);
  state_ = std::move(state);
}

WorkspaceImport::~WorkspaceImport() {
  if (!state_) return;
  try {
    close(nullptr);
  } catch (const std::exception& e) {
    log(LogLevel::error, "closing a workspace import in its destructor failed: %s", e.what());
  }
}

WorkspaceImport::WorkspaceImport(WorkspaceImport&&) noexcept = default;
WorkspaceImport& WorkspaceImport::operator=(WorkspaceImport&& other) noexcept {
  if (this != &other) {
    if (state_) {
      try {
        close(nullptr);
      } catch (const std::exception& e) {
        log(LogLevel::error, "closing a workspace import on assignment failed: %s", e.what());
      }
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

void* WorkspaceImport::data() const noexcept {
  return state_ ? reinterpret_cast<void*>(state_->base.load(std::memory_order_acquire)) : nullptr;
}
std::size_t WorkspaceImport::size() const noexcept {
  return state_ ? state_->size.load(std::memory_order_acquire) : 0;
}
std::size_t WorkspaceImport::capacity() const noexcept { return state_ ? state_->capacity : 0; }
std::size_t WorkspaceImport::mapped_bytes() const noexcept {
  return state_ ? state_->mapped.load(std::memory_order_acquire) : 0;
}
int WorkspaceImport::device() const noexcept { return state_ ? state_->context.device() : -1; }

void WorkspaceImport::update(Stream stream) {
  if (!state_) throw InvalidArgumentError("workspace import was moved from");
  state_->update(stream);
}

void WorkspaceImport::close(Stream stream) {
  if (!state_) return;
  std::lock_guard lock(state_->mutex);
  state_->close_locked(stream);
}

}  // namespace vmm
