// Live socket server: see live_socket.hpp for the naming, the checks and
// the protocol.
//
// One thread (all signals blocked, so it never takes one meant for the
// application) polls the listening socket, a wake-up pipe and every open
// connection. Sockets are non-blocking: a client that sends nothing, or
// reads slowly, holds only its own connection, until its deadline
// (kRequestDeadline for the request, kConnectionDeadline for everything,
// both from the accept). A connection's peer credentials are read at
// accept, its request line collected as it arrives (RequestReader), then
// the reply sent: an error object, or the snapshot a piece at a time
// (SnapshotText), each piece made when the last one has gone. At exit, a
// handler wakes the thread, which cuts every connection (shutdown, close)
// and returns; the socket is removed - only in the process that made it (a
// forked child has no server thread and leaves the parent's socket).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "allocator/base/log.hpp"
#include "allocator/observe/live_socket.hpp"
#include "allocator/observe/snapshot.hpp"

namespace vmm::live {

namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int err) { return std::strerror(err); }

// A sleep or wake request being answered on a thread of its own.
struct ControlJob {
  std::mutex mutex;
  bool done = false;
  std::string reply;
};

// A pipe a control thread writes a byte to when its job is done. Shared
// with the threads, so it stays open until the last of them has written.
struct JobSignal {
  int read_fd = -1;
  int write_fd = -1;
  JobSignal() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
      read_fd = fds[0];
      write_fd = fds[1];
    }
  }
  ~JobSignal() {
    if (read_fd >= 0) ::close(read_fd);
    if (write_fd >= 0) ::close(write_fd);
  }
  JobSignal(const JobSignal&) = delete;
  JobSignal& operator=(const JobSignal&) = delete;
};

std::atomic<ControlHandler> g_control_handler{nullptr};
std::atomic<bool> g_control_busy{false};  // one sleep or wake at a time, process-wide

// One client, served without blocking.
struct Connection {
  int fd = -1;
  Clock::time_point accepted;
  std::string refusal;  // non-empty: the peer is not served (why)
  RequestReader reader;
  bool replying = false;
  std::unique_ptr<SnapshotText> snapshot;  // the pieces still to come, for a snapshot
  std::shared_ptr<ControlJob> job;         // a sleep or wake whose reply is to come
  bool control = false;                    // a sleep or wake request
  std::string out;                         // the piece being sent
  std::size_t sent = 0;
  bool done = false;  // to be closed

  Clock::time_point deadline() const {
    return accepted + (control ? kControlDeadline : replying ? kConnectionDeadline : kRequestDeadline);
  }
};

// Closes a finished connection; unread input is drained first, as closing
// a Unix socket with unread data makes the peer's reads fail (ECONNRESET)
// before it has read the reply.
void drain_and_close(int fd) {
  char buf[512];
  for (int i = 0; i < 16 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; ++i) {
  }
  ::close(fd);
}

std::string peer_refusal(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return "cannot read the peer's credentials: " + errno_text(errno);
  }
  const uid_t me = ::geteuid();
  if (cred.uid == me) return "";
  log(LogLevel::info, "live socket: refused a request from uid %u (pid %d): serving uid %u only",
      static_cast<unsigned>(cred.uid), static_cast<int>(cred.pid), static_cast<unsigned>(me));
  return "process " + std::to_string(::getpid()) + " serves only uid " + std::to_string(me) +
         ", not uid " + std::to_string(cred.uid);
}

class Loop {
 public:
  Loop(int listen_fd, int wake_fd)
      : listen_fd_(listen_fd), wake_fd_(wake_fd), signal_(std::make_shared<JobSignal>()) {}
  void run();

 private:
  int timeout_ms() const;
  void accept_one();
  void on_event(Connection& c, short revents);
  void read_request(Connection& c);
  void start_reply(Connection& c);
  void write_reply(Connection& c);
  void start_control(Connection& c, const Request& req);
  void finish_jobs();
  void cut_all();

  int listen_fd_;
  int wake_fd_;
  std::shared_ptr<JobSignal> signal_;
  std::vector<std::unique_ptr<Connection>> conns_;
};

void Loop::run() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.assign({{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {signal_->read_fd, POLLIN, 0}});
    for (const auto& c : conns_) {
      const short events = c->job ? 0 : c->replying ? POLLOUT : POLLIN;  // a job: hang-ups only
      fds.push_back({c->fd, events, 0});
    }
    const int r = ::poll(fds.data(), fds.size(), timeout_ms());
    if (r < 0) {
      if (errno == EINTR) continue;
      log(LogLevel::warn, "live socket: poll failed: %s; stopping", errno_text(errno).c_str());
      cut_all();
      return;
    }
    if ((fds[1].revents & (POLLIN | POLLHUP)) != 0) {
      cut_all();  // exit: no client is waited for
      return;
    }
    if ((fds[2].revents & POLLIN) != 0) finish_jobs();
    const Clock::time_point now = Clock::now();
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      Connection& c = *conns_[i];
      if (fds[i + 3].revents != 0) on_event(c, fds[i + 3].revents);
      if (!c.done && now >= c.deadline()) c.done = true;  // too slow: dropped
    }
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(),
                                [](const std::unique_ptr<Connection>& c) {
                                  if (c->done) drain_and_close(c->fd);
                                  return c->done;
                                }),
                 conns_.end());
    if ((fds[0].revents & POLLIN) != 0) accept_one();
  }
}

