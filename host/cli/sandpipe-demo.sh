#!/usr/bin/env bash
# The main job, end to end: run a chain with a native plugin and a Python plugin in its sandbox
# as a PipeWire filter node, play test signals through it with pw-probe and print what came
# out; then SIGKILL the Python plugin's sandbox while the signal plays and show, measured, what
# a user gets: the restart time, the blocks that fell back, and that no sample was lost or
# shifted in time.
#
#   host/cli/sandpipe-demo.sh [BUILD_DIR]     (or SANDPIPE_BUILD_DIR; default: build)
#
# If no PipeWire daemon is reachable (`pw-cli info 0` fails), a private headless one with a
# null sink is started for the demo (tests/pw-session.sh) and torn down afterwards. The chain
# is `trim` (builtin:gain 0.5, on PipeWire's real-time thread) then `fx` (the Python example
# plugins-py/examples/gain.py at 0.5, in its sandbox, pipelined 2 blocks deep) unless
# SANDPIPE_DEMO_CONF names another (a chain without a Python slot skips the fault).
# Everything the script starts is stopped by PID.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-${SANDPIPE_BUILD_DIR:-build}}
[[ "$build" = /* ]] || { [[ -d "$build" ]] && build=$(cd "$build" && pwd) || build="$root/$build"; }
sandpipe="$build/host/cli/sandpipe"
probe="$build/tests/integration/pw-probe"
py=/usr/bin/python3

die() {
  echo "sandpipe-demo: $*" >&2
  exit 1
}

[[ -x "$sandpipe" ]] || die "no $sandpipe: build first (meson setup $build && ninja -C $build)"
[[ -x "$probe" ]] || die "no $probe: it is built with the tests (meson configure $build -Dtests=true)"

if ! pw-cli info 0 >/dev/null 2>&1; then
  [[ -z "${SANDPIPE_DEMO_IN_SESSION:-}" ]] || die "the private PipeWire session is not reachable"
  echo "No PipeWire daemon reachable: starting a private headless one (PipeWire, WirePlumber, null sink)."
  SANDPIPE_DEMO_IN_SESSION=1 exec "$root/tests/pw-session.sh" run --rate 48000 --quantum 512 -- \
    "${BASH_SOURCE[0]}" "$build"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sandpipe-demo.XXXXXX")
node_pid=""
probe_pid=""
cleanup() {
  for pid in "$probe_pid" "$node_pid"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The chain: a native gain and a Python gain (each 0.5: 0.25 in all; a block the Python slot
# does not deliver comes out at the native gain alone, 0.5: the probe tells them apart).
conf=${SANDPIPE_DEMO_CONF:-}
if [[ -z "$conf" ]]; then
  conf="$work/demo.conf"
  cat >"$conf" <<EOF
node.name        = "sandpipe-demo"
node.description = "Sandpipe demo (native gain + Python gain)"
channels         = 2
plugins = [
  { name = "trim" path = "builtin:gain" params = { gain = 0.5 } }
  { name = "fx"   path = "$root/plugins-py/examples/gain.py" mode = "pipelined" blocks = 2 params = { gain = 0.5 } }
]
EOF
fi
[[ -f "$conf" ]] || die "no chain config $conf"
node_name=$(sed -n 's/^[[:space:]]*node\.name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$conf" | head -n1)
node_name=${node_name:-sandpipe}

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
# status_field SLOT FIELD: one field of one slot of `sandpipe status --json`.
status_field() {
  "$sandpipe" status "$node_name" --json 2>/dev/null |
    "$py" -c 'import json,sys; d=json.load(sys.stdin); print(next((s[sys.argv[2]] for s in d["slots"] if s["name"]==sys.argv[1]), ""))' "$1" "$2"
}
# The node's ProcessLatency (frames) and its ports' Latency, as PipeWire publishes them now.
read_latency() {
  pw-dump 2>/dev/null | "$py" -c '
import json, sys
name = sys.argv[1]
dump = json.load(sys.stdin)
node = next((o for o in dump if o.get("type") == "PipeWire:Interface:Node"
             and o["info"]["props"].get("node.name") == name), None)
if node is None:
    print("? ?"); sys.exit()
pl = node["info"].get("params", {}).get("ProcessLatency") or [{}]
ports = [o for o in dump if o.get("type") == "PipeWire:Interface:Port"
         and str(o["info"]["props"].get("node.id")) == str(node["id"])
         and o["info"].get("direction") == "output"]
port = "?"
for p in ports:
    for l in p["info"].get("params", {}).get("Latency") or []:
        if l.get("direction") == "Output":
            port = l.get("minRate", "?")
print(pl[0].get("rate", "?"), port)' "$node_name"
}
probe_capturing() { [[ -f "$1" ]] && grep -q '"capturing": true' "$1"; }
probe_frames() { sed -n 's/.*"frames": \([0-9]*\).*/\1/p' "$1" 2>/dev/null || echo 0; }

echo "Chain:  $conf"
grep -E '^\s*\{.*path' "$conf" | sed 's/^/          /'
"$sandpipe" run "$conf" 2>"$work/sandpipe.log" &
node_pid=$!
if ! poll 60 node_up; then
  cat "$work/sandpipe.log" >&2
  die "node $node_name did not appear"
fi
poll 60 grep -q ready "$work/sandpipe.log" || true
# (Its latency is printed below, as PipeWire publishes it while the signal plays: at start-up the
# graph's quantum is not settled yet.)
# The line as PipeWire's log writes it ("[I][time] sandpipe.node | [file: line func()] text"): the text.
echo "Node:   $node_name (pid $node_pid): $(grep -m1 'ready' "$work/sandpipe.log" | sed -E -e 's/^\[[A-Z]\]\[[^]]*\] [a-z.]+ \| \[[^]]*\] //' -e 's/^sandpipe: //' -e 's/, latency [0-9]* frames//')"
echo

# measure NAME PROBE-ARGS…: plays and captures; reads the node's latency while it runs.
measure() {
  local name=$1
  shift
  "$probe" --target "$node_name" --frames 96000 --json "$work/$name.json" --status "$work/$name.status" \
    --name "sandpipe-demo-probe" "$@" 2>"$work/$name.err" &
  probe_pid=$!
  if poll 60 probe_capturing "$work/$name.status"; then
    read_latency >"$work/$name.latency"
  fi
  if ! wait "$probe_pid"; then
    probe_pid=""
    cat "$work/$name.err" >&2
    die "probe ($name) failed"
  fi
  probe_pid=""
}
measure noise --signal noise --amplitude 0.5
measure tone1k --signal tone --freq 1000 --amplitude 0.5
measure tone12k --signal tone --freq 12000 --amplitude 0.5

"$py" - "$work" <<'EOF'
import json, math, sys
work = sys.argv[1]
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
try:
    process_latency, port_latency = open(f"{work}/noise.latency").read().split()
except (OSError, ValueError):
    process_latency, port_latency = "?", "?"
print()
print(f"Graph: {noise['rate']} Hz, quanta {', '.join(str(q['quantum']) for q in noise['quanta'])}; "
      f"{noise['frames']} frames per measurement, {noise['missing_cycles']} cycles without buffers, "
      f"{noise['silent_cycles']} silent cycles.")
if noise["delay_reliable"]:
    ms = 1000.0 * noise["delay_frames"] / noise["rate"]
    print(f"Latency: while the noise played the node reported {process_latency} frames (ProcessLatency; "
          f"its output ports' Latency {port_latency}); the output matches the input best "
          f"{noise['delay_frames']} frames ({ms:.2f} ms) later.")
EOF

# ---- the fault: SIGKILL the Python plugin's sandbox while the signal plays --------------------
py_slot=$("$sandpipe" status "$node_name" --json 2>/dev/null |
  "$py" -c 'import json,sys; print(next((s["name"] for s in json.load(sys.stdin)["slots"] if s["kind"]=="python"), ""))' ||
  true)
if [[ -n "$py_slot" ]]; then
  echo
  trim_gain=0.5 fx_gain=0.5
  "$probe" --target "$node_name" --frames 240000 --json "$work/fault.json" --status "$work/fault.status" \
    --signal noise --amplitude 0.5 --expect-gain 0.25 --dry-gain 0.5 --name "sandpipe-demo-probe" \
    2>"$work/fault.err" &
  probe_pid=$!
  poll 60 probe_capturing "$work/fault.status" || die "the fault probe did not start: $(cat "$work/fault.err")"
  # One second of audio first, then the kill.
  until (($(probe_frames "$work/fault.status") >= 48000)); do sleep 0.05; done
  pid=$(status_field "$py_slot" pid)
  restarts=$(status_field "$py_slot" restarts)
  fell_back=$(status_field "$py_slot" bypassed_blocks)
  [[ "$pid" -gt 1 ]] || die "no sandbox pid for $py_slot in the status"
  kill -KILL "$pid"
  restarted() { (($(status_field "$py_slot" restarts) > restarts)) && [[ $(status_field "$py_slot" state) == running ]]; }
  poll 30 restarted || die "$py_slot was not restarted: $(tail -5 "$work/sandpipe.log")"
  new_pid=$(status_field "$py_slot" pid)
  restart_ms=$(status_field "$py_slot" last_restart_ms)
  if ! wait "$probe_pid"; then
    probe_pid=""
    cat "$work/fault.err" >&2
    die "the fault probe failed"
  fi
  probe_pid=""
  sleep 1.2 # the status is rewritten every second: the counters after the last block
  fell_back=$(($(status_field "$py_slot" bypassed_blocks) - fell_back))
  overruns=$("$sandpipe" status "$node_name" --json 2>/dev/null |
    "$py" -c 'import json,sys; print(json.load(sys.stdin).get("timing", {}).get("overruns", "?"))' || echo "?")
  steady_delay=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["delay_frames"])' "$work/noise.json")
  "$py" - "$work" "$py_slot" "$pid" "$new_pid" "$restart_ms" "$fell_back" "$steady_delay" "$overruns" <<'EOF'
import json, sys
work, slot, pid, new_pid, restart_ms, fell_back, steady_delay, overruns = sys.argv[1:]
r = json.load(open(f"{work}/fault.json"))
v = r.get("verdicts", "")
count = {k: v.count(k) for k in "gdxwszn"}
lost = r["position_gaps"] + r["missing_cycles"] + count["s"] + count["z"] + count["n"]
print(f"Fault: SIGKILL to the sandbox of `{slot}` (pid {pid}) while the noise played "
      f"({r['cycles']} cycles of {r['quanta'][0]['quantum'] if r['quanta'] else '?'} frames captured).")
print(f"  the plugin was restarted in {float(restart_ms):.1f} ms (new sandbox pid {new_pid});")
blocks = "1 block" if fell_back == "1" else f"{fell_back} blocks"
print(f"  {blocks} of the slot fell back to its dry input (the node's count); the probe heard "
      f"{count['d']} whole cycles at the dry level and {count['x']} cycles with a crossfade to or from it, "
      f"{r['dry_frames']} dry frames in all;")
shifted = count["w"]  # "n": wrong next to an xrun, the graph's (counted as lost above)
ok = r.get("ok") and lost == 0 and shifted == 0 and str(r["delay_frames"]) == steady_delay
if lost == 0:
    print(f"  no sample was lost: every cycle's position follows the last (0 gaps, 0 silent or stale buffers);")
else:
    print(f"  LOST: {r['position_gaps']} position gaps, {r['missing_cycles']} cycles without buffers, "
          f"{count['z']} silent, {count['s']} stale and {count['n']} garbled cycles: the graph's xruns; the node overran "
          f"{overruns} of its cycles since it started (an xrun without an overrun is the machine's: "
          f"a stalled CPU, not a late plugin)")
if shifted == 0 and str(r["delay_frames"]) == steady_delay:
    print(f"  no sample was shifted: every frame is the input {r['delay_frames']} frames earlier (as before "
          f"the kill) at the chain's gain, at the dry level, or on a ramp between the two at its own position.")
else:
    print(f"  SHIFTED OR WRONG: {shifted} cycles match neither the chain nor the dry signal at delay "
          f"{r['delay_frames']} (steady: {steady_delay}); first: {r.get('first_bad_cycles', [])[:2]}")
print("  => " + ("the audio never stopped and never moved." if ok else "see above."))
EOF
fi

kill -TERM "$node_pid"
status=0
wait "$node_pid" || status=$?
node_pid=""
echo
echo "sandpipe exited with status $status: $(grep -m1 'cycles=' "$work/sandpipe.log" | sed 's/^sandpipe: //')"
exit "$status"
