// FreeIndex: the free blocks of one (graph pool, size kind), for best fit.
//
// Blocks are kept in size order in one list per stream: a block whose users'
// work is not known to be done is under its owner stream, one usable by any
// stream (neutral) under neutral_key(). Best fit looks at the asking
// stream's list, then the neutral one, then the others, at most kScanLimit
// candidates each. Guarded by the heap mutex (the caller's).
#pragma once

#include <cstddef>
#include <map>

#include "allocator/heap/block.hpp"

namespace vmm::heap {

class FreeIndex {
 public:
  // Best fit looks at this many candidates per stream before giving up on it.
  static constexpr std::size_t kScanLimit = 32;

  // The key of the blocks every stream may use (after every real stream).
  static Stream neutral_key() noexcept { return reinterpret_cast<Stream>(~std::uintptr_t{0}); }

  // Under `b->stream`, or neutral_key() if `b->neutral`; those must not
  // change while it is indexed.
  void insert(Block* b);
  void erase(Block* b);

  // The smallest block of at least `size` that `usable(b)` accepts, or
  // nullptr.
  template <class Usable>
  Block* best_fit(Stream stream, std::size_t size, Usable usable) const;
  // f(block): in each stream's list (not the neutral one), the smallest
  // block of at least `size`, if any.
  template <class F>
  void for_each_smallest_fit(std::size_t size, F f) const;
  // f(stream, blocks) for each stream's list, not the neutral one.
  template <class F>
  void for_each_stream_list(F f) const;
  // f(block) for every block, list by list (neutral last).
  template <class F>
  void for_each_block(F f) const;
  // The size of the largest block (0 if none).
  std::size_t largest() const;
  // Moves every block into `dst` under the same key, calling f(block) on
  // each first.
  template <class F>
  void move_into(FreeIndex& dst, F f);

 private:
  std::map<Stream, SizeSet> by_stream_;
};

template <class Usable>
Block* FreeIndex::best_fit(Stream stream, std::size_t size, Usable usable) const {
  Block probe;
  probe.size = size;
  probe.addr = 0;
  Block* best = nullptr;
  auto scan = [&](const SizeSet& set) {
    auto it = set.lower_bound(&probe);
    for (std::size_t k = 0; it != set.end() && k < kScanLimit; ++it, ++k) {
      Block* b = *it;
      if (best != nullptr && b->size >= best->size) return;
      if (usable(b)) {
        best = b;
        return;
      }
    }
  };
  if (auto it = by_stream_.find(stream); it != by_stream_.end()) scan(it->second);
  if (auto it = by_stream_.find(neutral_key()); it != by_stream_.end()) scan(it->second);
  for (const auto& [s, set] : by_stream_) {
    if (s != stream && s != neutral_key()) scan(set);
  }
  return best;
}

template <class F>
void FreeIndex::for_each_smallest_fit(std::size_t size, F f) const {
  Block probe;
  probe.size = size;
  probe.addr = 0;
  for (const auto& [s, set] : by_stream_) {
    if (s == neutral_key()) continue;
    auto it = set.lower_bound(&probe);
    if (it == set.end()) continue;
    f(*it);
  }
}

template <class F>
void FreeIndex::for_each_stream_list(F f) const {
  for (const auto& [s, set] : by_stream_) {
    if (s != neutral_key()) f(s, set);
  }
}

template <class F>
void FreeIndex::for_each_block(F f) const {
  for (const auto& [s, set] : by_stream_) {
    for (Block* b : set) f(b);
  }
}

template <class F>
void FreeIndex::move_into(FreeIndex& dst, F f) {
  for (auto& [s, set] : by_stream_) {
    for (Block* b : set) {
      f(b);
      dst.by_stream_[s].insert(b);
    }
  }
  by_stream_.clear();
}

}  // namespace vmm::heap
