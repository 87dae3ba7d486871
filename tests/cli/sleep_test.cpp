// vmmctl sleep PID TAGS / vmmctl wake PID TAGS end to end (docs/sleep.md):
// a workload with tagged heap memory and a tagged workspace (--sleepy) is
// put to sleep and woken over its live socket; the snapshot shows it asleep
// in between, the workload finds every byte kept, and bad requests get
// clear refusals that change nothing.
#include <string>
#include <vector>

#include "cli_harness.hpp"

namespace {

using namespace cli;

// The workload's regions of tag `tag` in a snapshot.
std::vector<Json> tagged(const Json& snap, const std::string& tag) {
  std::vector<Json> out;
  for (const Json& d : snap["devices"]) {
    for (const Json& r : d["regions"]) {
      if (r.value("tag", "") == tag) out.push_back(r);
    }
  }
  return out;
}

int case_sleep_wake() {
  Served s = serve({"--sleepy"});
  const std::string pid = std::to_string(s.pid);

  const Result slept = vmmctl({"sleep", pid, "weights,kv", "--json"});
  EXPECT(slept.rc == 0, describe(slept));
  if (slept.rc == 0) {
    const Json r = Json::parse(slept.out);
    EXPECT(r["ok"] == true && r["request"] == "sleep" && r["mode"] == "offload", r.dump());
    EXPECT(r["report"]["tags_changed"] == 2, r.dump());
    // The 6 MiB block and the workspace's 12 MiB + 3 bytes, nothing else.
    EXPECT(r["report"]["copied_bytes"] == 6 * (1 << 20) + 12 * (1 << 20) + 3, r.dump());
  }
  const Result show = vmmctl({"show", pid, "--json"});
  EXPECT(show.rc == 0, describe(show));
  if (show.rc == 0) {
    const Json snap = Json::parse(show.out);
    const std::vector<Json> kv = tagged(snap, "kv");
    EXPECT(kv.size() == 1 && kv[0]["owner"] == "workspace" && kv[0]["asleep"] == true &&
               kv[0]["mapped_bytes"] == 0,
           "kv while asleep: " + (kv.empty() ? std::string("none") : kv[0].dump()));
    const std::vector<Json> w = tagged(snap, "weights");
    EXPECT(!w.empty() && w[0]["asleep"] == true, "weights while asleep");
  }
  const Result map = vmmctl({"map", pid, "--width", "64"});
  EXPECT(map.rc == 0 && map.out.find('z') != std::string::npos, describe(map));
  // Twice: nothing changes.
  const Result again = vmmctl({"sleep", pid, "kv", "--json"});
  EXPECT(again.rc == 0 && Json::parse(again.out)["report"]["tags_changed"] == 0, describe(again));

  const Result text = vmmctl({"wake", pid, "weights,kv", "--keep-host"});
  EXPECT(text.rc == 0 && text.out.find("2 tag(s) changed") != std::string::npos, describe(text));
  const Result after = vmmctl({"show", pid, "--json"});
  EXPECT(after.rc == 0 && tagged(Json::parse(after.out), "kv")[0]["asleep"] == false,
         describe(after));
  // Discard: nothing copied; the bytes are undefined after the wake.
  const Result discard = vmmctl({"sleep", pid, "weights", "--mode", "discard", "--json"});
  EXPECT(discard.rc == 0 && Json::parse(discard.out)["report"]["copied_bytes"] == 0,
         describe(discard));
  EXPECT(vmmctl({"wake", pid, "weights"}).rc == 0, "wake weights");

  const Result end = finish(s.proc);
  // The weights were discarded; the wake mapped fresh memory (zeroed on the
  // host backend), so the workload finds them changed and says so.
  EXPECT(end.rc == 1 && end.err.find("changed across sleep and wake") != std::string::npos,
         describe(end));
  return 0;
}

int case_offload_kept() {
  Served s = serve({"--sleepy"});
  const std::string pid = std::to_string(s.pid);
  for (int cycle = 0; cycle < 3; ++cycle) {
    EXPECT(vmmctl({"sleep", pid, "weights,kv"}).rc == 0, "sleep " + std::to_string(cycle));
    EXPECT(vmmctl({"wake", pid, "weights,kv"}).rc == 0, "wake " + std::to_string(cycle));
  }
  // Left asleep: the workload wakes it at its end and checks every byte.
  EXPECT(vmmctl({"sleep", pid, "kv"}).rc == 0, "last sleep");
  const Result end = finish(s.proc);
  EXPECT(end.rc == 0 && end.out.find("tagged memory intact") != std::string::npos, describe(end));
  return 0;
}

int case_refusals() {
  Served s = serve({"--sleepy"});
  const std::string pid = std::to_string(s.pid);
  const Result bad_name = vmmctl({"sleep", pid, "no/slash"});
  EXPECT(bad_name.rc == 1 && bad_name.err.find("no/slash") != std::string::npos,
         describe(bad_name));
  const Result bad_mode = vmmctl({"sleep", pid, "kv", "--mode", "later"});
  EXPECT(bad_mode.rc == 2 && bad_mode.err.find("offload or discard") != std::string::npos,
         describe(bad_mode));
  const Result no_tags = vmmctl({"wake", pid});
  EXPECT(no_tags.rc == 2, describe(no_tags));
  const Result empty = vmmctl({"sleep", pid, "kv,,weights"});
  EXPECT(empty.rc == 1 && empty.err.find("empty tag name") != std::string::npos, describe(empty));
  const Result typo = vmmctl({"sleep", pid, "weigths"});  // not made into a new tag
  EXPECT(typo.rc == 1 && typo.err.find("no tag 'weigths'") != std::string::npos &&
             typo.err.find("weights") != std::string::npos,
         describe(typo));
  const Result not_pid = vmmctl({"sleep", "abc", "kv"});
  EXPECT(not_pid.rc == 2, describe(not_pid));
  // None of that changed anything.
  const Result show = vmmctl({"show", pid, "--json"});
  EXPECT(show.rc == 0 && tagged(Json::parse(show.out), "kv")[0]["asleep"] == false,
         describe(show));
  const Result end = finish(s.proc);
  EXPECT(end.rc == 0 && end.out.find("tagged memory intact") != std::string::npos, describe(end));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_case(argc, argv,
                       {{"sleep_wake", case_sleep_wake},
                        {"offload_kept", case_offload_kept},
                        {"refusals", case_refusals}});
}
