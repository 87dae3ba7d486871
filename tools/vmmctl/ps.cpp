// vmmctl ps: the processes of this user that serve a vmmalloc socket, one
// row per device: PID, device, backend, in use, mapped, cached, pending,
// physical, command. The socket directories (live::socket_directories) are
// checked first: one that is not this user's, or that others may write to,
// is refused (its sockets could be forged). Sockets whose process is gone
// are skipped (and counted); a process that does not answer is listed with
// the reason.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <string>
#include <vector>

#include "allocator/observe/live_socket.hpp"  // internal: socket naming, not public API
#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/text.hpp"

namespace vmmctl {

namespace {

std::string command_text(const Json& process) {
  std::string out;
  for (const Json& a : process["command_line"]) {
    if (!out.empty()) out += ' ';
    out += a.is_string() ? a.get<std::string>() : a.dump();
  }
  return out;
}

// The PIDs of the sockets in this user's socket directories.
std::vector<pid_t> socket_pids(const std::vector<std::string>& dirs) {
  std::set<pid_t> pids;
  for (const std::string& dir : dirs) {
    const std::string problem = vmm::live::client_directory_problem(dir, ::geteuid());
    if (!problem.empty()) throw CliError(kOtherUser, "refused: " + problem);
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (auto pid = vmm::live::pid_of_socket_name(e->d_name)) pids.insert(*pid);
      }
      ::closedir(d);
    }
  }
  return {pids.begin(), pids.end()};
}

}  // namespace

int cmd_ps(const Options& o) {
  const std::vector<std::string> dirs =
      vmm::live::socket_directories(o.source.socket_base, ::geteuid());
  const std::vector<pid_t> pids = socket_pids(dirs);
  std::string dir;  // for messages: the directories looked in
  for (const std::string& d : dirs) dir += (dir.empty() ? "" : " and ") + d;

  Json processes = Json::array();
  Json stale = Json::array();
  Json unreachable = Json::array();
  Table table(
      {"PID", "DEVICE", "BACKEND", "IN USE", "MAPPED", "CACHED", "PENDING", "PHYSICAL", "COMMAND"});
  SourceOptions source = o.source;
  source.socket_path.reset();
  source.timeout_ms = std::min(source.timeout_ms, 3000);
  for (pid_t pid : pids) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
      stale.push_back(pid);
      continue;
    }
    Snapshot s;
    try {
      s = fetch_live(pid, source, vmm::live::kRequestSummary);
    } catch (const CliError& e) {
      if (e.code() == kNoProcess) {
        stale.push_back(pid);
      } else {
        unreachable.push_back(Json{{"pid", pid}, {"message", e.what()}});
      }
      continue;
    }
    const Json& proc = s.doc["process"];
    Json row = Json::object();
    row["pid"] = pid;
    row["command_line"] = proc["command_line"];
    Json devices = Json::array();
    for (const Json& d : s.doc["devices"]) {
      const Json& t = d["totals"];
      devices.push_back(Json{{"device", d["device"]},
                             {"backend", d["backend"]},
                             {"in_use_bytes", t["in_use_bytes"]},
                             {"mapped_bytes", t["mapped_bytes"]},
                             {"cached_bytes", t["cached_bytes"]},
                             {"pending_bytes", t["pending_bytes"]},
                             {"physical_bytes", t["physical_bytes"]}});
      table.add({std::to_string(pid), std::to_string(d["device"].get<int>()),
                 d["backend"].get<std::string>(), bytes_text(t["in_use_bytes"]),
                 bytes_text(t["mapped_bytes"]), bytes_text(t["cached_bytes"]),
                 bytes_text(t["pending_bytes"]), bytes_text(t["physical_bytes"]),
                 command_text(proc)});
    }
    if (s.doc["devices"].empty()) {
      table.add({std::to_string(pid), "-", "-", "-", "-", "-", "-", "-", command_text(proc)});
    }
    row["devices"] = std::move(devices);
    processes.push_back(std::move(row));
  }

  if (o.json) {
    Json out = Json::object();
    out["socket_directory"] = dirs.front();
    out["socket_directories"] = dirs;
    out["processes"] = std::move(processes);
    out["stale_sockets"] = std::move(stale);
    out["unreachable"] = std::move(unreachable);
    emit(o, out.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
    return kOk;
  }
  std::string text;
  if (processes.empty()) {
    text = "no process of uid " + std::to_string(::geteuid()) + " serves a vmmalloc socket in " +
           dir + "\n";
  } else {
    text = table.str();
  }
  for (const Json& u : unreachable) {
    text += "pid " + std::to_string(u["pid"].get<int>()) + ": " + u["message"].get<std::string>() +
            "\n";
  }
  if (!stale.empty()) {
    text += std::to_string(stale.size()) + " socket(s) of exited processes left in " + dir + "\n";
  }
  emit(o, text);
  return kOk;
}

}  // namespace vmmctl
