// Size classes. See size_classes.hpp.
#include "allocator/heap/size_classes.hpp"

#include <bit>

#include "allocator/base/units.hpp"

namespace vmm {

std::size_t round_request(std::size_t bytes) noexcept {
  if (bytes <= kBlockAlignment) return kBlockAlignment;
  if (bytes >= kSmallLimit) return align_up(bytes, kLargeAlignment);
  // Sixteen classes per power of two: the step is 1/16 of the power of two
  // below the request, never less than the block alignment.
  std::size_t step = std::bit_floor(bytes) / 16;
  if (step < kBlockAlignment) step = kBlockAlignment;
  const std::size_t rounded = align_up(bytes, step);
  // A class just below the limit rounds up to the limit: that is a large
  // request (still a multiple of the alignment).
  return rounded;
}

}  // namespace vmm
