// vmm::WorkspaceExport (include/vmmalloc/ipc.hpp): shares a workspace's
// Region and answers importers, each connection from a thread of its own.
//
// A connection's thread waits for a request, receives it whole and sends
// the answer, each by one deadline (ipc_timeout_ms): an importer that drips
// its request or does not read its answer is dropped (logged at warning),
// and holds up no other importer. A sync request is answered with the
// region's layout at that moment (RegionShare::layout); descriptors are
// exported only for chunks this connection has not been sent yet - unless
// the importer asks for all of them again (kSyncResendAll, after a failed
// update) - and are closed here once sent. A chunk leaves a shared region
// only to be released (never reused), so a serial once sent names the same
// memory for good; each connection remembers the serials of the last layout
// it got.
//
// serve() checks the peer's uid (SO_PEERCRED) against ipc_peer_uids before
// taking a connection. Stopping shuts every connection's socket down
// (shutdown(2) wakes its thread wherever it waits) before joining, so the
// destructor never waits on an importer.
//
// Thread-safety: mutex guards conns (each socket is closed, and shut down,
// only under it), stopping, and the joining of finished threads;
// connections is atomic.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "allocator/base/config_values.hpp"
#include "allocator/base/log.hpp"
#include "allocator/ipc/protocol.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/vm/region.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/ipc.hpp"
#include "vmmalloc/workspace.hpp"

namespace vmm {

namespace {

struct Connection {
  ipc::UniqueFd socket;  // closed under State::mutex
  std::thread thread;
  bool done = false;  // the thread has finished (under State::mutex)
};

// Whether `config` lets a process of `uid` connect; `why` says otherwise.
bool peer_allowed(const Config& config, uid_t uid, std::string& why) {
  const uid_t own = ::geteuid();
  if (uid == own || config.ipc_peer_mode == IpcPeerMode::any) return true;
  const auto& list = config.ipc_peer_uid_list;
  if (config.ipc_peer_mode == IpcPeerMode::list &&
      std::find(list.begin(), list.end(), uid) != list.end()) {
    return true;
  }
  std::string allowed;
  for (std::uint32_t u : list) allowed += " and " + std::to_string(u);
  why = "its uid " + std::to_string(uid) +
        " is not allowed by ipc_peer_uids:" + config_values::format_ipc_peer_uids(config) +
        " (which allows the exporter's uid " + std::to_string(own) + allowed +
        "); to serve it, set ipc_peer_uids to any, or to uids joined with + like " +
        std::to_string(uid) + "+1001";
  return false;
}

}  // namespace

struct WorkspaceExport::State {
  std::shared_ptr<RegionShare> share;
  Config config;  // ipc_peer_uids and ipc_timeout_ms: the workspace's context's
  std::atomic<std::size_t> connections{0};

  std::mutex mutex;
  std::list<Connection> conns;  // stable addresses: each thread holds its own
  bool stopping = false;

  ~State() { stop(); }

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(config.ipc_timeout_ms);
  }

  void stop() noexcept {
    std::list<Connection> joining;
    {
      std::lock_guard lock(mutex);
      stopping = true;
      // Wakes each thread in poll, recv or send; it then closes its socket.
      for (Connection& c : conns) {
        if (c.socket) ::shutdown(c.socket.get(), SHUT_RDWR);
      }
      joining.swap(conns);
    }
    for (Connection& c : joining) c.thread.join();
  }

