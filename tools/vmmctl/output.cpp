// Where vmmctl's output goes (stdout or -o FILE) and how wide it may be.
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "tools/vmmctl/commands.hpp"
#include "tools/vmmctl/exit_codes.hpp"

namespace vmmctl {

void emit(const Options& o, const std::string& text) {
  if (!o.output) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return;
  }
  const std::string tmp = *o.output + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw CliError(kError, "cannot write " + *o.output + ": " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw CliError(kError, "writing " + *o.output + " failed");
    }
  }
  if (std::rename(tmp.c_str(), o.output->c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw CliError(kError, "cannot write " + *o.output + ": " + std::strerror(err));
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
