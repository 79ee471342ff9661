#!/usr/bin/python3
"""Samples a running `sandpipe run` node for tests/bench/soak.sh: PipeWire's own per-cycle timing
of the node (pw-profiler), CPU and RSS of the host and its sandboxes (/proc), sandbox (re)starts,
optional crash injection, and `sandpipe status` when the build has it.

Writes one CSV row per interval and a JSON summary. Runs until --until-pid exits or
--max-seconds passed. Debian's /usr/bin/python3, standard library only.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
FINISHED = 3  # pw_node_activation state: the node completed its cycle

CSV_COLUMNS = [
    "t_s", "cycles", "period_us", "node_busy_p50_us", "node_busy_p99_us", "node_busy_max_us",
    "node_wait_max_us", "node_end_max_us", "node_late_cycles", "driver_overruns",
    "host_cpu_pct", "sandboxes_cpu_pct", "host_rss_kb", "sandboxes_rss_kb", "sandboxes",
    "sandbox_starts", "crashes_injected", "sp_deadline_misses", "sp_restarts",
]


def percentile(values, q):
    if not values:
        return 0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def node_id(name, timeout=20.0):
    """The global id of the node called `name` (pw-dump), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            objs = json.loads(subprocess.run(["pw-dump"], capture_output=True, text=True, timeout=10).stdout or "[]")
        except (subprocess.TimeoutExpired, json.JSONDecodeError):
            objs = []
        for o in objs:
            props = (o.get("info") or {}).get("props") or {}
            if o.get("type") == "PipeWire:Interface:Node" and props.get("node.name") == name:
                return o["id"]
        time.sleep(0.2)
    return None


