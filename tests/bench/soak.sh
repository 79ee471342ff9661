#!/usr/bin/env bash
# Soak: run a chain as a PipeWire node in a private graph for a while, drive audio through it and
# record what PipeWire and the OS see: per-cycle node time (pw-profiler), late cycles and driver
# overruns, CPU and RSS of the host and its sandboxes, sandbox (re)starts, Sandpipe's own
# counters at exit (and `sandpipe status` while running, when the build has it).
#
#   tests/bench/soak.sh [OPTIONS] PRESET
#
# PRESETS (48 kHz, forced quantum)
#   4py-512       quantum 512, 4 Python plugins (gain, biquad, gain, biquad)
#   8py-64        quantum 64, 8 Python plugins (gain)
#   16py-512      quantum 512, 16 Python gain plugins, each in its own sandbox (issue 17's
#                 isolated scale soak)
#   16py-512-relay  the same 16 isolated plugins, mode = "pipelined", as one relay one block
#                 deep: each sandbox hands the block straight to the next (issue 17, item 3)
#   64py-256      quantum 256, 64 Python gain plugins in 8 sandbox groups of 8 (issue 17's
#                 grouped scale soak: 8 hops per block instead of 64)
#   64py-256-relay  the same 64 in 8 groups, mode = "pipelined", as one relay one block deep:
#                 each group's sandbox hands the block straight to the next (2 host hops per block)
#   3slow-512     quantum 512, 3 Python plugins spinning ~5 ms each, mode = "pipelined"
#                 (skipped, exit 77, when the build has no pipelined mode)
#   crash-hourly  quantum 512, 2 Python plugins; one sandbox SIGKILLed every minute (needs
#                 the host's restart; the summary says whether sandboxes came back)
#   native        the baseline: builtin gain and biquad only, no sandbox (--quantum N,
#                 default 512): what the same graph loses on this machine without Python
#   custom        --chain FILE --quantum N
#
# OPTIONS
#   --duration S     seconds of audio (default 600; crash-hourly 3600)
#   --interval S     sampling period (default 1)
#   --crash-every S  SIGKILL one sandbox every S seconds (crash-hourly: 60)
#   --out DIR        results (default /tmp/sandpipe-soak-PRESET-TIME): soak.csv, summary.json,
#                    chain.conf, sandpipe.log, probe.json, pw-profiler.log
#   --build DIR      build directory (default: build-bench next to the sources)
#   --chain FILE     custom chain;  --quantum N   custom quantum
#   --latency-max-ms MS  the chain's latency.max-ms (the scheduler's pipelining budget; default:
#                    the config's default, 20)
#   --baseline       first soak the `native` preset at the same quantum for the same time in
#                    OUT/baseline, then PRESET in OUT/chain, and print both verdicts side by side
#                    (OUT/comparison.json): what the machine loses by itself is the bar
#
# Audio comes from pw-probe (a known signal, checked on the way out: errors, lost cycles).
# Exit: 0 ran (read the summary for the verdict), 1 failed to run, 2 usage, 77 preset unsupported.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
py=/usr/bin/python3
preset=""
duration=""
interval=1
crash_every=""
out=""
build="$root/build-bench"
chain_file=""
quantum=""
baseline=0
latency_max_ms=""

die() {
  echo "soak: $*" >&2
  exit 1
}
usage() {
  sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while (($#)); do
  case $1 in
    --duration) duration=${2:?}; shift 2 ;;
    --interval) interval=${2:?}; shift 2 ;;
    --crash-every) crash_every=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --build) build=${2:?}; shift 2 ;;
    --chain) chain_file=${2:?}; shift 2 ;;
    --quantum) quantum=${2:?}; shift 2 ;;
    --latency-max-ms) latency_max_ms=${2:?}; shift 2 ;;
    --baseline) baseline=1; shift ;;
    -h | --help) usage ;;
    -*) echo "soak: unknown option $1" >&2; usage ;;
    *) [[ -z "$preset" ]] || usage; preset=$1; shift ;;
  esac
