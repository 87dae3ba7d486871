// IPC on the host backend, where chunks are memfds: the same protocol and
// code paths as on a GPU (descriptors over a Unix socket, imported and
// mapped at another address), testable without one.
//
// These cases run both sides in this process, each over its own HostBackend
// and device context, as two processes would be (ipc_process_tests.cpp runs
// the importer in a child process). Every case checks at the end that each
// side's backend holds nothing (live_objects()) and that no memfd of ours is
// left open.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/ipc/protocol.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/host/ipc_test_util.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/ipc.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::GiB;
using vmm::MiB;
using vmm::WorkspaceExport;
using vmm::WorkspaceImport;
using vmm::test::contains;
using vmm::test::expect_throw;
using namespace std::chrono_literals;

using Side = vmm::test::IpcSide;
using vmm::test::all_equal;
using vmm::test::at;
using vmm::test::closed;
using vmm::test::driver_code;
using vmm::test::eventually;
using vmm::test::open_memfds;
using vmm::test::stream_pair;

}  // namespace

TEST_CASE("ipc: an import maps the exporter's chunks read/write, both ways", "[ipc]") {
  const int memfds_before = open_memfds();
  Side e;
  Side i;
  {
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(6 * MiB);
    std::memset(ws.data(), 0x11, ws.size());
    WorkspaceExport share(ws);
    auto [mine, theirs] = stream_pair();
    share.serve(mine);
    WorkspaceImport in(*i.context, theirs);

    CHECK(in.size() == 6 * MiB);
    CHECK(in.capacity() == 64 * MiB);
    CHECK(in.mapped_bytes() == ws.mapped_bytes());
    CHECK(in.device() == 0);
    REQUIRE(in.data() != nullptr);
    CHECK(in.data() != ws.data());  // another reservation: another address
    CHECK(all_equal(in.data(), 6 * MiB, 0x11));
    CHECK(i.host->calls(vmm::BackendCall::import_handle) ==
          e.host->calls(vmm::BackendCall::export_handle));
    CHECK(eventually([&] { return share.connections() == 1; }));

    // Writes go both ways: it is the same memory.
    std::memset(in.data(), 0x22, 1 * MiB);
    CHECK(all_equal(ws.data(), 1 * MiB, 0x22));
    CHECK(all_equal(at(ws.data(), 1 * MiB), 5 * MiB, 0x11));
    std::memset(at(ws.data(), 5 * MiB), 0x33, 1 * MiB);
    CHECK(all_equal(at(in.data(), 5 * MiB), 1 * MiB, 0x33));

    // The imported handles were released once mapped: the mappings alone
    // hold the memory.
    CHECK(i.host->live_handles() == 0);
    CHECK(i.host->mapped_bytes() == 6 * MiB);
  }
  e.finish();
  i.finish();
  CHECK(open_memfds() == memfds_before);
}

TEST_CASE("ipc: update() maps what the exporter grew, and only that", "[ipc]") {
  Side e;
  Side i;
  {
    vmm::Workspace ws(*e.context, 256 * MiB);
    ws.grow_to(4 * MiB);
    std::memset(ws.data(), 0x11, ws.size());
    WorkspaceExport share(ws);
    auto [mine, theirs] = stream_pair();
    share.serve(mine);
    WorkspaceImport in(*i.context, theirs);
    const void* base = in.data();

    ws.grow_to(40 * MiB + 5);
    std::memset(at(ws.data(), 4 * MiB), 0x44, ws.size() - 4 * MiB);
    CHECK(in.size() == 4 * MiB);  // nothing changes until asked
    const auto imports_before = i.host->calls(vmm::BackendCall::import_handle);
    in.update();
    CHECK(in.data() == base);  // stable address
    CHECK(in.size() == 40 * MiB + 5);
    CHECK(in.mapped_bytes() == ws.mapped_bytes());
    CHECK(in.mapped_bytes() == 42 * MiB);
    CHECK(all_equal(in.data(), 4 * MiB, 0x11));
    CHECK(all_equal(at(in.data(), 4 * MiB), 36 * MiB + 5, 0x44));
    const auto imported = i.host->calls(vmm::BackendCall::import_handle) - imports_before;
    CHECK(imported > 0);
    CHECK(e.host->calls(vmm::BackendCall::export_handle) ==
          i.host->calls(vmm::BackendCall::import_handle));  // each descriptor sent once

    // Nothing changed: nothing is imported again.
    in.update();
    CHECK(i.host->calls(vmm::BackendCall::import_handle) == imports_before + imported);
    CHECK(in.size() == 40 * MiB + 5);

    // Several importers of one export.
    auto [mine2, theirs2] = stream_pair();
    share.serve(mine2);
    Side i2;
    {
      WorkspaceImport second(*i2.context, theirs2);
      CHECK(second.size() == ws.size());
      CHECK(all_equal(at(second.data(), 4 * MiB), 36 * MiB, 0x44));
      std::memset(second.data(), 0x55, 4096);
      CHECK(all_equal(in.data(), 4096, 0x55));
    }
    i2.finish();
  }
  e.finish();
  i.finish();
}

