// vmmctl top: a refreshing view of a live process - per device what is in
// use, mapped, cached and pending, and allocations and frees per second
// (from the counters between two refreshes). Asks for summary snapshots
// only, so watching costs the process little. --json prints one JSON line
// per refresh; --count N stops after N.
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "allocator/observe/live_socket.hpp"  // internal: the live request names
#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/text.hpp"

namespace vmmctl {

namespace {

std::uint64_t counter(const Json& d, const char* name) {
  if (!d["counters"].is_object() || !d["counters"].contains(name)) return 0;
  return d["counters"][name].get<std::uint64_t>();
}

std::string rate_text(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", r);
  return buf;
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

}  // namespace

int cmd_top(const Options& o) {
  const bool by_socket = o.source.socket_path.has_value();
  if (!by_socket && !is_pid_spec(o.args.at(0))) {
    throw CliError(kUsage, "vmmctl top takes a PID, not '" + o.args[0] + "'");
  }
  const pid_t pid = by_socket ? 0 : static_cast<pid_t>(std::stol(o.args[0]));
  const bool clear = !o.json && ::isatty(STDOUT_FILENO);
  std::map<std::size_t, std::pair<std::uint64_t, std::uint64_t>>
      last;  // device index -> allocs, frees
  std::uint64_t last_ns = 0;
  for (std::size_t n = 0; o.count == 0 || n < o.count; ++n) {
    if (n != 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.interval_s));
    const Snapshot s = fetch_live(pid, o.source, vmm::live::kRequestSummary);
    const Json& doc = s.doc;
    const std::uint64_t now = doc["time_unix_ns"];
    const double dt = last_ns != 0 && now > last_ns ? static_cast<double>(now - last_ns) / 1e9 : 0;

    Json jdevices = Json::array();
    Table table({"DEVICE", "BACKEND", "IN USE", "MAPPED", "CACHED", "PENDING", "PHYSICAL",
                 "ALLOCS/S", "FREES/S", "OOMS"});
    std::size_t index = 0;
    for (const Json& d : doc["devices"]) {
      const Json& t = d["totals"];
      const std::uint64_t allocs = counter(d, "allocation.all.allocated");
      const std::uint64_t frees = counter(d, "allocation.all.freed");
      double alloc_rate = 0, free_rate = 0;
      auto it = last.find(index);
      if (it != last.end() && dt > 0) {
        alloc_rate = static_cast<double>(allocs - it->second.first) / dt;
        free_rate = static_cast<double>(frees - it->second.second) / dt;
      }
      last[index] = {allocs, frees};
      table.add({std::to_string(d["device"].get<int>()), d["backend"],
                 bytes_text(t["in_use_bytes"]), bytes_text(t["mapped_bytes"]),
                 bytes_text(t["cached_bytes"]), bytes_text(t["pending_bytes"]),
                 bytes_text(t["physical_bytes"]), dt > 0 ? rate_text(alloc_rate) : "-",
                 dt > 0 ? rate_text(free_rate) : "-", std::to_string(counter(d, "num_ooms"))});
      Json jd = Json::object();
      jd["device"] = d["device"];
      jd["backend"] = d["backend"];
      jd["totals"] = t;
      jd["allocations_per_s"] = alloc_rate;
      jd["frees_per_s"] = free_rate;
      jdevices.push_back(std::move(jd));
      ++index;
    }
    last_ns = now;

    if (o.json) {
      Json line = Json::object();
      line["time_unix_ns"] = now;
      line["pid"] = doc["process"]["pid"];
      line["devices"] = std::move(jdevices);
      line["events_recorded"] = doc["events"]["recorded"];
      emit(o, line.dump() + "\n");
      continue;
    }
    std::string cmd;
    for (const Json& a : doc["process"]["command_line"])
      cmd += (cmd.empty() ? "" : " ") + a.get<std::string>();
    std::string out = clear ? "\033[H\033[2J" : (n != 0 ? "\n" : "");
    out += "vmmctl top: pid " + std::to_string(doc["process"]["pid"].get<long>()) + " (" + cmd +
           ") at " + time_text(now) + ", every " + seconds_text(o.interval_s) + " s\n\n";
    out += doc["devices"].empty() ? std::string("no device in use yet\n") : table.str();
    out += "\nevents recorded: " + std::to_string(doc["events"]["recorded"].get<std::uint64_t>()) +
           " (allocation events " +
           (doc["events"]["allocation_events"].get<bool>() ? "on" : "off") + ")\n";
    emit(o, out);
  }
  return kOk;
}

}  // namespace vmmctl
