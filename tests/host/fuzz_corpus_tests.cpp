// The fuzzers' seed corpora and regression inputs, replayed by the ordinary
// host suite (any compiler), so an input that once broke a parser is checked
// in every build, not only in the clang fuzzing build.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "allocator/observe/live_socket.hpp"
#include "tests/common/catch.hpp"
#include "tools/trace/trace_reader.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

namespace {

std::vector<std::filesystem::path> inputs_of(const std::string& fuzzer) {
  std::vector<std::filesystem::path> files;
  const std::filesystem::path root = std::filesystem::path(VMM_SOURCE_DIR) / "tests" / "fuzz";
  for (const char* set : {"corpus", "regressions"}) {
    const std::filesystem::path dir = root / set / fuzzer;
    if (!std::filesystem::is_directory(dir)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  }
  return files;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("config: fuzz corpus and regressions parse cleanly", "[config][fuzz]") {
  const std::vector<std::filesystem::path> files = inputs_of("config_fuzzer");
  REQUIRE(files.size() >= 5);
  int parsed = 0;
  int rejected = 0;
  for (const auto& file : files) {
    INFO("input " << file.filename().string());
    const std::string text = read_file(file);
    try {
      const vmm::Config c = vmm::Config::parse(text);
      CHECK(vmm::Config::parse(c.to_string()) == c);
      ++parsed;
    } catch (const vmm::ConfigError& e) {
      CHECK_FALSE(std::string(e.what()).empty());
      ++rejected;
    }
  }
  // The seeds hold both kinds, so both paths are exercised.
  CHECK(parsed > 0);
  CHECK(rejected > 0);
}

TEST_CASE("trace: fuzz corpus and regressions parse or fail cleanly", "[trace][fuzz]") {
  const std::vector<std::filesystem::path> files = inputs_of("trace_fuzzer");
  REQUIRE(files.size() >= 5);
  int parsed = 0;
  int rejected = 0;
  for (const auto& file : files) {
    const std::string name = file.filename().string();
    INFO("input " << name);
    try {
      const vmm::trace::Trace t = vmm::trace::parse_trace(read_file(file), name);
      CHECK(t.events.size() == t.blocks + t.frees);
      CHECK(vmm::trace::peak_live_bytes(t.events) == t.peak_live_bytes);
      CHECK(t.final_live_bytes <= t.peak_live_bytes);
      CHECK(t.peak_live_bytes <= t.total_requested_bytes);
      ++parsed;
    } catch (const vmm::trace::TraceError& e) {
      CHECK(std::string(e.what()).rfind(name + ":", 0) == 0);  // names the trace
      ++rejected;
    }
  }
  CHECK(parsed > 0);
  CHECK(rejected > 0);
}

TEST_CASE("live socket: request fuzz corpus and regressions are answered", "[snapshot][fuzz]") {
  const std::vector<std::filesystem::path> files = inputs_of("live_request_fuzzer");
  REQUIRE(files.size() >= 5);
  int accepted = 0;
  int refused = 0;
  for (const auto& file : files) {
    INFO("input " << file.filename().string());
    const std::string input = read_file(file);
    if (input.empty()) continue;
    // As the fuzzer reads it: the first byte's low bit says the client closes.
    vmm::live::RequestReader reader;
    reader.feed(std::string_view(input).substr(1));
    if ((input[0] & 1) != 0) reader.end_of_input();
    CHECK(reader.line().size() <= vmm::live::kMaxRequest);
    if (reader.state() != vmm::live::RequestReader::State::complete) {
      ++refused;
      continue;
    }
    const vmm::live::Request req = vmm::live::parse_request(reader.line());
    if (req.kind != vmm::live::Request::Kind::bad) {
      ++accepted;
      continue;
    }
    const nlohmann::json reply = nlohmann::json::parse(
        vmm::live::error_reply(vmm::live::kErrorBadRequest, req.message), nullptr, false);
    CHECK(reply.is_object());
    CHECK(reply.value("error", "") == "bad_request");
    ++refused;
  }
  CHECK(accepted > 0);
  CHECK(refused > 0);
}