TEST_CASE("ipc: a shrink, and chunks replaced behind the same offsets", "[ipc]") {
  Side e;
  Side i;
  {
    vmm::Workspace ws(*e.context, 256 * MiB);
    ws.grow_to(40 * MiB);
    std::memset(ws.data(), 0x11, ws.size());
    WorkspaceExport share(ws);
    auto [mine, theirs] = stream_pair();
    share.serve(mine);
    WorkspaceImport in(*i.context, theirs);
    const std::size_t handles_exported = e.host->live_handles();

    // Shrink: the exporter's tail goes back to the device, not to its pool
    // (the importer still maps it and must not see it reused).
    ws.shrink_to(4 * MiB, nullptr);
    e.context->reclaimer().drain();
    CHECK(e.context->pool().stats().cached_bytes == 0);
    CHECK(e.context->pool().stats().created_bytes == ws.mapped_bytes());
    CHECK(e.host->live_handles() < handles_exported);
    // The importer still reads the old bytes: the memory lives while mapped.
    CHECK(all_equal(at(in.data(), 20 * MiB), 20 * MiB, 0x11));
    in.update();
    CHECK(in.size() == 4 * MiB);
    CHECK(in.mapped_bytes() == ws.mapped_bytes());

    // Grow back with fresh memory, shrink and grow again without the
    // importer looking: the same offsets now hold other chunks, which
    // update() must notice (by serial) and remap.
    ws.grow_to(40 * MiB);
    std::memset(at(ws.data(), 4 * MiB), 0x66, 36 * MiB);
    in.update();
    CHECK(all_equal(at(in.data(), 4 * MiB), 36 * MiB, 0x66));
    ws.shrink_to(4 * MiB, nullptr);
    e.context->reclaimer().drain();
    ws.grow_to(40 * MiB);
    std::memset(at(ws.data(), 4 * MiB), 0x77, 36 * MiB);
    const auto fences_before = i.host->calls(vmm::BackendCall::record_fence);
    in.update();
    CHECK(i.host->calls(vmm::BackendCall::record_fence) == fences_before + 1);  // waited for it
    CHECK(in.size() == 40 * MiB);
    CHECK(all_equal(at(in.data(), 4 * MiB), 36 * MiB, 0x77));
    CHECK(all_equal(in.data(), 4 * MiB, 0x11));
    std::memset(at(in.data(), 39 * MiB), 0x78, MiB);
    CHECK(all_equal(at(ws.data(), 39 * MiB), MiB, 0x78));
    CHECK(i.host->mapped_bytes() == 40 * MiB);
  }
  e.finish();
  i.finish();
}

TEST_CASE("ipc: the exporter may go first", "[ipc]") {
  const int memfds_before = open_memfds();
  Side e;
  Side i;
  auto [mine, theirs] = stream_pair();
  std::unique_ptr<WorkspaceImport> in;
  {
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(20 * MiB);
    std::memset(ws.data(), 0x5a, ws.size());
    WorkspaceExport share(ws);
    share.serve(mine);
    in = std::make_unique<WorkspaceImport>(*i.context, theirs);
  }
  e.finish();  // workspace, export and the exporter's whole context: gone
  CHECK(e.host->live_objects() == vmm::LiveObjects{});

  // The import still holds the memory, readable and writable.
  CHECK(all_equal(in->data(), 20 * MiB, 0x5a));
  std::memset(in->data(), 0x5b, 20 * MiB);
  CHECK(all_equal(in->data(), 20 * MiB, 0x5b));
  // The exporter is gone: update() says so and changes nothing.
  const vmm::DriverError gone = expect_throw<vmm::DriverError>([&] { in->update(); });
  CHECK(gone.code() == EPIPE);
  CHECK(contains(gone.what(), "closed the connection"));
  CHECK(in->size() == 20 * MiB);
  CHECK(all_equal(in->data(), 20 * MiB, 0x5b));

  in->close(nullptr);
  CHECK(in->data() == nullptr);
  CHECK(in->size() == 0);
  in->close(nullptr);  // idempotent
  in.reset();
  i.finish();
  CHECK(open_memfds() == memfds_before);
}

