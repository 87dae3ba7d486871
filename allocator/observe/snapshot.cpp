// Snapshot JSON: built from the registry (allocator/record/inspect_registry.hpp)
// and each layer's describe() views with nlohmann_json, keys in a fixed
// order; the events, by far the largest part, are written straight to text
// (append_event) in batches by SnapshotText. docs/snapshot.md documents
// every field; kSnapshotSchemaVersion changes whenever a field changes
// meaning or goes away (adding fields does not change it).
#include "allocator/observe/snapshot.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <system_error>

#include "allocator/heap/heap.hpp"
#include "allocator/observe/private_file.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/record/inspect_registry.hpp"
#include "allocator/record/snapshot_views.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/vm/region.hpp"
#include "vmmalloc/errors.hpp"

#ifndef VMMALLOC_VERSION_STRING
#define VMMALLOC_VERSION_STRING "unknown"
#endif

namespace vmm {

namespace {

using Json = nlohmann::ordered_json;

std::string read_file(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

Json process_json() {
  Json p = Json::object();
  p["pid"] = static_cast<long>(::getpid());
  p["uid"] = static_cast<unsigned long>(::geteuid());
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  p["executable"] = n > 0 ? std::string(exe, static_cast<std::size_t>(n)) : std::string();
  Json args = Json::array();
  const std::string cmdline = read_file("/proc/self/cmdline");
  for (std::size_t start = 0; start < cmdline.size();) {
    std::size_t end = cmdline.find('\0', start);
    if (end == std::string::npos) end = cmdline.size();
    args.push_back(cmdline.substr(start, end - start));
    start = end + 1;
  }
  p["command_line"] = std::move(args);
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  p["host"] = std::string(host);
  return p;
}

Json config_json(const Config& c) {
  Json j = Json::object();
  const std::string text = c.to_string();
  j["text"] = text;
  Json options = Json::object();
  for (std::size_t start = 0; start <= text.size();) {
    std::size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string pair = text.substr(start, end - start);
    const std::size_t colon = pair.find(':');
    if (colon != std::string::npos) options[pair.substr(0, colon)] = pair.substr(colon + 1);
    start = end + 1;
  }
  j["options"] = std::move(options);
  return j;
}

Json chunk_json(const ChunkView& c) {
  return Json{{"va", c.va}, {"bytes", c.bytes}, {"alias", c.alias}};
}

Json range_json(const VaRange& r) { return Json{{"base", r.base}, {"bytes", r.bytes}}; }

const char* block_state_name(BlockView::State s) {
  switch (s) {
    case BlockView::State::live:
      return "live";
    case BlockView::State::cached:
      return "cached";
    case BlockView::State::free:
      return "free";
  }
  return "?";
}

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

template <typename T>
void append_number(std::string& out, T v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_field(std::string& out, const char* key, std::uint64_t v) {
  out += ",\"";
  out += key;
  out += "\":";
  append_number(out, v);
}

// One event as JSON, written directly: the same text nlohmann would write
// for its object (keys in this order), without building one per event
// (a ring of 1 Mi events as JSON trees took ~400 MB).
void append_event(std::string& out, const Event& e) {
  out += "{\"t_ns\":";
  append_number(out, e.time_ns);
  out += ",\"kind\":\"";
  out += event_kind_name(e.kind);  // a fixed ASCII name
  out += "\",\"device\":";
  append_number(out, e.device);
  append_field(out, "addr", e.addr);
  append_field(out, "bytes", e.bytes);
  switch (e.kind) {
    case EventKind::allocate:
      append_field(out, "requested", e.detail);
      append_field(out, "stream", e.stream);
      break;
    case EventKind::free:
      append_field(out, "stream", e.stream);
      break;
    case EventKind::map:
    case EventKind::unmap:
      append_field(out, "chunks", e.detail);
      break;
    case EventKind::grow:
    case EventKind::shrink:
      append_field(out, "previous", e.detail);
      break;
    case EventKind::oom:
      append_field(out, "stream", e.stream);
      out += e.detail != 0 ? ",\"workspace\":true" : ",\"workspace\":false";
      break;
  }
  out += ",\"mapped_after\":";
  append_number(out, e.mapped_after);
  out += '}';
}

// One device context, with the heaps and workspace regions registered on it.
Json device_json(DeviceContext& ctx, const std::vector<const Heap*>& heaps,
                 const std::vector<inspect::RegisteredRegion>& regions, bool full) {
  Backend& backend = ctx.backend();
  Json d = Json::object();
  d["device"] = ctx.device();
  d["backend"] = backend.name();
  d["granularity"] = backend.granularity();

  std::vector<HeapView> heap_views;
  for (const Heap* h : heaps) heap_views.push_back(h->describe(full));
  std::size_t device_total = 0;
  for (const HeapView& v : heap_views) device_total = std::max(device_total, v.device_total_bytes);
  if (device_total != 0) {
    d["total_bytes"] = device_total;
  } else {
    d["total_bytes"] = nullptr;
  }
  d["config"] = ctx.config().to_string();

  // Workspaces: read each region once.
  struct WorkspaceRead {
    const inspect::RegisteredRegion* reg;
    RegionInfo info;
    std::size_t capacity;
  };
  std::vector<WorkspaceRead> workspaces;
  for (const inspect::RegisteredRegion& r : regions) {
    workspaces.push_back({&r, r.region->info(), r.region->capacity()});
  }

  const Reclaimer::Accounting acct = ctx.reclaimer().accounting();
  const std::vector<std::size_t> cached_counts = ctx.pool().cached_counts();
  const std::vector<std::size_t>& classes = ctx.pool().chunk_classes();
  const AddressSpaceStats va = ctx.address_space().stats();

  // Totals (docs/snapshot.md#totals).
  std::size_t heap_mapped = 0, heap_allocated = 0, ws_mapped = 0, ws_size = 0;
  for (const HeapView& v : heap_views) {
    heap_mapped += v.stats.mapped_bytes;
    heap_allocated += v.stats.allocated_bytes;
  }
  for (const WorkspaceRead& w : workspaces) {
    ws_mapped += w.info.mapped_bytes;
    ws_size += w.info.size;
  }
  Json totals = Json::object();
  totals["in_use_bytes"] = heap_allocated + ws_size;
  totals["mapped_bytes"] = heap_mapped + ws_mapped;
  totals["cached_bytes"] =
      acct.pool.cached_bytes + (heap_mapped > heap_allocated ? heap_mapped - heap_allocated : 0);
  totals["pending_bytes"] = acct.reclaimer.pending_bytes;
  totals["physical_bytes"] = acct.pool.created_bytes;
  totals["reserved_va_bytes"] = va.reserved_bytes;
  totals["heap_allocated_bytes"] = heap_allocated;
  totals["heap_mapped_bytes"] = heap_mapped;
  totals["workspace_size_bytes"] = ws_size;
  totals["workspace_mapped_bytes"] = ws_mapped;
  totals["va_mapped_bytes"] = events::mapped_bytes(ctx.device());
  totals["workspaces"] = workspaces.size();
  std::size_t segments = 0;
  for (const HeapView& v : heap_views) segments += v.segments.size();
  totals["heap_segments"] = segments;
  d["totals"] = std::move(totals);

  if (heap_views.empty()) {
    d["counters"] = nullptr;
  } else {
    Json counters = Json::object();
    // Keys and order from VMM_ALLOCATOR_STATS (docs/snapshot.md lists the same).
    for (const AllocatorStatField& f : kAllocatorStatFields) {
      std::uint64_t sum = 0;
      for (const HeapView& v : heap_views) sum += f.value(v.stats);
      counters[f.snapshot_key] = sum;
    }
    d["counters"] = std::move(counters);
  }

  Json pool = Json::object();
  pool["chunk_classes"] = classes;
  pool["cache_limit"] = ctx.pool().cache_limit();
  pool["memory_cap"] = acct.pool.memory_cap_bytes;
  pool["created_bytes"] = acct.pool.created_bytes;
  pool["acquired_bytes"] = acct.pool.acquired_bytes;
  pool["cached_bytes"] = acct.pool.cached_bytes;
  pool["peak_created_bytes"] = acct.pool.peak_created_bytes;
  pool["creates"] = acct.pool.creates;
  pool["releases"] = acct.pool.releases;
  pool["cache_hits"] = acct.pool.cache_hits;
  Json cached = Json::array();
  for (std::size_t i = 0; i < classes.size() && i < cached_counts.size(); ++i) {
    if (cached_counts[i] != 0)
      cached.push_back(Json{{"bytes", classes[i]}, {"count", cached_counts[i]}});
  }
  pool["cached_chunks"] = std::move(cached);
  d["pool"] = std::move(pool);

  Json space = Json::object();
  space["reserved_bytes"] = va.reserved_bytes;
  space["allocated_bytes"] = va.allocated_bytes;
  space["reservation_size"] = va.reservation_size;
  space["reservation_count"] = va.reservations;
  if (full) {
    Json list = Json::array();
    for (const ReservationView& r : ctx.address_space().describe()) {
      Json free = Json::array();
      for (const VaRange& f : r.free) free.push_back(range_json(f));
      list.push_back(Json{{"base", r.range.base},
                          {"bytes", r.range.bytes},
                          {"dedicated", r.dedicated},
                          {"allocated_bytes", r.allocated_bytes},
                          {"free", std::move(free)}});
    }
    space["reservations"] = std::move(list);
  }
  d["address_space"] = std::move(space);

  Json reclaimer = Json::object();
  reclaimer["pending_bytes"] = acct.reclaimer.pending_bytes;
  reclaimer["pending_entries"] = acct.reclaimer.pending_entries;
  reclaimer["reclaimed_entries"] = acct.reclaimer.reclaimed_entries;
  reclaimer["reclaimed_bytes"] = acct.reclaimer.reclaimed_bytes;
  reclaimer["cancelled_entries"] = acct.reclaimer.cancelled_entries;
  reclaimer["failures"] = acct.reclaimer.failures;
  if (full) {
    Json pending = Json::array();
    for (const ReclaimView& r : ctx.reclaimer().describe()) {
      Json fences = Json::array();
      for (bool complete : r.fences_complete) fences.push_back(Json{{"complete", complete}});
      Json maps = Json::array();
      for (const ChunkView& c : r.mappings) maps.push_back(chunk_json(c));
      Json entry = Json::object();
      entry["ticket"] = r.ticket;
      entry["bytes"] = r.bytes;
      entry["in_progress"] = r.in_progress;
      entry["fences"] = std::move(fences);
      entry["mappings"] = std::move(maps);
      if (r.range.empty()) {
        entry["range"] = nullptr;
      } else {
        entry["range"] = range_json(r.range);
      }
      pending.push_back(std::move(entry));
    }
    reclaimer["pending"] = std::move(pending);
  }
  d["reclaimer"] = std::move(reclaimer);

  if (!heap_views.empty()) {
    Json heap = Json::object();
    std::vector<PoolId> pools;
    std::uint64_t fences = 0;
    std::size_t capturing = 0;
    for (const HeapView& v : heap_views) {
      pools.insert(pools.end(), v.graph_pools.begin(), v.graph_pools.end());
      fences += v.fences_recorded;
      capturing += v.capturing_streams;
    }
    heap["heaps"] = heap_views.size();
    heap["graph_pools"] = pools;
    heap["capturing_streams"] = capturing;
    heap["fences_recorded"] = fences;
    d["heap"] = std::move(heap);
  } else {
    d["heap"] = nullptr;
  }

  if (full) {
    Json list = Json::array();
    for (const WorkspaceRead& w : workspaces) {
      Json r = Json::object();
      r["id"] = "workspace:" + std::to_string(w.reg->id);
      r["owner"] = "workspace";
      r["name"] = w.reg->name;
      r["base"] = w.info.range.base;
      r["capacity"] = w.capacity;
      r["reserved_bytes"] = w.info.range.bytes;
      r["size"] = w.info.size;
      r["mapped_bytes"] = w.info.mapped_bytes;
      r["in_use_bytes"] = w.info.size;
      Json chunks = Json::array();
      for (const Mapping& m : w.info.chunks)
        chunks.push_back(chunk_json({m.va, m.chunk.bytes, m.alias}));
      r["chunks"] = std::move(chunks);
      r["pending_reclaims"] = w.info.pending.size();
      r["tag"] = w.info.tag != 0 ? tag_name(w.info.tag) : "";
      r["asleep"] = w.info.asleep;
      r["asleep_bytes"] = w.info.asleep_bytes;
      list.push_back(std::move(r));
    }
    for (const HeapView& v : heap_views) {
      for (const SegmentView& s : v.segments) {
        Json r = Json::object();
        r["id"] = "heap:" + hex(s.range.base);
        r["owner"] = "heap";
        r["name"] = s.small ? "small" : "large";
        r["base"] = s.range.base;
        r["capacity"] = s.range.bytes;
        r["reserved_bytes"] = s.range.bytes;
        r["pool"] = s.pool;
        r["tag"] = s.tag;
        r["asleep"] = s.asleep;
        std::size_t mapped = 0, in_use = 0, asleep = 0;
        Json chunks = Json::array();
        for (const ChunkView& c : s.chunks) {
          (s.asleep ? asleep : mapped) += c.bytes;
          Json cj = chunk_json(c);
          cj["asleep"] = s.asleep;
          chunks.push_back(std::move(cj));
        }
        Json blocks = Json::array();
        for (const BlockView& b : s.blocks) {
          if (b.state == BlockView::State::live) in_use += b.size;
          Json bj = Json::object();
          bj["addr"] = b.addr;
          bj["size"] = b.size;
          bj["requested"] = b.requested;
          bj["stream"] = b.stream;
          bj["state"] = block_state_name(b.state);
          bj["other_streams"] = b.other_streams;
          bj["neutral"] = b.neutral;
          bj["pool"] = b.pool;
          blocks.push_back(std::move(bj));
        }
        r["mapped_bytes"] = mapped;
        r["asleep_bytes"] = asleep;
        r["in_use_bytes"] = in_use;
        r["chunks"] = std::move(chunks);
        r["blocks"] = std::move(blocks);
        r["pending_reclaims"] = s.pending_unmaps;
        list.push_back(std::move(r));
      }
    }
    d["regions"] = std::move(list);
  }
  return d;
}

std::uint64_t now_unix_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// The whole snapshot but its events' items, which are left an empty array
// (the document's last value) for SnapshotText to fill in as text.
Json snapshot_document(std::string_view reason, SnapshotDetail detail,
                       const EventRing::Contents& ring) {
  const bool full = detail == SnapshotDetail::full;
  Json s = Json::object();
  s["schema"] = kSnapshotSchema;
  s["version"] = kSnapshotSchemaVersion;
  s["detail"] = full ? "full" : "summary";
  s["reason"] = std::string(reason);
  s["time_unix_ns"] = now_unix_ns();
  s["library"] = Json{{"version", VMMALLOC_VERSION_STRING}};
  s["process"] = process_json();
  if (const Config* c = process_observability_config()) {
    s["config"] = config_json(*c);
  } else {
    s["config"] = nullptr;
  }

  Json devices = Json::array();
  inspect::visit([&](const inspect::Registered& reg) {
    for (DeviceContext* ctx : reg.contexts) {
      std::vector<const Heap*> heaps;
      for (const Heap* h : reg.heaps) {
        if (&h->context() == ctx) heaps.push_back(h);
      }
      std::vector<inspect::RegisteredRegion> regions;
      for (const inspect::RegisteredRegion& r : reg.regions) {
        if (&r.region->context() == ctx) regions.push_back(r);
      }
      devices.push_back(device_json(*ctx, heaps, regions, full));
    }
  });
  s["devices"] = std::move(devices);

  Json ev = Json::object();
  ev["capacity"] = events::ring().capacity();
  ev["recorded"] = ring.recorded;
  ev["lost"] = ring.lost;
  ev["allocation_events"] = events::allocation_events_on();
  if (full) ev["items"] = Json::array();
  s["events"] = std::move(ev);
  return s;
}

}  // namespace

SnapshotText::SnapshotText(std::string_view reason, SnapshotDetail detail) {
  EventRing::Contents ring = events::ring().read();
  // Strings from outside (workspace names, the command line, the host name)
  // may hold bytes that are not UTF-8: replaced, rather than failing the dump.
  head_ =
      snapshot_document(reason, detail, ring).dump(-1, ' ', false, Json::error_handler_t::replace);
  if (detail != SnapshotDetail::full) return;
  // The document ends with its (empty) event list: "items":[]}}. Keep the
  // '[' and write the closing brackets after the events.
  constexpr std::string_view kEnd = "\"items\":[]}}";
  if (head_.size() < kEnd.size() ||
      head_.compare(head_.size() - kEnd.size(), kEnd.size(), kEnd) != 0) {
    std::abort();  // snapshot_document's last key changed: fix this with it
  }
  head_.resize(head_.size() - 3);
  events_ = std::move(ring.events);
  has_events_ = true;
}

bool SnapshotText::next(std::string& piece) {
  constexpr std::size_t kBatch = 1024;  // ~130 KiB of text
  piece.clear();
  switch (stage_) {
    case Stage::head:
      piece.swap(head_);
      stage_ = has_events_ ? Stage::events : Stage::done;
      return true;
    case Stage::events: {
      const std::size_t end = std::min(events_.size(), next_event_ + kBatch);
      for (; next_event_ < end; ++next_event_) {
        if (next_event_ != 0) piece += ',';
        append_event(piece, events_[next_event_]);
      }
      if (next_event_ == events_.size()) {
        piece += "]}}";
        stage_ = Stage::done;
        std::vector<Event>().swap(events_);
      }
      return true;
    }
    case Stage::done:
      break;
  }
  return false;
}

std::string snapshot_json(std::string_view reason, SnapshotDetail detail) {
  SnapshotText text(reason, detail);
  std::string out, piece;
  while (text.next(piece)) out += piece;
  return out;
}

std::string expand_snapshot_path(std::string_view path) {
  if (path.empty()) throw InvalidArgumentError("snapshot path is empty");
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') {
      out += path[i];
      continue;
    }
    const char next = i + 1 < path.size() ? path[i + 1] : '\0';
    if (next == 'p') {
      out += std::to_string(::getpid());
    } else if (next == '%') {
      out += '%';
    } else {
      throw InvalidArgumentError("snapshot path \"" + std::string(path) +
                                 "\": unknown sequence \"%" + std::string(next ? 1 : 0, next) +
                                 "\" (valid: %p for the process id, %% for %)");
    }
    ++i;
  }
  return out;
}

std::string write_snapshot_file(std::string_view path, std::string_view reason) {
  const std::string target = expand_snapshot_path(path);
  SnapshotText text(reason, SnapshotDetail::full);
  try {
    PrivateFile file(target);
    std::string piece;
    while (text.next(piece)) file.write(piece);
    file.commit();
  } catch (const std::system_error& e) {
    throw InvalidArgumentError("writing the snapshot to " + target + " failed: " + e.what());
  }
  return target;
}

}  // namespace vmm
