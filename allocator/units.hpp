// Byte-size helpers shared by every layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace vmm {

inline constexpr std::size_t KiB = std::size_t{1} << 10;
inline constexpr std::size_t MiB = std::size_t{1} << 20;
inline constexpr std::size_t GiB = std::size_t{1} << 30;
inline constexpr std::size_t TiB = std::size_t{1} << 40;

constexpr bool is_power_of_two(std::size_t n) { return n != 0 && (n & (n - 1)) == 0; }

// Rounds n up to a multiple of `alignment` (a power of two). The caller
// guarantees no overflow (sizes are checked against capacity first).
constexpr std::size_t align_up(std::size_t n, std::size_t alignment) {
  return (n + alignment - 1) & ~(alignment - 1);
}
constexpr std::size_t align_down(std::size_t n, std::size_t alignment) {
  return n & ~(alignment - 1);
}

// "512 MiB", "1.5 GiB", "300 B".
std::string format_bytes(std::size_t bytes);

}  // namespace vmm