TEST_CASE("ipc: the importer may go first", "[ipc]") {
  const int memfds_before = open_memfds();
  Side e;
  Side i;
  {
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(10 * MiB);
    WorkspaceExport share(ws);
    auto [mine, theirs] = stream_pair();
    share.serve(mine);
    {
      WorkspaceImport in(*i.context, theirs);
      std::memset(in.data(), 0x21, in.size());
      CHECK(eventually([&] { return share.connections() == 1; }));
    }  // closed: unmapped by the importer's reclaimer
    i.finish();
    CHECK(eventually([&] { return share.connections() == 0; }));  // the server noticed
    CHECK(all_equal(ws.data(), 10 * MiB, 0x21));
    ws.grow_to(30 * MiB);  // the workspace goes on as usual
    std::memset(ws.data(), 0x22, ws.size());
  }
  e.finish();
  CHECK(open_memfds() == memfds_before);
}

TEST_CASE("ipc: a released workspace is reported to its importers", "[ipc]") {
  Side e;
  Side i;
  {
    vmm::Workspace ws(*e.context, 64 * MiB);
    ws.grow_to(4 * MiB);
    std::memset(ws.data(), 1, ws.size());
    WorkspaceExport share(ws);
    auto [mine, theirs] = stream_pair();
    share.serve(mine);
    WorkspaceImport in(*i.context, theirs);
    ws.release(nullptr);
    CHECK_THROWS_AS(WorkspaceExport(ws), vmm::InvalidArgumentError);  // released
    const vmm::DriverError e1 = expect_throw<vmm::DriverError>([&] { in.update(); });
    CHECK(e1.code() == ENOENT);
    CHECK(contains(e1.what(), "the exporter answered: the shared workspace was released"));
    CHECK(all_equal(in.data(), 4 * MiB, 1));  // still mapped here
    CHECK(in.size() == 4 * MiB);
    // The connection stays up: the importer may ask again.
    CHECK(driver_code([&] { in.update(); }) == ENOENT);
  }
  e.finish();
  i.finish();
}

TEST_CASE("ipc: sockets that will not do are refused, and closed", "[ipc]") {
  Side e;
  vmm::Workspace ws(*e.context, 16 * MiB);
  WorkspaceExport share(ws);

  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  ::close(pipe_fds[1]);
  CHECK(contains(expect_throw<vmm::InvalidArgumentError>([&] { share.serve(pipe_fds[0]); }).what(),
                 "is not a socket"));
  CHECK(closed(pipe_fds[0]));  // taken over even on failure

  int dgram[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dgram) == 0);
  const std::string what =
      expect_throw<vmm::InvalidArgumentError>([&] { share.serve(dgram[0]); }).what();
  CHECK(contains(what, "expected a connected AF_UNIX SOCK_STREAM socket"));
  CHECK(closed(dgram[0]));
  ::close(dgram[1]);

  const int unconnected = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(unconnected >= 0);
  Side i;
  CHECK(contains(
      expect_throw<vmm::InvalidArgumentError>([&] { WorkspaceImport(*i.context, unconnected); })
          .what(),
      "is not connected"));
  CHECK(closed(unconnected));
  CHECK(contains(expect_throw<vmm::InvalidArgumentError>([&] { share.serve(-1); }).what(),
                 "not an open file descriptor"));
  CHECK(share.connections() == 0);
  ws.release(nullptr);
  e.finish();
  i.finish();
}

