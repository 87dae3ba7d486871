// The address-space picture of `vmmctl map`: a device's address ranges as a
// row of character cells. Each cell stands for an equal share of the range
// drawn and shows the most significant state of any byte in it, so a small
// block in a large reservation still shows:
//
//   #  in use       (a live heap block, or a workspace's bytes up to its size)
//   +  cached       (mapped, not in use: free heap blocks, a workspace's mapped tail)
//   ~  pending      (mapped, waiting for its fence to be unmapped)
//   z  asleep       (a sleeping tag's memory: released, restored by wake)
//   -  unmapped     (address range handed out, nothing mapped there)
//   .  reserved     (reserved, not handed out)
//      (space)      not reserved
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/vmmctl/snapshot_source.hpp"

namespace vmmctl {

enum class CellState : int { none = 0, reserved, unmapped, asleep, pending, cached, in_use };
char cell_char(CellState s);

struct Span {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  CellState state = CellState::none;
};

// Every span of one device of a full snapshot: reservations, handed-out
// ranges, mapped chunks, pending unmaps, workspace sizes and heap blocks.
std::vector<Span> device_spans(const Json& device);

// [begin, end) drawn as `width` cells (width >= 1).
std::string render_cells(const std::vector<Span>& spans, std::uint64_t begin, std::uint64_t end,
                         std::size_t width);

// The legend, one "<char> <meaning>" per entry.
std::vector<std::pair<char, std::string>> map_legend();

}  // namespace vmmctl
