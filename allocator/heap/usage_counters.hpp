// UsageCounters: the heap's live bytes, requested bytes and blocks, per size
// kind (small, large), with their peaks and running totals, counted without
// a shared write on the hot path.
//
// Each thread keeps its own counts (a Local, in its thread cache): per size
// kind and quantity, `in` (the sum of its increases: allocations) and `out`
// (the sum of its decreases: frees, plus what it moved into the totals), so
// that in - out is its unpublished delta. An allocation adds to `in`, a free
// to `out`: one owner-only relaxed store per quantity (bytes, requested,
// blocks), no read-modify-write. The delta moves into the shared totals (out
// becomes in) when the thread's bytes or requested bytes reach kPublishBytes
// or its blocks kPublishBlocks (over both kinds), as soon as one would go
// below zero (the thread frees blocks another thread allocated), and when
// the thread's cache is handed back, which also moves its `in` sums.
//
// Peaks: an allocation compares the thread's deltas with its view's slack
// (how far each figure it sees may rise before it passes a peak, as of the
// shared figures' generation, which every publish, reset and demand reading
// advances). So a thread that allocates and frees from its cache reads one
// shared word (the generation) and writes only its own cache lines; the
// shared peaks are written only when one rises. (With every pair writing
// shared atomics, 8 threads made fewer pairs per second together than one
// thread alone; reading the shared figures and peaks on every allocation
// made a pair 5-20 ns slower on the host backend, depending on where the
// lines fell.)
//
// What is exact:
//   - the current figures and the running totals (Heap::usage_now: the
//     published figures plus every Local's): exact whenever no thread is in
//     the middle of an allocation or free. Totals are sums of increases
//     since the heap was made (freed = total - current); they wrap at 2^64.
//   - the peaks (of each kind and of the sum), for one thread: it raises
//     them with the totals plus its own deltas, which is then the whole.
//   - with several threads, each raises the peaks with what it sees (the
//     totals plus its own deltas). No delta is below zero, so that is never
//     more than the real figure: no peak is counted high. A peak reached by
//     several threads' unpublished deltas at once is counted short by at most
//     kPublishBytes (bytes, requested bytes) or kPublishBlocks (blocks) per
//     other thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "allocator/heap/size_classes.hpp"

namespace vmm::heap {

class UsageCounters {
 public:
  // A thread's bytes (or requested bytes) past this over both kinds move
  // into the totals. Above the largest block that commonly cycles through a
  // thread cache, so a hot loop of pairs never publishes.
  static constexpr std::int64_t kPublishBytes = std::int64_t{1} << 30;
  // Likewise for its live blocks (a thread that keeps allocating small
  // blocks publishes once per this many).
  static constexpr std::int64_t kPublishBlocks = 1024;

  // What is counted: rounded bytes, requested bytes, blocks.
  enum Quantity : int { kBytes = 0, kRequested = 1, kBlocks = 2 };
  static constexpr int kQuantities = 3;
  // Figures are kept per size kind (SizeKind's value); this index is their sum.
  static constexpr int kAll = kSizeKinds;
  static_assert(kSizeKinds == 2, "the counters take a size kind's other as 1 - kind");

  // One thread's counts: written by that thread only (relaxed loads and
  // stores, no read-modify-write), read by anyone. A line per size kind,
  // and the owner's view of the shared peaks.
  struct Local {
    struct alignas(64) Kind {
      std::atomic<std::uint64_t> in[kQuantities]{};
      std::atomic<std::uint64_t> out[kQuantities]{};
    };
    // How far this thread's deltas may rise before a figure it sees passes
    // a peak: each peak (or a higher value this thread raised it to) less
    // the published figure, as of `generation`. Owner only.
    struct alignas(64) View {
      std::uint64_t generation = ~std::uint64_t{0};  // matches none at first
      std::int64_t slack[kSizeKinds + 1][kQuantities] = {};
      std::int64_t demand_slack = 0;
    };
    Kind kind[kSizeKinds];
    View view;
  };