done
[[ -n "$preset" ]] || usage
[[ "$build" = /* ]] || build="$PWD/$build"
sandpipe="$build/host/cli/sandpipe"
probe="$build/tests/integration/pw-probe"
stall_watch="$build/tests/integration/stall-watch"
[[ -x "$sandpipe" && -x "$probe" && -x "$stall_watch" ]] ||
  die "no $sandpipe, $probe or $stall_watch: build first (ninja -C $build)"
out=${out:-/tmp/sandpipe-soak-$preset-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
ex="$root/plugins-py/examples"
node="sandpipe-soak"

# plugin_line NAME FILE PARAMS [EXTRA]
plugin_line() { echo "  { name = \"$1\" path = \"$2\" params = { $3 } ${4:-} }"; }

write_chain() { # PLUGIN-LINES… → $out/chain.conf
  {
    echo "node.name = \"$node\""
    [[ -z "$latency_max_ms" ]] || echo "latency.max-ms = $latency_max_ms"
    echo "channels = 2"
    echo "plugins = ["
    printf '%s\n' "$@"
    echo "]"
  } >"$out/chain.conf"
}

case $preset in
  4py-512)
    quantum=512
    write_chain "$(plugin_line g1 "$ex/gain.py" "gain = 0.9")" \
      "$(plugin_line eq1 "$ex/biquad.py" "shape = \"peak\" freq = 1000 gain_db = 3")" \
      "$(plugin_line g2 "$ex/gain.py" "gain = 0.9")" \
      "$(plugin_line eq2 "$ex/biquad.py" "shape = \"lowpass\" freq = 12000")"
    ;;
  16py-512)
    quantum=512
    lines=()
    for i in $(seq 1 16); do lines+=("$(plugin_line "g$i" "$ex/gain.py" "gain = 1.0")"); done
    write_chain "${lines[@]}"
    ;;
  16py-512-relay)
    quantum=512
    lines=()
    for i in $(seq 1 16); do
      blocks=0
      ((i == 1)) && blocks=1
      lines+=("$(plugin_line "g$i" "$ex/gain.py" "gain = 1.0" "mode = \"pipelined\" blocks = $blocks")")
    done
    write_chain "${lines[@]}"
    ;;
  64py-256)
    quantum=256
    lines=()
    for i in $(seq 1 64); do
      lines+=("$(plugin_line "g$i" "$ex/gain.py" "gain = 1.0" "sandbox = \"group$(((i - 1) / 8 + 1))\"")")
    done
    write_chain "${lines[@]}"
    ;;
  64py-256-relay)
    quantum=256
    lines=()
    for i in $(seq 1 64); do
      group=$(((i - 1) / 8 + 1))
      blocks=0
      ((group == 1)) && blocks=1
      lines+=("$(plugin_line "g$i" "$ex/gain.py" "gain = 1.0" \
        "sandbox = \"group$group\" mode = \"pipelined\" blocks = $blocks")")
    done
    write_chain "${lines[@]}"
    ;;
  8py-64)
    quantum=64
    lines=()
    for i in 1 2 3 4 5 6 7 8; do lines+=("$(plugin_line "g$i" "$ex/gain.py" "gain = 1.0")"); done
    write_chain "${lines[@]}"
    ;;
  3slow-512)
    quantum=512
    write_chain "$(plugin_line s1 "$ex/slow.py" "delay_ms = 5 mode = \"spin\"" "mode = \"pipelined\"")" \
      "$(plugin_line s2 "$ex/slow.py" "delay_ms = 5 mode = \"spin\"" "mode = \"pipelined\"")" \
      "$(plugin_line s3 "$ex/slow.py" "delay_ms = 5 mode = \"spin\"" "mode = \"pipelined\"")"
    ;;
  crash-hourly)
    quantum=512
    duration=${duration:-3600}
    crash_every=${crash_every:-60}
    write_chain "$(plugin_line g1 "$ex/gain.py" "gain = 0.9")" \
      "$(plugin_line eq1 "$ex/biquad.py" "shape = \"peak\" freq = 1000 gain_db = 3")"
    ;;
  native)
    quantum=${quantum:-512}
    write_chain "$(plugin_line g1 builtin:gain "gain = 0.9")" \
      "$(plugin_line eq1 builtin:biquad "type = \"peaking\" freq = 1000 gain = 3")"
    ;;
  custom)
    [[ -f "$chain_file" && -n "$quantum" ]] || die "custom needs --chain FILE and --quantum N"
    cp "$chain_file" "$out/chain.conf"
    node=$(sed -n 's/^[[:space:]]*node\.name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$chain_file" | head -n1)
    node=${node:-sandpipe}
    ;;
  *) echo "soak: unknown preset $preset" >&2; usage ;;
esac
duration=${duration:-600}
crash_every=${crash_every:-0}

# --baseline: the native-only graph first, then the preset, each in its own private session, for
# the same time at the same quantum; their verdicts side by side.
if ((baseline)); then
  common=(--duration "$duration" --interval "$interval" --build "$build")
  "$0" "${common[@]}" --quantum "$quantum" --out "$out/baseline" native || die "the native baseline failed to run"
  extra=(--crash-every "$crash_every")
  [[ -z "$latency_max_ms" ]] || extra+=(--latency-max-ms "$latency_max_ms")
  [[ $preset == custom ]] && extra+=(--chain "$chain_file" --quantum "$quantum")
  [[ $preset == native ]] && extra+=(--quantum "$quantum")
  status=0
  "$0" "${common[@]}" "${extra[@]}" --out "$out/chain" "$preset" || status=$?
  ((status == 0)) || exit "$status"
  "$py" "$root/tests/bench/soak-compare.py" "$out"
  exit 0
fi

skip() { # REASON: the preset cannot run on this build
  echo "soak: $preset skipped: $1" >&2
  "$py" -c 'import json,sys; json.dump({"preset": sys.argv[1], "skipped": sys.argv[2]}, open(sys.argv[3], "w"), indent=2)' \
    "$preset" "$1" "$out/summary.json"
  exit 77
}
if ! "$sandpipe" check "$out/chain.conf" >"$out/check.log" 2>&1; then
  [[ $preset == 3slow-512 ]] && skip "no pipelined mode in this build: $(tail -n1 "$out/check.log")"
  cat "$out/check.log" >&2
  die "chain does not check"
fi

# The private graph; everything below runs inside it and is stopped by PID on exit.
if [[ -z "${SANDPIPE_SOAK_IN_SESSION:-}" ]]; then
  export SANDPIPE_SOAK_IN_SESSION=1
  args=(--duration "$duration" --interval "$interval" --crash-every "$crash_every" --out "$out" --build "$build")
  [[ $preset == custom ]] && args+=(--chain "$chain_file")
  [[ -z "$latency_max_ms" ]] || args+=(--latency-max-ms "$latency_max_ms")
  [[ $preset == custom || $preset == native ]] && args+=(--quantum "$quantum")
  exec "$root/tests/pw-session.sh" run --rate 48000 --quantum "$quantum" -- "$0" "${args[@]}" "$preset"
fi

node_pid=""
probe_pid=""
watch_pid=""
cleanup() {
  [[ -n "$probe_pid" ]] && kill -TERM "$probe_pid" 2>/dev/null || true
  [[ -n "$watch_pid" ]] && kill -TERM "$watch_pid" 2>/dev/null || true
  if [[ -n "$node_pid" ]] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

poll() { # TIMEOUT CMD…
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}
node_up() { pw-dump 2>/dev/null | grep -q "\"node.name\": \"$node\""; }

echo "soak: $preset, 48000 Hz, quantum $quantum, ${duration} s, results in $out" >&2
"$sandpipe" run "$out/chain.conf" 2>"$out/sandpipe.log" &
node_pid=$!
poll 60 node_up || { cat "$out/sandpipe.log" >&2; die "node $node did not appear"; }

# The machine's own stalls (a vCPU that ran no real-time thread for 1.5 ms or more), to tell the cycles
# and deadlines it lost from Sandpipe's.
"$stall_watch" --json "$out/stalls.json" &
watch_pid=$!
"$probe" --target "$node" --frames $((duration * 48000)) --max-seconds $((duration + 30)) --cycle-times \
  --json "$out/probe.json" --name sandpipe-soak-probe 2>"$out/probe.log" &
probe_pid=$!
"$py" "$root/tests/bench/soak-monitor.py" --host-pid "$node_pid" --node "$node" --interval "$interval" \
  --max-seconds $((duration + 120)) --until-pid "$probe_pid" --crash-every "$crash_every" \
  --sandpipe "$sandpipe" --csv "$out/soak.csv" --summary "$out/monitor.json" || echo "soak: monitor failed" >&2
probe_status=0
wait "$probe_pid" || probe_status=$?
probe_pid=""
kill -TERM "$watch_pid" 2>/dev/null || true
wait "$watch_pid" || true
watch_pid=""
# The node may have gone by itself (a crash shows as 128 + signal, e.g. 139 for SIGSEGV).
node_alive=$(kill -0 "$node_pid" 2>/dev/null && echo 1 || echo 0)
kill -TERM "$node_pid" 2>/dev/null || true
node_status=0
wait "$node_pid" || node_status=$?
node_pid=""
((node_alive)) || echo "soak: sandpipe exited before the end of the soak (status $node_status)" >&2

# One summary: the monitor's, the probe's verdict, the node's counters at exit.
"$py" - "$out" "$preset" "$quantum" "$duration" "$probe_status" "$node_status" "$node_alive" <<'EOF'
import bisect, json, os, random, re, sys
out, preset, quantum, duration, probe_status, node_status, node_alive = sys.argv[1:8]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return {}
mon, probe = load("monitor.json"), load("probe.json")
log = open(os.path.join(out, "sandpipe.log"), errors="replace").read()
node = {}
m = re.search(r"sandpipe: cycles=.*", log)
if m:
    node = {k: int(v) for k, v in re.findall(r"([a-z-]+)=(\d+)", m.group(0))}
slots = {}
for name, rest in re.findall(r"sandpipe: slot (\S+): (.*)", log):
    slots[name] = {k: int(v) for k, v in re.findall(r"([a-z-]+)=(\d+)", rest)}
restart_ms = [float(x) for x in re.findall(r"restarted \(pid \d+\) in ([0-9.]+) ms", log)]
prof = mon.get("profiler", {})

# What the machine accounts for: a lost cycle or a deadline miss while some CPU ran no
# real-time thread for 1.5 ms or more (stall-watch) is the machine's; the rest is Sandpipe's.
watch = load("stalls.json")
stalls = sorted(watch.get("stalls", []))
begins = [s[0] for s in stalls]
reach = []  # the latest end among the stalls up to each one
for s in stalls:
    reach.append(max(s[1], reach[-1] if reach else 0))
def stalled(a, b):
    i = bisect.bisect_right(begins, b)
    return i > 0 and reach[i - 1] >= a
period_ns = int(quantum) * 1_000_000_000 // 48000
rng = random.Random(1)
t = probe.get("cycle_nsec", [])
verdicts = probe.get("verdicts", "")
lost = sorted(set(probe.get("gap_cycles", [])) | {c for c, v in enumerate(verdicts) if v in "sz"})
def cycle_stalled(c):
    return c < len(t) and stalled(t[c - 1] if c > 0 else t[c] - period_ns, t[c] + period_ns)
misses_timed = mon.get("miss_times", [])
machine = {
    "realtime_watch": watch.get("realtime"),
    "stalls": len(stalls),
    "stall_ms_total": round(sum(s[1] - s[0] for s in stalls) / 1e6, 1),
    "longest_stall_ms": round(max((s[1] - s[0] for s in stalls), default=0) / 1e6, 1),
    "probe_lost_cycles": len(lost),
    "probe_lost_during_stalls": sum(1 for c in lost if cycle_stalled(c)),
    "misses_timed": len(misses_timed),
    # From the job's submission (k blocks earlier when pipelined, and one cycle more) to the miss.
    "misses_during_stalls": sum(1 for m in misses_timed if stalled(m[0] - (m[2] + 2) * period_ns, m[0])),
    # How often "during a stall" is luck: the share of random moments whose window (a cycle's,
    # a period either side) holds a stall.
    "chance_cycle_window_stalled": round(sum(
        stalled(m - period_ns, m + period_ns)
        for m in (rng.uniform(stalls[0][0], stalls[-1][1]) for _ in range(20000))) / 20000, 3)
        if stalls else 0.0,
    "overruns_timed": len(mon.get("overrun_times", [])),
    "overruns_during_stalls": sum(1 for e in mon.get("overrun_times", []) if stalled(e - 2 * period_ns, e)),
}
summary = {
    "preset": preset, "rate": 48000, "quantum": int(quantum), "duration_s": int(duration),
    "probe": {k: probe.get(k) for k in ("ok", "error", "frames", "delay_frames", "gain_db", "max_error",
                                        "missing_cycles", "silent_cycles", "stale_cycles", "wrong_cycles")
              if k in probe},
    "probe_exit": int(probe_status), "sandpipe_exit": int(node_status),
    "sandpipe_survived": node_alive == "1",
    # The last one: the node re-reports when the forced quantum reaches it.
    "latency_frames": int(lat[-1]) if (lat := re.findall(r"latency (?:now )?(\d+) frames", log)) else None,
    # "[SLOT] scheduler: ..." on the node's sandpipe.chain log topic (host/slot/log.h).
    "scheduler": re.findall(r"\[(\S+)\] scheduler: (.*)", log),
    "node_counters": node, "slots": slots,
    "deadline_misses": sum(s.get("deadline-misses", 0) for s in slots.values()),
    "bypassed_blocks": sum(s.get("bypassed", 0) for s in slots.values()),
    "restarts": len(restart_ms),
    "restart_ms_max": max(restart_ms, default=None),
    "restart_ms": restart_ms,
    "machine": machine,
    "monitor": mon,
}
summary["verdict"] = {
    "late_cycles": prof.get("node_late_cycles"),
    "driver_overruns": prof.get("driver_overruns"),
    "deadline_misses": summary["deadline_misses"],
    "deadline_misses_not_during_stalls": machine["misses_timed"] - machine["misses_during_stalls"] +
                                         max(0, summary["deadline_misses"] - machine["misses_timed"]),
    "probe_lost_cycles_not_during_stalls": machine["probe_lost_cycles"] - machine["probe_lost_during_stalls"],
    "node_overruns": node.get("overruns"),
    "node_overruns_not_during_stalls": None if node.get("overruns") is None else
        node["overruns"] - machine["overruns_during_stalls"],
    "sandpipe_survived": summary["sandpipe_survived"],
    "host_rss_slope_kb_per_min": mon.get("rss_kb", {}).get("host_slope_kb_per_min"),
    "sandboxes_rss_slope_kb_per_min": mon.get("rss_kb", {}).get("sandboxes_slope_kb_per_min"),
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
v, cpu, rss = summary["verdict"], mon.get("cpu", {}), mon.get("rss_kb", {})
print(f"soak {preset}: {mon.get('duration_s', 0):.0f} s at 48000/{quantum}; PipeWire: {prof.get('node_cycles', 0)} node cycles, "
      f"busy p50 {prof.get('node_busy_p50_us')} / p99 {prof.get('node_busy_p99_us')} / max {prof.get('node_busy_max_us')} us, "
      f"late {v['late_cycles']}, driver overruns {v['driver_overruns']}; "
      f"Sandpipe: deadline misses {v['deadline_misses']}, bypassed {summary['bypassed_blocks']}, "
      f"missing buffers {node.get('missing-buffers')}; probe: ok={probe.get('ok')} missing {probe.get('missing_cycles')} "
      f"silent {probe.get('silent_cycles')}; CPU host {cpu.get('host_avg_pct')} % sandboxes {cpu.get('sandboxes_avg_pct')} %; "
      f"RSS host {rss.get('host_first')}->{rss.get('host_last')} kB ({v['host_rss_slope_kb_per_min']} kB/min), "
      f"sandboxes {rss.get('sandboxes_first')}->{rss.get('sandboxes_last')} kB ({v['sandboxes_rss_slope_kb_per_min']} kB/min); "
      f"crashes injected {mon.get('crashes_injected')}, restarts {len(restart_ms)} (max {summary['restart_ms_max']} ms); "
      f"sandpipe {'ran to the end' if summary['sandpipe_survived'] else 'DIED during the soak'}, exit {node_status}")
print(f"soak {preset}: the machine stalled {machine['stalls']} times ({machine['stall_ms_total']} ms in all, longest "
      f"{machine['longest_stall_ms']} ms); probe lost {machine['probe_lost_cycles']} cycles, "
      f"{machine['probe_lost_during_stalls']} of them during stalls; deadline misses timed {machine['misses_timed']} "
      f"of {v['deadline_misses']}, {machine['misses_during_stalls']} during stalls; not the machine's: "
      f"{v['deadline_misses_not_during_stalls']} misses (untimed ones included), "
      f"{v['probe_lost_cycles_not_during_stalls']} lost cycles, {v['node_overruns_not_during_stalls']} node overruns "
      f"(of {v['node_overruns']}, longest cycle {node.get('longest-cycle-us')} us)")
EOF
