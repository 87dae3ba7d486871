// StreamUse: lazy fences for stream-ordered reuse.
//
// A free stamps its block with the current epoch (one atomic load, no driver
// call). Whether the work queued on a stream before that free has completed
// is answered by fences recorded on the stream *later*, and only when someone
// asks: another stream wants the block, or its memory is to be unmapped.
// Recording a fence first advances the epoch, so a fence recorded at epoch E
// covers every free stamped below E on that stream (the free happened, on
// the host, before the fence was recorded; the work queued before the free
// is therefore before the fence in the stream's order).
//
// Streams being captured into a CUDA graph get no fence: recording (and then
// querying) an event on a capturing stream would end the capture. Their
// blocks simply stay unavailable to other streams until the capture ends.
//
// Each completion query is a driver call; Round bounds them to one per
// stream per operation.
//
// A handle that is no stream (never created, or destroyed without
// release_stream) can carry no fence, and its frees would wait forever:
// memory never reused elsewhere, never unmapped. When a fence cannot be
// recorded on a stream that is not capturing and the backend says the
// stream does not exist, the whole device stands in for it: a device-wide
// synchronize (Backend::synchronize_device) completes every free stamped
// on it so far. It blocks the asking thread (with the heap's lock held)
// and is logged at warning level, once per such stream; unknown_streams()
// and device_syncs() count them.
//
// Thread-safety: now() is lock-free; everything else is guarded by the
// caller (the heap's mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>

#include "allocator/backend/backend.hpp"
#include "allocator/vm/fence.hpp"

namespace vmm {

class StreamUse {
 public:
  explicit StreamUse(Backend& backend) : backend_(backend) {}

  // Within a Round, each stream's fences are asked at most once whether they
  // completed (the first question of the round asks the driver; later ones
  // get the same answer): one allocation can look at thousands of freed
  // blocks waiting for the same stream, and each query is a driver call. A
  // fence that completes during the round is seen in the next one, so the
  // answers stay on the safe side. Open one per operation, under the lock
  // that guards this object; rounds may overlap (a thread waiting with the
  // lock released keeps its round open), and every opening asks afresh.
  class Round {
   public:
    explicit Round(StreamUse& use) noexcept : use_(use) {
      ++use_.open_rounds_;
      ++use_.round_;
    }
    ~Round() { --use_.open_rounds_; }
    Round(const Round&) = delete;
    Round& operator=(const Round&) = delete;

   private:
    StreamUse& use_;
  };
  // The next question about any stream asks the driver again (after a wait).
  void forget() noexcept { ++round_; }

  // The epoch to stamp a free with.
  std::uint64_t now() const noexcept { return epoch_.load(std::memory_order_seq_cst); }

  // True once the work queued on `stream` before a free stamped `epoch` has
  // completed (a completed fence covers it). Never records; queries the
  // stream's outstanding fences (a failed query counts as "not yet").
  bool done(Stream stream, std::uint64_t epoch);
  // done(), and if no fence covering `epoch` is outstanding, records one
  // (unless the stream is capturing, or recording fails): a later call can
  // then answer true. Never waits.
  bool request(Stream stream, std::uint64_t epoch);
  // A fence covering `epoch` on `stream` (recorded now if none is
  // outstanding): an empty Fence if the work is already done, nullopt if the
  // stream is capturing or the fence could not be recorded.
  std::optional<Fence> fence_for(Stream stream, std::uint64_t epoch);
  // True if the work before a free stamped `epoch` is done or a fence
  // recorded while now() was at most `by` covers it. Never records.
  bool covered(Stream stream, std::uint64_t epoch, std::uint64_t by);
  // Waits for a fence covering `epoch` (recording one if needed). False if
  // none can be recorded (capturing stream) or the wait failed.
  bool wait(Stream stream, std::uint64_t epoch);

  // The stream is about to be destroyed: records its last fence now (unless
  // capturing) and never records on it again - recording on a destroyed
  // stream is undefined behaviour in CUDA. Frees stamped before the call are
  // covered by that last fence. revive() undoes it (the handle is in use
  // again: CUDA may hand a new stream the same handle).
  void retire(Stream stream);
  void revive(Stream stream);
  bool retired(Stream stream) const;

  // Whether `stream` is being captured (false if the query fails).
  bool capturing(Stream stream);
  // The completion frontier of `stream`: frees stamped below it are done.
  std::uint64_t frontier(Stream stream);

  std::uint64_t fences_recorded() const noexcept { return recorded_; }
  // Handles seen to be no stream, and the device-wide synchronizes that
  // stood in for their fences (see the top).
  std::uint64_t unknown_streams() const noexcept { return unknown_streams_; }
  std::uint64_t device_syncs() const noexcept { return device_syncs_; }

 private:
  struct PerStream {
    std::deque<std::pair<std::uint64_t, Fence>> pending;  // ascending epochs
    std::uint64_t complete = 0;                           // frees stamped below this are done
    bool retired = false;                                 // never record on it again (see retire)
    bool unknown = false;           // seen to be no stream (see the top): warned once
    std::uint64_t asked_round = 0;  // the round its fences were last queried in
  };
  PerStream& advance(Stream stream);
  // The oldest pending (epoch, fence) covering `epoch`, or null.
  const std::pair<std::uint64_t, Fence>* outstanding(PerStream& s, std::uint64_t epoch) const;
  const Fence* record(Stream stream, PerStream& s);
  // No fence could be recorded on `stream` (asked at epoch `e`): if the
  // backend says it is no stream, synchronizes the device and completes
  // every free stamped below `e` on it. True if it did.
  bool fence_device_instead(Stream stream, PerStream& s, std::uint64_t e, const char* why);

  Backend& backend_;
  std::atomic<std::uint64_t> epoch_{1};
  std::unordered_map<Stream, PerStream> streams_;
  std::uint64_t recorded_ = 0;
  std::uint64_t unknown_streams_ = 0;
  std::uint64_t device_syncs_ = 0;
  std::uint64_t round_ = 1;  // see Round
  std::uint32_t open_rounds_ = 0;
};

}  // namespace vmm