  // Joins the threads of connections that ended. Lock held.
  void reap_locked() {
    for (auto it = conns.begin(); it != conns.end();) {
      if (it->done) {
        it->thread.join();  // it only has to return
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Answers one sync request with `flags` on `socket`.
  void answer(int socket, std::uint32_t flags, std::unordered_set<std::uint64_t>& sent) {
    if ((flags & ipc::kSyncResendAll) != 0) sent.clear();
    SharedLayout layout;
    try {
      layout = share->layout([&](std::uint64_t serial) { return !sent.contains(serial); });
    } catch (const Error& e) {
      // The workspace is gone, or a descriptor could not be made: the
      // importer hears why and may ask again.
      ipc::send_error(socket, e.what(), ipc::Deadline::after(timeout()));
      return;
    }
    std::vector<ipc::UniqueFd> owned;  // closed once sent (or on a throw)
    for (const SharedChunk& chunk : layout.chunks) {
      if (chunk.fd >= 0) owned.emplace_back(chunk.fd);
    }
    ipc::send_layout(socket, layout, ipc::Deadline::after(timeout()));
    sent.clear();
    for (const SharedChunk& chunk : layout.chunks) sent.insert(chunk.serial);
  }

  // A connection's thread: requests and answers until the importer hangs
  // up, breaks the protocol, misses a deadline, or the export stops.
  void serve_connection(Connection& c) {
    const int socket = c.socket.get();       // open until this thread closes it
    std::unordered_set<std::uint64_t> sent;  // serials whose descriptor it has
    try {
      for (;;) {
        pollfd p{socket, POLLIN, 0};  // idle importers wait here, for any time
        if (::poll(&p, 1, -1) < 0) {
          if (errno == EINTR) continue;
          throw DriverError(ipc::kIpcCall, errno,
                            std::string("vmmalloc IPC: poll failed: ") + std::strerror(errno));
        }
        std::uint32_t flags = 0;
        try {
          flags = ipc::receive_sync(socket, ipc::Deadline::after(timeout()));
        } catch (const DriverError& e) {
          if (e.code() == EPROTO) {
            ipc::send_error(socket, "expected a sync request", ipc::Deadline::after(timeout()));
          }
          throw;
        }
        answer(socket, flags, sent);
      }
    } catch (const std::exception& e) {
      const auto* driver = dynamic_cast<const DriverError*>(&e);
      if (driver == nullptr || driver->code() != EPIPE) {
        bool stopped = false;
        {
          std::lock_guard lock(mutex);
          stopped = stopping;
        }
        if (!stopped) log(LogLevel::warn, "workspace export: dropping an importer: %s", e.what());
      }
    }
    std::lock_guard lock(mutex);
    c.socket.reset();
    c.done = true;
    connections.fetch_sub(1, std::memory_order_acq_rel);
  }

  // Refuses `socket` unless its peer's uid is allowed; the peer is told why.
  void check_peer(int socket) const {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      throw InvalidArgumentError(
          std::string("socket ") + std::to_string(socket) +
          ": cannot read its peer's credentials (SO_PEERCRED: " + std::strerror(errno) + ")");
    }
    std::string why;
    if (peer_allowed(config, cred.uid, why)) return;
    try {  // best effort: it may not read
      ipc::send_error(
          socket, "permission denied: the exporter does not serve uid " + std::to_string(cred.uid),
          ipc::Deadline::after(std::chrono::milliseconds(100)));
    } catch (const Error&) {
    }
    throw InvalidArgumentError("vmmalloc IPC: refusing the importer at the other end of socket " +
                               std::to_string(socket) + " (pid " + std::to_string(cred.pid) +
                               "): " + why);
  }
};

WorkspaceExport::WorkspaceExport(Workspace& workspace) {
  if (!workspace.region_) {
    throw InvalidArgumentError("cannot export a workspace that was released or moved from");
  }
  auto state = std::make_unique<State>();
  state->share = workspace.region_->share();
  state->config = workspace.region_->context().config();
  state_ = std::move(state);
}

WorkspaceExport::~WorkspaceExport() = default;
WorkspaceExport::WorkspaceExport(WorkspaceExport&&) noexcept = default;
WorkspaceExport& WorkspaceExport::operator=(WorkspaceExport&&) noexcept = default;

void WorkspaceExport::serve(int socket) {
  ipc::UniqueFd owned(socket);
  if (!state_) throw InvalidArgumentError("workspace export was moved from");
  ipc::check_socket(socket, "socket");
  state_->check_peer(socket);
  std::lock_guard lock(state_->mutex);
  state_->reap_locked();
  Connection& c = state_->conns.emplace_back();
  c.socket = std::move(owned);
  state_->connections.fetch_add(1, std::memory_order_acq_rel);
  State* s = state_.get();
  try {
    c.thread = std::thread([s, &c] { s->serve_connection(c); });
  } catch (...) {
    state_->connections.fetch_sub(1, std::memory_order_acq_rel);
    state_->conns.pop_back();
    throw;
  }
}

std::size_t WorkspaceExport::connections() const {
  return state_ ? state_->connections.load(std::memory_order_acquire) : 0;
}

}  // namespace vmm
