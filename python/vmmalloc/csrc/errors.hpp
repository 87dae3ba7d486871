// How the adapter raises errors into PyTorch: messages are put together here
// with std::string alone and handed to TORCH_CHECK as one string.
//
// Why not TORCH_CHECK(cond, "a", x, "b") directly: on the GPU machine
// (PyTorch 2.11.0+cu130, g++ 13.3, extensions built with -std=c++17),
// c10::str with several arguments - and so every multi-argument TORCH_CHECK
// - ended the process with SIGSEGV when called from an extension; a bare
// diagnostic extension doing only TORCH_CHECK(false, "a", 1, "b", 2.5)
// crashed the same way, while TORCH_CHECK(false, one_string) worked. So
// every error of the adapter takes the one-string path.
#pragma once

#include <c10/util/Exception.h>

#include <cstdio>
#include <exception>
#include <string>
#include <type_traits>

namespace vmmalloc_torch {

namespace detail {

inline void append(std::string& out, const char* s) { out += s != nullptr ? s : "(null)"; }
inline void append(std::string& out, const std::string& s) { out += s; }
inline void append(std::string& out, const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  out += buf;
}
template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
void append(std::string& out, T value) {
  if constexpr (std::is_same_v<T, bool>) {
    out += value ? "true" : "false";
  } else if constexpr (std::is_integral_v<T> && sizeof(T) == 1) {
    out += std::to_string(static_cast<int>(value));  // DeviceIndex is int8_t: a number, not a char
  } else {
    out += std::to_string(value);
  }
}

}  // namespace detail

// The arguments (strings, numbers, pointers) written one after the other.
template <typename... Args>
std::string message(const Args&... args) {
  std::string out;
  (detail::append(out, args), ...);
  return out;
}

// c10::Error (Python: RuntimeError).
[[noreturn]] inline void throw_error(const std::string& text) {
  TORCH_CHECK(false, text.c_str());
  std::terminate();  // unreachable: TORCH_CHECK(false, ...) throws
}

// c10::OutOfMemoryError (Python: torch.OutOfMemoryError).
[[noreturn]] inline void throw_out_of_memory_error(const std::string& text) {
  TORCH_CHECK_WITH(OutOfMemoryError, false, text.c_str());
  std::terminate();
}

// c10::ValueError (Python: ValueError).
[[noreturn]] inline void throw_value_error(const std::string& text) {
  TORCH_CHECK_VALUE(false, text.c_str());
  std::terminate();
}

}  // namespace vmmalloc_torch
