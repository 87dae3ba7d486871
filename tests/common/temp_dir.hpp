// Files for tests that write them: TempDir, a fresh directory under /tmp
// removed with everything in it at the end of its scope, and reading or
// writing a whole file.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>

#include "tests/common/catch.hpp"

namespace vmm::test {

// A fresh directory /tmp/<prefix>-XXXXXX, removed at the end of the scope.
struct TempDir {
  explicit TempDir(std::string_view prefix = "vmm-test") {
    std::string templ = "/tmp/" + std::string(prefix) + "-XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);  // leftovers in /tmp are harmless
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `contents` to the file `name` in the directory; returns its path.
  std::string file(const std::string& name, const std::string& contents) const {
    const std::string p = path + "/" + name;
    std::ofstream(p, std::ios::binary) << contents;
    return p;
  }

  std::string path;
};

// The whole file at `path` ("" if it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace vmm::test