  // One size kind's figures, or their sum.
  struct Figures {
    std::int64_t current[kQuantities] = {};  // live now
    std::uint64_t total[kQuantities] = {};   // allocated so far (sums of increases)
  };
  struct Usage {
    Figures of[kSizeKinds + 1];  // small, large, and their sum (kAll)
    // Fills of[kAll] from the kinds.
    void sum_kinds() noexcept;
  };
  struct Peaks {
    std::int64_t of[kSizeKinds + 1][kQuantities] = {};
  };

  // Counts an allocation or a free of a block of `bytes` (rounded) of which
  // `requested` were asked for, through `local`, or straight into the
  // totals if `local` is null (a thread without a cache: exiting). Inline:
  // they run on every thread-cache hit.
  void allocated(Local* local, SizeKind kind, std::int64_t bytes, std::int64_t requested) noexcept;
  void freed(Local* local, SizeKind kind, std::int64_t bytes, std::int64_t requested) noexcept;
  // Moves all of `local` into the totals (its thread is done with it).
  void publish(Local& local) noexcept;
  // The published figures (add each Local's with add_unpublished; then
  // sum_kinds).
  Usage published() const noexcept;
  static void add_unpublished(const Local& local, Usage& into) noexcept;

  Peaks peaks() const noexcept;
  // The peaks become `current`'s figures (reset_peak_stats).
  void reset_peaks(const Usage& current) noexcept;
  // The peak of allocated bytes since the last call (the background trim's
  // demand), restarted from `current`.
  std::size_t take_demand_peak(std::int64_t current) noexcept;

