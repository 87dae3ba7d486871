// Two processes in one test: a test case of this binary run in a child
// process (spawned from /proc/self/exe with the test's name), handed some of
// our descriptors at fixed numbers and a scenario name in its environment
// (VMM_TEST_IPC_SCENARIO), the two paced through their steps by one-byte
// tokens over a socket pair. Used by the IPC tests (host/ipc_process_tests.cpp,
// gpu/multi_gpu_tests.cpp), whose exporter and importer must be different
// processes.
#pragma once

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <initializer_list>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/common/catch.hpp"

extern char** environ;

namespace vmm::test {

// A connected pair of Unix stream sockets (close-on-exec).
inline std::pair<int, int> stream_pair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  return {fds[0], fds[1]};
}

inline void send_token(int fd, char token) { REQUIRE(::write(fd, &token, 1) == 1); }

// The next token on `fd`; fails the test if none comes within `timeout`.
inline char wait_token(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  REQUIRE(::poll(&p, 1, static_cast<int>(timeout.count())) == 1);
  char token = 0;
  REQUIRE(::read(fd, &token, 1) == 1);
  return token;
}

// One of our descriptors and the number it has in the child.
struct ChildFd {
  int ours;
  int theirs;
};

// Spawns this binary running the test case `test_case` (hidden cases are run
// by name), with VMM_TEST_IPC_SCENARIO=`scenario` in its environment and
// each of `fds` at its number there; returns the child's pid.
inline pid_t spawn_test_case(const char* test_case, const char* scenario,
                             std::initializer_list<ChildFd> fds) {
  posix_spawn_file_actions_t actions;
  REQUIRE(posix_spawn_file_actions_init(&actions) == 0);
  // dup2 onto other numbers: the copies are not close-on-exec.
  for (const ChildFd& fd : fds) {
    REQUIRE(posix_spawn_file_actions_adddup2(&actions, fd.ours, fd.theirs) == 0);
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "VMM_TEST_IPC_SCENARIO=", 22) != 0) env.emplace_back(*e);
  }
  env.push_back(std::string("VMM_TEST_IPC_SCENARIO=") + scenario);
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  std::string test = test_case;
  char* argv[] = {exe.data(), test.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

// The child's exit status; -1 if it did not exit normally within `timeout`
// (it is killed then).
inline int wait_child(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace vmm::test
