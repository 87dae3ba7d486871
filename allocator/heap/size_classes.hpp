// Request sizes: how a request is rounded and which part of the heap serves
// it. Small requests (below kSmallLimit) are rounded to size classes (at most
// 1/16 apart, so rounding wastes under 6.25%) and packed into 2 MiB pages;
// large ones only to kLargeAlignment inside mapped segments, so rounding
// wastes at most 511 bytes per block.
#pragma once

#include <cstddef>

namespace vmm {

// Every block's address and size are multiples of this.
inline constexpr std::size_t kBlockAlignment = 512;
inline constexpr std::size_t kLargeAlignment = kBlockAlignment;
// Requests below this are small.
inline constexpr std::size_t kSmallLimit = std::size_t{1} << 20;
// Requests above this are refused as absurd (InvalidArgumentError): rounding
// them could overflow.
inline constexpr std::size_t kMaxRequest = std::size_t{1} << 62;

enum class SizeKind : int { small = 0, large = 1 };
inline constexpr int kSizeKinds = 2;

constexpr SizeKind size_kind(std::size_t rounded) {
  return rounded < kSmallLimit ? SizeKind::small : SizeKind::large;
}

// The rounded size of a request of `bytes` (1 <= bytes <= kMaxRequest): a
// small size class, or a multiple of kLargeAlignment.
std::size_t round_request(std::size_t bytes) noexcept;

}  // namespace vmm
