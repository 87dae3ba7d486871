// vmmctl's test harness: see cli_harness.hpp.
#include "cli_harness.hpp"

#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>

namespace cli {

int g_failures = 0;
Paths g;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

Spawned spawn(const std::vector<std::string>& argv, std::optional<uid_t> uid,
              const std::string& conf, const Limits& limits) {
  int pin[2], pout[2], perr[2];
  if (::pipe(pin) != 0 || ::pipe(pout) != 0 || ::pipe(perr) != 0) std::abort();
  const pid_t pid = ::fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    ::dup2(pin[0], 0);
    ::dup2(pout[1], 1);
    ::dup2(perr[1], 2);
    for (int fd : {pin[0], pin[1], pout[0], pout[1], perr[0], perr[1]}) ::close(fd);
    if (uid) {
      const passwd* pw = ::getpwuid(*uid);
      const gid_t gid = pw != nullptr ? pw->pw_gid : *uid;
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(*uid) != 0) {
        std::perror("dropping privileges");
        ::_exit(126);
      }
    }
    if (limits.address_space != 0) {
      const rlimit r{limits.address_space, limits.address_space};
      ::setrlimit(RLIMIT_AS, &r);
    }
    ::setenv("VMMALLOC_CONF", conf.c_str(), 1);
    for (const auto& [name, value] : limits.env) ::setenv(name.c_str(), value.c_str(), 1);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::perror(args[0]);
    ::_exit(127);
  }
  ::close(pin[0]);
  ::close(pout[1]);
  ::close(perr[1]);
  return {pid, pin[1], pout[0], perr[0]};
}

Result finish(Spawned& s, double timeout_s) {
  const Clock::time_point start = Clock::now();
  Result r;
  if (s.in >= 0) ::close(s.in);
  s.in = -1;
  pollfd fds[2] = {{s.out, POLLIN, 0}, {s.err, POLLIN, 0}};
  int open = 2;
  bool killed = false;
  char buf[65536];
  while (open > 0) {
    const double left = timeout_s - seconds_since(start);
    if (left <= 0 && !killed) {
      ::kill(s.pid, SIGKILL);  // the pipes close with it
      killed = true;
    }
    const int wait_ms = killed ? 5000 : static_cast<int>(left * 1000) + 1;
    if (::poll(fds, 2, wait_ms) <= 0) {
      if (killed) break;
      continue;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
        continue;
      }
      (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
    }
  }
  for (const pollfd& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  int status = 0;
  ::waitpid(s.pid, &status, 0);
  r.seconds = seconds_since(start);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

Result run(const std::vector<std::string>& argv, std::optional<uid_t> uid,
           const std::string& conf) {
  Spawned s = spawn(argv, uid, conf);
  return finish(s);
}

Result vmmctl(std::vector<std::string> args, std::optional<uid_t> uid) {
  args.insert(args.begin(), g.vmmctl);
  return run(args, uid);
}

Result vmmctl_limited(std::vector<std::string> args, double timeout_s, const Limits& limits) {
  args.insert(args.begin(), g.vmmctl);
  Spawned s = spawn(args, std::nullopt, g.conf, limits);
  return finish(s, timeout_s);
}

std::string read_line(int fd, double seconds) {
  std::string line;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char c;
    if (::read(fd, &c, 1) != 1) return line;
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

Served serve(std::vector<std::string> extra, std::optional<uid_t> uid, const std::string& conf) {
  std::vector<std::string> argv{g.workload, "--serve", "120"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Served s{spawn(argv, uid, conf), -1};
  const std::string line = read_line(s.proc.out, 60);
  if (line.rfind("ready ", 0) != 0) {
    Result r = finish(s.proc);
    std::fprintf(stderr, "the workload did not start: '%s' (exit %d): %s\n", line.c_str(), r.rc,
                 r.err.c_str());
    std::exit(1);
  }
  s.pid = static_cast<pid_t>(std::stol(line.substr(6)));
  return s;
}

bool one_line_error(const Result& r) {
  return r.err.rfind("vmmctl: ", 0) == 0 && r.err.find('\n') == r.err.size() - 1;
}

std::string describe(const Result& r) {
  return "exit " + std::to_string(r.rc) + ", stderr: " + r.err +
         ", stdout: " + r.out.substr(0, 400);
}

int run_case(int argc, char** argv, const std::map<std::string, std::function<int()>>& cases) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s CASE VMMCTL WORKLOAD\n", argv[0]);
    return 2;
  }
  const std::string which = argv[1];
  g.vmmctl = argv[2];
  g.workload = argv[3];
  char templ[] = "/tmp/vmmctl-test-XXXXXX";
  if (::mkdtemp(templ) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  g.dir = templ;
  g.conf = "backend:host,host_device_memory:4G,live_socket_dir:" + g.dir;
  ::signal(SIGPIPE, SIG_IGN);

  auto it = cases.find(which);
  int rc = 2;
  if (it == cases.end()) {
    std::fprintf(stderr, "unknown case %s\n", which.c_str());
  } else {
    try {
      rc = it->second();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "FAILED: %s: %s\n", which.c_str(), e.what());
      rc = 1;
    }
  }
  run({"/bin/rm", "-rf", g.dir});
  if (rc == kSkip) return kSkip;
  if (rc != 0 || g_failures != 0) {
    std::fprintf(stderr, "%s: %d check(s) failed\n", which.c_str(), g_failures);
    return 1;
  }
  std::printf("%s: all checks passed\n", which.c_str());
  return 0;
}

}  // namespace cli
