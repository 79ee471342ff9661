#!/usr/bin/env bash
# The same one-biquad graph three ways, timed by PipeWire itself (pw-profiler: per-cycle BUSY =
# finish − awake and WAIT = awake − signal of each node, what pw-top shows):
#
#   filter-chain   PipeWire's module-filter-chain, builtin bq_lowpass (its own process,
#                  `pipewire -c`: a capture node Audio/Sink + a playback stream)
#   sp-native      sandpipe run, builtin:biquad lowpass (on the node's RT thread)
#   sp-python      sandpipe run, plugins-py/examples/biquad.py lowpass (in its sandbox)
#
# Each: lowpass 8 kHz, Q 0.707, 2 channels, 48 kHz, the forced quantum; pw-cat plays white noise
# (sox) into the filter's input, the filter's output goes to the null sink. Variants take turns,
# --rounds times, so background noise hits them alike.
#
#   tests/bench/compare-filter-chain.sh [--quantum N] [--seconds S] [--rounds R] [--build DIR] [--out DIR]
#
# Prints a table and writes DIR/compare.json (per variant: cycles, BUSY and WAIT p50/p99/max).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
py=/usr/bin/python3
quantum=512
seconds=20
rounds=2
build="$root/build-bench"
out=""

die() {
  echo "compare-filter-chain: $*" >&2
  exit 1
}
while (($#)); do
  case $1 in
    --quantum) quantum=${2:?}; shift 2 ;;
    --seconds) seconds=${2:?}; shift 2 ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --build) build=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ "$build" = /* ]] || build="$PWD/$build"
sandpipe="$build/host/cli/sandpipe"
[[ -x "$sandpipe" ]] || die "no $sandpipe: build first"
for tool in pw-cat pw-link pw-profiler sox; do command -v $tool >/dev/null || die "$tool not installed"; done
out=${out:-/tmp/sandpipe-compare-fc-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [[ -z "${SANDPIPE_COMPARE_IN_SESSION:-}" ]]; then
  export SANDPIPE_COMPARE_IN_SESSION=1
  exec "$root/tests/pw-session.sh" run --rate 48000 --quantum "$quantum" -- "$0" --quantum "$quantum" \
    --seconds "$seconds" --rounds "$rounds" --build "$build" --out "$out"
fi

sink=${PW_SESSION_SINK:-sandpipe-test-sink}
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
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
node_up() { pw-dump 2>/dev/null | grep -q "\"node.name\": \"$1\""; }

sox -n -r 48000 -c 2 -b 32 -e floating-point "$out/noise.wav" synth "$seconds" whitenoise vol 0.3

cat >"$out/filter-chain.conf" <<EOF
# module-filter-chain with its builtin biquad, as its own PipeWire client process.
context.properties = { log.level = 0 }
context.spa-libs = {
  audio.convert.* = audioconvert/libspa-audioconvert
  support.*       = support/libspa-support
}
context.modules = [
  { name = libpipewire-module-rt args = { nice.level = -11 } flags = [ ifexists nofail ] }
  { name = libpipewire-module-protocol-native }
  { name = libpipewire-module-client-node }
  { name = libpipewire-module-adapter }
  { name = libpipewire-module-filter-chain
    args = {
      node.description = "filter-chain biquad"
      media.name       = "filter-chain biquad"
      filter.graph = {
        nodes = [ { type = builtin name = lp label = bq_lowpass control = { "Freq" = 8000.0 "Q" = 0.707 } } ]
      }
      audio.channels = 2
      audio.position = [ FL FR ]
      capture.props  = { node.name = "fc-biquad" media.class = Audio/Sink }
      playback.props = { node.name = "fc-biquad-out" node.passive = true target.object = "$sink" }
    }
  }
]
EOF
cat >"$out/sp-native.conf" <<EOF
node.name = "sp-native"
channels = 2
plugins = [ { name = "lp" path = "builtin:biquad" params = { type = "lowpass" freq = 8000 q = 0.707 } } ]
EOF
cat >"$out/sp-python.conf" <<EOF
node.name = "sp-python"
channels = 2
plugins = [ { name = "lp" path = "$root/plugins-py/examples/biquad.py" params = { shape = "lowpass" freq = 8000 q = 0.707 } } ]
EOF

# run_variant NAME ROUND: start the filter, play the noise through it while profiling, stop.
run_variant() {
  local name=$1 round=$2 in_node pid prof cat_pid
  case $name in
    filter-chain)
      pipewire -c "$out/filter-chain.conf" >"$out/$name.log" 2>&1 &
      in_node=fc-biquad
      ;;
    *)
      "$sandpipe" run "$out/$name.conf" 2>"$out/$name.log" &
      in_node=$name
      ;;
  esac
  pid=$!
  pids+=("$pid")
  poll 60 node_up "$in_node" || die "$name: node $in_node did not appear (see $out/$name.log)"
  if [[ $name != filter-chain ]]; then
    pw-link "$name:output_FL" "$sink:playback_FL" && pw-link "$name:output_FR" "$sink:playback_FR" ||
      die "$name: cannot link to $sink"
  else
    poll 20 node_up fc-biquad-out || die "filter-chain playback node missing"
  fi
  (cd "$out" && exec pw-profiler -o "$out/$name-$round.prof" >/dev/null 2>&1) &
  prof=$!
  sleep 1
  if [[ $name == filter-chain ]]; then
    pw-cat --playback --target "$in_node" "$out/noise.wav" 2>"$out/$name-$round.cat.log" &
    cat_pid=$!
  else
    # WirePlumber does not link a stream to an Audio/Filter target: link by hand.
    pw-cat --playback -P '{ node.name = "sp-feed" node.autoconnect = false }' "$out/noise.wav" \
      2>"$out/$name-$round.cat.log" &
    cat_pid=$!
    poll 10 node_up sp-feed || die "$name: pw-cat did not start"
    poll 10 pw-link sp-feed:output_FL "$name:input_FL" || die "$name: cannot link pw-cat"
    poll 10 pw-link sp-feed:output_FR "$name:input_FR" || die "$name: cannot link pw-cat"
  fi
  sleep 2
  pw-dump >"$out/$name-$round.dump.json"  # node ids for the profile, and the links while playing
  wait "$cat_pid" || echo "compare-filter-chain: pw-cat into $in_node failed" >&2
  kill -INT "$prof"
  wait "$prof" || true
  kill -TERM "$pid"
  wait "$pid" || true
  pids=("${pids[@]/$pid/}")
}

for ((r = 1; r <= rounds; r++)); do
  for v in filter-chain sp-native sp-python; do
    echo "compare-filter-chain: round $r/$rounds: $v (${seconds} s at 48000/$quantum)" >&2
    run_variant "$v" "$r"
  done
done
rm -f "$out"/Timing*.plot "$out"/Timings.html "$out"/generate_timings.sh

"$py" - "$out" "$quantum" "$rounds" <<'EOF'
import glob, json, os, sys
out, quantum, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# The nodes that make up each variant's filter (filter-chain: its capture and playback nodes).
members = {"filter-chain": ["fc-biquad", "fc-biquad-out"], "sp-native": ["sp-native"], "sp-python": ["sp-python"]}

def pct(v, q):
    if not v:
        return None
    s = sorted(v)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]

report = {"rate": 48000, "quantum": quantum, "rounds": rounds, "variants": {}}
for variant, names in members.items():
    per_node = {n: {"busy": [], "wait": []} for n in names}
    total_busy, cycles = [], 0
    for r in range(1, rounds + 1):
        prof = os.path.join(out, f"{variant}-{r}.prof")
        dump = os.path.join(out, f"{variant}-{r}.dump.json")
        if not (os.path.exists(prof) and os.path.exists(dump)):
            continue
        ids = {}
        objs = json.load(open(dump))
        node_names = {o["id"]: ((o.get("info") or {}).get("props") or {}).get("node.name")
                      for o in objs if o.get("type") == "PipeWire:Interface:Node"}
        links = sorted({f"{node_names.get(o['info']['output-node-id'])} -> {node_names.get(o['info']['input-node-id'])}"
                        for o in objs if o.get("type") == "PipeWire:Interface:Link"})
        report.setdefault("links", {})[variant] = links
        for o in objs:
            props = (o.get("info") or {}).get("props") or {}
            if o.get("type") == "PipeWire:Interface:Node" and props.get("node.name") in names:
                ids[str(o["id"])] = props["node.name"]
        for line in open(prof):
            cols = line.rstrip("\n").split("\t")
            found = {}
            for base in range(4, len(cols) - 6, 8):
                key = cols[base].strip()
                if key in ids:
                    try:
                        found[ids[key]] = (int(cols[base + 4]), int(cols[base + 5]))
                    except ValueError:
                        pass
            if len(found) == len(names):
                cycles += 1
                total_busy.append(sum(b for _, b in found.values()))
                for n, (w, b) in found.items():
                    per_node[n]["wait"].append(w)
                    per_node[n]["busy"].append(b)
    report["variants"][variant] = {
        "cycles": cycles,
        "busy_p50_us": pct(total_busy, 0.5), "busy_p99_us": pct(total_busy, 0.99),
        "busy_p999_us": pct(total_busy, 0.999), "busy_max_us": max(total_busy, default=None),
        "nodes": {n: {"busy_p50_us": pct(d["busy"], 0.5), "busy_p99_us": pct(d["busy"], 0.99),
                      "busy_max_us": max(d["busy"], default=None), "wait_p50_us": pct(d["wait"], 0.5),
                      "wait_p99_us": pct(d["wait"], 0.99)} for n, d in per_node.items()},
    }
json.dump(report, open(os.path.join(out, "compare.json"), "w"), indent=2)
print(f"\nOne biquad lowpass, 2 ch, 48000 Hz / quantum {quantum}, {rounds} round(s); PipeWire's profiler, "
      "BUSY summed over the variant's nodes, times in us\n")
print("| variant | nodes | cycles | BUSY p50 | BUSY p99 | BUSY p99.9 | BUSY max | WAIT p50 (first node) |")
print("|---|---|---|---|---|---|---|---|")
for v, d in report["variants"].items():
    first = members[v][0]
    print(f"| {v} | {' + '.join(members[v])} | {d['cycles']} | {d['busy_p50_us']} | {d['busy_p99_us']} | "
          f"{d['busy_p999_us']} | {d['busy_max_us']} | {d['nodes'][first]['wait_p50_us']} |")
print(f"\n(compare.json in {out})")
EOF
