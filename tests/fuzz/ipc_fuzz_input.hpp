// One input of the IPC wire-format fuzzer (ipc_fuzzer.cpp), also replayed
// by the host suite (tests/host/ipc_peer_tests.cpp) from the corpus and the
// regressions, so an input that once broke a decoder is checked in every
// build.
//
// Input: one control byte, then the bytes a hostile peer sends.
//   bit 0     0: the peer is an exporter - run the importer's
//                ipc::request_layout against it;
//             1: the peer is an importer - run the exporter's
//                ipc::receive_sync until it fails.
//   bits 1-3  descriptors (of /dev/null) the peer attaches to its first byte
//   bit 4     request_layout's resend_all
// The bytes go through a real Unix socket pair (so the framing code runs as
// in production), and the peer's end is shut down for writing after them:
// no decoder ever waits for its deadline.
//
// Outcome::violation is empty unless the decoders broke a promise of
// protocol.hpp: only DriverError with call "vmmalloc IPC" and code EPROTO,
// EPIPE or ENOENT may escape, an accepted layout must be consistent (chunks
// back to back from offset 0, covering its size, one descriptor slot per
// chunk), and no received descriptor may stay open.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "allocator/ipc/protocol.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm::ipc_fuzz {

struct Outcome {
  std::string violation;  // empty: every promise held
  bool accepted = false;  // a layout or at least one sync request was decoded
};

namespace detail {

// The lowest free descriptor number: a leaked descriptor changes it.
inline int lowest_free_fd() {
  const int fd = ::dup(0);
  if (fd >= 0) ::close(fd);
  return fd;
}

// Writes `bytes` to `fd` with `fds` descriptors attached to the first byte.
inline bool send_all(int fd, const std::uint8_t* bytes, std::size_t size, int fds) {
  std::vector<int> attached;
  for (int i = 0; i < fds && size > 0; ++i) attached.push_back(::open("/dev/null", O_RDONLY));
  alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))];
  std::size_t sent = 0;
  bool ok = true;
  while (sent < size) {
    iovec iov{const_cast<std::uint8_t*>(bytes) + sent, size - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (sent == 0 && !attached.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(attached.size() * sizeof(int));
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(attached.size() * sizeof(int));
      std::memcpy(CMSG_DATA(c), attached.data(), attached.size() * sizeof(int));
    }
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) {
      ok = false;  // the socket buffer is full: the input was cut (see kMaxInput)
      break;
    }
    sent += static_cast<std::size_t>(n);
  }
  for (int a : attached) ::close(a);
  return ok;
}

inline std::string check_error(const DriverError& e) {
  if (e.call() != ipc::kIpcCall) return "a DriverError of call " + e.call();
  if (e.code() != EPROTO && e.code() != EPIPE && e.code() != ENOENT) {
    return "a DriverError with errno " + std::to_string(e.code()) + ": " + e.what();
  }
  return {};
}

inline std::string check_layout(const ipc::ReceivedLayout& r) {
  const SharedLayout& l = r.layout;
  if (r.fds.size() != l.chunks.size()) return "descriptor slots do not match the chunks";
  if (l.size > l.capacity) return "size over capacity";
  std::uint64_t end = 0;
  for (const SharedChunk& c : l.chunks) {
    if (c.offset != end || c.bytes == 0 || c.fd != -1) return "chunks not back to back";
    end += c.bytes;
  }
  if (end < l.size) return "chunks do not cover the size";
  return {};
}

}  // namespace detail

// Inputs longer than this are cut (they would not fit the socket's buffer).
inline constexpr std::size_t kMaxInput = 64 * 1024;

inline Outcome run(const std::uint8_t* data, std::size_t size) {
  Outcome out;
  if (size == 0) return out;
  const std::uint8_t control = data[0];
  const std::uint8_t* bytes = data + 1;
  const std::size_t n = std::min(size - 1, kMaxInput);
  const int free_before = detail::lowest_free_fd();
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return out;
  const int ours = pair[0];
  const int peer = pair[1];
  detail::send_all(peer, bytes, n, (control >> 1) & 7);
  ::shutdown(peer, SHUT_WR);
  const auto timeout = std::chrono::milliseconds(5000);  // never reached: EOF comes first
  try {
    if ((control & 1) == 0) {
      const ipc::ReceivedLayout r = ipc::request_layout(ours, timeout, (control & 16) != 0);
      out.violation = detail::check_layout(r);
      out.accepted = true;
    } else {
      for (;;) {
        (void)ipc::receive_sync(ours, ipc::Deadline::after(timeout));
        out.accepted = true;
      }
    }
  } catch (const DriverError& e) {
    out.violation = detail::check_error(e);
  } catch (const std::exception& e) {
    out.violation = std::string("an unexpected exception: ") + e.what();
  }
  ::close(ours);
  ::close(peer);
  if (out.violation.empty() && detail::lowest_free_fd() != free_before) {
    out.violation = "a received descriptor was left open";
  }
  return out;
}

}  // namespace vmm::ipc_fuzz
