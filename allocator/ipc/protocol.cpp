// The IPC wire protocol: framing, descriptor passing and the layout exchange
// (see ipc_protocol.hpp and docs/ipc.md).
#include "allocator/ipc/protocol.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "vmmalloc/errors.hpp"

namespace vmm::ipc {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

// The most chunks one layout may describe: far beyond any real region
// (64 TiB in 2 MiB chunks is 2^25), small enough to bound what a broken peer
// can make us allocate.
constexpr std::uint64_t kMaxChunks = std::uint64_t{1} << 25;
// No region is larger (x86-64 user space is 128 TiB).
constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 47;
// How far the mapped chunks may reach past the capacity: a region maps whole
// granules, so its last chunk ends at most a granule (2 MiB on GPUs) past it.
constexpr std::uint64_t kMappedSlack = std::uint64_t{1} << 30;

[[noreturn]] void system_failed(const char* syscall, int err) {
  throw DriverError(kIpcCall, err,
                    std::string("vmmalloc IPC: ") + syscall + " failed: " + std::strerror(err));
}

[[noreturn]] void protocol_error(const std::string& what) {
  throw DriverError(kIpcCall, EPROTO, "vmmalloc IPC: protocol error: " + what);
}

[[noreturn]] void peer_closed() {
  throw DriverError(kIpcCall, EPIPE,
                    "vmmalloc IPC: the other end closed the connection (its export or import "
                    "was destroyed, or its process exited)");
}

const char* type_name(std::uint16_t type) {
  switch (static_cast<MessageType>(type)) {
    case MessageType::sync:
      return "sync";
    case MessageType::layout:
      return "layout";
    case MessageType::chunks:
      return "chunks";
    case MessageType::error:
      return "error";
  }
  return nullptr;
}

// "vmmalloc IPC: <what> within <timeout> ms<why>".
[[noreturn]] void timed_out(const char* what, Deadline deadline, const char* why = "") {
  throw DriverError(kIpcCall, ETIMEDOUT,
                    std::string("vmmalloc IPC: ") + what + " within " +
                        std::to_string(deadline.timeout.count()) + " ms" + why);
}

// Waits until `socket` is ready for `events` or `deadline` passes (false).
bool wait_for(int socket, short events, Deadline deadline) {
  pollfd p{socket, events, 0};
  for (;;) {
    const int n = ::poll(&p, 1, deadline.remaining_ms());
    if (n > 0) return true;  // ready, or hung up: the call says which
    if (n == 0) return false;
    if (errno != EINTR) system_failed("poll", errno);
  }
}

// Reads exactly `bytes` into `out` by `deadline`, keeping any descriptors
// that come along. `first`: these are a message's first bytes.
void receive_exactly(int socket, std::byte* out, std::size_t bytes, Deadline deadline,
                     std::vector<UniqueFd>& fds, bool first) {
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  std::size_t got = 0;
  while (got < bytes) {
    if (!wait_for(socket, POLLIN, deadline)) {
      if (first && got == 0) {
        timed_out("no answer", deadline,
                  " (is a WorkspaceExport serving the other end of the socket?)");
      }
      timed_out("the rest of a message did not come", deadline);
    }
    iovec iov{out + got, bytes - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) peer_closed();
      system_failed("recvmsg", errno);
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      protocol_error("more than " + std::to_string(kMaxFdsPerMessage) +
                     " descriptors in one message (the surplus was dropped by the kernel)");
    }
    if (n == 0) peer_closed();
    got += static_cast<std::size_t>(n);
  }
}

template <class T>
T read_pod(const std::byte* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

template <class T>
void append_pod(std::vector<std::byte>& out, const T& value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), p, p + sizeof value);
}

}  // namespace

void check_socket(int fd, const char* what) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    throw InvalidArgumentError(std::string(what) + " " + std::to_string(fd) +
                               " is not an open file descriptor");
  }
  if (!S_ISSOCK(st.st_mode)) {
    throw InvalidArgumentError(std::string(what) + " " + std::to_string(fd) +
                               " is not a socket (expected a connected AF_UNIX SOCK_STREAM "
                               "socket, e.g. from socketpair(AF_UNIX, SOCK_STREAM, 0, fds))");
  }
  int domain = -1;
  int type = -1;
  socklen_t len = sizeof domain;
  const bool got_domain = ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0;
  len = sizeof type;
  const bool got_type = ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
  if (!got_domain || !got_type || domain != AF_UNIX || type != SOCK_STREAM) {
    throw InvalidArgumentError(
        std::string(what) + " " + std::to_string(fd) + " is a " +
        (domain == AF_UNIX ? "Unix" : "non-Unix") + " socket of type " + std::to_string(type) +
        "; expected a connected AF_UNIX SOCK_STREAM socket (descriptors travel only over Unix "
        "sockets, and the protocol frames a byte stream)");
  }
  sockaddr_un peer{};
  socklen_t peer_len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
    throw InvalidArgumentError(std::string(what) + " " + std::to_string(fd) +
                               " is not connected (" + std::strerror(errno) + ")");
  }
}

