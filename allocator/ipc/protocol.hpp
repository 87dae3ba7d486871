// The IPC wire protocol (docs/ipc.md): framed messages over a connected
// AF_UNIX SOCK_STREAM socket, with file descriptors passed alongside as
// SCM_RIGHTS ancillary data.
//
// Every message is a WireHeader followed by payload_bytes of payload, sent in
// one sendmsg() together with its fd_count descriptors, so the descriptors
// arrive with the header's first byte. Both ends run on one machine: fields
// are in the machine's byte order. The exchange is request/response, driven
// by the importer:
//
//   importer -> exporter   sync    u32 flags        (kSyncResendAll)
//   exporter -> importer   layout  WireLayout       (capacity, size, chunk count)
//                          chunks  WireChunk x n    (n <= 64, descriptors attached
//                          ...                       for chunks flagged kChunkHasFd)
//                   or     error   UTF-8 text       (e.g. the workspace was released)
//
// Deadlines: every send and receive runs against one absolute Deadline for
// the whole message (or exchange), never a timeout per system call, so a
// peer that drips a byte at a time cannot stretch it; sends never block past
// it (MSG_DONTWAIT and poll), so a peer that does not read cannot hold the
// sender.
//
// Errors: a system call that fails is a DriverError naming it with its errno
// (sendmsg, recvmsg, poll); a peer that hung up is DriverError(EPIPE), one
// that sends something else than this protocol DriverError(EPROTO), a
// deadline missed DriverError(ETIMEDOUT), all with the call "vmmalloc IPC"
// and a message saying what happened. Descriptors received are always owned
// (UniqueFd): none leaks on any error path.
//
// Thread-safety: the functions keep no state; one socket must not be used by
// two threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "allocator/vm/region.hpp"

namespace vmm::ipc {

// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

enum class MessageType : std::uint16_t { sync = 1, layout = 2, chunks = 3, error = 4 };

inline constexpr std::uint32_t kMagic = 0x494d4d56;  // "VMMI" read as little-endian bytes
inline constexpr std::uint16_t kVersion = 1;
inline constexpr std::size_t kMaxFdsPerMessage = 64;
inline constexpr std::size_t kMaxPayloadBytes = 64 * 1024;
inline constexpr std::uint32_t kChunkHasFd = 1;  // WireChunk::flags: a descriptor is attached
// sync flags: attach every chunk's descriptor, not only those this
// connection has not been sent yet (the importer lost track after an error).
inline constexpr std::uint32_t kSyncResendAll = 1;

struct WireHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t type;  // MessageType
  std::uint32_t payload_bytes;
  std::uint32_t fd_count;
};
static_assert(sizeof(WireHeader) == 16);

struct WireLayout {
  std::uint64_t capacity;     // bytes of the exported region
  std::uint64_t size;         // its size now
  std::uint64_t chunk_count;  // chunks described by the chunks messages that follow
  std::int32_t device;        // the exporter's device ordinal (its own numbering)
  std::int32_t pid;           // the exporter's process id
};
static_assert(sizeof(WireLayout) == 32);

struct WireChunk {
  std::uint64_t offset;  // from the region's base
  std::uint64_t bytes;
  std::uint64_t serial;  // the same serial is the same physical memory
  std::uint32_t flags;   // kChunkHasFd
  std::uint32_t reserved;
};
static_assert(sizeof(WireChunk) == 32);

struct Message {
  MessageType type = MessageType::error;
  std::vector<std::byte> payload;
  std::vector<UniqueFd> fds;
};

// The call name of every IPC error (DriverError::call()).
inline constexpr const char* kIpcCall = "vmmalloc IPC";

// Throws InvalidArgumentError unless `fd` is a connected AF_UNIX
// SOCK_STREAM socket; `what` names the argument in the message.
void check_socket(int fd, const char* what);

// An absolute deadline, and the timeout it was made from (for messages).
struct Deadline {
  std::chrono::steady_clock::time_point at;
  std::chrono::milliseconds timeout{0};

  static Deadline after(std::chrono::milliseconds timeout) {
    return Deadline{std::chrono::steady_clock::now() + timeout, timeout};
  }
  // Milliseconds left (0 once passed), for poll().
  int remaining_ms() const;
};

// Sends one message with `fds` (at most kMaxFdsPerMessage) attached, by
// `deadline` (ETIMEDOUT: the peer does not read). Never raises SIGPIPE.
// Throws DriverError.
void send_message(int socket, MessageType type, std::span<const std::byte> payload,
                  std::span<const int> fds, Deadline deadline);
// Receives one whole message by `deadline`. Throws DriverError.
Message receive_message(int socket, Deadline deadline);
inline Message receive_message(int socket, std::chrono::milliseconds timeout) {
  return receive_message(socket, Deadline::after(timeout));
}

// Exporter: receives one sync request by `deadline` and returns its flags
// (unknown flags are ignored). Anything else than a sync of 0 or 4 bytes of
// payload without descriptors is DriverError(EPROTO).
std::uint32_t receive_sync(int socket, Deadline deadline);
// Exporter: sends `layout` as a layout message and its chunks messages, each
// chunk's descriptor (fd >= 0) attached, all by `deadline`. The descriptors
// stay the caller's.
void send_layout(int socket, const SharedLayout& layout, Deadline deadline);
// Exporter: sends an error message (text cut to kMaxPayloadBytes).
void send_error(int socket, const std::string& text, Deadline deadline);

// What an importer received: the layout, and per chunk its descriptor (an
// empty UniqueFd where none was attached).
struct ReceivedLayout {
  SharedLayout layout;  // chunk fds are -1: the descriptors are in `fds`
  int exporter_pid = 0;
  std::vector<UniqueFd> fds;  // parallel to layout.chunks
};

// Importer: sends sync (with kSyncResendAll when `resend_all`) and receives
// the exporter's layout, the whole exchange within `timeout`. Throws
// DriverError
// (an error message from the exporter becomes DriverError(ENOENT) carrying
// its text), also for a layout that breaks the protocol (chunks not back to
// back from offset 0, a count that does not match, a descriptor too many).
ReceivedLayout request_layout(int socket, std::chrono::milliseconds timeout, bool resend_all);

}  // namespace vmm::ipc
