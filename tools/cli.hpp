// Command-line helpers shared by the tools and benchmarks (header-only).
// Sizes use the library's own grammar (allocator/base/units.hpp, that of
// VMMALLOC_CONF): "512M", "1GiB", "4096".
#pragma once

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "allocator/base/units.hpp"  // internal: parse_size is not in the public API

namespace vmm::cli {

// A size argument; throws std::invalid_argument naming the text.
inline std::size_t parse_size(const std::string& text) {
  bool overflowed = false;
  if (const auto n = vmm::parse_size(text, &overflowed)) return *n;
  throw std::invalid_argument(overflowed ? "size too large: '" + text + "'"
                                         : "bad size '" + text + "' (an integer with K, M, G or T)");
}

// Splits a list argument at `sep`, dropping empty items.
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) {
    if (!cur.empty()) out.push_back(cur);
  }
  return out;
}

}  // namespace vmm::cli