int Loop::timeout_ms() const {
  if (conns_.empty()) return -1;
  Clock::time_point first = conns_.front()->deadline();
  for (const auto& c : conns_) first = std::min(first, c->deadline());
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(first - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left + 1, 0, 60000));
}

void Loop::accept_one() {
  const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return;  // the client gave up, or a transient error
  if (conns_.size() >= static_cast<std::size_t>(kMaxConnections)) {
    // Full: the oldest connection still silent makes room (it has had the
    // longest to ask); if every one is being answered, the new one waits
    // for nothing and is closed.
    auto oldest = conns_.end();
    for (auto it = conns_.begin(); it != conns_.end(); ++it) {
      if (!(*it)->replying && (oldest == conns_.end() || (*it)->accepted < (*oldest)->accepted)) {
        oldest = it;
      }
    }
    if (oldest == conns_.end()) {
      ::close(fd);
      return;
    }
    drain_and_close((*oldest)->fd);
    conns_.erase(oldest);
  }
  auto c = std::make_unique<Connection>();
  c->fd = fd;
  c->accepted = Clock::now();
  c->refusal = peer_refusal(fd);
  conns_.push_back(std::move(c));
}

void Loop::on_event(Connection& c, short revents) {
  if (c.job) {
    if ((revents & (POLLERR | POLLHUP)) != 0) c.done = true;  // gone; the job still finishes
  } else if (!c.replying) {
    read_request(c);
  } else if ((revents & (POLLERR | POLLHUP)) != 0) {
    c.done = true;  // the client went away
  } else {
    write_reply(c);
  }
}

void Loop::read_request(Connection& c) {
  char buf[256];
  const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c.done = true;
    return;
  }
  const RequestReader::State state =
      n == 0 ? c.reader.end_of_input() : c.reader.feed({buf, static_cast<std::size_t>(n)});
  if (state != RequestReader::State::reading) start_reply(c);
}

void Loop::start_reply(Connection& c) {
  c.replying = true;
  if (!c.refusal.empty()) {
    c.out = error_reply(kErrorPermissionDenied, c.refusal);
  } else if (c.reader.state() == RequestReader::State::too_long) {
    c.out =
        error_reply(kErrorBadRequest, "a request line longer than " + std::to_string(kMaxRequest) +
                                          " bytes (valid: snapshot, summary, sleep, wake)");
  } else {
    const Request req = parse_request(c.reader.line());
    if (req.kind == Request::Kind::bad) {
      c.out = error_reply(kErrorBadRequest, req.message);
    } else if (req.kind == Request::Kind::sleep || req.kind == Request::Kind::wake) {
      start_control(c, req);
      if (c.job) return;  // the reply comes when the job is done
    } else {
      try {
        const SnapshotDetail detail =
            req.kind == Request::Kind::snapshot ? SnapshotDetail::full : SnapshotDetail::summary;
        c.snapshot = std::make_unique<SnapshotText>("live", detail);
        c.snapshot->next(c.out);
      } catch (const std::exception& e) {
        log(LogLevel::warn, "live socket: building a snapshot failed: %s", e.what());
        c.done = true;
        return;
      }
    }
  }
  write_reply(c);
}

void Loop::write_reply(Connection& c) {
  for (;;) {
    while (c.sent < c.out.size()) {
      const ssize_t n =
          ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) c.done = true;  // the client went away
        return;  // full: poll says when it drains
      }
      c.sent += static_cast<std::size_t>(n);
    }
    c.sent = 0;
    try {
      if (c.snapshot && c.snapshot->next(c.out)) continue;
    } catch (const std::exception& e) {
      log(LogLevel::warn, "live socket: writing a snapshot failed: %s", e.what());
    }
    c.done = true;  // all sent
    return;
  }
}

void Loop::start_control(Connection& c, const Request& req) {
  c.control = true;
  const ControlHandler handler = g_control_handler.load();
  if (handler == nullptr) {
    c.out = error_reply(kErrorBadRequest,
                        "this process takes no sleep or wake requests (its allocator is not in use)");
    return;
  }
  if (signal_->read_fd < 0) {
    c.out = error_reply(kErrorFailed, "the live socket could not make its job pipe");
    return;
  }
  if (g_control_busy.exchange(true)) {
    c.out = error_reply(kErrorBusy, "another sleep or wake request is being answered");
    return;
  }
  auto job = std::make_shared<ControlJob>();
  try {
    // Runs apart from this thread, which goes on serving (a sleep copies for
    // seconds). The thread inherits this one's mask: it takes no signal.
    std::thread([job, handler, req, signal = signal_] {
      std::string reply;
      try {
        reply = handler(req);
      } catch (const std::exception& e) {
        reply = error_reply(kErrorFailed, e.what());
      }
      {
        std::lock_guard lock(job->mutex);
        job->reply = std::move(reply);
        job->done = true;
      }
      g_control_busy.store(false);
      const char byte = 1;
      if (::write(signal->write_fd, &byte, 1) < 0) {
        // Full: the loop is already woken and finds every finished job.
      }
    }).detach();
  } catch (const std::exception& e) {
    g_control_busy.store(false);
    c.out = error_reply(kErrorFailed, std::string("cannot start the request's thread: ") + e.what());
    return;
  }
  c.job = std::move(job);
}

