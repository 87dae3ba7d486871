// Live socket: the naming, the request line and the client. The server is
// in live_server.cpp; see live_socket.hpp for the protocol and the checks.
#include "allocator/observe/live_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

namespace vmm::live {

namespace {

constexpr std::string_view kDefaultBase = "/tmp";  // Config's live_socket_dir default

std::string errno_text(int err) { return std::strerror(err); }

std::string trimmed_base(std::string_view base) {
  std::string dir(base);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

bool fill_address(sockaddr_un& addr, const std::string& path) {
  if (path.size() >= sizeof addr.sun_path) return false;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

}  // namespace

std::string socket_directory(std::string_view base, uid_t uid) {
  std::string dir = trimmed_base(base);
  if (dir != "/") dir += '/';
  return dir + "vmmalloc-" + std::to_string(uid);
}

std::vector<std::string> socket_directories(std::string_view base, uid_t uid) {
  std::vector<std::string> dirs;
  // $XDG_RUNTIME_DIR is the user's own (0700, made by the login manager), so
  // no other user can take the name first, as one can in /tmp. It is
  // preferred only for the default base and the caller's own uid: another
  // user's runtime directory is not in our environment.
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (trimmed_base(base) == kDefaultBase && uid == ::geteuid() && runtime != nullptr &&
      runtime[0] == '/') {
    dirs.push_back(trimmed_base(runtime) + "/vmmalloc");
  }
  dirs.push_back(socket_directory(base, uid));
  return dirs;
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

// ------------------------------------------------------------ requests

RequestReader::State RequestReader::feed(std::string_view bytes) {
  if (state_ != State::reading) return state_;
  const std::size_t nl = bytes.find('\n');
  const std::string_view part = bytes.substr(0, nl);
  if (line_.size() + part.size() > kMaxRequest) {
    line_.clear();
    return state_ = State::too_long;
  }
  line_.append(part);
  if (nl != std::string_view::npos) state_ = State::complete;
  return state_;
}

RequestReader::State RequestReader::end_of_input() {
  if (state_ == State::reading) state_ = State::complete;
  return state_;
}

namespace {

Request bad(std::string message) {
  Request r;
  r.message = std::move(message);
  return r;
}

// The words of a line, split at spaces.
std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

// "a,b,c" as names (empty ones refused).
bool split_tags(std::string_view list, std::vector<std::string>& out) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = list.find(',', start);
    const std::string_view name = list.substr(start, comma - start);
    if (name.empty()) return false;
    out.emplace_back(name);
    if (comma == std::string_view::npos) return true;
    start = comma + 1;
  }
}

constexpr std::string_view kValid =
    "valid: snapshot, summary, sleep offload|discard TAG[,TAG...], wake TAG[,TAG...] [keep_host]";

}  // namespace

Request parse_request(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
  if (line == kRequestSnapshot) return {Request::Kind::snapshot, {}, {}, false, false};
  if (line == kRequestSummary) return {Request::Kind::summary, {}, {}, false, false};
  const std::vector<std::string_view> w = words(line);
  Request r;
  if (w.size() == 3 && w[0] == kRequestSleep) {
    if (w[1] != "offload" && w[1] != "discard") {
      return bad("sleep: mode \"" + std::string(w[1]) + "\" (valid: offload, discard)");
    }
    r.kind = Request::Kind::sleep;
    r.discard = w[1] == "discard";
    if (!split_tags(w[2], r.tags)) return bad("sleep: an empty tag name in \"" + std::string(w[2]) + "\"");
    return r;
  }
  if ((w.size() == 2 || w.size() == 3) && w[0] == kRequestWake) {
    if (w.size() == 3 && w[2] != "keep_host") {
      return bad("wake: \"" + std::string(w[2]) + "\" (valid after the tags: keep_host)");
    }
    r.kind = Request::Kind::wake;
    r.keep_host = w.size() == 3;
    if (!split_tags(w[1], r.tags)) return bad("wake: an empty tag name in \"" + std::string(w[1]) + "\"");
    return r;
  }
  return bad("unknown request \"" + std::string(line) + "\" (" + std::string(kValid) + ")");
}

std::string error_reply(std::string_view code, std::string_view message) {
  nlohmann::ordered_json j;
  j["error"] = std::string(code);
  j["message"] = std::string(message);
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// ------------------------------------------------------------ client

std::string client_directory_problem(const std::string& dir, uid_t uid) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return "";  // nothing there to trust
  if (S_ISLNK(st.st_mode)) return dir + " is a symbolic link, not a directory";
  if (!S_ISDIR(st.st_mode)) return dir + " is not a directory";
  if (st.st_uid != uid) {
    return dir + " is owned by uid " + std::to_string(st.st_uid) + ", not uid " +
           std::to_string(uid) + ": its sockets may be forged";
  }
  if ((st.st_mode & 022) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return dir + " is writable by others (mode " + mode + "): its sockets may be forged";
  }
  return "";
}

namespace {

// Reads the reply to end of file, at most max_bytes, until `deadline`.
void read_reply(int fd, Reply& reply, const std::string& path, int timeout_ms,
                std::size_t max_bytes) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      reply.status = Reply::Status::timed_out;
      reply.message = "no complete reply from " + path;
      return;
    }
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0) {
      if (errno == EINTR) continue;
      reply.message = "poll: " + errno_text(errno);
      return;
    }
    if (r == 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET && !reply.body.empty()) break;
      reply.message = "reading from " + path + ": " + errno_text(errno);
      return;
    }
    if (n == 0) break;
    if (reply.body.size() + static_cast<std::size_t>(n) > max_bytes) {
      reply.status = Reply::Status::too_large;
      reply.message =
          "the reply from " + path + " is larger than " + std::to_string(max_bytes) + " bytes";
      reply.body.clear();
      return;
    }
    reply.body.append(buf, static_cast<std::size_t>(n));
  }
  reply.status = Reply::Status::ok;
}

}  // namespace

Reply request(const std::string& path, std::string_view what, int timeout_ms,
              std::size_t max_bytes) {
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
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    ::close(fd);
    reply.message = "connect " + path + ": " + errno_text(err);
    if (err == ENOENT || err == ENOTDIR) {
      reply.status = Reply::Status::no_socket;
    } else if (err == EACCES || err == EPERM) {
      reply.status = Reply::Status::permission_denied;
    } else if (err == ECONNREFUSED) {
      reply.status = Reply::Status::refused;
    }
    return reply;
  }
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    reply.peer_known = true;
    reply.peer_pid = cred.pid;
    reply.peer_uid = cred.uid;
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
  read_reply(fd, reply, path, timeout_ms, max_bytes);
  ::close(fd);
  return reply;
}

}  // namespace vmm::live