TEST_CASE("ipc: a peer that does not speak the protocol", "[ipc]") {
  // The lambdas take `theirs` as `fd = theirs`: clang 14 cannot capture a
  // structured binding (a C++20 rule it implements from clang 16).
  Side i;
  SECTION("garbage") {
    auto [ours, theirs] = stream_pair();
    const char junk[64] = "GET / HTTP/1.1\r\n\r\n";
    REQUIRE(::write(ours, junk, sizeof junk) == static_cast<ssize_t>(sizeof junk));
    const vmm::DriverError err =
        expect_throw<vmm::DriverError>([&, fd = theirs] { WorkspaceImport(*i.context, fd, 2s); });
    CHECK(err.code() == EPROTO);
    CHECK(err.call() == "vmmalloc IPC");
    CHECK(contains(err.what(), "bad magic"));
    ::close(ours);
  }
  SECTION("hangs up") {
    auto [ours, theirs] = stream_pair();
    ::close(ours);
    CHECK(driver_code([&, fd = theirs] { WorkspaceImport(*i.context, fd, 2s); }) == EPIPE);
  }
  SECTION("never answers") {
    auto [ours, theirs] = stream_pair();
    const vmm::DriverError err =
        expect_throw<vmm::DriverError>([&, fd = theirs] { WorkspaceImport(*i.context, fd, 50ms); });
    CHECK(err.code() == ETIMEDOUT);
    CHECK(contains(err.what(), "no answer within 50 ms"));
    ::close(ours);
  }
  SECTION("a layout that breaks the rules") {
    auto [ours, theirs] = stream_pair();
    // A server stand-in: answers the sync with chunks that leave a hole.
    std::thread server([fd = ours] {
      vmm::ipc::UniqueFd own(fd);
      (void)vmm::ipc::receive_message(fd, 2000ms);
      vmm::SharedLayout layout;
      layout.capacity = 64 * MiB;
      layout.size = 4 * MiB;
      layout.chunks = {vmm::SharedChunk{0, 2 * MiB, 1, -1}, vmm::SharedChunk{4 * MiB, 2 * MiB, 2, -1}};
      vmm::ipc::send_layout(fd, layout, vmm::ipc::Deadline::after(2000ms));
      char byte = 0;
      [[maybe_unused]] const ssize_t n = ::read(fd, &byte, 1);  // until the importer hangs up
    });
    const vmm::DriverError err =
        expect_throw<vmm::DriverError>([&, fd = theirs] { WorkspaceImport(*i.context, fd, 2s); });
    server.join();
    CHECK(err.code() == EPROTO);
    CHECK(contains(err.what(), "does not follow the previous one"));
  }
  i.finish();
}

TEST_CASE("ipc: a fault on either side leaves both consistent, and the next update works",
          "[ipc][fault_injection]") {
  Side e;
  Side i;
  {
    vmm::Workspace ws(*e.context, 256 * MiB);
    ws.grow_to(4 * MiB);
    std::memset(ws.data(), 0x10, ws.size());
    WorkspaceExport share(ws);
    auto [mine, theirs] = stream_pair();
    share.serve(mine);
    WorkspaceImport in(*i.context, theirs);
    unsigned char value = 0x10;

    struct Fault {
      vmm::FaultInjectingBackend* where;
      vmm::BackendCall kind;
      bool shrink;  // the update drops chunks (fence, unmap) rather than adding them
    };
    for (const Fault& f : {Fault{i.faults, vmm::BackendCall::import_handle, false},
                           Fault{i.faults, vmm::BackendCall::map, false},
                           Fault{i.faults, vmm::BackendCall::set_access, false},
                           Fault{e.faults, vmm::BackendCall::export_handle, false},
                           Fault{i.faults, vmm::BackendCall::record_fence, true},
                           Fault{i.faults, vmm::BackendCall::unmap, true}}) {
      for (std::uint64_t n = 1;; ++n) {
        INFO(vmm::backend_call_name(f.kind) << " #" << n);
        // A change for the importer to follow: grow by 10 MiB (fresh
        // chunks), or shrink back to 4 MiB.
        const std::size_t target = f.shrink ? 4 * MiB : ws.size() + 10 * MiB;
        if (f.shrink) {
          if (ws.size() == 4 * MiB) ws.grow_to(44 * MiB);
          in.update();
          ws.shrink_to(target, nullptr);
          e.context->reclaimer().drain();
        } else {
          const std::size_t old = ws.size();
          ws.grow_to(target);
          value = static_cast<unsigned char>(value + 1);
          std::memset(at(ws.data(), old), value, target - old);
        }
        const std::size_t size_before = in.size();
        f.where->fail_nth(f.kind, n);
        bool failed = false;
        try {
          in.update();
        } catch (const vmm::Error& err) {
          failed = true;
          CHECK(contains(err.what(), "injected"));
          CHECK(in.size() == size_before);  // unchanged
        }
        const bool fired = f.where->fired();
        f.where->disarm();
        CHECK(failed == fired);
        in.update();  // retried in full
        CHECK(in.size() == ws.size());
        CHECK(in.mapped_bytes() == ws.mapped_bytes());
        CHECK(std::memcmp(in.data(), ws.data(), ws.size()) == 0);
        CHECK(i.host->mapped_bytes() == in.mapped_bytes());
        CHECK(i.host->live_handles() == 0);
        if (!fired) break;
      }
    }
  }
  e.finish();
  i.finish();
}

