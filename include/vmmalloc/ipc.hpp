// Sharing a workspace with other processes (IPC).
//
// The exporting process keeps a WorkspaceExport of its workspace and hands
// it one end of a connected Unix stream socket per importer; the importing
// process builds a WorkspaceImport on the other end. The importer maps the
// exporter's physical chunks - passed as POSIX file descriptors over the
// socket (SCM_RIGHTS) - read/write at an address of its own: both processes
// then see the same bytes. When the exporter grows the workspace, the
// importer's update() maps the new chunks. docs/ipc.md has the protocol.
//
//   exporter                                   importer
//   vmm::Workspace ws(1ull << 30);
//   ws.grow_to(64 << 20);
//   vmm::WorkspaceExport share(ws);
//   share.serve(sockets[0]);  ------------->   vmm::WorkspaceImport in(sockets[1]);
//                                              in.data(), in.size() == 64 MiB
//   ws.grow_to(256 << 20);                     in.update();  // in.size() == 256 MiB
//
// Lifetimes: either side may go first. Physical memory is released once
// neither process maps it: an importer keeps what it mapped after the
// exporter's workspace is gone, and an exporter's chunks are never reused
// once shared (a shrunk or released shared workspace gives its chunks back
// to the device, not to the pool).
//
// Devices: the memory stays on the exporter's GPU. Import it on that GPU
// (or on one that can reach it as a peer): ordinals may differ between the
// processes (CUDA_VISIBLE_DEVICES), so the importer names its device.
// Handles must be exportable (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR):
// where the driver refuses that, exporting throws NotSupportedError. On the
// host backend (no GPU) the chunks are memfds and everything works the same.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "vmmalloc/vmmalloc.h"

namespace vmm {

using Stream = vmm_stream_t;
class DeviceContext;
class Workspace;

class VMM_API WorkspaceExport {
 public:
  // Shares `workspace`: from now on its chunks, once they leave it (shrink,
  // release), are released to the device rather than reused. Serves no one
  // yet. The workspace may be released or destroyed before this export;
  // importers asking afterwards get an error. Throws InvalidArgumentError
  // for a released or moved-from workspace.
  explicit WorkspaceExport(Workspace& workspace);
  // Stops serving and closes every connection, without waiting for any
  // importer. Importers keep what they mapped.
  ~WorkspaceExport();
  WorkspaceExport(WorkspaceExport&&) noexcept;
  WorkspaceExport& operator=(WorkspaceExport&&) noexcept;
  WorkspaceExport(const WorkspaceExport&) = delete;
  WorkspaceExport& operator=(const WorkspaceExport&) = delete;

  // Serves the importer at the other end of `socket`, a connected AF_UNIX
  // SOCK_STREAM socket, which this export takes over (and closes when the
  // importer hangs up, misses a deadline or the export is destroyed; also
  // when this call throws). Requests are answered on a background thread,
  // one per connection, with the workspace's layout at that moment; a
  // request must arrive whole, and its answer be taken, within the
  // workspace's ipc_timeout_ms. Throws InvalidArgumentError for a
  // descriptor that is not such a socket, and for a peer process whose uid
  // ipc_peer_uids does not allow (by default: another uid than this
  // process's effective uid); a refused peer is sent an error message.
  void serve(int socket);
  // Connections being served now.
  std::size_t connections() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

class VMM_API WorkspaceImport {
 public:
  // How long update() (and the constructor) wait for the exporter's whole
  // answer by default: the default of the ipc_timeout_ms option.
  static constexpr std::chrono::milliseconds kDefaultTimeout{60000};

  // Imports the workspace exported at the other end of `socket` (a
  // connected AF_UNIX SOCK_STREAM socket, taken over: closed with the
  // import, also when this throws): reserves the exporter's capacity at an
  // address of this process on `device` (-1: the calling thread's current
  // CUDA device, or 0) and maps, read/write, every chunk the exporter has
  // mapped now. Throws InvalidArgumentError (socket, device), DriverError
  // (the exchange or the driver failed; see docs/ipc.md), OutOfMemoryError
  // (address space), NotSupportedError. Waits at most the process
  // configuration's ipc_timeout_ms for each whole answer of the exporter.
  explicit WorkspaceImport(int socket, int device = -1);
  // The same over an explicit device context (tests, embedding), waiting at
  // most `timeout` for each whole answer of the exporter.
  WorkspaceImport(DeviceContext& context, int socket,
                  std::chrono::milliseconds timeout = kDefaultTimeout);
  // close(nullptr); errors are logged.
  ~WorkspaceImport();
  WorkspaceImport(WorkspaceImport&&) noexcept;
  WorkspaceImport& operator=(WorkspaceImport&&) noexcept;
  WorkspaceImport(const WorkspaceImport&) = delete;
  WorkspaceImport& operator=(const WorkspaceImport&) = delete;

  // The imported workspace at this process's address; stable for the
  // import's life. nullptr once closed.
  void* data() const noexcept;
  // The exporter's size at the last update (or the constructor).
  std::size_t size() const noexcept;
  // The exporter's capacity (the address range reserved here).
  std::size_t capacity() const noexcept;
  // Bytes of the exporter's chunks mapped here.
  std::size_t mapped_bytes() const noexcept;
  int device() const noexcept;

  // Asks the exporter for its current layout and follows it: maps the
  // chunks it added (a grown workspace), unmaps those it no longer has (a
  // shrunk one) after the work queued on `stream` so far completes - waiting
  // for that fence, and only when something is to be unmapped. Throws what
  // the constructor throws; on a throw size() is unchanged and what is
  // mapped is still accounted for exactly, and the next update() retries.
  void update(Stream stream = nullptr);

  // Unmaps everything once the work queued on `stream` so far completes
  // (never waits: the device context's reclaimer does it) and closes the
  // connection. Throws DriverError if the fence cannot be recorded (nothing
  // changed then). The import is empty afterwards.
  void close(Stream stream);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace vmm