void send_message(int socket, MessageType type, std::span<const std::byte> payload,
                  std::span<const int> fds, Deadline deadline) {
  if (fds.size() > kMaxFdsPerMessage || payload.size() > kMaxPayloadBytes) {
    throw InvalidArgumentError("vmmalloc IPC: message too large (" +
                               std::to_string(payload.size()) + " bytes, " +
                               std::to_string(fds.size()) + " descriptors)");
  }
  WireHeader header{kMagic, kVersion, static_cast<std::uint16_t>(type),
                    static_cast<std::uint32_t>(payload.size()),
                    static_cast<std::uint32_t>(fds.size())};
  std::vector<std::byte> bytes(sizeof header + payload.size());
  std::memcpy(bytes.data(), &header, sizeof header);
  if (!payload.empty()) std::memcpy(bytes.data() + sizeof header, payload.data(), payload.size());

  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    iovec iov{bytes.data() + sent, bytes.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (sent == 0 && !fds.empty()) {  // the descriptors go with the first byte
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    // Never blocks: a peer that does not read must not hold this thread
    // past the deadline.
    const ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!wait_for(socket, POLLOUT, deadline)) {
          timed_out("the other end did not take a message", deadline, " (it does not read)");
        }
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) peer_closed();
      system_failed("sendmsg", errno);
    }
    sent += static_cast<std::size_t>(n);
  }
}

int Deadline::remaining_ms() const {
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(at - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1 << 30));
}

Message receive_message(int socket, Deadline deadline) {
  Message m;
  std::byte raw[sizeof(WireHeader)];
  receive_exactly(socket, raw, sizeof raw, deadline, m.fds, /*first=*/true);
  const auto header = read_pod<WireHeader>(raw);
  if (header.magic != kMagic) {
    protocol_error("the peer does not speak the vmmalloc IPC protocol (bad magic)");
  }
  if (header.version != kVersion) {
    protocol_error("the peer speaks version " + std::to_string(header.version) +
                   ", this process version " + std::to_string(kVersion));
  }
  if (type_name(header.type) == nullptr) {
    protocol_error("unknown message type " + std::to_string(header.type));
  }
  if (header.payload_bytes > kMaxPayloadBytes || header.fd_count > kMaxFdsPerMessage) {
    protocol_error("message of " + std::to_string(header.payload_bytes) + " bytes and " +
                   std::to_string(header.fd_count) + " descriptors is over the limits");
  }
  m.type = static_cast<MessageType>(header.type);
  m.payload.resize(header.payload_bytes);
  if (!m.payload.empty()) {
    receive_exactly(socket, m.payload.data(), m.payload.size(), deadline, m.fds, /*first=*/false);
  }
  if (m.fds.size() != header.fd_count) {
    protocol_error(std::string(type_name(header.type)) + " message announced " +
                   std::to_string(header.fd_count) + " descriptors and carried " +
                   std::to_string(m.fds.size()));
  }
  return m;
}

std::uint32_t receive_sync(int socket, Deadline deadline) {
  const Message m = receive_message(socket, deadline);
  if (m.type != MessageType::sync ||
      (m.payload.size() != 0 && m.payload.size() != sizeof(std::uint32_t)) || !m.fds.empty()) {
    protocol_error(std::string("expected a sync request, got ") +
                   type_name(static_cast<std::uint16_t>(m.type)) + " of " +
                   std::to_string(m.payload.size()) + " bytes and " + std::to_string(m.fds.size()) +
                   " descriptors");
  }
  std::uint32_t flags = 0;
  if (!m.payload.empty()) flags = read_pod<std::uint32_t>(m.payload.data());
  return flags;
}

