// Byte-size helpers shared by every layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

// `value` (a byte count computed in floating point, e.g. a fraction or a
// multiple of device memory) as a size_t: NaN and values below 1 give 0,
// values of 2^64 and more give SIZE_MAX. A plain cast of an out-of-range
// double is undefined behaviour (UBSan's float-cast-overflow).
std::size_t saturating_size(double value) noexcept;

// For people: "512 MiB", "1.50 GiB", "300 B" - the largest binary unit not
// above `bytes`, with two decimals unless the size is a whole number of it.
std::string format_bytes(std::size_t bytes);
// PyTorch's size format (c10's format_size, in its OOM messages): "N bytes"
// up to 1024, then KiB, MiB, GiB with two decimals; GiB is the largest unit.
std::string format_size_like_pytorch(std::size_t bytes);

// Sizes in VMMALLOC_CONF's grammar: an integer with an optional binary suffix
// K, M, G or T (also KB/KiB, MB/MiB, ... and B; any case), e.g. "2M", "40GiB",
// "4096". No sign, no fraction, no surrounding whitespace. Returns nullopt on
// bad syntax or if the size does not fit in size_t (then sets *overflowed,
// if given, to true; it is set to false otherwise).
std::optional<std::size_t> parse_size(std::string_view text, bool* overflowed = nullptr);

// The inverse of parse_size: the exact size with the largest suffix that
// divides it ("2M", "1536M", "3"); parse_size(format_size(n)) == n.
std::string format_size(std::size_t bytes);

}  // namespace vmm
