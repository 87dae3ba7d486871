// Pinned buffers and pipelined copies (see transfer.hpp).
#include "allocator/vm/transfer.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <utility>
#include <vector>

#include "allocator/base/log.hpp"
#include "allocator/vm/fence.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

PinnedBuffer::PinnedBuffer(Backend& backend, std::size_t bytes)
    : backend_(&backend),
      data_(static_cast<std::byte*>(backend.alloc_pinned(bytes))),
      bytes_(bytes) {}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept
    : backend_(o.backend_),
      data_(std::exchange(o.data_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    backend_ = o.backend_;
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void PinnedBuffer::reset() noexcept {
  if (data_ != nullptr) backend_->free_pinned(data_, bytes_);
  data_ = nullptr;
  bytes_ = 0;
}

namespace {

// The copy streams of one copy_runs call; destroyed (after their work) on
// the way out.
class CopyStreams {
 public:
  explicit CopyStreams(Backend& backend) : backend_(backend) {}
  ~CopyStreams() {
    for (Stream s : streams_) backend_.destroy_copy_stream(s);
  }
  CopyStreams(const CopyStreams&) = delete;
  CopyStreams& operator=(const CopyStreams&) = delete;

  Stream get(std::size_t i) {
    while (streams_.size() <= i) streams_.push_back(backend_.create_copy_stream());
    return streams_[i];
  }
  // Waits for everything queued on the streams made so far. Throws the
  // first failure after trying every stream.
  void drain() {
    std::exception_ptr first;
    for (Stream s : streams_) {
      try {
        Fence::record(backend_, s).wait();
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
  }
  // drain() for the error path: a failure is logged, not thrown.
  void drain_quietly() noexcept {
    try {
      drain();
    } catch (const std::exception& e) {
      log(LogLevel::error, "transfer: waiting for queued copies failed: %s", e.what());
    }
  }

 private:
  Backend& backend_;
  std::vector<Stream> streams_;
};

}  // namespace

void copy_runs(Backend& backend, std::span<const CopyRun> runs, std::byte* host,
               CopyDirection direction, SleepReport& report) {
  const auto t0 = std::chrono::steady_clock::now();
  CopyStreams streams(backend);
  std::size_t copied = 0;
  std::size_t next = 0;
  try {
    for (const CopyRun& r : runs) {
      for (std::size_t off = 0; off < r.bytes; off += kTransferPieceBytes) {
        const std::size_t n = std::min(kTransferPieceBytes, r.bytes - off);
        auto* dev = reinterpret_cast<std::byte*>(r.device + off);
        std::byte* h = host + r.host_offset + off;
        const Stream s = streams.get(next++ % kTransferStreams);
        if (direction == CopyDirection::to_host) {
          backend.copy(h, dev, n, s);
        } else {
          backend.copy(dev, h, n, s);
        }
        copied += n;
      }
    }
    streams.drain();
  } catch (...) {
    streams.drain_quietly();
    throw;
  }
  report.copied_bytes += copied;
  report.copy_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace vmm