TEST_CASE("ipc: the C API", "[ipc][c_api]") {
  // The process-wide state on the host backend, also where a GPU is usable
  // (where this case runs first in its process; else it is already so).
  (void)vmm_configure("backend:host,va_reservation_size:8G");
  vmm_workspace* ws = nullptr;
  REQUIRE(vmm_workspace_create(64 * MiB, 0, &ws) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_grow(ws, 6 * MiB) == VMM_SUCCESS);
  void* data = nullptr;
  REQUIRE(vmm_workspace_data(ws, &data) == VMM_SUCCESS);
  std::memset(data, 0x31, 6 * MiB);

  vmm_workspace_export* ex = nullptr;
  REQUIRE(vmm_workspace_export_create(ws, &ex) == VMM_SUCCESS);
  auto [mine, theirs] = stream_pair();
  REQUIRE(vmm_workspace_export_serve(ex, mine) == VMM_SUCCESS);
  vmm_workspace_import* im = nullptr;
  REQUIRE(vmm_workspace_import_create(theirs, 0, &im) == VMM_SUCCESS);
  void* imported = nullptr;
  std::size_t size = 0;
  std::size_t capacity = 0;
  REQUIRE(vmm_workspace_import_data(im, &imported) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_import_size(im, &size) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_import_capacity(im, &capacity) == VMM_SUCCESS);
  CHECK(size == 6 * MiB);
  CHECK(capacity == 64 * MiB);
  CHECK(all_equal(imported, 6 * MiB, 0x31));

  REQUIRE(vmm_workspace_grow(ws, 16 * MiB) == VMM_SUCCESS);
  std::memset(at(data, 6 * MiB), 0x32, 10 * MiB);
  REQUIRE(vmm_workspace_import_update(im, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_import_size(im, &size) == VMM_SUCCESS);
  CHECK(size == 16 * MiB);
  CHECK(all_equal(at(imported, 6 * MiB), 10 * MiB, 0x32));

  // Bad arguments name what is wrong; sockets handed over are closed.
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  CHECK(vmm_workspace_export_serve(ex, pipe_fds[0]) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "is not a socket"));
  CHECK(closed(pipe_fds[0]));
  CHECK(vmm_workspace_export_serve(nullptr, pipe_fds[1]) == VMM_ERROR_INVALID_VALUE);
  CHECK(closed(pipe_fds[1]));
  CHECK(vmm_workspace_export_create(nullptr, &ex) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "workspace is NULL"));
  vmm_workspace_import* bad = nullptr;
  CHECK(vmm_workspace_import_create(-1, 0, &bad) == VMM_ERROR_INVALID_VALUE);
  CHECK(bad == nullptr);
  CHECK(vmm_workspace_import_update(nullptr, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_import_destroy(nullptr, nullptr) == VMM_SUCCESS);
  CHECK(vmm_workspace_export_destroy(nullptr) == VMM_SUCCESS);

  int can = -1;
  REQUIRE(vmm_can_access_peer(0, 0, &can) == VMM_SUCCESS);
  CHECK(can == 1);
  CHECK(vmm_can_access_peer(0, 1, &can) == VMM_ERROR_INVALID_VALUE);  // one host device
  CHECK(contains(vmm_last_error(), "peer device 1 does not exist"));
  CHECK(vmm_can_access_peer(0, 0, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_enable_peer_access(0, 0) == VMM_SUCCESS);  // the device itself: nothing to do
  CHECK(vmm_enable_peer_access(0, 3) == VMM_ERROR_INVALID_VALUE);

  // Either order: here the exporter's workspace goes first.
  CHECK(vmm_workspace_export_destroy(ex) == VMM_SUCCESS);
  CHECK(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);
  CHECK(all_equal(at(imported, 6 * MiB), 10 * MiB, 0x32));
  CHECK(vmm_workspace_import_update(im, nullptr) == VMM_ERROR_DRIVER);
  CHECK(contains(vmm_last_error(), "closed the connection"));
  CHECK(vmm_workspace_import_destroy(im, nullptr) == VMM_SUCCESS);

  // Leave no memfd behind for the cases that count them: once the
  // reclaimer has unmapped everything (the import's mappings hold the last
  // reference to their memfds), empty the process-wide pool.
  CHECK(eventually([] {
    vmm_empty_cache(0, nullptr);
    const vmm::LiveObjects live = vmm::device_context(0).backend().live_objects();
    return live.handles == 0 && live.handle_bytes == 0 && live.mapped_bytes == 0;
  }));
}
