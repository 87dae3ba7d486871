// A PyTorch memory snapshot (torch.cuda.memory._snapshot(), as
// _dump_snapshot pickles it) in vmmalloc's snapshot schema, so that every
// vmmctl command reads either (see pytorch_snapshot.hpp for the mapping).
#include "tools/vmmctl/pytorch_snapshot.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "allocator/observe/snapshot.hpp"  // internal: the schema name and version
#include "tools/vmmctl/exit_codes.hpp"

namespace vmmctl {

namespace {

std::uint64_t u(const Json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_integer() || it->get<long long>() < 0) return 0;
  return it->get<std::uint64_t>();
}

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// PyTorch's block states as vmmalloc's: a block whose free waits on other
// streams' work is still live.
std::string block_state(const std::string& state) {
  if (state == "active_allocated" || state == "active_pending_free") return "live";
  return "free";
}

// PyTorch's trace actions as vmmalloc's event kinds ("" : not shown).
std::string event_kind(const std::string& action) {
  if (action == "alloc") return "allocate";
  if (action == "free_completed") return "free";
  if (action == "segment_alloc" || action == "segment_map") return "map";
  if (action == "segment_free" || action == "segment_unmap") return "unmap";
  if (action == "oom") return "oom";
  return "";
}

// A device index, at most kMaxDevices - 1 (a forged one cannot make
// millions of devices).
constexpr std::uint64_t kMaxDevices = 1024;
int checked_device(std::uint64_t device, const std::string& origin) {
  if (device >= kMaxDevices) {
    throw CliError(kMalformed, origin + ": device " + std::to_string(device) +
                                   " (PyTorch snapshots name devices 0 to " +
                                   std::to_string(kMaxDevices - 1) + ")");
  }
  return static_cast<int>(device);
}

Json convert(const Json& pt, const std::string& origin);

struct DeviceParts {
  Json regions = Json::array();
  Json reservations = Json::array();
  std::uint64_t mapped = 0, in_use = 0, segments = 0;
};

Json region_of(const Json& seg, DeviceParts& parts, const std::string& origin) {
  const std::uint64_t base = u(seg, "address");
  const std::uint64_t total = u(seg, "total_size");
  if (base == 0 || total == 0) {
    throw CliError(kMalformed, origin + ": a PyTorch segment without address or total_size");
  }
  Json r = Json::object();
  r["id"] = "segment:" + hex(base);
  r["owner"] = "heap";
  r["name"] = seg.value("segment_type", std::string("large"));
  r["base"] = base;
  r["capacity"] = total;
  r["reserved_bytes"] = total;
  if (seg.contains("segment_pool_id")) r["pool"] = seg["segment_pool_id"];
  r["is_expandable"] = seg.value("is_expandable", false);
  Json blocks = Json::array();
  std::uint64_t addr = base, live = 0;
  if (seg.contains("blocks") && seg["blocks"].is_array()) {
    for (const Json& b : seg["blocks"]) {
      const std::uint64_t size = u(b, "size");
      Json bj = Json::object();
      bj["addr"] = b.contains("address") ? u(b, "address") : addr;  // older snapshots: implied
      bj["size"] = size;
      bj["requested"] = b.contains("requested_size") ? u(b, "requested_size") : size;
      bj["stream"] = u(seg, "stream");
      bj["state"] = block_state(b.value("state", std::string("inactive")));
      bj["pytorch_state"] = b.value("state", std::string());
      if (b.contains("frames")) bj["frames"] = b["frames"];
      if (bj["state"] == "live") live += size;
      addr = bj["addr"].get<std::uint64_t>() + size;
      blocks.push_back(std::move(bj));
    }
  }
  r["mapped_bytes"] = total;
  r["in_use_bytes"] = live;
  r["chunks"] = Json::array({Json{{"va", base}, {"bytes", total}, {"alias", false}}});
  r["blocks"] = std::move(blocks);
  r["pending_reclaims"] = 0;
  parts.mapped += total;
  parts.in_use += live;
  ++parts.segments;
  parts.reservations.push_back(Json{{"base", base},
                                    {"bytes", total},
                                    {"allocated_bytes", total},
                                    {"dedicated", false},
                                    {"free", Json::array()}});
  return r;
}

Json device_of(int device, DeviceParts& parts) {
  std::sort(parts.regions.begin(), parts.regions.end(),
            [](const Json& a, const Json& b) { return a["base"] < b["base"]; });
  Json d = Json::object();
  d["device"] = device;
  d["backend"] = "pytorch";
  d["granularity"] = 2u << 20;
  d["totals"] = Json{{"in_use_bytes", parts.in_use},
                     {"mapped_bytes", parts.mapped},
                     {"cached_bytes", parts.mapped - parts.in_use},
                     {"pending_bytes", 0},
                     {"physical_bytes", parts.mapped},
                     {"reserved_va_bytes", parts.mapped},
                     {"workspaces", 0},
                     {"heap_segments", parts.segments}};
  d["counters"] = nullptr;
  d["pool"] = Json{{"cache_limit", 0},
                   {"created_bytes", parts.mapped},
                   {"cached_bytes", 0},
                   {"cached_chunks", Json::array()}};
  d["address_space"] = Json{{"reserved_bytes", parts.mapped},
                            {"reservation_count", parts.segments},
                            {"reservations", parts.reservations}};
  d["reclaimer"] = Json{{"pending_bytes", 0}, {"pending_entries", 0}, {"pending", Json::array()}};
  d["regions"] = parts.regions;
  return d;
}

// The trace of each device as events; mapped_after is worked back from the
// segments mapped at the end (the trace may begin after the process did).
Json events_of(const Json& traces, const std::map<int, DeviceParts>& parts) {
  Json items = Json::array();
  if (!traces.is_array()) return items;
  for (std::size_t dev = 0; dev < traces.size(); ++dev) {
    if (!traces[dev].is_array()) continue;
    auto it = parts.find(static_cast<int>(dev));
    long long mapped = it == parts.end() ? 0
                                         : static_cast<long long>(
                                               std::min<std::uint64_t>(it->second.mapped, 1ULL << 62));
    std::vector<Json> mine;
    for (auto e = traces[dev].rbegin(); e != traces[dev].rend(); ++e) {
      if (!e->is_object()) continue;
      const std::string kind = event_kind(e->value("action", std::string()));
      if (kind.empty()) continue;
      const std::uint64_t size = u(*e, "size");
      Json ev = Json::object();
      ev["t_ns"] = u(*e, "time_us") * 1000;
      ev["kind"] = kind;
      ev["device"] = static_cast<int>(dev);
      ev["addr"] = u(*e, "addr");
      ev["bytes"] = size;
      if (kind == "allocate") ev["requested"] = size;
      ev["stream"] = u(*e, "stream");
      ev["mapped_after"] = std::max(0LL, mapped);
      if (e->contains("frames")) ev["frames"] = (*e)["frames"];
      // Saturating: forged sizes must not overflow (a signed overflow is UB).
      const long long sz = static_cast<long long>(std::min<std::uint64_t>(size, 1ULL << 62));
      if (kind == "map") mapped = mapped < sz - (1LL << 62) ? -(1LL << 62) : mapped - sz;
      if (kind == "unmap") mapped = mapped > (1LL << 62) - sz ? (1LL << 62) : mapped + sz;
      mine.push_back(std::move(ev));
    }
    for (auto e = mine.rbegin(); e != mine.rend(); ++e) items.push_back(std::move(*e));
  }
  return items;
}

}  // namespace

