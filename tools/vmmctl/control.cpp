// vmmctl sleep PID TAGS / vmmctl wake PID TAGS: sleep and wake of a live
// process's tagged memory over its socket (docs/sleep.md). The process's
// own allocator does the work; only its user may ask (the socket's checks).
#include <cstdint>
#include <string>

#include "allocator/observe/live_socket.hpp"  // internal: the request words
#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/text.hpp"

namespace vmmctl {

namespace {

// A sleep or wake may copy many GiB: it gets this long unless --timeout says.
constexpr int kControlTimeoutMs = 600000;

int control(const Options& o, const std::string& request) {
  SourceOptions source = o.source;
  if (!o.timeout_set) source.timeout_ms = kControlTimeoutMs;
  if (!o.source.socket_path && !is_pid_spec(o.args[0])) {
    throw CliError(kUsage, "'" + o.args[0] + "' is not a PID");
  }
  const pid_t pid = o.source.socket_path ? 0 : static_cast<pid_t>(std::stol(o.args[0]));
  const Json reply = control_live(pid, source, request);
  if (o.json) {
    emit(o, reply.dump() + "\n");
    return kOk;
  }
  const Json& r = reply["report"];
  const auto bytes = [&](const char* key) { return bytes_text(r.value(key, std::uint64_t{0})); };
  std::string text = request + ": " + std::to_string(r.value("tags_changed", 0)) +
                     " tag(s) changed; live " + bytes("live_bytes") + ", copied " +
                     bytes("copied_bytes") + ", device memory " +
                     (reply.value("request", "") == "sleep" ? "released " : "mapped ") +
                     bytes("device_bytes") + ", pinned " + bytes("pinned_bytes") + "\n";
  emit(o, text);
  return kOk;
}

const std::string& tags_arg(const Options& o) { return o.args.back(); }

}  // namespace

int cmd_sleep(const Options& o) {
  return control(o, std::string(vmm::live::kRequestSleep) + " " + o.mode + " " + tags_arg(o));
}

int cmd_wake(const Options& o) {
  return control(o, std::string(vmm::live::kRequestWake) + " " + tags_arg(o) +
                        (o.keep_host ? " keep_host" : ""));
}

}  // namespace vmmctl
