// Live socket implementation: see live_socket.hpp for the naming, the
// permission checks and the protocol.
//
// The server thread blocks every signal (so it never takes one meant for the
// application) and waits in poll() on the listening socket and a wake-up
// pipe. Each connection is served in turn: peer credentials checked, one
// request line read (2 s at most), the reply written (10 s at most, never
// raising SIGPIPE), the connection closed. At exit, a handler wakes the
// thread, joins it and removes the socket - only in the process that made
// it (a forked child has no server thread and leaves the parent's socket).
#include "allocator/observe/live_socket.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "allocator/base/log.hpp"
#include "allocator/observe/snapshot.hpp"

namespace vmm::live {

namespace {

constexpr int kReadTimeoutMs = 2000;
constexpr int kWriteTimeoutS = 10;
constexpr std::size_t kMaxRequest = 64;

std::string errno_text(int err) { return std::strerror(err); }

bool fill_address(sockaddr_un& addr, const std::string& path) {
  if (path.size() >= sizeof addr.sun_path) return false;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

void write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the client went away or timed out: nothing to do
    }
    done += static_cast<std::size_t>(n);
  }
}

std::string error_reply(std::string_view code, const std::string& message) {
  nlohmann::ordered_json j;
  j["error"] = std::string(code);
  j["message"] = message;
  return j.dump();
}

// Reads one request line; "" on timeout, EOF or an over-long line.
std::string read_request(int fd) {
  std::string line;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kReadTimeoutMs);
  while (line.size() <= kMaxRequest) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return {};
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return {};
    char buf[kMaxRequest + 1];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return line;  // EOF: a request without its newline still counts
    line.append(buf, static_cast<std::size_t>(n));
    const std::size_t nl = line.find('\n');
    if (nl != std::string::npos) return line.substr(0, nl);
  }
  return {};
}

void serve(int fd) {
  // The request is read first, even from a peer about to be refused: closing
  // a socket with unread data resets it, and the peer would lose the reply.
  timeval tv{kWriteTimeoutS, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string req = read_request(fd);
  while (!req.empty() && (req.back() == '\r' || req.back() == ' ')) req.pop_back();
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    write_all(fd, error_reply(kErrorPermissionDenied,
                              "cannot read the peer's credentials: " + errno_text(errno)));
    return;
  }
  const uid_t me = ::geteuid();
  if (cred.uid != me) {
    log(LogLevel::info, "live socket: refused a request from uid %u (pid %d): serving uid %u only",
        static_cast<unsigned>(cred.uid), static_cast<int>(cred.pid), static_cast<unsigned>(me));
    write_all(fd, error_reply(kErrorPermissionDenied, "process " + std::to_string(::getpid()) +
                                                          " serves only uid " + std::to_string(me) +
                                                          ", not uid " + std::to_string(cred.uid)));
    return;
  }
  try {
    if (req == kRequestSnapshot) {
      write_all(fd, snapshot_json("live", SnapshotDetail::full));
    } else if (req == kRequestSummary) {
      write_all(fd, snapshot_json("live", SnapshotDetail::summary));
    } else {
      write_all(fd, error_reply(kErrorBadRequest,
                                "unknown request \"" + req + "\" (valid: snapshot, summary)"));
    }
  } catch (const std::exception& e) {
    log(LogLevel::warn, "live socket: building a snapshot failed: %s", e.what());
  }
}

// Makes (or checks) the per-user directory; false (with the reason logged) if
// it is unusable.
bool private_directory(const std::string& dir) {
  const uid_t me = ::geteuid();
  if (::mkdir(dir.c_str(), 0700) == 0) {
    ::chmod(dir.c_str(), 0700);  // whatever the umask
  } else if (errno != EEXIST) {
    log(LogLevel::warn, "live socket not started: cannot make %s: %s", dir.c_str(),
        errno_text(errno).c_str());
    return false;
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    log(LogLevel::warn, "live socket not started: %s: %s", dir.c_str(), errno_text(errno).c_str());
    return false;
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != me || (st.st_mode & 077) != 0) {
    log(LogLevel::warn,
        "live socket not started: %s is not a private directory of uid %u (it must be a "
        "directory, not a link, owned by that user, mode 0700)",
        dir.c_str(), static_cast<unsigned>(me));
    return false;
  }
  return true;
}

}  // namespace

std::string socket_directory(std::string_view base, uid_t uid) {
  std::string dir(base);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir != "/") dir += '/';
  return dir + "vmmalloc-" + std::to_string(uid);
}

std::string socket_path(std::string_view directory, pid_t pid) {
  return std::string(directory) + "/" + std::to_string(pid) + ".sock";
}

