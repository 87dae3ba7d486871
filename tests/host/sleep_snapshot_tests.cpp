// Snapshots of sleeping memory (docs/snapshot.md, docs/sleep.md): a tag's
// segments carry the tag, and while it sleeps they say so, with nothing
// mapped and their chunks kept as where memory returns; tag pools are not
// listed as graph pools.
#include <nlohmann/json.hpp>
#include <string>

#include "allocator/observe/snapshot.hpp"
#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/tags.hpp"

using namespace vmm;
using namespace vmm::test;
using Json = nlohmann::json;

namespace {

// This allocator's tagged heap segments in a full snapshot.
Json tagged_regions(int device, const std::string& tag) {
  const Json snap = Json::parse(snapshot_json("api", SnapshotDetail::full));
  Json out = Json::array();
  for (const Json& d : snap["devices"]) {
    if (d["device"] != device) continue;
    for (const Json& r : d["regions"]) {
      if (r["owner"] == "heap" && r.value("tag", "") == tag) out.push_back(r);
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
