// IPC against hostile or broken peers (docs/ipc.md, "Peers that misbehave"):
// importers that never read or drip their requests, exporters that drip
// their answers or send descriptors that are not sealed memfds of the right
// size, and connections from another user. Each case bounds how long the
// good side waits and checks it keeps serving.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "allocator/ipc/protocol.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/fuzz/ipc_fuzz_input.hpp"
#include "tests/host/ipc_test_util.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/ipc.hpp"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::MiB;
using vmm::WorkspaceExport;
using vmm::WorkspaceImport;
using vmm::test::contains;
using vmm::test::eventually;
using vmm::test::expect_throw;
using vmm::test::open_memfds;
using vmm::test::stream_pair;
using Side = vmm::test::IpcSide;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The bytes of one message as the protocol frames it.
std::vector<char> frame(vmm::ipc::MessageType type, const void* payload, std::size_t bytes) {
  const vmm::ipc::WireHeader h{vmm::ipc::kMagic, vmm::ipc::kVersion,
                               static_cast<std::uint16_t>(type), static_cast<std::uint32_t>(bytes),
                               0};
  std::vector<char> out(sizeof h + bytes);
  std::memcpy(out.data(), &h, sizeof h);
  if (bytes != 0) std::memcpy(out.data() + sizeof h, payload, bytes);
  return out;
}