class Profiler:
    """Reads pw-profiler's per-cycle lines from a pipe; keeps this interval's and all cycles."""

    def __init__(self, node, workdir, errlog):
        self.node = str(node)
        self.lock = threading.Lock()
        self.interval = []     # (busy, wait, end, late, overrun, period) of this interval
        self.all_busy = []
        self.all_end = []
        self.late_total = 0
        self.overrun_total = 0
        self.cycles_total = 0
        self.seen_node = False
        self.proc = subprocess.Popen(["pw-profiler", "-o", "/dev/stdout"], cwd=workdir, stdout=subprocess.PIPE,
                                     stderr=errlog, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        width = None
        for line in self.proc.stdout:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 12:
                continue
            try:
                d1, period = int(cols[0]), int(cols[3])
            except ValueError:
                continue
            # Follower blocks: 8 columns in recent PipeWire (id, signal, awake, finish, wait,
            # busy, status, 0), 7 in older ones; find ours by its id.
            entry = None
            for w in ([width] if width else [8, 7]):
                for base in range(4, len(cols) - 6, w):
                    if cols[base].strip() == self.node:
                        try:
                            finish = int(cols[base + 3])
                            wait, busy, status = int(cols[base + 4]), int(cols[base + 5]), int(cols[base + 6])
                        except ValueError:
                            continue
                        entry = (busy, wait, finish, status != FINISHED or finish > period, period)
                        width = w
                        break
                if entry:
                    break
            # pw-profiler reports a cycle that overran (period or driver end > 1.3x) as 1.4x.
            overrun = period > 0 and d1 >= 1.35 * period
            with self.lock:
                self.cycles_total += 1
                self.overrun_total += overrun
                if entry:
                    self.seen_node = True
                    busy, wait, finish, late, _ = entry
                    self.late_total += late
                    self.all_busy.append(busy)
                    self.all_end.append(finish)
                    self.interval.append((busy, wait, finish, late, overrun, period))
                else:
                    self.interval.append((None, None, None, False, overrun, period))

    def take(self):
        with self.lock:
            rows, self.interval = self.interval, []
        return rows

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_stat_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return None


def read_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def children(pid):
    """Direct children of `pid` (the sandboxes of a sandpipe host), whichever thread spawned them."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(p) for p in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return sorted(set(out))


def sandpipe_status(exe, node):
    """Totals from `sandpipe status NODE --json`: "deadline-misses"
    and "restarts" summed over the slots, and "miss-times": (ns, slot, pipeline blocks) of the
    recent misses each slot reports with their times, "overrun-times": when the node's recent
    overruns ended; None when the command fails."""
    if not exe:
        return None
    try:
        r = subprocess.run([exe, "status", node, "--json"], capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    totals = {"deadline-misses": 0, "restarts": 0, "miss-times": [], "overrun-times": []}

    def walk(obj):
        if isinstance(obj, dict):
            for key, value in obj.items():
                k = key.lower().replace("_", "-")
                if isinstance(value, int) and not isinstance(value, bool):
                    if "deadline" in k and "miss" in k:
                        totals["deadline-misses"] += value
                    elif k == "restarts":
                        totals["restarts"] += value
                else:
                    walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    try:
        doc = json.loads(r.stdout)
        walk(doc)
        timing = doc.get("timing", {}) if isinstance(doc, dict) else {}
        totals["overrun-times"] = list(timing.get("recent_overruns_ns", []))
        for slot in doc.get("slots", []) if isinstance(doc, dict) else []:
            for t in slot.get("recent_misses_ns", []):
                totals["miss-times"].append((t, slot.get("name"), slot.get("pipeline_blocks", 0)))
    except json.JSONDecodeError:
        for key, value in re.findall(r"([a-z][a-z_.-]*)[=:]\s*(\d+)", r.stdout):
            k = key.replace("_", "-")
            if k in totals:
                totals[k] += int(value)
    return totals


def slope_per_min(ts, values):
    """Least-squares slope of values over ts (seconds), per minute."""
    pts = [(t, v) for t, v in zip(ts, values) if v is not None]
    if len(pts) < 3:
        return 0.0
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    return 0.0 if var == 0 else 60.0 * sum((t - mt) * (v - mv) for t, v in pts) / var


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host-pid", type=int, required=True)
    ap.add_argument("--node", required=True, help="node.name of the sandpipe node")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--until-pid", type=int, default=0, help="stop when this process has exited")
    ap.add_argument("--crash-every", type=float, default=0.0, help="SIGKILL one sandbox every S seconds")
    ap.add_argument("--sandpipe", default="", help="sandpipe binary, for `sandpipe status` if it has it")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--summary", required=True)
    args = ap.parse_args()

    nid = node_id(args.node)
    if nid is None:
        print(f"soak-monitor: node {args.node} not found", file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="sandpipe-soak-prof.")
    errlog = open(os.path.join(os.path.dirname(os.path.abspath(args.csv)), "pw-profiler.log"), "w")
    prof = Profiler(nid, workdir, errlog)

    has_status = False
    if args.sandpipe:
        try:
            help_text = subprocess.run([args.sandpipe, "--help"], capture_output=True, text=True, timeout=5).stdout
            has_status = re.search(r"^\s+status\b", help_text, re.M) is not None
        except (OSError, subprocess.TimeoutExpired):
            pass

    start = time.monotonic()
    last_t = start
    last_ticks = {}
    seen = set(children(args.host_pid))
    initial_sandboxes = len(seen)
    starts = 0
    crashes = 0
    next_crash = start + args.crash_every if args.crash_every > 0 else None
    rows = []
    miss_times = set()
    overrun_times = set()
    with open(args.csv, "w") as csv:
        csv.write(",".join(CSV_COLUMNS) + "\n")
        while True:
            time.sleep(max(0.0, last_t + args.interval - time.monotonic()))
            now = time.monotonic()
            dt = now - last_t
            last_t = now
            host_alive = os.path.exists(f"/proc/{args.host_pid}")
            kids = children(args.host_pid) if host_alive else []
            new = [p for p in kids if p not in seen]
            starts += len(new)
            seen.update(new)
            if next_crash is not None and now >= next_crash and kids:
                # The busiest sandbox: one serving a slot, not an idle pre-started spare.
                victim = max(kids, key=lambda p: read_stat_ticks(p) or 0)
                try:
                    os.kill(victim, signal.SIGKILL)
                    crashes += 1
                except OSError:
                    pass
                next_crash += args.crash_every

            def cpu(pids):
                total = 0.0
                for p in pids:
                    ticks = read_stat_ticks(p)
                    if ticks is None:
                        continue
                    if p in last_ticks:
                        total += (ticks - last_ticks[p]) / CLK_TCK / dt * 100.0
                    last_ticks[p] = ticks
                return total

            host_cpu = cpu([args.host_pid]) if host_alive else 0.0
            sb_cpu = cpu(kids)
            host_rss = read_rss_kb(args.host_pid) if host_alive else None
            sb_rss = sum(r for r in (read_rss_kb(p) for p in kids) if r is not None)
            st = sandpipe_status(args.sandpipe, args.node) if has_status else None
            if st is not None:
                miss_times.update(st["miss-times"])
                overrun_times.update(st["overrun-times"])

            cyc = prof.take()
            busy = [c[0] for c in cyc if c[0] is not None]
            row = {
                "t_s": round(now - start, 3),
                "cycles": len(cyc),
                "period_us": max((c[5] for c in cyc), default=0),
                "node_busy_p50_us": percentile(busy, 0.5),
                "node_busy_p99_us": percentile(busy, 0.99),
                "node_busy_max_us": max(busy, default=0),
                "node_wait_max_us": max((c[1] for c in cyc if c[1] is not None), default=0),
                "node_end_max_us": max((c[2] for c in cyc if c[2] is not None), default=0),
                "node_late_cycles": sum(1 for c in cyc if c[3]),
                "driver_overruns": sum(1 for c in cyc if c[4]),
                "host_cpu_pct": round(host_cpu, 2),
                "sandboxes_cpu_pct": round(sb_cpu, 2),
                "host_rss_kb": host_rss if host_rss is not None else "",
                "sandboxes_rss_kb": sb_rss,
                "sandboxes": len(kids),
                "sandbox_starts": starts,
                "crashes_injected": crashes,
                "sp_deadline_misses": "" if st is None else st["deadline-misses"],
                "sp_restarts": "" if st is None else st["restarts"],
            }
            rows.append(row)
            csv.write(",".join(str(row[k]) for k in CSV_COLUMNS) + "\n")
            csv.flush()
            if not host_alive:
                break
            if args.until_pid and not os.path.exists(f"/proc/{args.until_pid}"):
                break
            if now - start >= args.max_seconds:
                break
    prof.stop()
    errlog.close()

    # Skip the first 10 % (start-up: imports, first allocations) for the RSS trend.
    steady = [r for r in rows if r["t_s"] >= 0.1 * rows[-1]["t_s"]] if rows else []
    ts = [r["t_s"] for r in steady]
    host_rss = [r["host_rss_kb"] or None for r in steady]
    sb_rss = [r["sandboxes_rss_kb"] or None for r in steady]
    cpu_rows = rows[1:] or rows  # the first interval has no CPU baseline
    summary = {
        "duration_s": rows[-1]["t_s"] if rows else 0,
        "samples": len(rows),
        "node_id": nid,
        "profiler": {
            "cycles": prof.cycles_total,
            "node_cycles": len(prof.all_busy),
            "node_busy_p50_us": percentile(prof.all_busy, 0.5),
            "node_busy_p99_us": percentile(prof.all_busy, 0.99),
            "node_busy_p999_us": percentile(prof.all_busy, 0.999),
            "node_busy_max_us": max(prof.all_busy, default=0),
            "node_end_p99_us": percentile(prof.all_end, 0.99),
            "node_end_max_us": max(prof.all_end, default=0),
            "node_late_cycles": prof.late_total,
            "driver_overruns": prof.overrun_total,
            "period_us": max((r["period_us"] for r in rows), default=0),
        },
        "cpu": {
            "host_avg_pct": round(sum(r["host_cpu_pct"] for r in cpu_rows) / max(1, len(cpu_rows)), 2),
            "sandboxes_avg_pct": round(sum(r["sandboxes_cpu_pct"] for r in cpu_rows) / max(1, len(cpu_rows)), 2),
            "host_max_pct": max((r["host_cpu_pct"] for r in cpu_rows), default=0),
            "sandboxes_max_pct": max((r["sandboxes_cpu_pct"] for r in cpu_rows), default=0),
        },
        "rss_kb": {
            "host_first": next((v for v in host_rss if v), None),
            "host_last": next((v for v in reversed(host_rss) if v), None),
            "host_max": max((v for v in host_rss if v), default=None),
            "host_slope_kb_per_min": round(slope_per_min(ts, host_rss), 2),
            "sandboxes_first": next((v for v in sb_rss if v), None),
            "sandboxes_last": next((v for v in reversed(sb_rss) if v), None),
            "sandboxes_max": max((v for v in sb_rss if v), default=None),
            "sandboxes_slope_kb_per_min": round(slope_per_min(ts, sb_rss), 2),
        },
        "sandboxes_initial": initial_sandboxes,
        "sandbox_starts_after_launch": starts,
        "crashes_injected": crashes,
        "sandpipe_status_available": has_status,
        # [ns, slot, pipeline blocks] of every deadline miss seen with its time (a slot keeps
        # the last 32: more in one sampling interval go untimed).
        "miss_times": sorted([list(m) for m in miss_times], key=lambda m: m[0]),
        # When the node's overruns (output ready after the cycle's period) ended; it keeps 256.
        "overrun_times": sorted(overrun_times),
    }
    with open(args.summary, "w") as f:
        json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
