// FreeIndex: see free_index.hpp. Guarded by the heap mutex (the caller's).
#include "allocator/heap/free_index.hpp"

#include <algorithm>

namespace vmm::heap {

void FreeIndex::insert(Block* b) { by_stream_[b->neutral ? neutral_key() : b->stream].insert(b); }

void FreeIndex::erase(Block* b) {
  auto it = by_stream_.find(b->neutral ? neutral_key() : b->stream);
  if (it == by_stream_.end()) return;
  it->second.erase(b);
  if (it->second.empty()) by_stream_.erase(it);
}

std::size_t FreeIndex::largest() const {
  std::size_t out = 0;
  for (const auto& [s, set] : by_stream_) {
    if (!set.empty()) out = std::max(out, (*set.rbegin())->size);
  }
  return out;
}

}  // namespace vmm::heap