 private:
  using Seen = std::int64_t[kSizeKinds][kQuantities];
  // Moves one kind of `local` into the totals; `seen` gets the new totals.
  void publish_kind(Local::Kind& local, int kind, std::int64_t (&seen)[kQuantities]) noexcept;
  // Kind `kind` and the sum rose to `seen` (per kind).
  void raise(int kind, const Seen& seen) noexcept;
  // An allocation of kind `kind` by `local`'s thread may have passed a peak:
  // raises them with what it sees, then refreshes its view.
  void raise_and_refresh(Local& local, int kind) noexcept;
  // `view` becomes the shared figures now.
  void refresh(Local::View& view) const noexcept;
  // The shared figures changed (a publish, a reset, the demand taken):
  // every thread refreshes its view.
  void changed() noexcept { generation_.fetch_add(1, std::memory_order_release); }
  // allocated() by a thread without a cache, or one whose deltas reached a
  // threshold (publishes them all); freed() by a thread without a cache.
  void allocated_shared(int kind, std::int64_t bytes, std::int64_t requested) noexcept;
  void publish_and_raise(Local& local, int kind) noexcept;
  void freed_shared(int kind, std::int64_t bytes, std::int64_t requested) noexcept;
  // The published current figures.
  alignas(64) std::atomic<std::int64_t> current_[kSizeKinds][kQuantities]{};
  // The sums of increases moved in (threads gone, or counted without a cache).
  alignas(64) std::atomic<std::uint64_t> total_[kSizeKinds][kQuantities]{};
  // Written only when they rise (or are reset).
  alignas(64) std::atomic<std::int64_t> peak_[kSizeKinds + 1][kQuantities]{};
  std::atomic<std::int64_t> demand_peak_{0};
  // Read on every hot allocation, advanced when current_ changes, the peaks
  // are reset or the demand peak is taken: a line of its own.
  alignas(64) std::atomic<std::uint64_t> generation_{0};
};

inline void UsageCounters::allocated(Local* local, SizeKind kind, std::int64_t bytes,
                                     std::int64_t requested) noexcept {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const int k = static_cast<int>(kind);
  const int other = 1 - k;
  if (local == nullptr) {
    allocated_shared(k, bytes, requested);
    return;
  }
  Local::Kind& mine = local->kind[k];
  const Local::Kind& theirs = local->kind[other];
  const std::uint64_t in_b = mine.in[kBytes].load(kRelaxed) + static_cast<std::uint64_t>(bytes);
  const std::uint64_t in_r =
      mine.in[kRequested].load(kRelaxed) + static_cast<std::uint64_t>(requested);
  const std::uint64_t in_n = mine.in[kBlocks].load(kRelaxed) + 1;
  mine.in[kBytes].store(in_b, kRelaxed);
  mine.in[kRequested].store(in_r, kRelaxed);
  mine.in[kBlocks].store(in_n, kRelaxed);
  // This thread's deltas (in - out), of this kind and the other.
  const auto db = static_cast<std::int64_t>(in_b - mine.out[kBytes].load(kRelaxed));
  const auto dr = static_cast<std::int64_t>(in_r - mine.out[kRequested].load(kRelaxed));
  const auto dn = static_cast<std::int64_t>(in_n - mine.out[kBlocks].load(kRelaxed));
  const auto ob = static_cast<std::int64_t>(theirs.in[kBytes].load(kRelaxed) -
                                            theirs.out[kBytes].load(kRelaxed));
  const auto orq = static_cast<std::int64_t>(theirs.in[kRequested].load(kRelaxed) -
                                             theirs.out[kRequested].load(kRelaxed));
  const auto on = static_cast<std::int64_t>(theirs.in[kBlocks].load(kRelaxed) -
                                            theirs.out[kBlocks].load(kRelaxed));
  // An allocation raises only this kind's deltas, and none is below zero:
  // only the thresholds can ask for a publish here.
  if (db + ob >= kPublishBytes || dr + orq >= kPublishBytes || dn + on >= kPublishBlocks) {
    publish_and_raise(*local, k);
    return;
  }
  // What this thread sees (the totals plus its own deltas, never more than
  // the real figures) passes a peak only if its deltas pass the slack of
  // its view: the hot path reads one shared word (the generation) and
  // writes none.
  Local::View& v = local->view;
  if (generation_.load(std::memory_order_acquire) != v.generation) refresh(v);
  const std::int64_t ab = db + ob;
  if (db > v.slack[k][kBytes] || dr > v.slack[k][kRequested] || dn > v.slack[k][kBlocks] ||
      ab > v.slack[kAll][kBytes] || dr + orq > v.slack[kAll][kRequested] ||
      dn + on > v.slack[kAll][kBlocks] || ab > v.demand_slack) {
    raise_and_refresh(*local, k);
  }
}

inline void UsageCounters::freed(Local* local, SizeKind kind, std::int64_t bytes,
                                 std::int64_t requested) noexcept {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const int k = static_cast<int>(kind);
  if (local == nullptr) {
    freed_shared(k, bytes, requested);
    return;
  }
  Local::Kind& mine = local->kind[k];
  const std::uint64_t out_b = mine.out[kBytes].load(kRelaxed) + static_cast<std::uint64_t>(bytes);
  const std::uint64_t out_r =
      mine.out[kRequested].load(kRelaxed) + static_cast<std::uint64_t>(requested);
  const std::uint64_t out_n = mine.out[kBlocks].load(kRelaxed) + 1;
  mine.out[kBytes].store(out_b, kRelaxed);
  mine.out[kRequested].store(out_r, kRelaxed);
  mine.out[kBlocks].store(out_n, kRelaxed);
  // A delta is moved into the totals as soon as it would go below zero
  // (this thread frees more than it allocated: blocks another thread
  // allocated). With no delta below zero, the totals plus one thread's
  // deltas never exceed the real figures, so no peak is counted high.
  if (static_cast<std::int64_t>(mine.in[kBytes].load(kRelaxed) - out_b) < 0 ||
      static_cast<std::int64_t>(mine.in[kRequested].load(kRelaxed) - out_r) < 0 ||
      static_cast<std::int64_t>(mine.in[kBlocks].load(kRelaxed) - out_n) < 0) {
    std::int64_t seen[kQuantities];
    publish_kind(mine, k, seen);
  }
}

}  // namespace vmm::heap
