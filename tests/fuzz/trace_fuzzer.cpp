// libFuzzer target: the allocation-trace reader (tools/trace/trace_reader.hpp).
//
// Any input must either parse into a Trace or throw TraceError whose message
// names the trace ("fuzz:..."); nothing else may escape, and no input may
// crash, hang or trip a sanitizer. A parsed trace must be self-consistent:
//   - events = allocations + frees; allocation k names block k (dense, in
//     order); a free names a block that is live, with its size;
//   - the live figures (peak and final bytes and blocks, largest request,
//     total requested) equal a recount done here in 128-bit arithmetic, so
//     a sum that wrapped around 64 bits is caught;
//   - streams are the distinct stream numbers of the events, ascending;
//   - written back as text (addresses renamed by block index) it parses to
//     the same events and figures.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tools/trace/trace_reader.hpp"

namespace {

using vmm::trace::Event;
using vmm::trace::Op;
using vmm::trace::Trace;

void require(bool ok) {
  if (!ok) std::abort();
}

void check_consistent(const Trace& t) {
  require(t.events.size() == t.blocks + t.frees);
  std::vector<std::uint64_t> size_of;  // by block index
  std::vector<bool> live;
  std::set<std::uint32_t> streams;
  unsigned __int128 live_bytes = 0;
  unsigned __int128 peak_bytes = 0;
  unsigned __int128 total = 0;
  std::size_t live_blocks = 0;
  std::size_t peak_blocks = 0;
  std::uint64_t max_request = 0;
  for (const Event& e : t.events) {
    streams.insert(e.stream);
    if (e.op == Op::alloc) {
      require(e.block == size_of.size());
      require(e.bytes != 0);
      size_of.push_back(e.bytes);
      live.push_back(true);
      live_bytes += e.bytes;
      total += e.bytes;
      max_request = std::max(max_request, e.bytes);
      peak_bytes = std::max(peak_bytes, live_bytes);
      peak_blocks = std::max(peak_blocks, ++live_blocks);
    } else {
      require(e.block < size_of.size());
      require(live[e.block]);
      require(e.bytes == size_of[e.block]);
      live[e.block] = false;
      live_bytes -= e.bytes;
      --live_blocks;
    }
  }
  require(size_of.size() == t.blocks);
  require(t.peak_live_bytes == peak_bytes);
  require(t.peak_live_blocks == peak_blocks);
  require(t.final_live_bytes == live_bytes);
  require(t.final_live_blocks == live_blocks);
  require(t.max_request_bytes == max_request);
  require(t.total_requested_bytes == total);
  require(vmm::trace::peak_live_bytes(t.events) == t.peak_live_bytes);
  require(std::vector<std::uint32_t>(streams.begin(), streams.end()) == t.streams);
  require(!t.header.empty() && t.header[0] == '#');
}

// The trace as text again, each block's address its index. The header line
// ends in CRLF: the reader strips one '\r' from it, so a header that itself
// ends in '\r' comes back whole.
std::string write_back(const Trace& t) {
  std::string text = t.header + "\r\n";
  char line[96];
  for (const Event& e : t.events) {
    std::snprintf(line, sizeof line, "%c %x %llu %u\n", e.op == Op::alloc ? 'a' : 'f', e.block,
                  static_cast<unsigned long long>(e.bytes), e.stream);
    text += line;
  }
  return text;
}

bool same_events(const Trace& a, const Trace& b) {
  if (a.events.size() != b.events.size()) return false;
  for (std::size_t i = 0; i < a.events.size(); ++i) {
    const Event& x = a.events[i];
    const Event& y = b.events[i];
    if (x.op != y.op || x.stream != y.stream || x.block != y.block || x.bytes != y.bytes) {
      return false;
    }
  }
  return a.peak_live_bytes == b.peak_live_bytes && a.final_live_bytes == b.final_live_bytes &&
         a.streams == b.streams && a.header == b.header;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Trace t;
  try {
    t = vmm::trace::parse_trace(text, "fuzz");
  } catch (const vmm::trace::TraceError& e) {
    require(std::string_view(e.what()).substr(0, 5) == "fuzz:");
    return 0;
  }
  check_consistent(t);
  const Trace again = vmm::trace::parse_trace(write_back(t), "fuzz");
  require(same_events(t, again));
  return 0;
}
