// vmmctl replay: trace replay, which is vmm_replay's job (tools/replay.cpp,
// docs/tools.md#vmm_replay). vmmctl runs it with the same arguments: the
// vmm_replay beside the vmmctl executable or in its parent directory (the
// build tree: build/tools/vmm_replay, build/tools/vmmctl/vmmctl), else the
// one on PATH.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"

namespace vmmctl {

int cmd_replay(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string self_dir;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    self_dir.assign(exe, static_cast<std::size_t>(n));
    self_dir.erase(self_dir.rfind('/') + 1);
  }
  std::string name = "vmm_replay";
  argv.push_back(name.data());
  std::vector<std::string> copies(args);
  for (std::string& a : copies) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (!self_dir.empty()) {
    for (const std::string& candidate : {self_dir + "vmm_replay", self_dir + "../vmm_replay"}) {
      if (::access(candidate.c_str(), X_OK) == 0) ::execv(candidate.c_str(), argv.data());
    }
  }
  ::execvp("vmm_replay", argv.data());
  throw CliError(kError, std::string("cannot run vmm_replay (looked in ") +
                             (self_dir.empty() ? "?" : self_dir) +
                             " and on PATH): " + std::strerror(errno));
}

}  // namespace vmmctl