bool is_pytorch_snapshot(const Json& doc) {
  return doc.is_object() && doc.contains("segments") && doc["segments"].is_array() &&
         !doc.contains("schema");
}

Json from_pytorch_snapshot(const Json& pt, const std::string& origin) {
  if (!is_pytorch_snapshot(pt)) {
    throw CliError(kMalformed, origin + ": not a PyTorch memory snapshot (no \"segments\" list)");
  }
  try {
    return convert(pt, origin);
  } catch (const Json::exception& e) {
    // A field of another kind than PyTorch writes (a number for a name, ...).
    throw CliError(kMalformed, origin + ": malformed PyTorch snapshot: " + e.what());
  }
}

namespace {

Json convert(const Json& pt, const std::string& origin) {
  std::map<int, DeviceParts> parts;
  for (const Json& seg : pt["segments"]) {
    if (!seg.is_object()) throw CliError(kMalformed, origin + ": a segment is not a dict");
    const int device = checked_device(u(seg, "device"), origin);
    parts[device].regions.push_back(region_of(seg, parts[device], origin));
  }
  const Json traces = pt.value("device_traces", Json::array());
  if (traces.is_array()) {
    // A device with a trace but no segment left (all freed) is a device too;
    // empty traces are not.
    for (std::size_t dev = 0; dev < traces.size(); ++dev) {
      if (traces[dev].is_array() && !traces[dev].empty()) parts[checked_device(dev, origin)];
    }
  }
  Json s = Json::object();
  s["schema"] = vmm::kSnapshotSchema;
  s["version"] = vmm::kSnapshotSchemaVersion;
  s["detail"] = "full";
  s["reason"] = "pytorch";
  s["time_unix_ns"] = 0;
  s["source"] = "pytorch";
  s["process"] = Json{{"pid", 0}, {"host", ""}, {"command_line", Json::array()}};
  Json devices = Json::array();
  for (auto& [device, p] : parts) devices.push_back(device_of(device, p));
  s["devices"] = std::move(devices);
  Json items = events_of(traces, parts);
  s["events"] = Json{{"capacity", items.size()},
                     {"recorded", items.size()},
                     {"lost", 0},
                     {"allocation_events", true},
                     {"items", std::move(items)}};
  if (pt.contains("allocator_settings")) s["pytorch_allocator_settings"] = pt["allocator_settings"];
  return s;
}

}  // namespace

}  // namespace vmmctl
