#!/usr/bin/env bash
# The page of `vmmctl html`, opened in a real headless browser (Debian's
# chromium; scripts/setup-deps.sh installs it): the address-space map must
# render one row per region of the snapshot, and the page must fetch
# nothing.
#
# Usage: tests/cli/html_browser_test.sh VMMCTL WORKLOAD [SCREENSHOT.png]
#   With SCREENSHOT, also saves a picture of the page there (docs/).
# Exit status: 0 passed, 1 failed, 77 skipped (no chromium).
set -euo pipefail

VMMCTL=$1
WORKLOAD=$2
SCREENSHOT=${3:-}

browser=""
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then
    browser=$(command -v "$b")
    break
  fi
done
if [ -z "$browser" ]; then
  echo "skipped: no chromium (scripts/setup-deps.sh installs Debian's chromium)"
  exit 77
fi

tmp=$(mktemp -d /tmp/vmmctl-html-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "FAILED: $*" >&2
  exit 1
}

export VMMALLOC_CONF="backend:host,host_device_memory:4G,live_socket:off"
"$WORKLOAD" --snapshot "$tmp/snapshot.json" >/dev/null
"$VMMCTL" html "$tmp/snapshot.json" -o "$tmp/map.html" --json >"$tmp/html.json"

# The regions the snapshot holds: its workspaces plus its heap segments.
workspaces=$(grep -o '"workspaces":[0-9]*' "$tmp/snapshot.json" | head -n1 | cut -d: -f2)
segments=$(grep -o '"heap_segments":[0-9]*' "$tmp/snapshot.json" | head -n1 | cut -d: -f2)
expected=$((workspaces + segments))
[ "$expected" -ge 4 ] || fail "the workload's snapshot holds $expected regions, expected at least 4"
grep -q "\"regions\":$expected" "$tmp/html.json" || fail "vmmctl html --json: $(cat "$tmp/html.json")"

# Self-contained: no resource is loaded from anywhere.
if grep -Eq '<(script|link|img|iframe)[^>]+(src|href)=' "$tmp/map.html"; then
  fail "the page loads an outside resource"
fi

chrome_flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
  --disable-extensions --disable-background-networking --user-data-dir="$tmp/profile")
timeout 120 "$browser" "${chrome_flags[@]}" --virtual-time-budget=5000 --dump-dom \
  "file://$tmp/map.html" >"$tmp/dom.html" 2>"$tmp/chromium.log" ||
  fail "chromium failed: $(tail -n 5 "$tmp/chromium.log")"

grep -q 'data-state="rendered"' "$tmp/dom.html" ||
  fail "the page did not render: $(grep -o '<div id="vmm-status"[^>]*>[^<]*' "$tmp/dom.html")"
rows=$(grep -o 'class="row vmm-region"' "$tmp/dom.html" | wc -l)
[ "$rows" -eq "$expected" ] || fail "the map has $rows region rows, the snapshot $expected regions"
grep -q "data-regions=\"$expected\"" "$tmp/dom.html" || fail "vmm-status data-regions is not $expected"
for name in alpha beta; do
  grep -q "workspace &quot;$name&quot;" "$tmp/dom.html" || fail "workspace $name is not on the map"
done
grep -q '<svg class="chart"' "$tmp/dom.html" || fail "no memory-over-time chart"

if [ -n "$SCREENSHOT" ]; then
  timeout 120 "$browser" "${chrome_flags[@]}" --virtual-time-budget=5000 --hide-scrollbars \
    --window-size=1280,1400 --screenshot="$SCREENSHOT" "file://$tmp/map.html" >/dev/null 2>&1 ||
    fail "chromium could not take the screenshot"
  echo "screenshot: $SCREENSHOT"
fi
echo "html: $rows region rows rendered in $(basename "$browser"), as the snapshot holds"
