// StreamUse implementation. See stream_use.hpp.
#include "allocator/heap/stream_use.hpp"

#include <string>

#include "allocator/base/log.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

StreamUse::PerStream& StreamUse::advance(Stream stream) {
  PerStream& s = streams_[stream];
  if (open_rounds_ != 0) {
    if (s.asked_round == round_) return s;  // asked already in this round
    s.asked_round = round_;
  }
  while (!s.pending.empty()) {
    bool complete = false;
    try {
      complete = s.pending.front().second.completed();
    } catch (const Error& e) {
      log(LogLevel::warn, "stream fence query failed (treated as pending): %s", e.what());
    }
    if (!complete) break;
    s.complete = s.pending.front().first;
    s.pending.pop_front();
  }
  return s;
}

const std::pair<std::uint64_t, Fence>* StreamUse::outstanding(PerStream& s,
                                                              std::uint64_t epoch) const {
  for (const auto& entry : s.pending) {
    if (entry.first > epoch) return &entry;
  }
  return nullptr;
}

bool StreamUse::capturing(Stream stream) {
  if (retired(stream)) return true;  // never touch a destroyed stream's handle
  try {
    return backend_.stream_capturing(stream);
  } catch (const Error& e) {
    log(LogLevel::warn, "stream capture query failed (treated as capturing): %s", e.what());
    return true;
  }
}

const Fence* StreamUse::record(Stream stream, PerStream& s) {
  if (s.retired) return nullptr;  // never touch a destroyed stream's handle
  std::string failure;
  try {
    if (backend_.stream_capturing(stream)) return nullptr;
  } catch (const Error& err) {
    failure = std::string("capture query: ") + err.what();  // maybe no stream: asked below
  }
  // Advance first: frees stamped from now on are not covered by this fence.
  const std::uint64_t e = epoch_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (failure.empty()) {
    try {
      s.pending.emplace_back(e, Fence::record(backend_, stream));
      ++recorded_;
      s.unknown = false;  // a stream (again: CUDA may reuse a handle)
      return &s.pending.back().second;
    } catch (const Error& err) {
      failure = err.what();
    }
  }
  if (!fence_device_instead(stream, s, e, failure.c_str())) {
    // A broken capture, a failing driver: the memory stays unavailable to
    // other streams (never unsafe) until a later fence covers it.
    log(LogLevel::debug, "no fence on stream %p (its frees stay pending): %s",
        static_cast<void*>(stream), failure.c_str());
  }
  return nullptr;
}

bool StreamUse::fence_device_instead(Stream stream, PerStream& s, std::uint64_t e,
                                     const char* why) {
  try {
    if (backend_.stream_exists(stream)) return false;
  } catch (const Error& err) {
    log(LogLevel::debug, "stream %p: existence query failed: %s", static_cast<void*>(stream),
        err.what());
    return false;
  }
  if (!s.unknown) {
    s.unknown = true;
    ++unknown_streams_;
    log(LogLevel::warn,
        "device %d: %p is no stream (never created, or destroyed without vmm_release_stream: "
        "%s); the memory freed on it is reused after a device-wide synchronize instead",
        backend_.device(), static_cast<void*>(stream), why);
  }
  try {
    backend_.synchronize_device();
  } catch (const Error& err) {
    log(LogLevel::warn,
        "device %d: synchronizing for the frees on %p failed (they stay "
        "pending): %s",
        backend_.device(), static_cast<void*>(stream), err.what());
    return false;
  }
  ++device_syncs_;
  if (s.complete < e) s.complete = e;  // every free stamped on it before the synchronize
  return true;
}

void StreamUse::retire(Stream stream) {
  PerStream& s = advance(stream);
  if (s.retired) return;
  record(stream, s);
  s.retired = true;
}

void StreamUse::revive(Stream stream) {
  auto it = streams_.find(stream);
  if (it != streams_.end()) it->second.retired = false;
}

bool StreamUse::retired(Stream stream) const {
  auto it = streams_.find(stream);
  return it != streams_.end() && it->second.retired;
}

bool StreamUse::done(Stream stream, std::uint64_t epoch) {
  return epoch < advance(stream).complete;
}

std::uint64_t StreamUse::frontier(Stream stream) { return advance(stream).complete; }

bool StreamUse::request(Stream stream, std::uint64_t epoch) {
  PerStream& s = advance(stream);
  if (epoch < s.complete) return true;
  if (outstanding(s, epoch) == nullptr) record(stream, s);
  return epoch < s.complete;  // a device-wide synchronize may have stood in
}

bool StreamUse::covered(Stream stream, std::uint64_t epoch, std::uint64_t by) {
  PerStream& s = advance(stream);
  if (epoch < s.complete) return true;
  const auto* fence = outstanding(s, epoch);
  return fence != nullptr && fence->first <= by;
}

std::optional<Fence> StreamUse::fence_for(Stream stream, std::uint64_t epoch) {
  PerStream& s = advance(stream);
  if (epoch < s.complete) return Fence{};
  const auto* pending = outstanding(s, epoch);
  const Fence* f = pending != nullptr ? &pending->second : record(stream, s);
  if (f == nullptr) {
    if (epoch < s.complete) return Fence{};  // a device-wide synchronize stood in
    return std::nullopt;
  }
  return *f;
}

bool StreamUse::wait(Stream stream, std::uint64_t epoch) {
  std::optional<Fence> f = fence_for(stream, epoch);
  if (!f) return false;
  try {
    f->wait();
  } catch (const Error& e) {
    log(LogLevel::warn, "waiting on a stream fence failed: %s", e.what());
    return false;
  }
  forget();
  advance(stream);
  return true;
}

}  // namespace vmm
