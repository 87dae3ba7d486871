// The heap's tuning: chunk sizes of new memory, address spans of growing
// segments, and the background trim's timing. Each value says why it is
// what it is (measured on the host backend with bench/traces unless noted).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "allocator/base/units.hpp"

namespace vmm::heap {

// New physical memory comes in chunks of at most 1/kChunksPerRequest of the
// request and at most kMaxNewChunk. A chunk is the unit of stitching and
// unmapping: where a block ends inside a chunk and its neighbour is free,
// the rest of that chunk can serve only requests that fit in it, so
// smaller chunks pin less. Larger ones mean fewer handles (each costs a
// create, a map and its share of a set-access). Bounding the chunk by the
// request keeps what a block's end can pin proportional to the block.
// Measured (host backend, bench/traces; peak physical / peak live, driver
// calls) with growth at the frontier: all 2 MiB chunks gave 1.0026 /
// 1.0054 / 1.0034 / 1.0192 on gpt2-train / bert-mlm-train / llama-train /
// llama-generate with 19.5k / 22.1k / 27.7k / 2.2k calls; 16 MiB chunks
// 1.0067 / 1.0057 / 1.0089 / 1.075 (llama-generate's 29-80 MiB activations
// pin whole chunks) with 4.7k / 5.2k / 8.6k / 1k calls; this rule 1.0037 /
// 1.0057 / 1.0036 / 1.0192 with 7.2k / 11.4k / 16.6k / 2.2k calls.
inline constexpr std::size_t kMaxNewChunk = 16 * MiB;
inline constexpr std::size_t kChunksPerRequest = 32;
// A regrowth - a request of at least kRegrowthMinRequest whose free tail at
// the frontier (a buffer freed there, as PyTorch's `del buf; buf =
// torch.empty(larger)` leaves it) covers at least 1/kRegrowthTailShare of it -
// maps what it adds in the pool's largest classes (up to 1 GiB) instead: the
// driver's cost grows with the number of handles, not their size, and this
// is the pattern of a workspace grown by free + allocate. Measured (host
// backend): growing one buffer 0.5 -> 5 GiB that way went from 320 handles
// of 16 MiB to one handle per resize (37 in all, 32 of them the first
// 0.5 GiB), while peak physical / peak live on bench/traces moved by at most
// +0.0009 (llama-train 1.0037 -> 1.0046; the others unchanged). Large chunks
// for every request of 64 MiB or more instead raised bert-mlm-train to
// 1.056 and gpt2-train to 1.027: freed, such a block is split by smaller
// requests, and a partly used large chunk can be neither stitched nor
// unmapped.
inline constexpr std::size_t kRegrowthMinRequest = 64 * MiB;
inline constexpr std::size_t kRegrowthTailShare = 2;
// Small pages are stitched from free chunks of at most this size.
inline constexpr std::size_t kMaxSmallPage = 16 * MiB;
// The smallest address range of a growing segment (see Heap::growing_span_locked).
inline constexpr std::size_t kMinFrontierSpan = GiB;
// The general pool's first segment for large blocks spans this fraction of
// an address-space reservation (the device's memory, with the default
// va_reservation_factor of 4): a block at its frontier can then grow into
// fresh memory mapped right behind it for as long as the device has memory,
// instead of being stitched into a new, larger segment (which maps every
// chunk a second time and unmaps the old addresses later). Measured (host
// backend, growing one buffer 0.5 -> 5 GiB by free + allocate, as
// bench/torch_workspace.py's `vmmalloc` system does): 1 GiB first spans
// made 320 creates, 768 maps and 192 unmaps; this rule 320 creates, 320
// maps, no unmap. On bench/traces (host backend, host_device_memory:144G
// like an H200) peak physical / peak live moved by +0.0014 at most
// (gpt2-train 1.0024 -> 1.0038) and driver calls by -13% to +1%.
inline constexpr std::size_t kLargeSpanDivisor = 4;
inline constexpr auto kTrimInterval = std::chrono::milliseconds(20);
// The background trim acts only once free memory has stayed above the limit
// this long: memory freed and reused within a training step is not unmapped
// and recreated every step (on the GPT-2 trace, trimming within a step
// raised peak physical memory by ~0.5%).
inline constexpr auto kTrimDelay = std::chrono::milliseconds(500);
// The background trim keeps what the heap's demand (bytes allocated) peaked
// at over the last kDemandWindow, plus the cache limit: a workload that
// repeats (training steps) keeps its memory mapped from one repetition to
// the next instead of unmapping and recreating it every time. Kept as the
// peaks of kDemandBuckets slices of the window.
inline constexpr auto kDemandWindow = std::chrono::seconds(5);
// kTrimDelay in ticks of the background trim (one per kTrimInterval): a
// thread cache's list unused this long is idle.
inline constexpr std::uint32_t kIdleTicks = static_cast<std::uint32_t>(kTrimDelay / kTrimInterval);
// Before mapping memory, a miss also takes the lists of other threads'
// caches unused for this many ticks (one full tick: at least 20 ms).
inline constexpr std::uint32_t kStealIdleTicks = 2;
// The recent demand is kept as the peaks of this many slices of kDemandWindow.
inline constexpr std::size_t kDemandBuckets = 20;

}  // namespace vmm::heap
