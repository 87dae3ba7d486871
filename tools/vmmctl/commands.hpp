// vmmctl's commands. Each takes the parsed command line and returns an exit
// code (exit_codes.hpp), or throws CliError.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "tools/vmmctl/snapshot_source.hpp"

namespace vmmctl {

// Tables show at most this many rows of a kind unless told otherwise.
inline constexpr std::size_t kDefaultRows = 40;
inline constexpr std::size_t kAllRows = static_cast<std::size_t>(-1);

struct Options {
  std::vector<std::string> args;      // positional arguments after the command
  bool json = false;                  // --json
  std::optional<std::string> output;  // -o FILE
  std::size_t width = 0;              // --width N: map's cells per bar (0: fill the terminal)
  std::size_t blocks = kDefaultRows;  // --blocks N|all
  std::size_t events = 20;            // --events N|all
  double interval_s = 1.0;            // --interval SECONDS
  std::size_t count = 0;              // --count N (0: until interrupted)
  SourceOptions source;               // --socket-dir, --socket, --timeout
  bool timeout_set = false;           // --timeout given
  std::string mode = "offload";       // sleep --mode
  bool keep_host = false;             // wake --keep-host
};

int cmd_ps(const Options& o);
int cmd_show(const Options& o);
int cmd_map(const Options& o);
int cmd_top(const Options& o);
int cmd_diff(const Options& o);
int cmd_html(const Options& o);
// `sleep PID TAGS` / `wake PID TAGS` (docs/sleep.md): over the live socket.
int cmd_sleep(const Options& o);
int cmd_wake(const Options& o);
// Runs vmm_replay (found beside vmmctl, else on PATH) with `args`.
int cmd_replay(const std::vector<std::string>& args);

// Writes `text` to o.output if set (through a temporary file), else stdout.
void emit(const Options& o, const std::string& text);
// The width to draw at: o.width, else the terminal's, else 100.
std::size_t output_width(const Options& o);

}  // namespace vmmctl
