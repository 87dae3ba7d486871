// libFuzzer target: the live socket's request handling (RequestReader,
// parse_request and error_reply in allocator/observe/live_socket.hpp), which
// takes bytes from any process that can connect.
//
// The input is a client's bytes; its first byte picks how they arrive (in
// pieces of 1 to 128 bytes, and whether the client then closes). The reader
// must end in the same state with the same line whether the bytes come in
// pieces or at once, never hold more than kMaxRequest bytes, and the reply
// to any request - accepted or not - must be valid JSON: an error object
// with a string message for a bad one. No input may crash, hang or trip a
// sanitizer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "allocator/observe/live_socket.hpp"

using vmm::live::RequestReader;

namespace {

RequestReader read_all(std::string_view bytes, std::size_t piece, bool closes) {
  RequestReader r;
  for (std::size_t at = 0; at < bytes.size() && r.state() == RequestReader::State::reading;
       at += piece) {
    r.feed(bytes.substr(at, piece));
  }
  if (closes) r.end_of_input();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = 1 + (data[0] >> 1);  // 1 to 128
  const bool closes = (data[0] & 1) != 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

  const RequestReader whole = read_all(bytes, bytes.size() + 1, closes);
  const RequestReader pieces = read_all(bytes, piece, closes);
  if (whole.state() != pieces.state() || whole.line() != pieces.line()) std::abort();
  if (whole.line().size() > vmm::live::kMaxRequest) std::abort();
  if (whole.state() != RequestReader::State::complete) return 0;

  const vmm::live::Request req = vmm::live::parse_request(whole.line());
  if (req.kind != vmm::live::Request::Kind::bad) return 0;
  const std::string reply = vmm::live::error_reply(vmm::live::kErrorBadRequest, req.message);
  const nlohmann::json j = nlohmann::json::parse(reply, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j["error"] != "bad_request" ||
      !j["message"].is_string()) {
    std::abort();
  }
  return 0;
}