void Loop::finish_jobs() {
  char buf[64];
  while (::read(signal_->read_fd, buf, sizeof buf) > 0) {
  }
  for (const auto& c : conns_) {
    if (!c->job) continue;
    {
      std::lock_guard lock(c->job->mutex);
      if (!c->job->done) continue;
      c->out = std::move(c->job->reply);
    }
    c->job.reset();
    write_reply(*c);
  }
}

void Loop::cut_all() {
  for (const auto& c : conns_) {
    ::shutdown(c->fd, SHUT_RDWR);
    ::close(c->fd);
  }
  conns_.clear();
}

// "" if `dir` is (or has been made) a private directory of this user, else why not.
std::string server_directory_problem(const std::string& dir) {
  const uid_t me = ::geteuid();
  if (::mkdir(dir.c_str(), 0700) == 0) {
    ::chmod(dir.c_str(), 0700);  // whatever the umask
  } else if (errno != EEXIST) {
    return "cannot make " + dir + ": " + errno_text(errno);
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return dir + ": " + errno_text(errno);
  if (!S_ISDIR(st.st_mode) || st.st_uid != me || (st.st_mode & 077) != 0) {
    return dir + " is not a private directory of uid " + std::to_string(me) +
           " (it must be a directory, not a link, owned by that user, mode 0700)";
  }
  return "";
}

// The first usable directory of socket_directories(base, euid), or "" (logged).
std::string pick_directory(std::string_view base) {
  std::string problems;
  for (const std::string& dir : socket_directories(base, ::geteuid())) {
    const std::string problem = server_directory_problem(dir);
    if (problem.empty()) return dir;
    problems += (problems.empty() ? "" : "; ") + problem;
  }
  log(LogLevel::warn, "live socket not started: %s", problems.c_str());
  return "";
}

}  // namespace

// ---------------------------------------------------------------- Server

struct Server::State {
  mutable std::mutex mutex;     // start/stop
  std::atomic<pid_t> owner{0};  // the process serving; read before locking (fork)
  bool started = false;
  std::string path;
  int listen_fd = -1;
  int wake_read = -1;
  int wake_write = -1;
  std::thread thread;
};

Server::Server() : state_(new State()) {}

Server::~Server() {
  stop();
  delete state_;
}

namespace {

// A listening socket at `path`, or -1 (logged).
int listen_at(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    log(LogLevel::warn, "live socket not started: the path %s is longer than %zu bytes",
        path.c_str(), sizeof addr.sun_path - 1);
    return -1;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log(LogLevel::warn, "live socket not started: socket: %s", errno_text(errno).c_str());
    return -1;
  }
  // A socket left by an earlier process with our pid (killed before it
  // could remove it): ours to replace.
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, 16) != 0) {
    log(LogLevel::warn, "live socket not started: %s: %s", path.c_str(), errno_text(errno).c_str());
    ::close(fd);
    ::unlink(path.c_str());
    return -1;
  }
  return fd;
}

}  // namespace

std::optional<std::string> Server::start(std::string_view base) noexcept {
  try {
    State& s = *state_;
    std::lock_guard lock(s.mutex);
    if (s.started) return s.path;
    const std::string dir = pick_directory(base);
    if (dir.empty()) return std::nullopt;
    const std::string path = socket_path(dir, ::getpid());
    const int fd = listen_at(path);
    if (fd < 0) return std::nullopt;
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
        Loop(fd, wake).run();
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
    s.started = true;
    s.owner.store(::getpid());
    log(LogLevel::info, "live socket: serving snapshots on %s", path.c_str());
    return path;
  } catch (const std::exception& e) {
    log(LogLevel::warn, "live socket not started: %s", e.what());
    return std::nullopt;
  }
}

void Server::stop() noexcept {
  State& s = *state_;
  // In a forked child (or before any start) this returns before taking the
  // mutex, which a parent thread may have held at the fork.
  if (s.owner.load() != ::getpid()) return;
  std::lock_guard lock(s.mutex);
  if (!s.started) return;
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
  s.owner.store(0);
  s.path.clear();
}

std::string Server::path() const {
  std::lock_guard lock(state_->mutex);
  return state_->started ? state_->path : std::string();
}

void set_control_handler(ControlHandler handler) noexcept { g_control_handler.store(handler); }

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

}  // namespace vmm::live