void send_layout(int socket, const SharedLayout& layout, Deadline deadline) {
  std::vector<std::byte> payload;
  append_pod(payload, WireLayout{layout.capacity, layout.size, layout.chunks.size(), layout.device,
                                 static_cast<std::int32_t>(::getpid())});
  send_message(socket, MessageType::layout, payload, {}, deadline);
  constexpr std::size_t kBatch = std::min(kMaxFdsPerMessage, kMaxPayloadBytes / sizeof(WireChunk));
  for (std::size_t first = 0; first < layout.chunks.size(); first += kBatch) {
    const std::size_t last = std::min(first + kBatch, layout.chunks.size());
    payload.clear();
    std::vector<int> fds;
    for (std::size_t i = first; i < last; ++i) {
      const SharedChunk& c = layout.chunks[i];
      const std::uint32_t flags = c.fd >= 0 ? kChunkHasFd : 0;
      append_pod(payload, WireChunk{c.offset, c.bytes, c.serial, flags, 0});
      if (c.fd >= 0) fds.push_back(c.fd);
    }
    send_message(socket, MessageType::chunks, payload, fds, deadline);
  }
}

void send_error(int socket, const std::string& text, Deadline deadline) {
  const std::size_t n = std::min(text.size(), kMaxPayloadBytes);
  send_message(socket, MessageType::error,
               std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), n), {},
               deadline);
}

ReceivedLayout request_layout(int socket, std::chrono::milliseconds timeout, bool resend_all) {
  // One deadline for the whole exchange: an exporter sending its answer a
  // byte at a time cannot make the importer wait longer.
  const Deadline deadline = Deadline::after(timeout);
  std::vector<std::byte> request;
  append_pod(request, resend_all ? kSyncResendAll : std::uint32_t{0});
  send_message(socket, MessageType::sync, request, {}, deadline);
  Message reply = receive_message(socket, deadline);
  if (reply.type == MessageType::error) {
    throw DriverError(
        kIpcCall, ENOENT,
        "vmmalloc IPC: the exporter answered: " +
            std::string(reinterpret_cast<const char*>(reply.payload.data()), reply.payload.size()));
  }
  if (reply.type != MessageType::layout || reply.payload.size() != sizeof(WireLayout) ||
      !reply.fds.empty()) {
    protocol_error(std::string("expected a layout message, got ") +
                   type_name(static_cast<std::uint16_t>(reply.type)) + " of " +
                   std::to_string(reply.payload.size()) + " bytes");
  }
  const auto wire = read_pod<WireLayout>(reply.payload.data());
  if (wire.size > wire.capacity || wire.capacity > kMaxCapacity || wire.chunk_count > kMaxChunks) {
    protocol_error("layout of size " + std::to_string(wire.size) + ", capacity " +
                   std::to_string(wire.capacity) + " and " + std::to_string(wire.chunk_count) +
                   " chunks is not possible");
  }
  ReceivedLayout out;
  out.layout.device = wire.device;
  out.layout.capacity = wire.capacity;
  out.layout.size = wire.size;
  out.exporter_pid = wire.pid;
  out.layout.chunks.reserve(wire.chunk_count);
  out.fds.reserve(wire.chunk_count);
  std::uint64_t end = 0;  // chunks must lie back to back from offset 0
  while (out.layout.chunks.size() < wire.chunk_count) {
    Message m = receive_message(socket, deadline);
    if (m.type != MessageType::chunks || m.payload.empty() ||
        m.payload.size() % sizeof(WireChunk) != 0) {
      protocol_error("expected a chunks message");
    }
    const std::size_t n = m.payload.size() / sizeof(WireChunk);
    if (out.layout.chunks.size() + n > wire.chunk_count) {
      protocol_error("more chunks than the layout announced");
    }
    std::size_t next_fd = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto w = read_pod<WireChunk>(m.payload.data() + i * sizeof(WireChunk));
      if (w.offset != end || w.bytes == 0 || w.bytes > wire.capacity + kMappedSlack - end) {
        protocol_error(
            "chunk at offset " + std::to_string(w.offset) + " of " + std::to_string(w.bytes) +
            " bytes does not follow the previous one (which ends at " + std::to_string(end) +
            ") inside the capacity of " + std::to_string(wire.capacity) + " bytes");
      }
      end += w.bytes;
      SharedChunk c;
      c.offset = w.offset;
      c.bytes = w.bytes;
      c.serial = w.serial;
      out.layout.chunks.push_back(c);
      if ((w.flags & kChunkHasFd) != 0) {
        if (next_fd >= m.fds.size()) protocol_error("a chunk's descriptor is missing");
        out.fds.push_back(std::move(m.fds[next_fd++]));
      } else {
        out.fds.emplace_back();
      }
    }
    if (next_fd != m.fds.size()) protocol_error("a chunks message carried a descriptor too many");
  }
  if (end < wire.size) {
    protocol_error("the chunks cover " + std::to_string(end) + " bytes, less than the size " +
                   std::to_string(wire.size));
  }
  return out;
}

}  // namespace vmm::ipc
