#!/usr/bin/env bash
# Plain test (CI): the README's main job still runs from this checkout. host/cli/sandpipe-demo.sh
# in a runtime dir of its own, so it starts (and stops) its private headless PipeWire, then the
# sections a user reads are checked for: the latency the node reported, and the SIGKILL of the
# Python sandbox with its restart. The figures themselves (restart time, fallen-back blocks) are
# the machine's and are not judged here; the demo's own exit status is.
#
#   demo-test.sh SOURCE_ROOT BUILD_DIR
set -euo pipefail
root=${1:?usage: demo-test.sh SOURCE_ROOT BUILD_DIR}
build=${2:?usage: demo-test.sh SOURCE_ROOT BUILD_DIR}
runtime=$(mktemp -d "${TMPDIR:-/tmp}/sandpipe-demo-test.XXXXXX")
trap 'rm -rf "$runtime"' EXIT
out="$runtime/demo.out"

status=0
env -u PIPEWIRE_REMOTE -u SANDPIPE_DEMO_CONF XDG_RUNTIME_DIR="$runtime" \
  bash "$root/host/cli/sandpipe-demo.sh" "$build" >"$out" 2>&1 || status=$?
cat "$out"
[[ $status -eq 0 ]] || { echo "demo-test: the demo exited with status $status" >&2; exit 1; }

expect() {
  grep -Eq "$1" "$out" || { echo "demo-test: the demo's output has no line matching: $1" >&2; exit 1; }
}
expect '^Node: +sandpipe-demo \(pid [0-9]+\): node "sandpipe-demo" \(id [0-9]+\) ready, 2 channels, chain at 48000 Hz$'
expect '^white noise .* 1024 fr$'
expect '^Latency: while the noise played the node reported 1024 frames'
expect '^Fault: SIGKILL to the sandbox of `fx`'
expect 'the plugin was restarted in [0-9.]+ ms \(new sandbox pid [0-9]+\)'
expect '^sandpipe exited with status 0'
