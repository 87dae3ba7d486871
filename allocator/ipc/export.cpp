// vmm::WorkspaceExport (include/vmmalloc/ipc.hpp): shares a workspace's
// Region and answers importers from one background thread per export.
//
// The thread polls an eventfd (a socket handed in by serve(), or stop) and
// every connection's socket. A sync request is answered with the region's
// layout at that moment (RegionShare::layout); descriptors are exported only
// for chunks this connection has not been sent yet - unless the importer
// asks for all of them again (kSyncResendAll, after a failed update) - and
// are closed here once sent. A chunk leaves a shared region only to be
// released (never reused), so a serial once sent names the same memory for
// good; each connection remembers the serials of the last layout it got.
//
// Thread-safety: mutex_ guards incoming_, stopping_ and the thread's start;
// the thread alone owns the connections; connections_ is atomic.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "allocator/base/log.hpp"
#include "allocator/ipc/protocol.hpp"
#include "allocator/vm/region.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/ipc.hpp"
#include "vmmalloc/workspace.hpp"

namespace vmm {

namespace {

// How long the server waits for the rest of a request once its first byte
// arrived (a request is 20 bytes: only a broken peer takes long).
constexpr std::chrono::milliseconds kRequestTimeout{5000};

struct Connection {
  ipc::UniqueFd socket;
  std::unordered_set<std::uint64_t> sent;  // serials whose descriptor it has
};

}  // namespace

struct WorkspaceExport::State {
  std::shared_ptr<RegionShare> share;
  ipc::UniqueFd wake;  // eventfd: serve() or stop
  std::atomic<std::size_t> connections{0};

  std::mutex mutex;
  std::vector<ipc::UniqueFd> incoming;
  bool stopping = false;
  std::thread thread;

  ~State() { stop(); }

  void signal() noexcept {
    const std::uint64_t one = 1;
    // Only fails if the counter would overflow, when it is readable anyway.
    (void)!::write(wake.get(), &one, sizeof one);
  }

  void stop() noexcept {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    signal();
    if (thread.joinable()) thread.join();
  }

  // Answers one request on `c`; false if the connection is to be dropped.
  bool answer(Connection& c) {
    ipc::Message request;
    try {
      request = ipc::receive_message(c.socket.get(), kRequestTimeout);
    } catch (const DriverError& e) {
      if (e.code() != EPIPE) {
        log(LogLevel::warn, "workspace export: dropping an importer: %s", e.what());
      }
      return false;
    }
    try {
      if (request.type != ipc::MessageType::sync ||
          (request.payload.size() != 0 && request.payload.size() != sizeof(std::uint32_t))) {
        ipc::send_error(c.socket.get(), "expected a sync request");
        return false;
      }
      std::uint32_t flags = 0;
      if (!request.payload.empty()) std::memcpy(&flags, request.payload.data(), sizeof flags);
      if ((flags & ipc::kSyncResendAll) != 0) c.sent.clear();

      SharedLayout layout;
      try {
        layout = share->layout([&](std::uint64_t serial) { return !c.sent.contains(serial); });
      } catch (const Error& e) {
        // The workspace is gone, or a descriptor could not be made: the
        // importer hears why and may ask again.
        ipc::send_error(c.socket.get(), e.what());
        return true;
      }
      std::vector<ipc::UniqueFd> owned;  // closed once sent (or on a throw)
      for (const SharedChunk& chunk : layout.chunks) {
        if (chunk.fd >= 0) owned.emplace_back(chunk.fd);
      }
      ipc::send_layout(c.socket.get(), layout);
      c.sent.clear();
      for (const SharedChunk& chunk : layout.chunks) c.sent.insert(chunk.serial);
      return true;
    } catch (const Error& e) {
      const auto* driver = dynamic_cast<const DriverError*>(&e);
      if (driver == nullptr || driver->code() != EPIPE) {
        log(LogLevel::warn, "workspace export: dropping an importer: %s", e.what());
      }
      return false;
    }
  }

  void run() {
    std::vector<Connection> conns;
    std::vector<pollfd> polled;
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (stopping) break;
        for (ipc::UniqueFd& fd : incoming) conns.push_back(Connection{std::move(fd), {}});
        incoming.clear();
      }
      connections.store(conns.size(), std::memory_order_release);
      polled.assign(1, pollfd{wake.get(), POLLIN, 0});
      for (const Connection& c : conns) polled.push_back(pollfd{c.socket.get(), POLLIN, 0});
      if (::poll(polled.data(), polled.size(), -1) < 0) {
        if (errno == EINTR) continue;
        log(LogLevel::error, "workspace export: poll failed: %s (serving stopped)",
            std::strerror(errno));
        break;
      }
      if ((polled[0].revents & POLLIN) != 0) {
        std::uint64_t count = 0;
        (void)!::read(wake.get(), &count, sizeof count);
      }
      // Answer in poll order; drop hung-up or failed connections.
      std::vector<Connection> kept;
      kept.reserve(conns.size());
      for (std::size_t i = 0; i < conns.size(); ++i) {
        const short revents = polled[i + 1].revents;
        bool keep = true;
        if ((revents & POLLIN) != 0) {
          keep = answer(conns[i]);
        } else if ((revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
          keep = false;
        }
        if (keep) kept.push_back(std::move(conns[i]));
      }
      conns = std::move(kept);
    }
    connections.store(0, std::memory_order_release);
  }
};

WorkspaceExport::WorkspaceExport(Workspace& workspace) {
  if (!workspace.region_) {
    throw InvalidArgumentError("cannot export a workspace that was released or moved from");
  }
  auto state = std::make_unique<State>();
  state->share = workspace.region_->share();
  state->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!state->wake) {
    throw DriverError(ipc::kIpcCall, errno,
                      std::string("vmmalloc IPC: eventfd failed: ") + std::strerror(errno));
  }
  state_ = std::move(state);
}

WorkspaceExport::~WorkspaceExport() = default;
WorkspaceExport::WorkspaceExport(WorkspaceExport&&) noexcept = default;
WorkspaceExport& WorkspaceExport::operator=(WorkspaceExport&&) noexcept = default;

void WorkspaceExport::serve(int socket) {
  ipc::UniqueFd owned(socket);
  if (!state_) throw InvalidArgumentError("workspace export was moved from");
  ipc::check_socket(socket, "socket");
  {
    std::lock_guard lock(state_->mutex);
    state_->incoming.push_back(std::move(owned));
    if (!state_->thread.joinable()) {
      State* s = state_.get();
      state_->thread = std::thread([s] { s->run(); });
    }
  }
  state_->signal();
}

std::size_t WorkspaceExport::connections() const {
  return state_ ? state_->connections.load(std::memory_order_acquire) : 0;
}

}  // namespace vmm
