// Snapshots against hostile or careless input (docs/reliability.md, misuse):
// files planted at a snapshot's path (symlinks and pre-made files at the
// target and at the temporary name an older writer used), the snapshot's
// file mode, bytes that are not UTF-8 in a workspace name and in a live
// socket request, the socket directories ($XDG_RUNTIME_DIR first) and the
// client's directory check. vmmctl end to end (forged directories and
// sockets, bounds, slow clients) is tested in tests/cli/hostile_test.cpp.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "allocator/observe/live_socket.hpp"
#include "allocator/observe/snapshot.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/temp_dir.hpp"
#include "tests/common/test_util.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/snapshot.hpp"
#include "vmmalloc/workspace.hpp"

using namespace vmm;
using namespace vmm::test;
using Json = nlohmann::json;

namespace {

// `path` is a regular file (not a link) of mode 0600 holding a snapshot.
void check_private_snapshot(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(Json::parse(read_file(path))["schema"] == kSnapshotSchema);
}

// `dir` holds only the names in `allowed` (no temporary file is left).
void check_only(const std::string& dir, const std::set<std::string>& allowed) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    INFO("left in the directory: " << name);
    CHECK(allowed.count(name) == 1);
  }
}

}  // namespace

TEST_CASE("snapshot files: links and files planted at the path are never written through",
          "[snapshot][hostile]") {
  TempDir dir("vmm-snapshot-hostile");
  const std::string victim = dir.path + "/victim";
  const std::string target = dir.path + "/snap.json";
  // The temporary name a writer that predicts its names would use.
  const std::string predictable = target + ".tmp." + std::to_string(::getpid());
  write_file(victim, "precious");
  ::chmod(victim.c_str(), 0644);

  SECTION("a symlink at the temporary name") {
    REQUIRE(::symlink(victim.c_str(), predictable.c_str()) == 0);
    CHECK(write_snapshot(target) == target);
    struct stat st {};
    CHECK(::lstat(predictable.c_str(), &st) == 0);  // left alone
    CHECK(S_ISLNK(st.st_mode));
  }
  SECTION("a regular file at the temporary name") {
    write_file(predictable, "someone else's");
    CHECK(write_snapshot(target) == target);
    CHECK(read_file(predictable) == "someone else's");
  }
  SECTION("a symlink at the target is replaced, not followed") {
    REQUIRE(::symlink(victim.c_str(), target.c_str()) == 0);
    CHECK(write_snapshot(target) == target);
  }
  SECTION("a hard link at the target is replaced, not written through") {
    REQUIRE(::link(victim.c_str(), target.c_str()) == 0);
    CHECK(write_snapshot(target) == target);
  }
  SECTION("a dangling symlink at the target") {
    REQUIRE(::symlink((dir.path + "/nowhere").c_str(), target.c_str()) == 0);
    CHECK(write_snapshot(target) == target);
    struct stat st {};
    CHECK(::stat((dir.path + "/nowhere").c_str(), &st) != 0);
  }
  CHECK(read_file(victim) == "precious");
  check_private_snapshot(target);
  check_only(dir.path, {"victim", "snap.json", "snap.json.tmp." + std::to_string(::getpid())});
}

TEST_CASE("snapshot files: private whatever the umask", "[snapshot][hostile]") {
  TempDir dir("vmm-snapshot-hostile");
  const mode_t old = ::umask(0);
  const std::string target = write_snapshot(dir.path + "/s-%p.json");
  ::umask(old);
  check_private_snapshot(target);
}

