// The live socket (allocator/observe/live_socket.hpp, docs/snapshot.md): it
// serves snapshots and summaries and answers a bad request, refuses a socket
// directory that is not private, and names its directory and sockets. The
// hostile cases (another user's directory, $XDG_RUNTIME_DIR) are in
// snapshot_hostile_tests.cpp.
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "allocator/observe/live_socket.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/temp_dir.hpp"
#include "tests/common/test_util.hpp"

using namespace vmm;
using namespace vmm::test;
using Json = nlohmann::json;

TEST_CASE("live socket: serves snapshots and summaries, answers a bad request",
          "[snapshot][live]") {
  TempDir base("vmm-snapshot-test");
  live::Server server;
  const std::optional<std::string> path = server.start(base.path);
  REQUIRE(path);
  const std::string dir = live::socket_directory(base.path, ::geteuid());
  CHECK(*path == live::socket_path(dir, ::getpid()));
  CHECK(*path == dir + "/" + std::to_string(::getpid()) + ".sock");
  CHECK(server.path() == *path);
  CHECK(server.start(base.path) == path);  // started once
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat(path->c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);

  live::Reply r = live::request(*path, live::kRequestSnapshot, 10000);
  REQUIRE(r.status == live::Reply::Status::ok);
  Json snap = Json::parse(r.body);
  CHECK(snap["reason"] == "live");
  CHECK(snap["detail"] == "full");
  CHECK(snap["process"]["pid"] == ::getpid());

  r = live::request(*path, live::kRequestSummary, 10000);
  REQUIRE(r.status == live::Reply::Status::ok);
  CHECK(Json::parse(r.body)["detail"] == "summary");

  r = live::request(*path, "bogus", 10000);
  REQUIRE(r.status == live::Reply::Status::ok);
  const Json err = Json::parse(r.body);
  CHECK(err["error"] == live::kErrorBadRequest);
  CHECK(contains(err["message"].get<std::string>(), "bogus"));

  server.stop();
  CHECK(server.path().empty());
  CHECK(::stat(path->c_str(), &st) != 0);
  CHECK(live::request(*path, live::kRequestSnapshot, 1000).status ==
        live::Reply::Status::no_socket);
}

TEST_CASE("live socket: refuses a directory that is not private", "[snapshot][live]") {
  TempDir base("vmm-snapshot-test");
  const std::string dir = live::socket_directory(base.path, ::geteuid());
  SECTION("group and others may enter") {
    REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
    ::chmod(dir.c_str(), 0755);
  }
  SECTION("a link to a private directory") {
    const std::string real = base.path + "/elsewhere";
    REQUIRE(::mkdir(real.c_str(), 0700) == 0);
    REQUIRE(::symlink(real.c_str(), dir.c_str()) == 0);
  }
  live::Server server;
  CHECK_FALSE(server.start(base.path));
  CHECK(server.path().empty());
}

TEST_CASE("live socket: names", "[snapshot][live]") {
  CHECK(live::socket_directory("/tmp", 1000) == "/tmp/vmmalloc-1000");
  CHECK(live::socket_directory("/tmp/", 0) == "/tmp/vmmalloc-0");
  CHECK(live::socket_directory("/", 7) == "/vmmalloc-7");
  CHECK(live::socket_path("/tmp/vmmalloc-0", 42) == "/tmp/vmmalloc-0/42.sock");
  CHECK(live::pid_of_socket_name("42.sock") == 42);
  CHECK_FALSE(live::pid_of_socket_name("42.sock.tmp"));
  CHECK_FALSE(live::pid_of_socket_name(".sock"));
  CHECK_FALSE(live::pid_of_socket_name("x42.sock"));
  CHECK_FALSE(live::pid_of_socket_name("0.sock"));
  CHECK(live::request("/nonexistent/vmm.sock", "snapshot", 100).status ==
        live::Reply::Status::no_socket);
}

TEST_CASE("live socket: sleep and wake request lines parse, bad ones say what is valid",
          "[live][sleep]") {
  using vmm::live::parse_request;
  using Kind = vmm::live::Request::Kind;
  const auto s = parse_request("sleep offload weights,kv \r");
  CHECK(s.kind == Kind::sleep);
  CHECK_FALSE(s.discard);
  CHECK(s.tags == std::vector<std::string>{"weights", "kv"});
  const auto d = parse_request("sleep  discard  kv");
  CHECK(d.kind == Kind::sleep);
  CHECK(d.discard);
  const auto w = parse_request("wake weights keep_host");
  CHECK(w.kind == Kind::wake);
  CHECK(w.keep_host);
  CHECK(w.tags == std::vector<std::string>{"weights"});
  CHECK_FALSE(parse_request("wake kv").keep_host);
  for (const char* bad : {"sleep", "sleep offload", "sleep later kv", "sleep offload a,,b",
                          "sleep offload ,a", "wake", "wake a, keep_host", "wake a later",
                          "wake a keep_host extra", "sleepy offload a"}) {
    CAPTURE(bad);
    const auto r = parse_request(bad);
    CHECK(r.kind == Kind::bad);
    CHECK_FALSE(r.message.empty());
  }
  CHECK(parse_request("sleep later kv").message.find("offload, discard") != std::string::npos);
}