std::vector<char> sync_request() {
  const std::uint32_t flags = 0;
  return frame(vmm::ipc::MessageType::sync, &flags, sizeof flags);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Sends sync requests on `fd` and never reads the answers, until the other
// end drops the connection (true) or `limit` passes (false).
bool flood_until_dropped(int fd, std::chrono::milliseconds limit) {
  const std::vector<char> request = sync_request();
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    const ssize_t n = ::send(fd, request.data(), request.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return true;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      (void)::poll(&p, 1, 10);
      if ((p.revents & (POLLHUP | POLLERR)) != 0) return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("ipc peers: an importer that never reads is dropped; the others are served",
          "[ipc][ipc_peers]") {
  const int memfds_before = open_memfds();
  Side e("ipc_timeout_ms:200");
  Side i;
  {
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(6 * MiB);
    auto share = std::make_unique<WorkspaceExport>(ws);
    auto [bad, bad_theirs] = stream_pair();
    share->serve(bad);
    // Its answers fill the socket: the exporter's sends to it run out of time.
    CHECK(flood_until_dropped(bad_theirs, 3000ms));

    // Another importer is answered meanwhile, and after.
    auto [good, good_theirs] = stream_pair();
    share->serve(good);
    WorkspaceImport in(*i.context, good_theirs, 2000ms);  // ETIMEDOUT if not served
    CHECK(in.size() == 6 * MiB);
    CHECK(eventually([&] { return share->connections() == 1; }));  // the bad one is gone

    // A second silent importer that stays connected does not hold up the
    // export's destruction.
    auto [idle, idle_theirs] = stream_pair();
    share->serve(idle);
    const std::vector<char> request = sync_request();
    REQUIRE(::send(idle_theirs, request.data(), 3, MSG_NOSIGNAL) == 3);  // a request cut short
    const auto destroy = Clock::now();
    share.reset();
    CHECK(seconds_since(destroy) < 3.0);             // not the 200 ms deadline, nor 60 s
    CHECK_THROWS_AS(in.update(), vmm::DriverError);  // the connection is closed
    in.close(nullptr);
    ::close(bad_theirs);
    ::close(idle_theirs);
  }
  i.finish();
  e.finish();
  CHECK(open_memfds() == memfds_before);
}

TEST_CASE("ipc peers: a request dripped a byte at a time is dropped at its deadline",
          "[ipc][ipc_peers]") {
  Side e("ipc_timeout_ms:200");
  {
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(2 * MiB);
    WorkspaceExport share(ws);
    auto [mine, theirs] = stream_pair();
    share.serve(mine);
    const std::vector<char> request = sync_request();
    const auto start = Clock::now();
    bool dropped = false;
    for (std::size_t k = 0; k < request.size() - 1 && !dropped; ++k) {
      dropped = ::send(theirs, &request[k], 1, MSG_NOSIGNAL) != 1;
      std::this_thread::sleep_for(60ms);
    }
    // 19 bytes x 60 ms is past the 200 ms deadline of the one request.
    CHECK(eventually([&] { return share.connections() == 0; }));
    CHECK(seconds_since(start) < 3.0);  // the whole drip would take 1.1 s and more
    ::close(theirs);
  }
  e.finish();
}

TEST_CASE("ipc peers: an exporter dripping its answer gets one deadline per message",
          "[ipc][ipc_peers]") {
  Side i;
  auto [ours, theirs] = stream_pair();
  std::atomic<bool> stop{false};
  // A fake exporter: reads the sync, then sends a valid layout message one
  // byte every 30 ms (48 bytes: 1.4 s), each byte well within the timeout.
  std::thread exporter([fd = ours, &stop] {
    std::vector<char> request(20);
    if (::recv(fd, request.data(), request.size(), MSG_WAITALL) != 20) return;
    const vmm::ipc::WireLayout layout{64 * MiB, 0, 0, 0, ::getpid()};
    const std::vector<char> reply = frame(vmm::ipc::MessageType::layout, &layout, sizeof layout);
    for (char byte : reply) {
      if (stop || ::send(fd, &byte, 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(30ms);
    }
  });
  const auto start = Clock::now();
  const vmm::DriverError err =
      expect_throw<vmm::DriverError>([&, fd = theirs] { WorkspaceImport(*i.context, fd, 300ms); });
  const double waited = seconds_since(start);
  stop = true;
  exporter.join();
  ::close(ours);
  CHECK(err.code() == ETIMEDOUT);
  CHECK(contains(err.what(), "300 ms"));
  CHECK(waited < 1.3);  // the whole answer takes 1.4 s
  i.finish();
}

// ------------------------------------------------------------ descriptors

namespace {

constexpr std::size_t kChunk = 2 * MiB;

int memfd_of(std::size_t bytes, unsigned flags, int seals) {
  const int fd = ::memfd_create("ipc-peer-test", MFD_CLOEXEC | flags);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
  if (seals != 0) REQUIRE(::fcntl(fd, F_ADD_SEALS, seals) == 0);
  return fd;
}

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

}  // namespace

TEST_CASE("ipc peers: the host backend imports only sealed memfds of the right size",
          "[ipc][ipc_peers]") {
  vmm::HostBackend::Options o;
  vmm::HostBackend host(o);
  struct Case {
    const char* what;
    int fd;
    const char* says;
  };
  char path[] = "/tmp/vmm-ipc-peer-XXXXXX";
  const int file = ::mkstemp(path);
  REQUIRE(file >= 0);
  ::unlink(path);
  REQUIRE(::ftruncate(file, kChunk) == 0);
  const Case cases[] = {
      {"an unsealed memfd", memfd_of(kChunk, 0, 0), "not sealed"},
      {"a sealable memfd without seals", memfd_of(kChunk, MFD_ALLOW_SEALING, 0), "not sealed"},
      {"a memfd that may still shrink", memfd_of(kChunk, MFD_ALLOW_SEALING, F_SEAL_GROW),
       "not sealed"},
      {"a sealed memfd of the wrong size", memfd_of(kChunk / 2, MFD_ALLOW_SEALING, kSeals),
       "1048576 bytes"},
      {"a regular file of the right size", file, "not sealed"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const vmm::DriverError err =
        expect_throw<vmm::DriverError>([&] { (void)host.import_handle(c.fd, kChunk); });
    CHECK(err.code() == EINVAL);
    CHECK(contains(err.what(), c.says));
    ::close(c.fd);
  }
  CHECK(host.live_objects() == vmm::LiveObjects{});  // nothing imported, nothing mapped

  // What the backend makes is sealed: the exporter cannot shrink it under an
  // importer's mapping (a shrunk memfd is SIGBUS there), and it imports.
  const vmm::PhysicalHandle h = host.create(kChunk);
  const int exported = host.export_handle(h);
  CHECK(::ftruncate(exported, 0) == -1);
  CHECK(errno == EPERM);
  CHECK((::fcntl(exported, F_GET_SEALS) & kSeals) == kSeals);
  const vmm::PhysicalHandle imported = host.import_handle(exported, kChunk);
  ::close(exported);
  host.release(imported);
  host.release(h);
  CHECK(host.live_objects() == vmm::LiveObjects{});
}

TEST_CASE("ipc peers: an exporter sending an unsealed memfd is refused, nothing mapped",
          "[ipc][ipc_peers]") {
  Side i;
  auto [ours, theirs] = stream_pair();
  std::thread exporter([fd = ours] {
    vmm::ipc::UniqueFd own(fd);
    (void)vmm::ipc::receive_message(fd, 2000ms);
    vmm::ipc::UniqueFd memfd(memfd_of(kChunk, 0, 0));  // could be truncated after the import
    vmm::SharedLayout layout;
    layout.capacity = 64 * MiB;
    layout.size = kChunk;
    layout.chunks = {vmm::SharedChunk{0, kChunk, 1, memfd.get()}};
    vmm::ipc::send_layout(fd, layout, vmm::ipc::Deadline::after(2000ms));
    char byte = 0;
    [[maybe_unused]] const ssize_t n = ::read(fd, &byte, 1);  // until the importer hangs up
  });
  const vmm::DriverError err =
      expect_throw<vmm::DriverError>([&, fd = theirs] { WorkspaceImport(*i.context, fd, 2s); });
  exporter.join();
  CHECK(err.code() == EINVAL);
  CHECK(contains(err.what(), "not sealed"));
  CHECK(i.host->live_handles() == 0);  // nothing kept, nothing mapped
  CHECK(i.host->mapped_bytes() == 0);
  i.finish();
}

// ------------------------------------------------------------ credentials

namespace {

// A listening abstract-namespace socket (no file, no permissions to set).
int listen_abstract(std::string& name) {
  name = "vmm-ipc-peer-test-" + std::to_string(::getpid());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  return fd;
}

// Forks a child that becomes uid/gid 65534, connects to `name`, sends a sync
// and reads what comes back. Its exit status: 0 a layout came, 1 an error
// message, 2 the connection was closed, 3 setup failed. Only
// async-signal-safe calls in the child (this process has threads).
pid_t connect_as_nobody(const std::string& name) {
  const std::vector<char> request = sync_request();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid != 0) return pid;
  if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) ::_exit(3);
  // The exporter may have refused and closed already: what it sent is read
  // all the same.
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  vmm::ipc::WireHeader h{};
  ::alarm(10);  // never outlive the test
  if (::recv(fd, &h, sizeof h, MSG_WAITALL) != static_cast<ssize_t>(sizeof h)) ::_exit(2);
  ::_exit(h.type == static_cast<std::uint16_t>(vmm::ipc::MessageType::layout) ? 0 : 1);
}

int exit_status(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("ipc peers: a connection from another user is refused unless allowed",
          "[ipc][ipc_peers]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root to connect as another user");
    return;
  }
  std::string name;
  const int listener = listen_abstract(name);
  {
    Side e;  // ipc_peer_uids:same
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(2 * MiB);
    WorkspaceExport share(ws);
    const pid_t child = connect_as_nobody(name);
    const int conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(conn >= 0);
    const vmm::InvalidArgumentError err =
        expect_throw<vmm::InvalidArgumentError>([&] { share.serve(conn); });
    CHECK(contains(err.what(), "uid 65534"));
    CHECK(contains(err.what(), "ipc_peer_uids"));
    CHECK(contains(err.what(), "any"));
    CHECK(exit_status(child) == 1);  // told why, and no layout
    CHECK(share.connections() == 0);
  }
  for (const char* allowed : {"ipc_peer_uids:any", "ipc_peer_uids:1000+65534"}) {
    INFO(allowed);
    Side e(allowed);
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(2 * MiB);
    WorkspaceExport share(ws);
    const pid_t child = connect_as_nobody(name);
    const int conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(conn >= 0);
    share.serve(conn);
    CHECK(exit_status(child) == 0);
  }
  ::close(listener);
}

// ------------------------------------------------------------ fuzz inputs

TEST_CASE("ipc peers: the IPC fuzzer's corpus and regressions decode or fail cleanly",
          "[ipc][fuzz]") {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(VMM_SOURCE_DIR) / "tests" / "fuzz";
  int accepted = 0;
  int rejected = 0;
  for (const char* set : {"corpus", "regressions"}) {
    const fs::path dir = root / set / "ipc_fuzzer";
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (!entry.is_regular_file() || entry.path().filename() == "README") continue;
      INFO("input " << entry.path().filename().string());
      std::ifstream in(entry.path(), std::ios::binary);
      const std::string bytes(std::istreambuf_iterator<char>(in), {});
      const vmm::ipc_fuzz::Outcome outcome =
          vmm::ipc_fuzz::run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
      CHECK(outcome.violation.empty());
      ++(outcome.accepted ? accepted : rejected);
    }
  }
  // The seeds hold both kinds, so both paths are exercised.
  CHECK(accepted >= 3);
  CHECK(rejected >= 3);
}

// ------------------------------------------------------------ configuration

TEST_CASE("ipc peers: ipc_peer_uids and ipc_timeout_ms accept and reject", "[ipc][config]") {
  using vmm::Config;
  const Config same = Config::parse("");
  CHECK(same.ipc_peer_mode == vmm::IpcPeerMode::same);
  CHECK(same.ipc_timeout_ms == 60000);
  CHECK(std::chrono::milliseconds(same.ipc_timeout_ms) == WorkspaceImport::kDefaultTimeout);
  CHECK(Config::parse("ipc_peer_uids:ANY").ipc_peer_mode == vmm::IpcPeerMode::any);
  const Config list = Config::parse("ipc_peer_uids: 0 + 1000+4294967294,ipc_timeout_ms:250");
  CHECK(list.ipc_peer_mode == vmm::IpcPeerMode::list);
  CHECK(list.ipc_peer_uid_list == std::vector<std::uint32_t>{0, 1000, 4294967294u});
  CHECK(list.ipc_timeout_ms == 250);
  CHECK(Config::parse(list.to_string()) == list);
  struct Bad {
    const char* conf;
    const char* says;
  };
  for (const Bad& bad :
       {Bad{"ipc_peer_uids:nobody", "expected same, any, or uids"},
        Bad{"ipc_peer_uids:1000+1000", "1000 is listed twice"},
        Bad{"ipc_peer_uids:1000+-1", "-1 is not a uid"},
        Bad{"ipc_peer_uids:4294967295", "expected same, any"},
        Bad{"ipc_peer_uids:1+", "empty list item"}, Bad{"ipc_timeout_ms:0", "out of range"},
        Bad{"ipc_timeout_ms:3600001", "from 1 to 3600000"}}) {
    INFO(bad.conf);
    const vmm::ConfigError err =
        expect_throw<vmm::ConfigError>([&] { (void)Config::parse(bad.conf); });
    CHECK(contains(err.what(), err.key()));
    CHECK(contains(err.what(), bad.says));
  }
}
