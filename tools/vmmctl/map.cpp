// vmmctl map: each device's address space as rows of cells (address_map.hpp):
// one row per reservation, then one row per region scaled to that region,
// so a small region is as readable as a large one.
#include <algorithm>
#include <string>

#include "tools/vmmctl/address_map.hpp"
#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/text.hpp"

namespace vmmctl {

namespace {

// A region's own spans: its range (handed out), its chunks, what is in use,
// and the pending unmaps inside it.
std::vector<Span> region_spans(const Json& device, const Json& r) {
  std::vector<Span> spans;
  const std::uint64_t base = r["base"];
  const std::uint64_t end = base + r["capacity"].get<std::uint64_t>();
  spans.push_back({base, end, CellState::unmapped});
  const bool asleep = r.value("asleep", false);
  for (const Json& c : r["chunks"]) {
    spans.push_back({c["va"], c["va"].get<std::uint64_t>() + c["bytes"].get<std::uint64_t>(),
                     asleep ? CellState::asleep : CellState::cached});
  }
  if (asleep) {
    // Nothing is mapped: the live blocks are in host memory or dropped. A
    // workspace lists no chunks while asleep; wake maps asleep_bytes back.
    if (r["owner"] == "workspace") {
      spans.push_back({base, base + r.value("asleep_bytes", std::uint64_t{0}), CellState::asleep});
    }
  } else if (r["owner"] == "workspace") {
    spans.push_back({base, base + r["size"].get<std::uint64_t>(), CellState::in_use});
  } else {
    for (const Json& b : r["blocks"]) {
      if (b["state"] != "live") continue;
      spans.push_back({b["addr"], b["addr"].get<std::uint64_t>() + b["size"].get<std::uint64_t>(),
                       CellState::in_use});
    }
  }
  for (const Json& e : device["reclaimer"]["pending"]) {
    for (const Json& m : e["mappings"]) {
      const std::uint64_t va = m["va"];
      if (va >= base && va < end) {
        spans.push_back({va, va + m["bytes"].get<std::uint64_t>(), CellState::pending});
      }
    }
  }
  return spans;
}

std::string region_label(const Json& r) {
  const std::string name = r["name"];
  if (r["owner"] == "workspace") return name.empty() ? "workspace" : "\"" + name + "\"";
  return "heap " + name;
}

}  // namespace

int cmd_map(const Options& o) {
  const Snapshot s = load_snapshot(o.args.empty() ? "" : o.args[0], o.source, "snapshot");
  if (s.doc["detail"] != "full") {
    throw CliError(kError, s.origin + ": a summary snapshot has no regions to map");
  }
  const std::size_t total_width = output_width(Options{});

  // Labels first, so every bar starts in the same column.
  std::vector<std::string> labels;
  for (const Json& d : s.doc["devices"]) {
    for (const Json& r : d["address_space"]["reservations"]) {
      labels.push_back("reservation " + hex(r["base"]) + " " + bytes_text(r["bytes"]));
    }
    for (const Json& r : d["regions"]) {
      labels.push_back(r["id"].get<std::string>() + " " + region_label(r) + " " +
                       bytes_text(r["capacity"]));
    }
  }
  std::size_t label_width = 0;
  for (const std::string& l : labels) label_width = std::max(label_width, l.size());
  // --width gives the cells per bar; else the bars fill the terminal.
  const std::size_t bar =
      o.width != 0 ? o.width
                   : std::max<std::size_t>(
                         16, total_width > label_width + 6 ? total_width - label_width - 6 : 16);

  Json jdevices = Json::array();
  std::string out;
  for (const Json& d : s.doc["devices"]) {
    const Json& t = d["totals"];
    out += "device " + std::to_string(d["device"].get<int>()) + " (" +
           d["backend"].get<std::string>() + "): " + bytes_text(t["reserved_va_bytes"]) +
           " reserved, " + bytes_text(t["mapped_bytes"]) + " mapped, " +
           bytes_text(t["in_use_bytes"]) + " in use, " + bytes_text(t["cached_bytes"]) +
           " cached, " + bytes_text(t["pending_bytes"]) + " pending\n";
    const std::vector<Span> spans = device_spans(d);
    Json jres = Json::array();
    for (const Json& r : d["address_space"]["reservations"]) {
      const std::uint64_t base = r["base"];
      const std::uint64_t bytes = r["bytes"];
      const std::string cells = render_cells(spans, base, base + bytes, bar);
      std::string label = "reservation " + hex(base) + " " + bytes_text(bytes);
      label.resize(label_width, ' ');
      out += "  " + label + " [" + cells + "]\n";
      jres.push_back(Json{{"base", base}, {"bytes", bytes}, {"cells", cells}});
    }
    Json jreg = Json::array();
    for (const Json& r : d["regions"]) {
      const std::uint64_t base = r["base"];
      const std::uint64_t bytes = r["capacity"];
      const std::string cells = render_cells(region_spans(d, r), base, base + bytes, bar);
      std::string label =
          r["id"].get<std::string>() + " " + region_label(r) + " " + bytes_text(bytes);
      label.resize(label_width, ' ');
      out += "  " + label + " [" + cells + "]\n";
      jreg.push_back(Json{{"id", r["id"]},
                          {"owner", r["owner"]},
                          {"name", r["name"]},
                          {"base", base},
                          {"bytes", bytes},
                          {"cells", cells}});
    }
    jdevices.push_back(Json{{"device", d["device"]},
                            {"backend", d["backend"]},
                            {"reservations", std::move(jres)},
                            {"regions", std::move(jreg)}});
  }
  if (s.doc["devices"].empty()) out += "no device in use\n";
  std::string legend = "legend:";
  Json jlegend = Json::array();
  for (const auto& [ch, meaning] : map_legend()) {
    legend += std::string("  ") + ch + " " + meaning;
    jlegend.push_back(Json{{"char", std::string(1, ch)}, {"meaning", meaning}});
  }
  out += legend + "\n";

  if (o.json) {
    emit(o, Json{{"width", bar}, {"legend", std::move(jlegend)}, {"devices", std::move(jdevices)}}
                    .dump() +
                "\n");
  } else {
    emit(o, out);
  }
  return kOk;
}

}  // namespace vmmctl
