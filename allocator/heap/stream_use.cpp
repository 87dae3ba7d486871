// StreamUse implementation. See stream_use.hpp.
#include "allocator/heap/stream_use.hpp"

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
  if (s.retired || capturing(stream)) return nullptr;
  // Advance first: frees stamped from now on are not covered by this fence.
  const std::uint64_t e = epoch_.fetch_add(1, std::memory_order_seq_cst) + 1;
  try {
    s.pending.emplace_back(e, Fence::record(backend_, stream));
  } catch (const Error& err) {
    // A destroyed stream, a broken capture: the memory stays unavailable to
    // other streams (never unsafe), and the failure is the caller's to see.
    log(LogLevel::debug, "recording a stream fence failed: %s", err.what());
    return nullptr;
  }
  ++recorded_;
  return &s.pending.back().second;
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
  return false;
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
  if (f == nullptr) return std::nullopt;
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