std::optional<pid_t> pid_of_socket_name(std::string_view name) {
  constexpr std::string_view kSuffix = ".sock";
  if (name.size() <= kSuffix.size() || name.substr(name.size() - kSuffix.size()) != kSuffix) {
    return std::nullopt;
  }
  const std::string_view digits = name.substr(0, name.size() - kSuffix.size());
  long pid = 0;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
  if (ec != std::errc{} || ptr != digits.data() + digits.size() || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

// ---------------------------------------------------------------- Server

struct Server::State {
  mutable std::mutex mutex;  // start/stop
  bool started = false;
  pid_t owner = 0;
  std::string path;
  int listen_fd = -1;
  int wake_read = -1;
  int wake_write = -1;
  std::thread thread;
};

namespace {

void run(int listen_fd, int wake_fd) {
  for (;;) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    const int r = ::poll(fds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      log(LogLevel::warn, "live socket: poll failed: %s; stopping", errno_text(errno).c_str());
      return;
    }
    if ((fds[1].revents & (POLLIN | POLLHUP)) != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // the client gave up, or a transient error
    serve(fd);
    ::close(fd);
  }
}

}  // namespace

Server::Server() : state_(new State()) {}

Server::~Server() {
  stop();
  delete state_;
}

std::optional<std::string> Server::start(std::string_view base) noexcept {
  try {
    State& s = *state_;
    std::lock_guard lock(s.mutex);
    if (s.started) return s.path;
    const std::string dir = socket_directory(base, ::geteuid());
    if (!private_directory(dir)) return std::nullopt;
    const std::string path = socket_path(dir, ::getpid());
    sockaddr_un addr{};
    if (!fill_address(addr, path)) {
      log(LogLevel::warn, "live socket not started: the path %s is longer than %zu bytes",
          path.c_str(), sizeof addr.sun_path - 1);
      return std::nullopt;
    }
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      log(LogLevel::warn, "live socket not started: socket: %s", errno_text(errno).c_str());
      return std::nullopt;
    }
    // A socket left by an earlier process with our pid (killed before it
    // could remove it): ours to replace.
    ::unlink(path.c_str());
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
        ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, 16) != 0) {
      log(LogLevel::warn, "live socket not started: %s: %s", path.c_str(),
          errno_text(errno).c_str());
      ::close(fd);
      ::unlink(path.c_str());
      return std::nullopt;
    }
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
      log(LogLevel::warn, "live socket not started: pipe: %s", errno_text(errno).c_str());
      ::close(fd);
      ::unlink(path.c_str());
      return std::nullopt;
    }
    // The thread takes no signal meant for the application.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      s.thread = std::thread([fd, wake = pipe_fds[0]] {
        pthread_setname_np(pthread_self(), "vmm-live");
        run(fd, wake);
      });
    } catch (...) {
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      ::close(fd);
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
      ::unlink(path.c_str());
      throw;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    s.listen_fd = fd;
    s.wake_read = pipe_fds[0];
    s.wake_write = pipe_fds[1];
    s.path = path;
    s.owner = ::getpid();
    s.started = true;
    log(LogLevel::info, "live socket: serving snapshots on %s", path.c_str());
    return path;
  } catch (const std::exception& e) {
    log(LogLevel::warn, "live socket not started: %s", e.what());
    return std::nullopt;
  }
}

void Server::stop() noexcept {
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  if (!s.started || s.owner != ::getpid()) return;  // a forked child: not ours
  const char byte = 1;
  if (::write(s.wake_write, &byte, 1) < 0) {
    // The pipe cannot be full (one byte, once); closing it below wakes too.
  }
  if (s.thread.joinable()) s.thread.join();
  ::unlink(s.path.c_str());
  ::close(s.listen_fd);
  ::close(s.wake_read);
  ::close(s.wake_write);
  s.started = false;
  s.path.clear();
}

std::string Server::path() const {
  std::lock_guard lock(state_->mutex);
  return state_->started ? state_->path : std::string();
}

namespace {

Server& process_server() {
  static Server* s = new Server();  // never destroyed: stopped by the exit handler
  return *s;
}

void stop_process_server() { process_server().stop(); }

}  // namespace

std::optional<std::string> start_server(std::string_view base) noexcept {
  static std::once_flag at_exit;
  std::optional<std::string> path = process_server().start(base);
  if (path) {
    try {
      std::call_once(at_exit, [] { std::atexit(stop_process_server); });
    } catch (...) {
      // Not registered: the socket file stays after exit (vmmctl skips it).
    }
  }
  return path;
}

std::string served_path() { return process_server().path(); }

Reply request(const std::string& path, std::string_view what, int timeout_ms) {
  Reply reply;
  sockaddr_un addr{};
  if (!fill_address(addr, path)) {
    reply.message = "socket path too long: " + path;
    return reply;
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    reply.message = "socket: " + errno_text(errno);
    return reply;
  }
  auto fail = [&](Reply::Status status, const std::string& message) {
    ::close(fd);
    reply.status = status;
    reply.message = message;
    return reply;
  };
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    const std::string msg = "connect " + path + ": " + errno_text(err);
    if (err == ENOENT || err == ENOTDIR) return fail(Reply::Status::no_socket, msg);
    if (err == EACCES || err == EPERM) return fail(Reply::Status::permission_denied, msg);
    if (err == ECONNREFUSED) return fail(Reply::Status::refused, msg);
    return fail(Reply::Status::failed, msg);
  }
  const std::string line = std::string(what) + "\n";
  std::size_t sent = 0;
  while (sent < line.size()) {
    const ssize_t n = ::send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      // The server may have replied (a refusal) and closed: read what it said.
      break;
    }
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return fail(Reply::Status::timed_out, "no complete reply from " + path);
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail(Reply::Status::failed, "poll: " + errno_text(errno));
    }
    if (r == 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET && !reply.body.empty()) break;
      return fail(Reply::Status::failed, "reading from " + path + ": " + errno_text(errno));
    }
    if (n == 0) break;
    reply.body.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  reply.status = Reply::Status::ok;
  return reply;
}

}  // namespace vmm::live
