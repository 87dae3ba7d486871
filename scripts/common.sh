# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/demo.sh (sourced, not run).
#
# Environment knobs:
#   VMMALLOC_JOBS        parallel build/test jobs (default: nproc)
#   VMMALLOC_BUILD_TYPE  CMAKE_BUILD_TYPE of a new build tree (default RelWithDebInfo)
#   VMMALLOC_NO_NVCC=1   configure without the CUDA compiler (no GPU tests/bench)

VMM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VMM_JOBS="${VMMALLOC_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# The CUDA toolkit's nvcc is used for the GPU tests and benchmarks when it is
# there; /usr/local/cuda/bin is often not on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  PATH="/usr/local/cuda/bin:$PATH"
  export PATH
fi

# vmm_configure BUILD_DIR [CMAKE_ARGS...]: configures (or re-configures) the
# tree; Ninja for a new tree where installed, else CMake's default generator.
vmm_configure() {
  local dir="$1"
  shift
  local args=()
  if [ ! -f "$dir/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
    args+=(-G Ninja)
  fi
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    args+=("-DCMAKE_BUILD_TYPE=${VMMALLOC_BUILD_TYPE:-RelWithDebInfo}")
  fi
  if [ "${VMMALLOC_NO_NVCC:-0}" = 1 ]; then
    args+=(-DCMAKE_CUDA_COMPILER=)
  fi
  cmake -S "$VMM_ROOT" -B "$dir" "${args[@]}" "$@"
}

# vmm_build BUILD_DIR [CMAKE_BUILD_ARGS...]
vmm_build() {
  local dir="$1"
  shift
  cmake --build "$dir" --parallel "$VMM_JOBS" "$@"
}
