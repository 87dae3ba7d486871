// Where vmmctl's output goes (stdout or -o FILE) and how wide it may be.
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <system_error>

#include "allocator/observe/private_file.hpp"  // internal: not public API
#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"

namespace vmmctl {

void emit(const Options& o, const std::string& text) {
  if (!o.output) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return;
  }
  // Through a private temporary file (mode 0600, a name no one can plant a
  // link at), renamed into place: the output holds a snapshot's contents.
  try {
    vmm::PrivateFile file(*o.output);
    file.write(text);
    file.commit();
  } catch (const std::system_error& e) {
    throw CliError(kError, "cannot write " + *o.output + ": " + e.what());
  }
}

std::size_t output_width(const Options& o) {
  if (o.width != 0) return o.width;
  winsize ws{};
  if (::isatty(STDOUT_FILENO) && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) {
    return ws.ws_col;
  }
  return 100;
}

}  // namespace vmmctl
