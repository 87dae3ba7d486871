#!/usr/bin/env bash
# The main job: installs what is missing (Debian packages), builds build/
# and runs the workspace-growth demo. It uses the GPU where there is one,
# else the host backend, and says which. Arguments go to the demo.
#
# Usage: scripts/demo.sh [DEMO_ARGS...]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT"

scripts/setup-deps.sh
BUILD_DIR="${VMMALLOC_BUILD_DIR:-build}"
mkdir -p "$BUILD_DIR"
echo "demo: configuring $BUILD_DIR (log: $BUILD_DIR/configure.log)"
vmm_configure "$BUILD_DIR" >"$BUILD_DIR/configure.log" 2>&1 || {
  cat "$BUILD_DIR/configure.log" >&2
  echo "demo: configure failed" >&2
  exit 1
}
echo "demo: building workspace_demo"
vmm_build "$BUILD_DIR" --target workspace_demo
exec "$BUILD_DIR/tools/workspace_demo" "$@"
