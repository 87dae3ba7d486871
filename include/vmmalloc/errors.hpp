// vmmalloc's typed errors. Every failure of the C++ API is one of these; the
// C ABI turns them into a vmm_status and a vmm_last_error() message.
#pragma once

#include <new>
#include <stdexcept>
#include <string>

#include "vmmalloc/vmmalloc.h"

namespace vmm {

class VMM_API Error : public std::runtime_error {
 public:
  Error(vmm_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  vmm_status status() const noexcept { return status_; }

 private:
  vmm_status status_;
};

// Device memory, the configured memory cap, or address space ran out.
// Nothing was changed by the failing call.
class VMM_API OutOfMemoryError : public Error {
 public:
  explicit OutOfMemoryError(const std::string& message) : Error(VMM_ERROR_OUT_OF_MEMORY, message) {}
};

class VMM_API InvalidArgumentError : public Error {
 public:
  explicit InvalidArgumentError(const std::string& message)
      : Error(VMM_ERROR_INVALID_VALUE, message) {}
};

class VMM_API UnknownPointerError : public Error {
 public:
  explicit UnknownPointerError(const std::string& message)
      : Error(VMM_ERROR_UNKNOWN_POINTER, message) {}
};

class VMM_API NotSupportedError : public Error {
 public:
  explicit NotSupportedError(const std::string& message)
      : Error(VMM_ERROR_NOT_SUPPORTED, message) {}
};

// A bad configuration key or value; the message names the key and what is
// accepted.
class VMM_API ConfigError : public Error {
 public:
  ConfigError(std::string key, const std::string& message)
      : Error(VMM_ERROR_CONFIG, message), key_(std::move(key)) {}
  const std::string& key() const noexcept { return key_; }

 private:
  std::string key_;
};

// A driver (or host-backend system) call failed. `call()` names it
// ("cuMemMap"), `code()` is the CUresult (or errno for the host backend).
class VMM_API DriverError : public Error {
 public:
  DriverError(std::string call, int code, const std::string& message)
      : Error(VMM_ERROR_DRIVER, message), call_(std::move(call)), code_(code) {}
  const std::string& call() const noexcept { return call_; }
  int code() const noexcept { return code_; }

 private:
  std::string call_;
  int code_;
};

// A driver call failed because the device is out of memory
// (CUDA_ERROR_OUT_OF_MEMORY, or the host backend's simulated capacity).
class VMM_API DeviceOutOfMemoryError : public DriverError {
 public:
  using DriverError::DriverError;
};

}  // namespace vmm
