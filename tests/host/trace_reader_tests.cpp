// The trace reader (tools/trace): parsing, peak live bytes, dense block
// indices, every malformed-input error naming file and line, and reading
// plain and gzip files (zlib or `gzip -dc`, whichever the build uses).
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "tests/common/catch.hpp"
#include "tests/common/temp_dir.hpp"
#include "tools/trace/trace_reader.hpp"

using vmm::test::read_file;
using vmm::test::TempDir;
using vmm::trace::Op;
using vmm::trace::parse_trace;
using vmm::trace::read_trace;
using vmm::trace::TraceError;

namespace {

// The message of the TraceError that parsing `text` throws ("" if none).
std::string error_of(const std::string& text, const std::string& name = "t.trace") {
  try {
    parse_trace(text, name);
  } catch (const TraceError& e) {
    return e.what();
  }
  return "";
}

const char* kSmall =
    "# test trace\n"
    "a 10 100 0\n"
    "a 20 50 1\n"
    "f 10 100 0\n"
    "a 10 200 0\n"   // address reuse: a new block
    "\n"             // blank lines are skipped
    "f 20 50 1\n"
    "a 30 25 2\n";   // left live

}  // namespace

TEST_CASE("trace: parses events, blocks, streams and the live figures", "[trace]") {
  const vmm::trace::Trace t = parse_trace(kSmall, "small.trace");
  CHECK(t.header == "# test trace");
  REQUIRE(t.events.size() == 6);
  CHECK(t.blocks == 4);
  CHECK(t.frees == 2);
  CHECK(t.streams == std::vector<std::uint32_t>{0, 1, 2});
  // Live: 100, 150, 50, 250 (peak), 200, 225.
  CHECK(t.peak_live_bytes == 250);
  CHECK(t.peak_live_blocks == 2);
  CHECK(t.final_live_bytes == 225);
  CHECK(t.final_live_blocks == 2);
  CHECK(t.max_request_bytes == 200);
  CHECK(t.total_requested_bytes == 375);
  CHECK(vmm::trace::peak_live_bytes(t.events) == 250);

  // Blocks are numbered in allocation order; a free names its allocation's.
  CHECK(t.events[0].op == Op::alloc);
  CHECK(t.events[0].block == 0);
  CHECK(t.events[1].block == 1);
  CHECK(t.events[1].stream == 1);
  CHECK(t.events[2].op == Op::free);
  CHECK(t.events[2].block == 0);
  CHECK(t.events[2].bytes == 100);
  CHECK(t.events[3].block == 2);  // same address 10, new block
  CHECK(t.events[3].bytes == 200);
  CHECK(t.events[4].block == 1);
  CHECK(t.events[5].block == 3);
  CHECK(t.events[5].stream == 2);
}

TEST_CASE("trace: tolerates CRLF, tabs and no final newline", "[trace]") {
  const vmm::trace::Trace t = parse_trace("#h\r\na\tff 4096\t3\r\nf ff 4096 3", "x");
  CHECK(t.header == "#h");
  REQUIRE(t.events.size() == 2);
  CHECK(t.peak_live_bytes == 4096);
  CHECK(t.final_live_bytes == 0);
  CHECK(t.streams == std::vector<std::uint32_t>{3});
}

TEST_CASE("trace: a header-only trace is empty, not an error", "[trace]") {
  const vmm::trace::Trace t = parse_trace("# nothing\n", "x");
  CHECK(t.events.empty());
  CHECK(t.peak_live_bytes == 0);
}

TEST_CASE("trace: malformed input names the file and line", "[trace]") {
  CHECK(error_of("") == "t.trace: empty trace (no header line)");
  CHECK(error_of("a 10 100 0\n").rfind("t.trace:1: the first line must be a header", 0) == 0);
  CHECK(error_of("\n# late header\n").rfind("t.trace:1: the first line must be a header", 0) == 0);

  const std::string h = "# h\n";
  CHECK(error_of(h + "a 10 100\n") == "t.trace:2: expected 4 fields (op addr size stream), got 3: 'a 10 100'");
  CHECK(error_of(h + "a 10 100 0 9\n").rfind("t.trace:2: expected 4 fields", 0) == 0);
  CHECK(error_of(h + "a 10 100 0\nx 10 100 0\n") == "t.trace:3: unknown op 'x' (expected 'a' or 'f')");
  CHECK(error_of(h + "a 0x10 100 0\n") == "t.trace:2: bad address '0x10' (hex, no 0x)");
  CHECK(error_of(h + "a zz 100 0\n") == "t.trace:2: bad address 'zz' (hex, no 0x)");
  CHECK(error_of(h + "a 10 1e3 0\n") == "t.trace:2: bad size '1e3' (decimal bytes)");
  CHECK(error_of(h + "a 10 -5 0\n") == "t.trace:2: bad size '-5' (decimal bytes)");
  CHECK(error_of(h + "a 10 99999999999999999999999 0\n").rfind("t.trace:2: bad size", 0) == 0);
  CHECK(error_of(h + "a 10 100 s1\n") == "t.trace:2: bad stream 's1' (decimal)");
  CHECK(error_of(h + "a 10 0 0\n") == "t.trace:2: allocation of 0 bytes");
  // Found by tests/fuzz/trace_fuzzer: the live figures wrapped around 2^64.
  CHECK(error_of(h + "a 10 24863 0\na 20 18446744073709551615 0\n") ==
        "t.trace:3: allocation of 18446744073709551615 bytes takes the trace's total past 2^64 bytes");
  CHECK(error_of(h + "a 10 100 0\n\na 10 5 0\n") ==
        "t.trace:4: allocation at address 10, which is already live (allocated and not freed)");
  CHECK(error_of(h + "f 10 100 0\n") == "t.trace:2: free of address 10, which is not live");
  CHECK(error_of(h + "a 10 100 0\nf 10 100 0\nf 10 100 0\n") ==
        "t.trace:4: free of address 10, which is not live");
  CHECK(error_of(h + "a 10 100 0\nf 10 99 0\n") == "t.trace:3: free of 99 bytes at 10, allocated with 100 bytes");
}

