// The cells of `vmmctl map`. See address_map.hpp.
#include "tools/vmmctl/address_map.hpp"

#include <algorithm>
#include <cmath>

namespace vmmctl {

char cell_char(CellState s) {
  switch (s) {
    case CellState::none:
      return ' ';
    case CellState::reserved:
      return '.';
    case CellState::unmapped:
      return '-';
    case CellState::asleep:
      return 'z';
    case CellState::pending:
      return '~';
    case CellState::cached:
      return '+';
    case CellState::in_use:
      return '#';
  }
  return '?';
}

std::vector<std::pair<char, std::string>> map_legend() {
  return {{'#', "in use"},
          {'+', "cached (mapped, not in use)"},
          {'~', "pending unmap (waiting for its fence)"},
          {'z', "asleep (released by sleep, restored by wake)"},
          {'-', "address range handed out, unmapped"},
          {'.', "reserved, free"}};
}

std::vector<Span> device_spans(const Json& device) {
  std::vector<Span> spans;
  auto add = [&](std::uint64_t base, std::uint64_t bytes, CellState s) {
    if (bytes != 0) spans.push_back({base, base + bytes, s});
  };
  for (const Json& r : device["address_space"]["reservations"]) {
    add(r["base"], r["bytes"], CellState::reserved);
    // Handed out: the reservation minus its free ranges.
    std::uint64_t cursor = r["base"];
    const std::uint64_t end = r["base"].get<std::uint64_t>() + r["bytes"].get<std::uint64_t>();
    for (const Json& f : r["free"]) {
      const std::uint64_t fb = f["base"];
      if (fb > cursor) add(cursor, fb - cursor, CellState::unmapped);
      cursor = std::max(cursor, fb + f["bytes"].get<std::uint64_t>());
    }
    if (cursor < end) add(cursor, end - cursor, CellState::unmapped);
  }
  for (const Json& e : device["reclaimer"]["pending"]) {
    for (const Json& m : e["mappings"]) add(m["va"], m["bytes"], CellState::pending);
  }
  for (const Json& r : device["regions"]) {
    const CellState held = r.value("asleep", false) ? CellState::asleep : CellState::cached;
    for (const Json& c : r["chunks"]) add(c["va"], c["bytes"], held);
    if (held == CellState::asleep) {
      // Nothing mapped: blocks not drawn in use. A workspace lists no chunks
      // while asleep; wake maps asleep_bytes back from its base.
      if (r["owner"] == "workspace") add(r["base"], r.value("asleep_bytes", std::uint64_t{0}), held);
      continue;
    }
    if (r["owner"] == "workspace") {
      add(r["base"], r["size"], CellState::in_use);
    } else {
      for (const Json& b : r["blocks"]) {
        if (b["state"] == "live") add(b["addr"], b["size"], CellState::in_use);
      }
    }
  }
  return spans;
}

std::string render_cells(const std::vector<Span>& spans, std::uint64_t begin, std::uint64_t end,
                         std::size_t width) {
  std::vector<CellState> cells(width, CellState::none);
  if (end <= begin || width == 0) return std::string(width, ' ');
  const double scale = static_cast<double>(width) / static_cast<double>(end - begin);
  for (const Span& s : spans) {
    if (s.end <= begin || s.begin >= end) continue;
    const std::uint64_t b = std::max(s.begin, begin);
    const std::uint64_t e = std::min(s.end, end);
    auto first = static_cast<std::size_t>(std::floor(static_cast<double>(b - begin) * scale));
    auto last = static_cast<std::size_t>(std::ceil(static_cast<double>(e - begin) * scale));
    first = std::min(first, width - 1);
    last = std::clamp<std::size_t>(last, first + 1, width);
    for (std::size_t i = first; i < last; ++i) cells[i] = std::max(cells[i], s.state);
  }
  std::string out(width, ' ');
  for (std::size_t i = 0; i < width; ++i) out[i] = cell_char(cells[i]);
  return out;
}

}  // namespace vmmctl
