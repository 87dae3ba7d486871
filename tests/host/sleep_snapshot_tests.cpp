// Snapshots of sleeping memory (docs/snapshot.md, docs/sleep.md): a tag's
// segments carry the tag, and while it sleeps they say so, with nothing
// mapped and their chunks kept as where memory returns; tag pools are not
// listed as graph pools. A tagged workspace carries its tag and, asleep,
// lists no chunks and the bytes its wake maps back.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "allocator/observe/snapshot.hpp"
#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/tags.hpp"
#include "vmmalloc/workspace.hpp"

using namespace vmm;
using namespace vmm::test;
using Json = nlohmann::json;

namespace {

// This allocator's tagged heap segments (or workspaces) in a full snapshot.
Json tagged_regions(int device, const std::string& tag, const char* owner = "heap") {
  const Json snap = Json::parse(snapshot_json("api", SnapshotDetail::full));
  Json out = Json::array();
  for (const Json& d : snap["devices"]) {
    if (d["device"] != device) continue;
    for (const Json& r : d["regions"]) {
      if (r["owner"] == owner && r.value("tag", "") == tag) out.push_back(r);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("snapshot: a sleeping tag's segments say asleep and map nothing", "[snapshot][sleep]") {
  Harness h(make_host_test_device());
  const int device = h.context().device();
  {
    Allocator a(h.context());
    void* p = nullptr;
    {
      TagScope scope("snap_weights");
      p = a.allocate(6 * MiB, h.stream());
    }
    Json awake = tagged_regions(device, "snap_weights");
    REQUIRE(awake.size() == 1);
    CHECK(awake[0]["asleep"] == false);
    CHECK(awake[0]["mapped_bytes"].get<std::size_t>() >= 6 * MiB);
    CHECK(awake[0]["asleep_bytes"] == 0);
    const TagId tag = tag_id("snap_weights");
    a.sleep({tag});
    Json asleep = tagged_regions(device, "snap_weights");
    REQUIRE(asleep.size() == 1);
    CHECK(asleep[0]["asleep"] == true);
    CHECK(asleep[0]["mapped_bytes"] == 0);
    CHECK(asleep[0]["asleep_bytes"] == awake[0]["mapped_bytes"]);
    CHECK(asleep[0]["chunks"].size() == awake[0]["chunks"].size());
    for (const Json& c : asleep[0]["chunks"]) CHECK(c["asleep"] == true);
    // The tag's pool is not a graph pool.
    const Json snap = Json::parse(snapshot_json("api", SnapshotDetail::full));
    for (const Json& d : snap["devices"]) {
      if (d["device"] == device) CHECK(d.at("heap").at("graph_pools").empty());
    }
    a.wake({tag});
    CHECK(tagged_regions(device, "snap_weights")[0]["asleep"] == false);
    a.deallocate(p);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEST_CASE("snapshot: a sleeping workspace carries its tag, no chunks and the bytes wake maps",
          "[snapshot][sleep]") {
  Harness h(make_host_test_device());
  const int device = h.context().device();
  {
    Allocator a(h.context());
    std::optional<Workspace> ws;
    {
      TagScope scope("snap_kv");
      ws.emplace(h.context(), 64 * MiB);
    }
    ws->grow_to(5 * MiB);
    Json awake = tagged_regions(device, "snap_kv", "workspace");
    REQUIRE(awake.size() == 1);
    CHECK(awake[0]["asleep"] == false);
    CHECK(awake[0]["asleep_bytes"] == 0);
    CHECK(awake[0]["chunks"].size() >= 1);
    a.sleep({tag_id("snap_kv")}, SleepMode::discard);
    Json asleep = tagged_regions(device, "snap_kv", "workspace");
    REQUIRE(asleep.size() == 1);
    CHECK(asleep[0]["asleep"] == true);
    CHECK(asleep[0]["chunks"].empty());
    CHECK(asleep[0]["mapped_bytes"] == 0);
    CHECK(asleep[0]["asleep_bytes"] == awake[0]["mapped_bytes"]);
    CHECK(asleep[0]["size"] == 5 * MiB);
    a.wake({tag_id("snap_kv")});
    CHECK(tagged_regions(device, "snap_kv", "workspace")[0]["asleep"] == false);
    ws.reset();
  }
  CHECK(h.destroy_context_and_check_no_leak());
}
