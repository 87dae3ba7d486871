// IPC on the host backend across two processes: the importer runs in a
// child process (this test binary, spawned with a hidden test case and the
// sockets' descriptors in its environment), the exporter here, and the
// workspace grows after the export. As in ipc_tests.cpp, each side checks at
// the end that its backend holds nothing and that no memfd is left open.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/child_process.hpp"
#include "tests/host/ipc_test_util.hpp"
#include "vmmalloc/ipc.hpp"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::MiB;
using vmm::WorkspaceExport;
using vmm::WorkspaceImport;
using namespace std::chrono_literals;

using Side = vmm::test::IpcSide;
using vmm::test::all_equal;
using vmm::test::at;
using vmm::test::driver_code;
using vmm::test::eventually;
using vmm::test::open_memfds;
using vmm::test::send_token;
using vmm::test::stream_pair;

}  // namespace

// The importer runs in a child: this binary, spawned with the hidden test
// case below. The library's socket and a control socket (one-byte tokens,
// for the steps of the script) are passed as descriptors 200 and 201.

namespace {

constexpr int kChildIpcFd = 200;
constexpr int kChildControlFd = 201;

// The child runs "ipc: the importer in a child process" (below).
pid_t spawn_importer(const char* scenario, int ipc_fd, int control_fd) {
  return vmm::test::spawn_test_case("ipc: the importer in a child process", scenario,
                                    {{ipc_fd, kChildIpcFd}, {control_fd, kChildControlFd}});
}

char wait_token(int fd) { return vmm::test::wait_token(fd, 30s); }

// The child's exit status (-1 if it did not exit normally within 60 s).
int wait_child(pid_t pid) { return vmm::test::wait_child(pid, 60s); }

}  // namespace

TEST_CASE("ipc: the importer in a child process", "[.][ipc_child]") {
  const char* scenario = std::getenv("VMM_TEST_IPC_SCENARIO");
  REQUIRE(scenario != nullptr);
  const std::string which = scenario;
  const int memfds_before = open_memfds();
  const int control = kChildControlFd;
  Side i;
  {
    WorkspaceImport in(*i.context, kChildIpcFd);
    CHECK(in.size() == 4 * MiB);
    CHECK(all_equal(in.data(), 4 * MiB, 0x11));
    std::memset(in.data(), 0x22, 1 * MiB);  // for the exporter to see
    send_token(control, 'w');

    REQUIRE(wait_token(control) == 'g');  // the exporter grew to 20 MiB
    in.update();
    CHECK(in.size() == 20 * MiB);
    CHECK(all_equal(at(in.data(), 4 * MiB), 16 * MiB, 0x33));
    std::memset(at(in.data(), 19 * MiB), 0x44, 1 * MiB);
    send_token(control, 'u');

    if (which == "exporter-first") {
      REQUIRE(wait_token(control) == 'x');  // the exporter tore everything down
      // The memory lives on here, readable and writable.
      CHECK(all_equal(in.data(), 1 * MiB, 0x22));
      CHECK(all_equal(at(in.data(), 4 * MiB), 15 * MiB, 0x33));
      std::memset(in.data(), 0x55, 20 * MiB);
      CHECK(all_equal(in.data(), 20 * MiB, 0x55));
      CHECK(driver_code([&] { in.update(); }) == EPIPE);
    }
  }  // the import closes here (first, in the importer-first scenario)
  i.finish();
  CHECK(open_memfds() == memfds_before);
  send_token(control, 'c');
}

namespace {

// The exporter's half of both scenarios; the child runs the importer's.
void run_two_processes(const char* scenario) {
  const int memfds_before = open_memfds();
  Side e;
  auto [ipc_mine, ipc_theirs] = stream_pair();
  auto [control, control_theirs] = stream_pair();
  const pid_t child = spawn_importer(scenario, ipc_theirs, control_theirs);
  ::close(ipc_theirs);
  ::close(control_theirs);
  {
    auto ws = std::make_unique<vmm::Workspace>(*e.context, 64 * MiB);
    ws->grow_to(4 * MiB);
    std::memset(ws->data(), 0x11, ws->size());
    auto share = std::make_unique<WorkspaceExport>(*ws);
    share->serve(ipc_mine);

    REQUIRE(wait_token(control) == 'w');
    CHECK(all_equal(ws->data(), 1 * MiB, 0x22));  // the child's write
    CHECK(all_equal(at(ws->data(), 1 * MiB), 3 * MiB, 0x11));
    ws->grow_to(20 * MiB);
    std::memset(at(ws->data(), 4 * MiB), 0x33, 16 * MiB);
    send_token(control, 'g');
    REQUIRE(wait_token(control) == 'u');
    CHECK(all_equal(at(ws->data(), 19 * MiB), 1 * MiB, 0x44));

    if (std::string(scenario) == "exporter-first") {
      share.reset();
      ws->release(nullptr);
      ws.reset();
      e.finish();
      CHECK(open_memfds() == memfds_before);
      send_token(control, 'x');
      REQUIRE(wait_token(control) == 'c');
    } else {
      REQUIRE(wait_token(control) == 'c');  // the child closed its import and exited
      CHECK(eventually([&] { return share->connections() == 0; }));
      std::memset(ws->data(), 0x66, ws->size());  // still ours alone
      CHECK(all_equal(ws->data(), ws->size(), 0x66));
    }
  }
  CHECK(wait_child(child) == 0);
  ::close(control);
  if (e.context) e.finish();
  CHECK(open_memfds() == memfds_before);
}

}  // namespace

TEST_CASE("ipc: two processes, growth after export, the exporter goes first", "[ipc]") {
  run_two_processes("exporter-first");
}

TEST_CASE("ipc: two processes, growth after export, the importer goes first", "[ipc]") {
  run_two_processes("importer-first");
}