TEST_CASE("snapshot: bytes that are not UTF-8 are replaced, every trigger still works",
          "[snapshot][hostile]") {
  Harness h(make_host_test_device());
  Workspace ws(h.context(), 4 * MiB);
  const std::string odd = "odd \xff\xfe name \xc3";
  ws.set_name(odd);

  std::string text;
  REQUIRE_NOTHROW(text = snapshot_json("api", SnapshotDetail::full));
  const Json snap = Json::parse(text);
  bool found = false;
  for (const Json& d : snap["devices"]) {
    for (const Json& r : d["regions"]) {
      if (r["owner"] == "workspace" &&
          r["name"] == "odd \xEF\xBF\xBD\xEF\xBF\xBD name \xEF\xBF\xBD") {
        found = true;
      }
    }
  }
  CHECK(found);

  TempDir dir("vmm-snapshot-hostile");
  CHECK_NOTHROW(write_snapshot(dir.path + "/odd.json"));
  CHECK(Json::parse(read_file(dir.path + "/odd.json"))["schema"] == kSnapshotSchema);

  live::Server server;
  const std::optional<std::string> path = server.start(dir.path);
  REQUIRE(path);
  const live::Reply r = live::request(*path, live::kRequestSnapshot, 10000);
  REQUIRE(r.status == live::Reply::Status::ok);
  CHECK(Json::parse(r.body)["schema"] == kSnapshotSchema);
  // A request that is not UTF-8 gets its error reply, as valid JSON.
  const live::Reply bad = live::request(*path, "snap\xff\xc0shot", 10000);
  REQUIRE(bad.status == live::Reply::Status::ok);
  const Json err = Json::parse(bad.body);
  CHECK(err["error"] == live::kErrorBadRequest);
}

TEST_CASE("live socket: $XDG_RUNTIME_DIR/vmmalloc first, for the default base only",
          "[snapshot][live][hostile]") {
  TempDir runtime("vmm-snapshot-hostile");
  const char* old = std::getenv("XDG_RUNTIME_DIR");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("XDG_RUNTIME_DIR", (runtime.path + "/").c_str(), 1);
  const uid_t me = ::geteuid();
  CHECK(
      live::socket_directories("/tmp", me) ==
      std::vector<std::string>{runtime.path + "/vmmalloc", "/tmp/vmmalloc-" + std::to_string(me)});
  CHECK(live::socket_directories("/tmp/", me).size() == 2);
  CHECK(live::socket_directories("/var/run", me) ==
        std::vector<std::string>{"/var/run/vmmalloc-" + std::to_string(me)});
  // Another user's runtime directory is not in our environment.
  CHECK(live::socket_directories("/tmp", me + 1).size() == 1);
  {
    live::Server server;
    const std::optional<std::string> path = server.start("/tmp");
    REQUIRE(path);
    CHECK(*path == runtime.path + "/vmmalloc/" + std::to_string(::getpid()) + ".sock");
    const live::Reply r = live::request(*path, live::kRequestSummary, 10000);
    REQUIRE(r.status == live::Reply::Status::ok);
    CHECK(r.peer_known);
    CHECK(r.peer_pid == ::getpid());
    CHECK(r.peer_uid == me);
  }
  ::setenv("XDG_RUNTIME_DIR", "relative/dir", 1);
  CHECK(live::socket_directories("/tmp", me).size() == 1);
  if (old != nullptr) {
    ::setenv("XDG_RUNTIME_DIR", saved.c_str(), 1);
  } else {
    ::unsetenv("XDG_RUNTIME_DIR");
  }
}

TEST_CASE("live socket: the client's directory check", "[snapshot][live][hostile]") {
  TempDir base("vmm-snapshot-hostile");
  const uid_t me = ::geteuid();
  const std::string dir = base.path + "/vmmalloc-x";
  CHECK(live::client_directory_problem(dir, me).empty());  // nothing there: nothing read
  REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
  CHECK(live::client_directory_problem(dir, me).empty());
  ::chmod(dir.c_str(), 0755);  // readable by others is fine: the socket is 0600
  CHECK(live::client_directory_problem(dir, me).empty());
  ::chmod(dir.c_str(), 0770);
  CHECK(live::client_directory_problem(dir, me).find("writable by others (mode 0770)") !=
        std::string::npos);
  ::chmod(dir.c_str(), 01777);
  CHECK(live::client_directory_problem(dir, me).find("writable by others") != std::string::npos);
  ::chmod(dir.c_str(), 0700);
  CHECK(live::client_directory_problem(dir, me + 1).find("owned by uid " + std::to_string(me)) !=
        std::string::npos);
  const std::string link = base.path + "/link";
  REQUIRE(::symlink(dir.c_str(), link.c_str()) == 0);
  CHECK(live::client_directory_problem(link, me).find("symbolic link") != std::string::npos);
}
