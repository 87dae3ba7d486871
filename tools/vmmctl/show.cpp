// vmmctl show: a snapshot as text - the process, then per device its totals,
// counters and physical pool, and tables of regions, chunks, blocks and
// pending reclaims; last the recent events. With --json, the snapshot
// itself (checked; docs/snapshot.md is its schema).
#include <algorithm>
#include <map>
#include <string>

#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/text.hpp"

namespace vmmctl {

namespace {

std::string limited_note(std::size_t shown, std::size_t total, const char* what) {
  if (shown >= total) return "";
  return "    ... " + std::to_string(total - shown) + " more " + what +
         " (--blocks all shows every row)\n";
}

std::string region_label(const Json& r) {
  const std::string name = r["name"];
  if (r["owner"] == "workspace") return name.empty() ? "workspace" : "workspace \"" + name + "\"";
  return "heap " + name;
}

void show_device(const Options& o, const Json& d, bool full, std::string& out) {
  const Json& t = d["totals"];
  out += "\ndevice " + std::to_string(d["device"].get<int>()) + ": " +
         d["backend"].get<std::string>() + " backend, granularity " + bytes_text(d["granularity"]);
  if (d.contains("total_bytes") && d["total_bytes"].is_number()) {
    out += ", device memory " + bytes_text(d["total_bytes"]);
  }
  out += "\n";
  out += "  in use " + bytes_text(t["in_use_bytes"]) + ", mapped " + bytes_text(t["mapped_bytes"]) +
         ", cached " + bytes_text(t["cached_bytes"]) + ", pending " +
         bytes_text(t["pending_bytes"]) + ", physical " + bytes_text(t["physical_bytes"]) +
         ", reserved address space " + bytes_text(t["reserved_va_bytes"]) + "\n";
  out += "  " + std::to_string(t["workspaces"].get<std::uint64_t>()) + " workspace(s), " +
         std::to_string(t["heap_segments"].get<std::uint64_t>()) + " heap segment(s)\n";

  const Json& pool = d["pool"];
  std::string cached;
  for (const Json& c : pool["cached_chunks"]) {
    if (!cached.empty()) cached += ", ";
    cached += std::to_string(c["count"].get<std::uint64_t>()) + " x " + bytes_text(c["bytes"]);
  }
  out += "  physical pool: " + bytes_text(pool["created_bytes"]) + " created, " +
         bytes_text(pool["cached_bytes"]) + " cached" +
         (cached.empty() ? "" : " (" + cached + ")") + ", cache limit " +
         bytes_text(pool["cache_limit"]);
  if (pool.contains("memory_cap") && pool["memory_cap"].is_number() && pool["memory_cap"] != 0) {
    out += ", memory cap " + bytes_text(pool["memory_cap"]);
  }
  out += "\n";

  if (d["counters"].is_object()) {
    out += "  counters:\n";
    Table counters({"COUNTER", "VALUE", ""});
    for (auto it = d["counters"].begin(); it != d["counters"].end(); ++it) {
      const std::uint64_t v = it.value();
      const bool bytes = it.key().find("bytes") != std::string::npos;
      counters.add({it.key(), std::to_string(v), bytes ? "(" + bytes_text(v) + ")" : ""});
    }
    out += counters.str("    ");
  }
  if (!full) return;

  const Json& regions = d["regions"];
  out += "  regions (" + std::to_string(regions.size()) + "):\n";
  if (!regions.empty()) {
    Table table(
        {"ID", "OWNER", "BASE", "CAPACITY", "SIZE", "IN USE", "MAPPED", "CHUNKS", "BLOCKS"});
    for (const Json& r : regions) {
      const bool ws = r["owner"] == "workspace";
      table.add({r["id"], region_label(r), hex(r["base"]), bytes_text(r["capacity"]),
                 ws ? bytes_text(r["size"]) : "-", bytes_text(r["in_use_bytes"]),
                 bytes_text(r["mapped_bytes"]), std::to_string(r["chunks"].size()),
                 ws ? "-" : std::to_string(r["blocks"].size())});
    }
    out += table.str("    ");
  }

  std::size_t chunk_total = 0;
  for (const Json& r : regions) chunk_total += r["chunks"].size();
  if (chunk_total != 0) {
    out += "  chunks (" + std::to_string(chunk_total) + "):\n";
    Table table({"REGION", "ADDRESS", "SIZE"});
    std::size_t shown = 0;
    for (const Json& r : regions) {
      for (const Json& c : r["chunks"]) {
        if (shown == o.blocks) break;
        table.add({r["id"], hex(c["va"]), bytes_text(c["bytes"])});
        ++shown;
      }
    }
    out += table.str("    ") + limited_note(shown, chunk_total, "chunks");
  }

  std::map<std::string, std::size_t> by_state;
  std::size_t block_total = 0;
  for (const Json& r : regions) {
    if (r["owner"] != "heap") continue;
    for (const Json& b : r["blocks"]) {
      ++by_state[b["state"].get<std::string>()];
      ++block_total;
    }
  }
  if (block_total != 0) {
    out += "  blocks (" + std::to_string(block_total) + ": " + std::to_string(by_state["live"]) +
           " live, " + std::to_string(by_state["cached"]) + " cached, " +
           std::to_string(by_state["free"]) + " free):\n";
    Table table({"ADDRESS", "SIZE", "REQUESTED", "STREAM", "STATE", "REGION"});
    std::size_t shown = 0;
    for (const Json& r : regions) {
      if (r["owner"] != "heap") continue;
      for (const Json& b : r["blocks"]) {
        if (shown == o.blocks) break;
        const bool live = b["state"] == "live";
        table.add({hex(b["addr"]), bytes_text(b["size"]), live ? bytes_text(b["requested"]) : "-",
                   hex(b["stream"]), b["state"], r["id"]});
        ++shown;
      }
    }
    out += table.str("    ") + limited_note(shown, block_total, "blocks");
  }

  const Json& pending = d["reclaimer"]["pending"];
  if (!pending.empty()) {
    out += "  pending reclaims (" + std::to_string(pending.size()) + "):\n";
    Table table({"TICKET", "BYTES", "FENCES DONE", "MAPPINGS", "FIRST ADDRESS", "FREES RANGE"});
    for (const Json& e : pending) {
      std::size_t done = 0;
      for (const Json& f : e["fences"]) done += f["complete"].get<bool>() ? 1 : 0;
      const Json& maps = e["mappings"];
      table.add({std::to_string(e["ticket"].get<std::uint64_t>()), bytes_text(e["bytes"]),
                 std::to_string(done) + "/" + std::to_string(e["fences"].size()),
                 std::to_string(maps.size()), maps.empty() ? "-" : hex(maps[0]["va"]),
                 e["range"].is_object()
                     ? hex(e["range"]["base"]) + " " + bytes_text(e["range"]["bytes"])
                     : "-"});
    }
    out += table.str("    ");
  }
}

std::string event_detail(const Json& e) {
  const std::string kind = e["kind"];
  if (kind == "allocate") return "requested " + bytes_text(e.value("requested", 0ull));
  if (kind == "map" || kind == "unmap")
    return std::to_string(e.value("chunks", 0ull)) + " chunk(s)";
  if (kind == "grow" || kind == "shrink") return "from " + bytes_text(e.value("previous", 0ull));
  if (kind == "oom") return e.value("workspace", false) ? "workspace grow" : "allocation";
  return "";
}

}  // namespace

int cmd_show(const Options& o) {
  const Snapshot s = load_snapshot(o.args.empty() ? "" : o.args[0], o.source, "snapshot");
  if (o.json) {
    emit(o, s.doc.dump() + "\n");
    return kOk;
  }
  const Json& doc = s.doc;
  const Json& proc = doc["process"];
  const bool full = doc["detail"] == "full";
  std::string out;
  if (doc.value("source", "") == "pytorch") {
    // Read from PyTorch's own snapshot (pytorch_snapshot.hpp): no process named.
    out = "PyTorch memory snapshot (" + s.origin + "), read as vmmalloc's schema " +
          std::to_string(doc["version"].get<int>()) + "\n";
  } else {
    out = "vmmalloc snapshot of pid " + std::to_string(proc["pid"].get<long>()) + " on " +
          proc["host"].get<std::string>() + " at " + time_text(doc["time_unix_ns"]) + " (" +
          doc["reason"].get<std::string>() + ", " + doc["detail"].get<std::string>() +
          ", schema " + std::to_string(doc["version"].get<int>()) + ")\n";
    std::string cmd;
    for (const Json& a : proc["command_line"]) cmd += (cmd.empty() ? "" : " ") + a.get<std::string>();
    out += "command: " + cmd + "\n";
  }
  if (doc.contains("config") && doc["config"].is_object() && doc["config"].contains("text")) {
    out += "configuration: " + doc["config"]["text"].get<std::string>() + "\n";
  }
  if (doc["devices"].empty()) out += "\nno device in use yet\n";
  for (const Json& d : doc["devices"]) show_device(o, d, full, out);

  const Json& ev = doc["events"];
  out += "\nevents: " + std::to_string(ev["recorded"].get<std::uint64_t>()) + " recorded, " +
         std::to_string(ev["lost"].get<std::uint64_t>()) + " overwritten (ring of " +
         std::to_string(ev["capacity"].get<std::uint64_t>()) + "); allocation events " +
         (ev["allocation_events"].get<bool>() ? "on" : "off") + "\n";
  if (full && !ev["items"].empty() && o.events != 0) {
    const Json& items = ev["items"];
    const std::size_t n = std::min<std::size_t>(o.events, items.size());
    out += "  last " + std::to_string(n) + ":\n";
    Table table({"TIME", "DEVICE", "KIND", "ADDRESS", "BYTES", "DETAIL", "MAPPED AFTER"});
    for (std::size_t i = items.size() - n; i < items.size(); ++i) {
      const Json& e = items[i];
      table.add({time_text(e["t_ns"]), std::to_string(e["device"].get<int>()), e["kind"],
                 hex(e["addr"]), bytes_text(e["bytes"]), event_detail(e),
                 bytes_text(static_cast<std::uint64_t>(
                     std::max<std::int64_t>(e["mapped_after"].get<std::int64_t>(), 0)))});
    }
    out += table.str("    ");
  }
  emit(o, out);
  return kOk;
}

}  // namespace vmmctl
