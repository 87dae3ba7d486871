// vmmctl on PyTorch's memory snapshots (tools/vmmctl/pytorch_snapshot.hpp,
// tools/vmmctl/pickle.hpp): the pickles of testdata/ (made by
// testdata/make_pytorch_snapshots.py in _snapshot()'s layout) are shown,
// mapped and drawn as vmmalloc snapshots, protocols 2 and 4 alike; hostile
// pickles (code to run, truncation, a cycle, sharing piled on sharing) are
// refused at once with exit 3 and a message, running nothing; so are a
// string shared a million times over, a forged device index and a string
// holding a UTF-8-encoded surrogate (which JSON cannot hold).
#include <string>

#include "cli_harness.hpp"

namespace {

using namespace cli;

std::string data(const std::string& name) {
  return std::string(VMM_CLI_TESTDATA) + "/" + name;
}

int case_pytorch_read() {
  const Result show = vmmctl({"show", data("pytorch_snapshot.pickle"), "--json"});
  EXPECT(show.rc == 0, describe(show));
  if (show.rc != 0) return 0;
  const Json s = Json::parse(show.out);
  EXPECT(s["source"] == "pytorch" && s["reason"] == "pytorch", s.dump().substr(0, 300));
  const Json& d = s["devices"][0];
  EXPECT(d["backend"] == "pytorch" && d["regions"].size() == 2, d.dump().substr(0, 300));
  EXPECT(d["totals"]["in_use_bytes"] == 12 * (1 << 20) + 512, d["totals"].dump());
  EXPECT(d["totals"]["mapped_bytes"] == 22 * (1 << 20), d["totals"].dump());
  const Json& blocks = d["regions"][0]["blocks"];
  EXPECT(blocks.size() == 3 && blocks[0]["state"] == "live" && blocks[1]["state"] == "live" &&
             blocks[1]["pytorch_state"] == "active_pending_free" && blocks[2]["state"] == "free",
         blocks.dump().substr(0, 400));
  EXPECT(blocks[0]["requested"] == 8 * (1 << 20) - 100, blocks[0].dump().substr(0, 200));
  EXPECT(blocks[0]["frames"][0]["name"] == "forward", "frames kept");
  EXPECT(d["regions"][1]["name"] == "small", "segment type as the name");
  const Json& events = s["events"]["items"];
  EXPECT(events.size() == 6, "events: " + std::to_string(events.size()));
  if (events.size() == 6) {
    EXPECT(events[0]["kind"] == "map" && events[0]["mapped_after"] == 20 * (1 << 20),
           events[0].dump());
    EXPECT(events[3]["kind"] == "map" && events[3]["mapped_after"] == 22 * (1 << 20),
           events[3].dump());
    EXPECT(events[5]["kind"] == "oom", events[5].dump());
  }
  // Protocol 2 reads the same; text, map and html work on it.
  const Result p2 = vmmctl({"show", data("pytorch_snapshot_p2.pickle"), "--json"});
  EXPECT(p2.rc == 0 && Json::parse(p2.out)["devices"] == s["devices"], describe(p2));
  const Result text = vmmctl({"show", data("pytorch_snapshot.pickle")});
  EXPECT(text.rc == 0 && text.out.find("PyTorch memory snapshot") == 0, describe(text));
  const Result map = vmmctl({"map", data("pytorch_snapshot.pickle"), "--width", "40"});
  EXPECT(map.rc == 0 && map.out.find("segment:0x7f0000000000") != std::string::npos,
         describe(map));
  const std::string page = g.dir + "/pt.html";
  const Result html = vmmctl({"html", data("pytorch_snapshot.pickle"), "-o", page});
  EXPECT(html.rc == 0 && read_file(page).find("segment:0x7f0000000000") != std::string::npos,
         describe(html));
  return 0;
}

int case_pytorch_hostile() {
  const struct {
    const char* file;
    const char* says;
  } cases[] = {
      {"hostile_reduce.pickle", "is not plain data"},
      {"hostile_truncated.pickle", "ends early"},
      {"hostile_cycle.pickle", "nests deeper than 64"},
      {"hostile_shared.pickle", "too many values"},
      {"hostile_strings.pickle", "too many values"},
      {"hostile_devices.pickle", "device 1000000000"},
      {"hostile_surrogate.pickle", "not UTF-8"},
  };
  for (const auto& c : cases) {
    const Result r = vmmctl({"show", data(c.file)});
    EXPECT(r.rc == 3 && r.err.find(c.says) != std::string::npos && r.seconds < 10, describe(r));
    EXPECT(r.out.find("this must never run") == std::string::npos, "ran code: " + r.out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_case(argc, argv,
                       {{"pytorch_read", case_pytorch_read}, {"pytorch_hostile", case_pytorch_hostile}});
}
