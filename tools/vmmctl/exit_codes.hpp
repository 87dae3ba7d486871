// vmmctl's exit codes (docs/tools.md#exit-status) and the error that carries
// one. Every failure is reported as one line on stderr, "vmmctl: <message>",
// and a distinct code, so scripts can tell what went wrong.
#pragma once

#include <stdexcept>
#include <string>

namespace vmmctl {

enum ExitCode : int {
  kOk = 0,
  kError = 1,           // anything else: I/O, a timeout, an output file not writable
  kUsage = 2,           // bad command line
  kMalformed = 3,       // a snapshot that is not valid JSON, is truncated, or lacks fields
  kUnknownVersion = 4,  // a snapshot of a schema version vmmctl does not know
  kNoProcess = 5,       // the PID is not running (or exited while watched)
  kOtherUser = 6,       // the process or its socket belongs to another user
  kNotServing = 7,      // the process runs but serves no vmmalloc socket
};

class CliError : public std::runtime_error {
 public:
  CliError(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

}  // namespace vmmctl