TEST_CASE("trace: reads plain and gzip files alike", "[trace]") {
  TempDir dir("vmm_trace_test");
  const std::string plain = dir.file("small.trace", kSmall);
  const vmm::trace::Trace a = read_trace(plain);
  CHECK(a.name == plain);
  CHECK(a.peak_live_bytes == 250);

  // gzip by magic bytes, whatever the name: compress a copy with gzip(1).
  const std::string copy = dir.file("other.trace", kSmall);
  REQUIRE(std::system(("gzip -n '" + copy + "'").c_str()) == 0);
  const vmm::trace::Trace b = read_trace(copy + ".gz");
  CHECK(b.events.size() == a.events.size());
  CHECK(b.peak_live_bytes == 250);
  CHECK(b.final_live_bytes == 225);
  CHECK(vmm::trace::read_trace_text(copy + ".gz") == kSmall);

  // Errors in a compressed file still name the file and line.
  const std::string bad = dir.file("bad.trace", "# h\na 1 8 0\nf 2 8 0\n");
  REQUIRE(std::system(("gzip -n '" + bad + "'").c_str()) == 0);
  try {
    read_trace(bad + ".gz");
    FAIL("no error");
  } catch (const TraceError& e) {
    CHECK(std::string(e.what()) == bad + ".gz:3: free of address 2, which is not live");
  }
}

TEST_CASE("trace: unreadable, truncated and corrupt files are errors", "[trace]") {
  TempDir dir("vmm_trace_test");
  const std::string missing = dir.path + "/missing.trace";
  try {
    read_trace(missing);
    FAIL("no error");
  } catch (const TraceError& e) {
    CHECK(std::string(e.what()).rfind(missing + ": cannot open", 0) == 0);
  }

  // A gzip file cut short: its data cannot be trusted.
  std::string big = "# big\n";
  for (int i = 0; i < 20000; ++i) big += "a " + std::to_string(i + 1) + " 512 0\n";
  const std::string full = dir.file("big.trace", big);
  REQUIRE(std::system(("gzip -n '" + full + "'").c_str()) == 0);
  const std::string gz = read_file(full + ".gz");
  REQUIRE(gz.size() > 100);
  const std::string cut = dir.file("cut.trace.gz", gz.substr(0, gz.size() / 2));
  try {
    read_trace(cut);
    FAIL("no error");
  } catch (const TraceError& e) {
    CHECK(std::string(e.what()).rfind(cut + ": ", 0) == 0);
    CHECK(std::string(e.what()).find("gzip") != std::string::npos);
  }
  // The whole file reads.
  CHECK(read_trace(full + ".gz").events.size() == 20000);

  // Gzip magic followed by garbage.
  const std::string garbage = dir.file("garbage.trace.gz", std::string("\x1f\x8b\x08\x00garbage-not-deflate", 23));
  CHECK_THROWS_AS(read_trace(garbage), TraceError);
}

TEST_CASE("trace: the stem drops directories and suffixes", "[trace]") {
  CHECK(vmm::trace::trace_stem("/x/y/gpt2-train.trace.gz") == "gpt2-train");
  CHECK(vmm::trace::trace_stem("llama.trace") == "llama");
  CHECK(vmm::trace::trace_stem("plain") == "plain");
}

TEST_CASE("trace: the GPT-2 trace in the repository reads and has its peak", "[trace]") {
  // VMM_SOURCE_DIR is the project root (set for the host suite).
  const std::string path = std::string(VMM_SOURCE_DIR) + "/bench/traces/gpt2-train.trace.gz";
  const vmm::trace::Trace t = read_trace(path);
  CHECK(t.events.size() == 72657);
  CHECK(t.blocks == 36479);
  CHECK(t.frees == 36178);
  CHECK(t.streams == std::vector<std::uint32_t>{0});
  // peak_live_bytes equals the largest running sum of the events.
  CHECK(t.peak_live_bytes == vmm::trace::peak_live_bytes(t.events));
  CHECK(t.peak_live_bytes == 15054703816ULL);
}
