#!/usr/bin/env bash
# Plain test (CI): the bench tools still run and keep their output shape. A tiny sandpipe-bench
# run (every path, a few blocks), its JSON keys, plot.py on its samples and on a synthetic soak
# CSV, and the shell scripts parse. No timing is judged here.
#
#   bench-smoke-test.sh SANDPIPE_BENCH_EXE
set -euo pipefail
bench=${1:?usage: bench-smoke-test.sh SANDPIPE_BENCH_EXE}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
work=$(mktemp -d "${TMPDIR:-/tmp}/sandpipe-bench-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

bash -n "$here/soak.sh"
bash -n "$here/compare-filter-chain.sh"
"$py" -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' "$here/soak-monitor.py" "$here/plot.py" \
  "$here/soak-compare.py"

"$bench" --help >/dev/null
"$bench" --quick --iterations 60 --warmup 5 --chunk 20 --render-seconds 0.2 --pipelined-gap-us 10 \
  --json "$work/bench.json" --samples "$work/samples" >"$work/bench.out"

"$py" - "$work/bench.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for key in ("benchmark", "schema", "machine", "settings", "pipelined", "hop", "ratios", "seed_comparison", "render"):
    assert key in r, f"missing key {key}"
paths = {h["path"] for h in r["hop"]}
for p in ("futex", "futex-spin", "native-gain", "native-biquad", "python-gain-sandbox", "python-gain-inprocess"):
    assert p in paths, f"missing path {p}"
if r["pipelined"]["available"]:
    assert {"python-gain-sandbox-pipelined", "python-gain-sandbox-paced"} <= paths
cycle = {(h["channels"], h["frames"]) for h in r["hop"] if h["path"].startswith("python-gain-sandbox-cycle")}
assert cycle == {(2, 512)}, cycle  # both cycle-paced rows, at 2 x 512 only
configs = {(h["channels"], h["frames"]) for h in r["hop"]}
assert configs == {(2, 64), (2, 128), (2, 256), (2, 512), (2, 1024), (1, 512), (8, 512)}, configs
for h in r["hop"]:
    assert h["n"] == 60 and 0 < h["p50_us"] <= h["p99_us"] <= h["p999_us"] <= h["max_us"], h
    assert h["deadline_misses"] == 0, h  # a 1 s deadline: a miss here is a broken path, not a slow one
assert len(r["ratios"]) == 7 and len(r["render"]) == 3
assert all(x["x_realtime"] > 0 for x in r["render"])
EOF

# The scale mode: N = 1 and 2, a few blocks; its JSON keeps its shape.
"$bench" --scale --quick --scale-max 2 --iterations 20 --warmup 2 --json "$work/scale.json" >"$work/scale.out"
"$py" - "$work/scale.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for key in ("benchmark", "settings", "grouped", "zygote", "startup", "cost"):
    assert key in r, f"missing key {key}"
assert [s["plugins"] for s in r["startup"]] == [1, 2], r["startup"]
assert all(s["first_block_processed"] and s["sandboxes"] == s["plugins"] for s in r["startup"]), r["startup"]
rows = {(c["path"], c["plugins"], c["frames"]) for c in r["cost"]}
assert r["grouped"]["available"], r["grouped"]
for path in ("native", "python-isolated", "python-grouped", "python-inprocess"):
    for n in (1, 2):
        for frames in (64, 256, 512, 1024):
            assert (path, n, frames) in rows, (path, n, frames)
assert all(c["n"] == 20 and c["fallbacks"] == 0 for c in r["cost"]), r["cost"]
EOF

"$py" "$here/plot.py" scale --json "$work/scale.json" --out "$work/scale.png" >/dev/null
"$py" "$here/plot.py" cdf --samples "$work/samples" --out "$work/cdf.png" >/dev/null
"$py" "$here/plot.py" tables --json "$work/bench.json" >/dev/null
{
  echo "t_s,cycles,period_us,node_busy_p50_us,node_busy_p99_us,node_busy_max_us,node_wait_max_us,node_end_max_us,node_late_cycles,driver_overruns,host_cpu_pct,sandboxes_cpu_pct,host_rss_kb,sandboxes_rss_kb,sandboxes,sandbox_starts,crashes_injected,sp_deadline_misses,sp_restarts"
  for t in 1 2 3 4; do echo "$t,94,10666,200,400,900,30,1000,0,0,1.0,3.0,12000,180000,2,0,0,,"; done
} >"$work/soak.csv"
"$py" "$here/plot.py" soak --csv "$work/soak.csv" --out "$work/soak.png" >/dev/null
test -s "$work/cdf.png" && test -s "$work/soak.png" && test -s "$work/scale.png"

# soak.sh --baseline's comparison, on two synthetic summaries: a chain that lost one cycle the
# stall watch does not explain, beside a baseline that lost none, is worse than the baseline.
for d in baseline chain; do
  mkdir -p "$work/cmp/$d"
  lost=$([[ $d == chain ]] && echo 1 || echo 0)
  cat >"$work/cmp/$d/summary.json" <<EOF
{"preset": "$d", "machine": {"stalls": 3, "stall_ms_total": 9.5, "probe_lost_cycles": 2},
 "verdict": {"probe_lost_cycles_not_during_stalls": $lost, "deadline_misses": 0,
             "deadline_misses_not_during_stalls": 0, "node_overruns_not_during_stalls": 0,
             "sandpipe_survived": true},
 "monitor": {"profiler": {"node_cycles": 1000}}}
EOF
done
"$py" "$here/soak-compare.py" "$work/cmp" | grep -q "WORSE than the baseline"
"$py" -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["rows"][1]["lost_share_pct"] == 0.2, r' \
  "$work/cmp/comparison.json"
echo "bench smoke: ok"
