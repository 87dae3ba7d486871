// vmmctl_cli_test: vmmctl end to end, on the host backend. Each case is one
// CTest test (tests/cli/CMakeLists.txt):
//
//   vmmctl_cli_test CASE VMMCTL WORKLOAD
//
//   show        a snapshot file written by the workload (through the C API):
//               `show --json` holds exactly the workspaces, blocks, counters
//               and events the workload made; the text report names them
//   map         `map --json` cells of the workload's workspaces, worked out
//               here from their sizes
//   live        the live socket: ps, show, map, top and diff against a
//               running workload; after it exits, show says so (exit 5) and
//               its socket is gone
//   churn       top's rates and diff's counter and event deltas against a
//               workload that keeps allocating
//   exit_snapshot  snapshot_at_exit writes the snapshot as the process
//               exits; live_socket:off makes no socket
//   errors      malformed, truncated, unknown-version and field-less
//               snapshots, a dead PID, a process without a socket, bad
//               usage: each its one-line message and exit status
//   other_user  (root only; 77 otherwise) a workload running as `nobody` is
//               refused to root by its socket's peer-credential check, and
//               root's workload is refused to `nobody`
//
// Exit status 0 if every check passed, 1 otherwise (each failure printed),
// 77 to skip.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_harness.hpp"

