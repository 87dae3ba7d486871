// What vmmctl's end-to-end tests share (cli_test.cpp, hostile_test.cpp):
// processes started with the test's VMMALLOC_CONF (optionally as another
// user, under a memory limit, killed after a time limit), vmmctl runs, the
// workload serving its socket, and the checks' failure count.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cli {

using Json = nlohmann::json;
constexpr int kSkip = 77;
constexpr std::uint64_t MiB = 1ull << 20;

extern int g_failures;

#define EXPECT(cond, what)                                                        \
  do {                                                                            \
    if (!(cond)) {                                                                \
      ++::cli::g_failures;                                                        \
      std::fprintf(stderr, "FAILED %s:%d: %s\n  %s\n", __FILE__, __LINE__, #cond, \
                   std::string(what).c_str());                                    \
    }                                                                             \
  } while (0)

struct Paths {
  std::string vmmctl;
  std::string workload;
  std::string dir;   // the test's own temporary directory
  std::string conf;  // VMMALLOC_CONF for every process
};
extern Paths g;

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);

struct Spawned {
  pid_t pid = -1;
  int in = -1;   // the child's stdin
  int out = -1;  // the child's stdout
  int err = -1;  // the child's stderr
};

// Limits for a spawned process: its address space (0: none) and extra
// environment variables.
struct Limits {
  std::size_t address_space = 0;
  std::vector<std::pair<std::string, std::string>> env;
};

// Starts argv with VMMALLOC_CONF set, as `uid` if given (root drops to it).
Spawned spawn(const std::vector<std::string>& argv, std::optional<uid_t> uid = std::nullopt,
              const std::string& conf = g.conf, const Limits& limits = {});

struct Result {
  int rc = -1;  // the exit status, or 128 + the signal
  std::string out;
  std::string err;
  double seconds = 0;  // from finish() being called to the child's end
};

// Reads both pipes to their ends, then reaps the child; kills it (SIGKILL)
// if it has not ended after `timeout_s`.
Result finish(Spawned& s, double timeout_s = 120);

Result run(const std::vector<std::string>& argv, std::optional<uid_t> uid = std::nullopt,
           const std::string& conf = g.conf);
Result vmmctl(std::vector<std::string> args, std::optional<uid_t> uid = std::nullopt);
// vmmctl under `limits`, killed after `timeout_s`.
Result vmmctl_limited(std::vector<std::string> args, double timeout_s, const Limits& limits);

// One line from the child's stdout (without the newline), waiting at most
// `seconds`; "" on timeout or EOF.
std::string read_line(int fd, double seconds);

// A workload serving its socket until finish() closes its stdin.
struct Served {
  Spawned proc;
  pid_t pid = -1;
};
Served serve(std::vector<std::string> extra, std::optional<uid_t> uid = std::nullopt,
             const std::string& conf = g.conf);

bool one_line_error(const Result& r);
std::string describe(const Result& r);

// The test program's main: `PROGRAM CASE VMMCTL WORKLOAD`; sets up g (a
// fresh directory, the configuration), runs the case, removes the
// directory. Exit status 0 if every check passed, 1 otherwise, 77 to skip.
int run_case(int argc, char** argv, const std::map<std::string, std::function<int()>>& cases);

}  // namespace cli
