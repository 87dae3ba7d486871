# shellcheck shell=bash
# Shared by scripts/test.sh, scripts/demo.sh and scripts/gpu_*.sh (sourced,
# not run).
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

# ------------------------------------------------------------ GPU scripts
# What scripts/gpu_*.sh share. They run on the GPU machine, whose copy of the
# tree may carry no current .git: COMMIT names the commit it was built from.

# vmm_gpu_env: /usr/local/cuda/bin on PATH (nvcc and compute-sanitizer live
# there), JOBS (build parallelism; VMM_JOBS follows it) and CUDA_ARCH (90)
# given their defaults.
vmm_gpu_env() {
  case ":$PATH:" in
    *:/usr/local/cuda/bin:*) ;;
    *) PATH="$PATH:/usr/local/cuda/bin" ;;
  esac
  export PATH
  JOBS="${JOBS:-$VMM_JOBS}"
  VMM_JOBS="$JOBS"
  CUDA_ARCH="${CUDA_ARCH:-90}"
}

# vmm_utc_now: "2026-11-28 07:00:00 UTC".
vmm_utc_now() { date -u '+%Y-%m-%d %H:%M:%S UTC'; }

# vmm_commit_label [--dirty]: $COMMIT where set, else the checkout's short
# sha ("unknown" without git); --dirty adds "(dirty tree)" to a checkout
# with uncommitted changes.
vmm_commit_label() {
  if [ -n "${COMMIT:-}" ]; then
    echo "$COMMIT"
    return
  fi
  local sha
  sha=$(git -C "$VMM_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ "${1:-}" = --dirty ] && git -C "$VMM_ROOT" status --porcelain 2>/dev/null | grep -q .; then
    sha="$sha (dirty tree)"
  fi
  echo "$sha"
}

# vmm_gpu_lines FIELDS [MAX]: "gpu: ..." for each visible GPU (at most MAX),
# FIELDS as nvidia-smi --query-gpu takes them; "gpu: none" without one.
vmm_gpu_lines() {
  local lines
  lines=$(nvidia-smi --query-gpu="$1" --format=csv,noheader 2>/dev/null | head -n "${2:-64}")
  local line
  while IFS= read -r line; do echo "gpu: $line"; done <<<"${lines:-none}"
}

# vmm_gpu_configure BUILD_DIR [CMAKE_ARGS...]: configures a GPU build tree:
# RelWithDebInfo, sm_$CUDA_ARCH, the nvcc on PATH (where there is one).
vmm_gpu_configure() {
  local dir="$1"
  shift
  local nvcc=()
  if command -v nvcc >/dev/null 2>&1; then nvcc=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)"); fi
  cmake -S "$VMM_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" "${nvcc[@]}" "$@"
}

# vmm_tar_out NAME TAR_ARGS...: where OUT is set, tars TAR_ARGS into
# $OUT/NAME (so the device call brings it back); otherwise nothing.
vmm_tar_out() {
  [ -n "${OUT:-}" ] || return 0
  local name="$1"
  shift
  mkdir -p "$OUT"
  tar -czf "$OUT/$name" "$@"
}

# Steps with logs (gpu_suite, gpu_multi, gpu_preload, gpu_reliability):
# vmm_steps_init LOGDIR, then vmm_step NAME COMMAND... for each step. Each
# outcome is a line of VMM_STEP_RESULTS; VMM_STEP_FAILED becomes 1 at the
# first failure. VMM_STEP_TAIL: lines of a step's log shown on the console
# (30); VMM_STEP_LOG_PREFIX: put before each log's name.
vmm_steps_init() {
  VMM_STEP_LOGS="$1"
  VMM_STEP_RESULTS=()
  VMM_STEP_FAILED=0
  mkdir -p "$VMM_STEP_LOGS"
}

vmm_step_pass() { VMM_STEP_RESULTS+=("PASS  $1"); }

# vmm_step_fail TEXT: a failure, of a step or found in a step's output.
vmm_step_fail() {
  VMM_STEP_RESULTS+=("FAIL  $1")
  VMM_STEP_FAILED=1
}

# vmm_step NAME COMMAND...: runs COMMAND with its output in
# $VMM_STEP_LOGS/<prefix>NAME.log (a tail of it on the console), records the
# outcome and duration, and returns COMMAND's status.
vmm_step() {
  local name="$1"
  shift
  local log_name="${VMM_STEP_LOG_PREFIX:-}$name.log"
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" >"$VMM_STEP_LOGS/$log_name" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  tail -n "${VMM_STEP_TAIL:-30}" "$VMM_STEP_LOGS/$log_name"
  if [ "$rc" -eq 0 ]; then
    vmm_step_pass "$name (${took}s)"
  else
    vmm_step_fail "$name (rc $rc, ${took}s, see $log_name)"
  fi
  return "$rc"
}

# vmm_want STEP: whether the comma list STEPS names STEP.
vmm_want() {
  case ",${STEPS:-}," in
    *",$1,"*) return 0 ;;
    *) return 1 ;;
  esac
}

# vmm_step_report FILE HEADING GPU_FIELDS GPU_MAX [--dirty]: writes the
# summary (HEADING, the commit, the GPUs, every outcome and the verdict) to
# FILE and shows it.
vmm_step_report() {
  local file="$1" heading="$2" fields="$3" max="$4" dirty="${5:-}"
  {
    echo "$heading"
    echo "commit: $(vmm_commit_label "$dirty")"
    vmm_gpu_lines "$fields" "$max"
    printf '%s\n' "${VMM_STEP_RESULTS[@]}"
    if [ "$VMM_STEP_FAILED" -eq 0 ]; then echo "RESULT: all steps passed"; else echo "RESULT: FAILED"; fi
  } >"$file"
  echo
  echo "===================== summary ====================="
  cat "$file"
}

# vmm_ship_logs TGZ SUMMARY_NAME SUMMARY_FILE: where OUT is set, the step
# logs tarred into $OUT/TGZ and SUMMARY_FILE copied to $OUT/SUMMARY_NAME;
# either way, says where the logs are.
vmm_ship_logs() {
  if [ -n "${OUT:-}" ]; then
    vmm_tar_out "$1" -C "$VMM_STEP_LOGS" . && echo "logs: $OUT/$1"
    cp "$3" "$OUT/$2"
  else
    echo "logs: $VMM_STEP_LOGS"
  fi
}
