#!/usr/bin/env bash
# Makes sure everything needed to build vmmalloc is installed, and installs
# (Debian/Ubuntu packages, apt-get) only what is missing:
#
#   cmake >= 3.25, gcc/g++ (C++20), make or ninja, Catch2 (2.13 or 3.x),
#   nlohmann_json 3, and the CUDA toolkit headers (cuda.h; not installable
#   from Debian: it must already be there, e.g. /usr/local/cuda).
#   Optional: a headless browser (Debian's chromium) for the test that opens
#   vmmctl's HTML page; if it cannot be installed that test is skipped, and
#   this script only warns. VMMALLOC_NO_BROWSER=1 skips it.
#
# Idempotent and quiet when everything is present (one line), and it never
# touches apt-get then, so it also works on machines without network. When
# something is missing and apt-get is unavailable it fails saying what.
#
# Usage: scripts/setup-deps.sh [--fuzz]   (root, or a user with sudo)
#   --fuzz: also clang with libFuzzer (for scripts/fuzz.sh)
set -euo pipefail

WANT_FUZZ=0
for arg in "$@"; do
  case "$arg" in
    --fuzz) WANT_FUZZ=1 ;;
    *) printf 'setup-deps: unknown argument %s (accepted: --fuzz)\n' "$arg" >&2; exit 2 ;;
  esac
done

readonly MIN_CMAKE=3.25
readonly MIN_GXX=11

say() { printf 'setup-deps: %s\n' "$*"; }
die() {
  printf 'setup-deps: error: %s\n' "$*" >&2
  exit 1
}

# version_ge A B: A >= B (dotted versions).
version_ge() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
  local sudo=()
  have apt-get || die "missing: $*. apt-get is not available here: install them by hand."
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || die "missing: $*. Not root and no sudo: install them by hand (apt-get install $*)."
    sudo=(sudo)
  fi
  say "installing missing Debian packages: $*"
  if [ "$apt_updated" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -q -o Acquire::Retries=3 update >/dev/null ||
      die "apt-get update failed (no network or no package source?); missing: $*"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" ||
    die "apt-get install $* failed"
}

# ------------------------------------------------------------------ tools
# Prints the Debian packages for missing or too-old tools, one per line.
missing_tools() {
  if have cmake; then
    local v
    v="$(cmake --version | head -n1 | awk '{print $3}')"
    version_ge "$v" "$MIN_CMAKE" || echo cmake
  else
    echo cmake
  fi
  have gcc || have cc || echo gcc
  if have g++; then
    local gv
    gv="$(g++ -dumpfullversion -dumpversion 2>/dev/null || echo 0)"
    version_ge "$gv" "$MIN_GXX" || echo g++
  else
    echo g++
  fi
  have ninja || have make || echo make
}

mapfile -t pkgs < <(missing_tools)
installed_any=0
if [ "${#pkgs[@]}" -gt 0 ]; then
  apt_install "${pkgs[@]}"
  installed_any=1
  mapfile -t pkgs < <(missing_tools)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    die "still missing or too old after install: ${pkgs[*]} (need cmake >= $MIN_CMAKE, g++ >= $MIN_GXX, make or ninja)"
  fi
fi

# --------------------------------------------------------------- libraries
# Asks CMake itself, as the build will: find_package(Catch2) and
# find_package(nlohmann_json 3). Prints the Debian packages of those missing.
missing_libs() {
  local probe rc=0
  probe="$(mktemp -d)"
  cat >"$probe/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(vmmalloc_deps_probe LANGUAGES CXX)
set(missing "")
find_package(Catch2 3 QUIET)
if(NOT Catch2_FOUND)
  find_package(Catch2 2 QUIET)
endif()
if(NOT Catch2_FOUND)
  list(APPEND missing catch2)
endif()
find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  list(APPEND missing nlohmann-json3-dev)
endif()
list(JOIN missing "\n" missing)
file(WRITE "${CMAKE_BINARY_DIR}/missing.txt" "${missing}")
EOF
  if cmake -S "$probe" -B "$probe/build" >"$probe/log" 2>&1; then
    cat "$probe/build/missing.txt"
  else
    cat "$probe/log" >&2
    rc=1
  fi
  rm -rf "$probe"
  return "$rc"
}

libs_or_die() {
  missing_libs || die "CMake could not configure a trivial C++ project (is the compiler working?)"
}

libs="$(libs_or_die)" || exit 1
mapfile -t pkgs < <(printf '%s\n' "$libs" | sed '/^$/d')
if [ "${#pkgs[@]}" -gt 0 ]; then
  apt_install "${pkgs[@]}"
  installed_any=1
  libs="$(libs_or_die)" || exit 1
  mapfile -t pkgs < <(printf '%s\n' "$libs" | sed '/^$/d')
  if [ "${#pkgs[@]}" -gt 0 ]; then
    die "CMake still cannot find: ${pkgs[*]}"
  fi
fi

# ------------------------------------------------------------ CUDA headers
# Headers only: the driver (libcuda.so.1) is loaded at run time and may be
# absent. The toolkit is not a Debian package here, so it is only checked.
cuda_header=""
for dir in "${CUDAToolkit_ROOT:-}" "${CUDA_PATH:-}" "${CUDA_HOME:-}" \
  "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")")" \
  /usr/local/cuda /usr; do
  if [ -n "$dir" ] && [ -f "$dir/include/cuda.h" ]; then
    cuda_header="$dir/include/cuda.h"
    break
  fi
done
if [ -z "$cuda_header" ]; then
  die "CUDA toolkit headers not found (looked for include/cuda.h under \$CUDAToolkit_ROOT, \$CUDA_PATH, \$CUDA_HOME, nvcc's prefix, /usr/local/cuda, /usr). Install the CUDA toolkit (headers are enough; no GPU or driver needed)."
fi

# ------------------------------------------------- fuzzing (--fuzz only)
# clang with libFuzzer (Debian: clang + libclang-rt-<major>-dev).
libfuzzer_works() {
  have clang++ || return 1
  local probe rc=0
  probe="$(mktemp -d)"
  printf '#include <cstdint>\n#include <cstddef>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' >"$probe/f.cpp"
  clang++ -fsanitize=fuzzer,address "$probe/f.cpp" -o "$probe/f" >/dev/null 2>&1 || rc=1
  rm -rf "$probe"
  return "$rc"
}
if [ "$WANT_FUZZ" -eq 1 ] && ! libfuzzer_works; then
  have clang++ || apt_install clang
  major="$(clang++ -dumpversion | cut -d. -f1)"
  libfuzzer_works || apt_install "libclang-rt-$major-dev"
  installed_any=1
  libfuzzer_works || die "clang++ -fsanitize=fuzzer still fails after installing clang and libclang-rt-$major-dev"
fi

# ------------------------------------------------ browser (optional)
# tests/cli/html_browser_test.sh opens vmmctl's page in headless chromium.
have_browser() { have chromium || have chromium-browser || have google-chrome; }
if [ "${VMMALLOC_NO_BROWSER:-0}" != 1 ] && ! have_browser; then
  if have apt-get && { [ "$(id -u)" -eq 0 ] || have sudo; }; then
    # In a subshell: a failure (no network, no package) must not end this script.
    if (apt_install chromium); then
      installed_any=1
    else
      say "warning: chromium could not be installed; the vmmctl HTML browser test will be skipped"
    fi
  else
    say "warning: no chromium and no way to install it; the vmmctl HTML browser test will be skipped"
  fi
fi

if [ "$installed_any" -eq 1 ]; then
  say "dependencies installed; all present (CUDA headers: $cuda_header)"
else
  say "all dependencies present"
fi
