#!/usr/bin/env bash
# The main job, end to end: run an example chain as a PipeWire filter node, play test signals
# through it with pw-probe, and print what came out.
#
#   host/sandpipe-demo.sh [BUILD_DIR]     (or SANDPIPE_BUILD_DIR; default: build)
#
# If no PipeWire daemon is reachable (`pw-cli info 0` fails), a private headless one with a
# null sink is started for the demo (tests/pw-session.sh) and torn down afterwards. The chain
# is docs/examples/gain-lowpass.conf (gain 0.5, then a biquad lowpass at 8 kHz) unless
# SANDPIPE_DEMO_CONF names another. Everything the script starts is stopped by PID.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-${SANDPIPE_BUILD_DIR:-build}}
[[ "$build" = /* ]] || { [[ -d "$build" ]] && build=$(cd "$build" && pwd) || build="$root/$build"; }
sandpipe="$build/host/sandpipe"
probe="$build/tests/integration/pw-probe"
conf=${SANDPIPE_DEMO_CONF:-$root/docs/examples/gain-lowpass.conf}

die() {
  echo "sandpipe-demo: $*" >&2
  exit 1
}

[[ -x "$sandpipe" ]] || die "no $sandpipe: build first (meson setup $build && ninja -C $build)"
[[ -x "$probe" ]] || die "no $probe: it is built with the tests (meson configure $build -Dtests=true)"
[[ -f "$conf" ]] || die "no chain config $conf"

if ! pw-cli info 0 >/dev/null 2>&1; then
  [[ -z "${SANDPIPE_DEMO_IN_SESSION:-}" ]] || die "the private PipeWire session is not reachable"
  echo "No PipeWire daemon reachable: starting a private headless one (PipeWire, WirePlumber, null sink)."
  SANDPIPE_DEMO_IN_SESSION=1 exec "$root/tests/pw-session.sh" run --rate 48000 --quantum 512 -- \
    "${BASH_SOURCE[0]}" "$build"
fi

node_name=$(sed -n 's/^[[:space:]]*node\.name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$conf" | head -n1)
node_name=${node_name:-sandpipe}
work=$(mktemp -d "${TMPDIR:-/tmp}/sandpipe-demo.XXXXXX")
node_pid=""

cleanup() {
  if [[ -n "$node_pid" ]] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# poll TIMEOUT CMD…
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}
node_up() { pw-dump 2>/dev/null | grep -q "\"node.name\": \"$node_name\""; }

echo "Chain:  $conf"
grep -E '^\s*\{.*path' "$conf" | sed 's/^/          /'
"$sandpipe" run "$conf" 2>"$work/sandpipe.log" &
node_pid=$!
if ! poll 30 node_up; then
  cat "$work/sandpipe.log" >&2
  die "node $node_name did not appear"
fi
echo "Node:   $node_name (pid $node_pid): $(grep -m1 'ready' "$work/sandpipe.log" | sed 's/^sandpipe: //')"
echo

measure() { # NAME PROBE-ARGS…
  local name=$1
  shift
  if ! "$probe" --target "$node_name" --frames 96000 --json "$work/$name.json" --name "sandpipe-demo-probe" "$@" \
    2>"$work/$name.err"; then
    cat "$work/$name.err" >&2
    die "probe ($name) failed"
  fi
}
measure noise --signal noise --amplitude 0.5
measure tone1k --signal tone --freq 1000 --amplitude 0.5
measure tone12k --signal tone --freq 12000 --amplitude 0.5

reported_latency=$(sed -n 's/.*latency \([0-9]*\) frames.*/\1/p' "$work/sandpipe.log" | head -n1)
/usr/bin/python3 - "$work" "${reported_latency:-?}" <<'EOF'
import json, math, sys
work, reported = sys.argv[1], sys.argv[2]
def db(x):
    return "  -inf" if x <= 0 else f"{20 * math.log10(x):6.1f}"
rows = [("white noise", "noise"), ("sine 1 kHz", "tone1k"), ("sine 12 kHz", "tone12k")]
print("Levels in dBFS (RMS and peak), gain = output RMS / input RMS:")
print(f"{'signal':<13} {'in RMS':>9} {'in peak':>9} {'out RMS':>9} {'out peak':>9} {'gain':>9} {'latency':>14}")
for label, name in rows:
    r = json.load(open(f"{work}/{name}.json"))
    if not r.get("ok"):
        print(f"{label:<13} probe failed: {r.get('error')}")
        continue
    lat = f"{r['delay_frames']} fr" if r["delay_reliable"] else "(periodic)"
    print(f"{label:<13} {db(r['input_rms'])} dB {db(r['input_peak'])} dB {db(r['output_rms'])} dB "
          f"{db(r['output_peak'])} dB {r['gain_db']:6.2f} dB {lat:>14}")
noise = json.load(open(f"{work}/noise.json"))
print()
print(f"Graph: {noise['rate']} Hz, quanta {', '.join(str(q['quantum']) for q in noise['quanta'])}; "
      f"{noise['frames']} frames per measurement, {noise['missing_cycles']} cycles without buffers, "
      f"{noise['silent_cycles']} silent cycles.")
if noise["delay_reliable"]:
    ms = 1000.0 * noise["delay_frames"] / noise["rate"]
    print(f"Latency: the node reports {reported} frames (ProcessLatency); the output matches the input "
          f"best {noise['delay_frames']} frames ({ms:.2f} ms) later, within the same graph cycle "
          f"(a filter's group delay shows up here).")
EOF

kill -TERM "$node_pid"
status=0
wait "$node_pid" || status=$?
node_pid=""
echo "sandpipe exited with status $status: $(grep -m1 'cycles=' "$work/sandpipe.log" | sed 's/^sandpipe: //')"
exit "$status"
