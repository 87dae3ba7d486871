// vmmctl: inspect vmmalloc's memory - of live processes (through their
// sockets) and of snapshot files. docs/tools.md#vmmctl describes every
// command; docs/snapshot.md the snapshot it reads.
//
//   vmmctl ps                       processes using vmmalloc on this machine
//   vmmctl show PID|FILE            summary and tables of regions, chunks, blocks
//   vmmctl map PID|FILE             each device's address space as a picture
//   vmmctl top PID                  a refreshing view
//   vmmctl diff A B                 what changed between two snapshots
//   vmmctl html PID|FILE -o F.html  one self-contained page: map and memory over time
//   vmmctl replay ARGS...           vmm_replay (trace replay)
//
// --json on every command prints JSON for scripts. Errors are one line on
// stderr and a distinct exit status (exit_codes.hpp).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"

namespace {

using vmmctl::CliError;
using vmmctl::Options;

constexpr const char* kUsage =
    "usage: vmmctl COMMAND [ARGS] [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  ps                         processes using vmmalloc on this machine (yours)\n"
    "  show PID|FILE              summary, then tables of regions, chunks, blocks, reclaims, "
    "events\n"
    "  map PID|FILE               each device's address space as a picture\n"
    "  top PID                    a refreshing view (Ctrl-C to stop)\n"
    "  diff A B                   what changed from snapshot A to B (files or PIDs)\n"
    "  html PID|FILE -o F.html    one self-contained page: address-space map, memory over time\n"
    "  replay ARGS...             trace replay (runs vmm_replay; see vmm_replay --help)\n"
    "  sleep PID TAGS             put tagged memory to sleep (TAGS: a,b,c; docs/sleep.md)\n"
    "  wake PID TAGS              wake it: same addresses, bytes copied back\n"
    "\n"
    "options:\n"
    "  --json                     JSON output for scripts (every command)\n"
    "  -o FILE                    write the output to FILE (show, map, diff, html)\n"
    "  --blocks N|all             block rows shown by show (default 40)\n"
    "  --events N|all             recent events shown by show (default 20)\n"
    "  --width N                  map: cells per bar (default: the bars fill the terminal's "
    "width)\n"
    "  --interval SECONDS         top's refresh interval (default 1)\n"
    "  --count N                  top: stop after N refreshes\n"
    "  --socket-dir DIR           where sockets live (default: live_socket_dir of VMMALLOC_CONF, "
    "/tmp)\n"
    "  --socket PATH              ask this socket instead of finding a PID's\n"
    "  --timeout SECONDS          how long to wait for a live process (default 10; sleep and\n"
    "                             wake: 600)\n"
    "  --mode offload|discard     sleep: copy the live bytes to host memory (default) or drop them\n"
    "  --keep-host                wake: keep the pinned host copy for the next sleep\n"
    "  --max-input BYTES          read at most this much of a snapshot (default 256M, or\n"
    "                             VMMCTL_MAX_INPUT); K, M, G suffixes\n"
    "\n"
    "A PID|FILE argument is a PID if it is all digits and no such file exists; - is stdin.\n"
    "exit status: 0 ok, 1 error, 2 usage, 3 malformed or truncated snapshot, 4 unknown schema\n"
    "version, 5 no such process, 6 another user's process, socket or socket directory,\n"
    "7 process serves no socket\n";

[[noreturn]] void usage_error(const std::string& message) {
  throw CliError(vmmctl::kUsage, message + " (vmmctl --help for usage)");
}

std::size_t count_value(const std::string& opt, const std::string& v, bool allow_all) {
  if (allow_all && v == "all") return vmmctl::kAllRows;
  try {
    std::size_t pos = 0;
    const unsigned long long n = std::stoull(v, &pos);
    if (pos == v.size() && v[0] != '-') return static_cast<std::size_t>(n);
  } catch (const std::exception&) {
  }
  usage_error(opt + " takes " + (allow_all ? "a count or all" : "a count") + ", not '" + v + "'");
}

double seconds_value(const std::string& opt, const std::string& v) {
  try {
    std::size_t pos = 0;
    const double s = std::stod(v, &pos);
    if (pos == v.size() && s > 0 && s <= 86400) return s;
  } catch (const std::exception&) {
  }
  usage_error(opt + " takes seconds (0 < s <= 86400), not '" + v + "'");
}

struct CommandSpec {
  std::size_t min_args;
  std::size_t max_args;
  const char* args_text;
  std::set<std::string> options;
};

const std::map<std::string, CommandSpec>& commands() {
  static const std::map<std::string, CommandSpec> table{
      {"ps", {0, 0, "", {"--json", "--socket-dir", "--timeout", "--max-input"}}},
      {"show",
       {1,
        1,
        "PID|FILE",
        {"--json", "-o", "--blocks", "--events", "--socket-dir", "--socket", "--timeout",
         "--max-input"}}},
      {"map",
       {1,
        1,
        "PID|FILE",
        {"--json", "-o", "--width", "--socket-dir", "--socket", "--timeout", "--max-input"}}},
      {"top",
       {1,
        1,
        "PID",
        {"--json", "--interval", "--count", "--socket-dir", "--socket", "--timeout",
         "--max-input"}}},
      {"diff", {2, 2, "A B", {"--json", "-o", "--socket-dir", "--timeout", "--max-input"}}},
      {"html",
       {1,
        1,
        "PID|FILE",
        {"--json", "-o", "--socket-dir", "--socket", "--timeout", "--max-input"}}},
      {"sleep", {2, 2, "PID TAGS", {"--json", "--mode", "--socket-dir", "--socket", "--timeout"}}},
      {"wake", {2, 2, "PID TAGS", {"--json", "--keep-host", "--socket-dir", "--socket", "--timeout"}}},
  };
  return table;
}

Options parse(const std::string& command, int argc, char** argv) {
  const CommandSpec& spec = commands().at(command);
  Options o;
  std::string socket_base;
  std::optional<std::size_t> max_input;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.size() > 1 && a[0] == '-' && a != "-") {
      if (spec.options.count(a) == 0) {
        std::string valid;
        for (const std::string& v : spec.options) valid += (valid.empty() ? "" : ", ") + v;
        usage_error("vmmctl " + command + ": unknown option " + a + " (valid: " + valid + ")");
      }
      if (a == "--json") {
        o.json = true;
        continue;
      }
      if (a == "--keep-host") {
        o.keep_host = true;
        continue;
      }
      if (i + 1 >= argc) usage_error(a + " needs a value");
      const std::string v = argv[++i];
      if (a == "-o") {
        o.output = v;
      } else if (a == "--blocks") {
        o.blocks = count_value(a, v, true);
      } else if (a == "--events") {
        o.events = count_value(a, v, true);
      } else if (a == "--width") {
        o.width = count_value(a, v, false);
        if (o.width < 8 || o.width > 10000) usage_error("--width takes 8 to 10000, not " + v);
      } else if (a == "--interval") {
        o.interval_s = seconds_value(a, v);
      } else if (a == "--count") {
        o.count = count_value(a, v, false);
      } else if (a == "--socket-dir") {
        socket_base = v;
      } else if (a == "--socket") {
        o.source.socket_path = v;
      } else if (a == "--timeout") {
        o.source.timeout_ms = static_cast<int>(seconds_value(a, v) * 1000);
        o.timeout_set = true;
      } else if (a == "--mode") {
        if (v != "offload" && v != "discard") usage_error("--mode takes offload or discard, not '" + v + "'");
        o.mode = v;
      } else if (a == "--max-input") {
        max_input = vmmctl::parse_byte_count(v);
        if (!max_input) usage_error("--max-input takes a byte count like 512M, not '" + v + "'");
      }
      continue;
    }
    o.args.push_back(a);
  }
  if (o.source.socket_path && !o.args.empty() && spec.min_args == 1) {
    usage_error("vmmctl " + command + ": give " + spec.args_text + " or --socket PATH, not both");
  }
  // With --socket the PID argument is left out.
  const bool pid_first = std::string_view(spec.args_text).starts_with("PID");
  if (o.source.socket_path && pid_first && spec.min_args == 2 && o.args.size() == 2) {
    usage_error("vmmctl " + command + ": give " + spec.args_text + " or --socket PATH TAGS, not both");
  }
  const std::size_t min_args =
      o.source.socket_path && pid_first && spec.min_args >= 1 ? spec.min_args - 1 : spec.min_args;
  if (o.args.size() < min_args || o.args.size() > spec.max_args) {
    usage_error("vmmctl " + command + " takes " + spec.args_text +
                (spec.max_args == 0 ? std::string("no arguments") : std::string()));
  }
  o.source.socket_base = socket_base.empty() ? vmmctl::default_socket_base() : socket_base;
  o.source.max_input = max_input ? *max_input : vmmctl::default_max_input();
  return o;
}