namespace {

using namespace cli;

// ---------------------------------------------------------------- checks

const Json* find_region(const Json& device, const std::string& owner, const std::string& name,
                        std::uint64_t base) {
  for (const Json& r : device["regions"]) {
    if (r["owner"] == owner && r["name"] == name && r["base"] == base) return &r;
  }
  return nullptr;
}

// The snapshot holds exactly what the workload made (expect.json).
void check_snapshot_matches(const Json& snap, const Json& expect, bool from_file) {
  EXPECT(snap["schema"] == "vmmalloc-snapshot" && snap["version"] == 1, snap.dump().substr(0, 200));
  EXPECT(snap["process"]["pid"] == expect["pid"], "pid");
  EXPECT(snap["reason"] == (from_file ? "api" : "live"), snap["reason"].dump());
  const Json* dev = nullptr;
  for (const Json& d : snap["devices"]) {
    if (d["device"] == expect["device"]) dev = &d;
  }
  EXPECT(dev != nullptr, "no device " + expect["device"].dump());
  if (dev == nullptr) return;
  const Json& d = *dev;
  EXPECT(d["backend"] == "host", d["backend"].dump());

  // Workspaces: name, address, capacity, size and mapped bytes.
  std::size_t workspaces = 0;
  for (const Json& r : d["regions"]) workspaces += r["owner"] == "workspace" ? 1 : 0;
  EXPECT(workspaces == expect["workspaces"].size(), std::to_string(workspaces) + " workspaces");
  EXPECT(d["totals"]["workspaces"] == expect["workspaces"].size(), d["totals"].dump());
  for (const Json& w : expect["workspaces"]) {
    const Json* r = find_region(d, "workspace", w["name"], w["base"]);
    EXPECT(r != nullptr, "workspace " + w.dump() + " not in the snapshot");
    if (r == nullptr) continue;
    EXPECT((*r)["capacity"] == w["capacity"], r->dump());
    EXPECT((*r)["size"] == w["size"], r->dump());
    EXPECT((*r)["mapped_bytes"] == w["mapped_bytes"], r->dump());
    std::uint64_t chunk_bytes = 0;
    for (const Json& c : (*r)["chunks"]) chunk_bytes += c["bytes"].get<std::uint64_t>();
    EXPECT(chunk_bytes == w["mapped_bytes"], "chunks of " + w.dump());
  }

  // Heap blocks: every live one with its requested size, freed ones not live.
  std::map<std::uint64_t, const Json*> blocks;
  for (const Json& r : d["regions"]) {
    if (r["owner"] != "heap") continue;
    for (const Json& b : r["blocks"]) blocks[b["addr"]] = &b;
  }
  std::size_t live = 0;
  for (const auto& [addr, b] : blocks) live += (*b)["state"] == "live" ? 1 : 0;
  EXPECT(live == expect["live_blocks"].size(), std::to_string(live) + " live blocks");
  for (const Json& e : expect["live_blocks"]) {
    auto it = blocks.find(e["addr"]);
    EXPECT(it != blocks.end(), "live block " + e.dump() + " not in the snapshot");
    if (it == blocks.end()) continue;
    EXPECT((*it->second)["state"] == "live", it->second->dump());
    EXPECT((*it->second)["requested"] == e["requested"], it->second->dump());
    EXPECT((*it->second)["size"] == e["size"], it->second->dump());
  }
  for (const Json& e : expect["freed_blocks"]) {
    auto it = blocks.find(e["addr"]);
    EXPECT(it == blocks.end() || (*it->second)["state"] != "live", "freed block still live");
  }

  // Totals and counters.
  const Json& t = d["totals"];
  EXPECT(t["in_use_bytes"] == expect["in_use_bytes"],
         t.dump() + " vs " + expect["in_use_bytes"].dump());
  EXPECT(t["physical_bytes"].get<std::uint64_t>() ==
             t["mapped_bytes"].get<std::uint64_t>() +
                 d["pool"]["cached_bytes"].get<std::uint64_t>() +
                 t["pending_bytes"].get<std::uint64_t>(),
         "physical = mapped + pool cached + pending: " + t.dump() + " " + d["pool"].dump());
  const Json& c = d["counters"];
  EXPECT(c["allocation.all.allocated"] == 6, c.dump());
  EXPECT(c["allocation.all.freed"] == 2, c.dump());
  EXPECT(c["active.all.current"] == 4, c.dump());

  // Events: grows, the shrink, and every allocate and free.
  const Json& ev = snap["events"];
  EXPECT(ev["allocation_events"] == true, ev.dump().substr(0, 200));
  std::map<std::string, int> kinds;
  for (const Json& e : ev["items"]) ++kinds[e["kind"].get<std::string>()];
  EXPECT(kinds["allocate"] == 6, std::to_string(kinds["allocate"]) + " allocate events");
  EXPECT(kinds["free"] == 2, std::to_string(kinds["free"]) + " free events");
  EXPECT(kinds["grow"] == 2, std::to_string(kinds["grow"]) + " grow events");
  EXPECT(kinds["shrink"] == 1, std::to_string(kinds["shrink"]) + " shrink events");
  EXPECT(kinds["map"] >= 3, std::to_string(kinds["map"]) + " map events");
  const Json& alpha = expect["workspaces"][0];
  bool alpha_grow = false;
  for (const Json& e : ev["items"]) {
    if (e["kind"] == "grow" && e["addr"] == alpha["base"] && e["bytes"] == 10 * MiB &&
        e["previous"] == 0) {
      alpha_grow = true;
    }
  }
  EXPECT(alpha_grow, "no grow event of alpha to 10 MiB");
  for (const Json& b : expect["live_blocks"]) {
    bool found = false;
    for (const Json& e : ev["items"]) {
      if (e["kind"] == "allocate" && e["addr"] == b["addr"] && e["requested"] == b["requested"]) {
        found = true;
      }
    }
    EXPECT(found, "no allocate event for " + b.dump());
  }
}

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// ------------------------------------------------------------------ cases

// Writes the workload's snapshot and expectations; returns them.
std::pair<std::string, Json> snapshot_file() {
  const std::string snap = g.dir + "/snapshot.json";
  const std::string expect = g.dir + "/expect.json";
  const Result r = run({g.workload, "--snapshot", snap, "--expect", expect});
  EXPECT(r.rc == 0, describe(r));
  return {snap, Json::parse(read_file(expect))};
}

int case_show() {
  const auto [snap, expect] = snapshot_file();
  const Result j = vmmctl({"show", snap, "--json"});
  EXPECT(j.rc == 0, describe(j));
  if (j.rc == 0) check_snapshot_matches(Json::parse(j.out), expect, true);

  const Result t = vmmctl({"show", snap, "--blocks", "all"});
  EXPECT(t.rc == 0, describe(t));
  EXPECT(t.out.find("workspace \"alpha\"") != std::string::npos, t.out);
  EXPECT(t.out.find("workspace \"beta\"") != std::string::npos, t.out);
  for (const Json& w : expect["workspaces"]) {
    EXPECT(t.out.find(hex(w["base"])) != std::string::npos,
           "no " + hex(w["base"]) + " in\n" + t.out);
  }
  for (const Json& b : expect["live_blocks"]) {
    EXPECT(t.out.find(hex(b["addr"])) != std::string::npos, "no block " + hex(b["addr"]));
  }
  EXPECT(t.out.find("4 live") != std::string::npos, t.out);
  EXPECT(t.out.find("allocation.all.allocated") != std::string::npos, t.out);
  EXPECT(t.out.find("allocation events on") != std::string::npos, t.out);
  return 0;
}

int case_map() {
  const auto [snap, expect] = snapshot_file();
  const Result j = vmmctl({"map", snap, "--json", "--width", "64"});
  EXPECT(j.rc == 0, describe(j));
  if (j.rc != 0) return 0;
  const Json m = Json::parse(j.out);
  EXPECT(m["width"] == 64, m.dump().substr(0, 200));
  std::map<std::string, std::string> cells;  // workspace name -> cells
  std::size_t regions = 0;
  for (const Json& d : m["devices"]) {
    for (const Json& r : d["regions"]) {
      ++regions;
      if (r["owner"] == "workspace") cells[r["name"]] = r["cells"];
      EXPECT(r["cells"].get<std::string>().size() == 64, r.dump());
    }
    EXPECT(!d["reservations"].empty(), d.dump().substr(0, 300));
  }
  // 64 cells over alpha's 64 MiB: 1 MiB each; 10 MiB in use, the rest unmapped.
  EXPECT(cells["alpha"] == std::string(10, '#') + std::string(54, '-'), cells["alpha"]);
  // Beta: 4 MiB per cell, 40 MiB in use in its first chunk of 64 MiB, which
  // stays mapped (chunks are unmapped whole); the tail detached by the
  // shrink, [64, 100) MiB, is pending or already unmapped; past 100 MiB
  // nothing was ever mapped.
  const std::string& beta = cells["beta"];
  EXPECT(beta.substr(0, 16) == std::string(10, '#') + std::string(6, '+'), beta);
  EXPECT(beta.substr(25) == std::string(39, '-'), beta);
  for (char ch : beta.substr(16, 9)) EXPECT(ch == '~' || ch == '-', beta);
  EXPECT(cells[""] == std::string(64, '-'), cells[""]);

  const Result t = vmmctl({"map", snap, "--width", "64"});
  EXPECT(t.rc == 0, describe(t));
  EXPECT(t.out.find("\"alpha\"") != std::string::npos, t.out);
  EXPECT(t.out.find("[" + std::string(10, '#') + std::string(54, '-') + "]") != std::string::npos,
         t.out);
  EXPECT(t.out.find("legend:") != std::string::npos, t.out);
  (void)regions;
  return 0;
}

int case_live() {
  const std::string expect_path = g.dir + "/expect-live.json";
  Served s = serve({"--expect", expect_path});
  const Json expect = Json::parse(read_file(expect_path));
  const std::string pid = std::to_string(s.pid);
  const std::string sock = g.dir + "/vmmalloc-" + std::to_string(::geteuid()) + "/" + pid + ".sock";
  struct stat st {};
  EXPECT(::stat(sock.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600,
         "socket " + sock);
  EXPECT(::stat((g.dir + "/vmmalloc-" + std::to_string(::geteuid())).c_str(), &st) == 0 &&
             (st.st_mode & 0777) == 0700,
         "socket directory mode");

  const Result ps = vmmctl({"ps", "--json"});
  EXPECT(ps.rc == 0, describe(ps));
  bool listed = false;
  if (ps.rc == 0) {
    const Json listing = Json::parse(ps.out);
    for (const Json& p : listing["processes"]) {
      if (p["pid"] != s.pid) continue;
      listed = true;
      EXPECT(p["devices"].size() == 1 && p["devices"][0]["in_use_bytes"] == expect["in_use_bytes"],
             p.dump());
    }
  }
  EXPECT(listed, "ps --json does not list " + pid + ": " + ps.out);
  const Result pst = vmmctl({"ps"});
  EXPECT(pst.rc == 0 && pst.out.find(pid) != std::string::npos &&
             pst.out.find("PID") < pst.out.find('\n'),
         describe(pst));

  const Result show = vmmctl({"show", pid, "--json"});
  EXPECT(show.rc == 0, describe(show));
  if (show.rc == 0) check_snapshot_matches(Json::parse(show.out), expect, false);
  const Result by_socket = vmmctl({"show", "--socket", sock, "--json"});
  EXPECT(by_socket.rc == 0 && Json::parse(by_socket.out)["process"]["pid"] == s.pid,
         describe(by_socket));
  const Result text = vmmctl({"show", pid});
  EXPECT(text.rc == 0 && text.out.find("workspace \"alpha\"") != std::string::npos, describe(text));
  const Result map = vmmctl({"map", pid, "--width", "64"});
  EXPECT(
      map.rc == 0 && map.out.find(std::string(10, '#') + std::string(54, '-')) != std::string::npos,
      describe(map));

  const Result top = vmmctl({"top", pid, "--count", "2", "--interval", "0.2", "--json"});
  EXPECT(top.rc == 0, describe(top));
  std::istringstream lines(top.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const Json j = Json::parse(line);
    EXPECT(j["pid"] == s.pid && j["devices"][0]["totals"]["in_use_bytes"] == expect["in_use_bytes"],
           line);
    ++n;
  }
  EXPECT(n == 2, top.out);

  // A snapshot saved from the live process, then diffed against it: the
  // workload is idle, so nothing changed.
  const std::string saved = g.dir + "/saved.json";
  const Result save = vmmctl({"show", pid, "--json", "-o", saved});
  EXPECT(save.rc == 0, describe(save));
  const Result diff = vmmctl({"diff", saved, pid, "--json"});
  EXPECT(diff.rc == 0, describe(diff));
  if (diff.rc == 0) {
    const Json dj = Json::parse(diff.out);
    for (const Json& d : dj["devices"]) {
      for (auto it = d["totals"].begin(); it != d["totals"].end(); ++it) {
        EXPECT(it.value()["delta"] == 0, it.key() + ": " + it.value().dump());
      }
      EXPECT(d["regions"]["added"].empty() && d["regions"]["removed"].empty(), d.dump());
      EXPECT(d["live_blocks"]["added"] == 0 && d["live_blocks"]["removed"] == 0, d.dump());
    }
  }

  const Result end = finish(s.proc);
  EXPECT(end.rc == 0, describe(end));
  EXPECT(::stat(sock.c_str(), &st) != 0, "the socket outlived its process: " + sock);
  const Result gone = vmmctl({"show", pid});
  EXPECT(gone.rc == 5 && one_line_error(gone) && gone.err.find("not running") != std::string::npos,
         describe(gone));
  const Result ps2 = vmmctl({"ps", "--json"});
  EXPECT(ps2.rc == 0 && ps2.out.find("\"pid\":" + pid) == std::string::npos, describe(ps2));
  return 0;
}

int case_churn() {
  Served s = serve({"--churn"});
  const std::string pid = std::to_string(s.pid);
  const Result top = vmmctl({"top", pid, "--count", "3", "--interval", "0.3", "--json"});
  EXPECT(top.rc == 0, describe(top));
  std::istringstream lines(top.out);
  std::string line;
  double last_rate = 0;
  int n = 0;
  while (std::getline(lines, line)) {
    last_rate = Json::parse(line)["devices"][0]["allocations_per_s"];
    ++n;
  }
  EXPECT(n == 3 && last_rate > 0, top.out);

  const std::string a = g.dir + "/churn-a.json";
  EXPECT(vmmctl({"show", pid, "--json", "-o", a}).rc == 0, "saving a snapshot");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const Result diff = vmmctl({"diff", a, pid, "--json"});
  EXPECT(diff.rc == 0, describe(diff));
  if (diff.rc == 0) {
    const Json dj = Json::parse(diff.out);
    const Json& counters = dj["devices"][0]["counters"];
    EXPECT(counters.contains("allocation.all.allocated") &&
               counters["allocation.all.allocated"]["delta"].get<long long>() > 0,
           counters.dump());
    EXPECT(dj["events_after_a"]["count"].get<long long>() > 0, dj["events_after_a"].dump());
  }
  const Result text = vmmctl({"diff", a, pid});
  EXPECT(text.rc == 0 && text.out.find("allocation.all.allocated") != std::string::npos,
         describe(text));
  EXPECT(finish(s.proc).rc == 0, "churn workload exit");
  return 0;
}

// snapshot_at_exit writes the snapshot when the process exits; with
// live_socket:off no socket (or directory) is made.
int case_exit_snapshot() {
  const std::string expect_path = g.dir + "/expect-exit.json";
  const std::string conf = g.conf + ",live_socket:off,snapshot_at_exit:" + g.dir + "/exit-%p.json";
  const Result r = run({g.workload, "--expect", expect_path}, std::nullopt, conf);
  EXPECT(r.rc == 0, describe(r));
  const Json expect = Json::parse(read_file(expect_path));
  const std::string path = g.dir + "/exit-" + expect["pid"].dump() + ".json";
  const Result show = vmmctl({"show", path, "--json"});
  EXPECT(show.rc == 0, describe(show));
  if (show.rc == 0) {
    const Json snap = Json::parse(show.out);
    EXPECT(snap["reason"] == "exit", snap["reason"].dump());
    EXPECT(snap["process"]["pid"] == expect["pid"], snap["process"].dump());
    EXPECT(snap["config"]["options"]["live_socket"] == "off", snap["config"].dump());
    // At exit the workload has freed its blocks; its workspaces are gone too.
    for (const Json& d : snap["devices"]) {
      EXPECT(d["counters"]["allocation.all.freed"] == d["counters"]["allocation.all.allocated"],
             d["counters"].dump());
      EXPECT(d["totals"]["workspaces"] == 0, d["totals"].dump());
    }
  }
  struct stat st {};
  EXPECT(::stat((g.dir + "/vmmalloc-" + std::to_string(::geteuid())).c_str(), &st) != 0,
         "live_socket:off made a socket directory");
  return 0;
}

int case_errors() {
  const auto [snap, expect] = snapshot_file();
  const std::string text = read_file(snap);
  auto expect_error = [](const Result& r, int rc, const std::string& words) {
    EXPECT(r.rc == rc, describe(r) + " (wanted exit " + std::to_string(rc) + ")");
    EXPECT(one_line_error(r), "not one line: " + r.err);
    EXPECT(r.err.find(words) != std::string::npos, "'" + words + "' not in: " + r.err);
    EXPECT(r.out.empty(), "stdout: " + r.out);
  };

  write_file(g.dir + "/garbage.json", "this is not json\n");
  expect_error(vmmctl({"show", g.dir + "/garbage.json"}), 3, "malformed");
  write_file(g.dir + "/truncated.json", text.substr(0, text.size() / 2));
  expect_error(vmmctl({"show", g.dir + "/truncated.json"}), 3, "truncated");
  write_file(g.dir + "/empty.json", "");
  expect_error(vmmctl({"map", g.dir + "/empty.json"}), 3, "truncated");
  Json doc = Json::parse(text);
  doc["version"] = 99;
  write_file(g.dir + "/v99.json", doc.dump());
  expect_error(vmmctl({"show", g.dir + "/v99.json"}), 4, "version 99");
  expect_error(vmmctl({"diff", snap, g.dir + "/v99.json"}), 4, "version 99");
  write_file(g.dir + "/other.json", "{\"a\": 1}");
  expect_error(vmmctl({"show", g.dir + "/other.json"}), 3, "not a vmmalloc snapshot");
  doc = Json::parse(text);
  doc["devices"][0].erase("totals");
  write_file(g.dir + "/no-totals.json", doc.dump());
  expect_error(vmmctl({"show", g.dir + "/no-totals.json"}), 3, "devices[0].totals is missing");
  doc = Json::parse(text);
  doc["devices"][0]["regions"][0]["chunks"] = "many";
  write_file(g.dir + "/bad-kind.json", doc.dump());
  expect_error(vmmctl({"html", g.dir + "/bad-kind.json", "-o", g.dir + "/x.html"}), 3,
               "devices[0].regions[0].chunks is not an array");

  // A PID that is not running: a child that has exited and been reaped.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  expect_error(vmmctl({"show", std::to_string(dead)}), 5, "not running");
  expect_error(vmmctl({"top", std::to_string(dead), "--count", "1"}), 5, "not running");
  // A running process that serves no socket: this test itself.
  expect_error(vmmctl({"show", std::to_string(::getpid())}), 7, "no vmmalloc socket");

  expect_error(vmmctl({"bogus"}), 2, "unknown command");
  expect_error(vmmctl({"show"}), 2, "takes PID|FILE");
  expect_error(vmmctl({"show", snap, "--bogus"}), 2, "unknown option --bogus");
  expect_error(vmmctl({"map", snap, "--width", "x"}), 2, "--width");
  expect_error(vmmctl({"html", snap}), 2, "needs -o");
  expect_error(vmmctl({"show", g.dir + "/missing.json"}), 1, "cannot read");
  const Result bad_conf = run({g.vmmctl, "ps"}, std::nullopt, "live_socket_dir:relative");
  expect_error(bad_conf, 2, "live_socket_dir");
  return 0;
}

int case_other_user() {
  if (::geteuid() != 0) {
    std::printf("skipped: needs root to run a process as another user\n");
    return kSkip;
  }
  const passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) {
    std::printf("skipped: no user 'nobody'\n");
    return kSkip;
  }
  const uid_t other = nobody->pw_uid;
  // Everyone may make their own directory in the base, as in /tmp.
  ::chmod(g.dir.c_str(), 01777);

  // A process of `nobody`: root passes the file modes, the peer check refuses.
  {
    Served s = serve({}, other);
    const std::string pid = std::to_string(s.pid);
    const std::string dir = g.dir + "/vmmalloc-" + std::to_string(other);
    const std::string sock = dir + "/" + pid + ".sock";
    struct stat st {};
    EXPECT(::stat(sock.c_str(), &st) == 0 && st.st_uid == other && (st.st_mode & 0777) == 0600,
           "the other user's socket " + sock);
    EXPECT(::stat(dir.c_str(), &st) == 0 && st.st_uid == other && (st.st_mode & 0777) == 0700,
           "the other user's directory " + dir);
    const Result r = vmmctl({"show", pid});
    EXPECT(r.rc == 6 && one_line_error(r) && r.err.find("refused") != std::string::npos &&
               r.err.find("uid " + std::to_string(other)) != std::string::npos,
           describe(r));
    const Result by_socket = vmmctl({"map", "--socket", sock});
    EXPECT(by_socket.rc == 6 && by_socket.err.find("refused") != std::string::npos,
           describe(by_socket));
    // ps lists root's processes only.
    const Result ps = vmmctl({"ps", "--json"});
    EXPECT(ps.rc == 0 && ps.out.find("\"pid\":" + pid) == std::string::npos, describe(ps));
    // The owner itself is served.
    const Result own = vmmctl({"show", pid, "--json"}, other);
    EXPECT(own.rc == 0 && Json::parse(own.out)["process"]["pid"] == s.pid, describe(own));
    EXPECT(finish(s.proc).rc == 0, "nobody's workload exit");
  }
  // Root's process: `nobody` is stopped before connecting, by uid and by mode.
  {
    Served s = serve({});
    const std::string pid = std::to_string(s.pid);
    const std::string sock = g.dir + "/vmmalloc-0/" + pid + ".sock";
    const Result r = vmmctl({"show", pid}, other);
    EXPECT(r.rc == 6 && one_line_error(r) && r.err.find("belongs to uid 0") != std::string::npos,
           describe(r));
    const Result by_socket = vmmctl({"show", "--socket", sock}, other);
    EXPECT(by_socket.rc == 6 && by_socket.err.find("another user") != std::string::npos,
           describe(by_socket));
    EXPECT(finish(s.proc).rc == 0, "root's workload exit");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_case(argc, argv,
                       {{"show", case_show},
                        {"map", case_map},
                        {"live", case_live},
                        {"churn", case_churn},
                        {"exit_snapshot", case_exit_snapshot},
                        {"errors", case_errors},
                        {"other_user", case_other_user}});
}