int run(int argc, char** argv) {
  if (argc < 2) usage_error("no command given");
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return vmmctl::kOk;
  }
  if (command == "replay")
    return vmmctl::cmd_replay(std::vector<std::string>(argv + 2, argv + argc));
  if (commands().count(command) == 0) {
    usage_error("unknown command '" + command +
                "' (valid: ps, show, map, top, diff, html, replay, sleep, wake)");
  }
  const Options o = parse(command, argc, argv);
  if (command == "ps") return vmmctl::cmd_ps(o);
  if (command == "show") return vmmctl::cmd_show(o);
  if (command == "map") return vmmctl::cmd_map(o);
  if (command == "top") return vmmctl::cmd_top(o);
  if (command == "diff") return vmmctl::cmd_diff(o);
  if (command == "sleep") return vmmctl::cmd_sleep(o);
  if (command == "wake") return vmmctl::cmd_wake(o);
  return vmmctl::cmd_html(o);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const CliError& e) {
    std::fprintf(stderr, "vmmctl: %s\n", e.what());
    return e.code();
  } catch (const vmmctl::Json::exception& e) {
    // A field of an unexpected kind that the schema check let through.
    std::fprintf(stderr, "vmmctl: malformed snapshot: %s\n", e.what());
    return vmmctl::kMalformed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmmctl: %s\n", e.what());
    return vmmctl::kError;
  }
}
