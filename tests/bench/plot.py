#!/usr/bin/python3
"""Plots for docs/performance.md (Debian's /usr/bin/python3 with python3-matplotlib).

  plot.py cdf  --samples DIR [--channels 2] [--frames 512] --out PNG
      Per-block time distribution of each path, from `sandpipe-bench --samples DIR`:
      CDF (log time axis) and, for the tail, the fraction of blocks slower than t.
  plot.py soak --csv soak.csv [--title T] --out PNG
      A soak's time series from tests/bench/soak.sh: the node's time per cycle as PipeWire
      measures it, late cycles / crashes / restarts, and RSS of host and sandboxes.
  plot.py tables --json bench.json
      The markdown tables of docs/performance.md from a `sandpipe-bench --json` report.
  plot.py scale --json scale.json --out PNG
      Cost per block against the number of plugins N (log-log), one panel per block size, from
      a `sandpipe-bench --scale --json` report: native, isolated, grouped, in-process.
"""

import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PATHS = [  # file prefix, label, style
    ("futex", "raw futex ping-pong (floor)", dict(color="black", lw=1.6)),
    ("futex-spin", "futex, host spins 5 µs", dict(color="gray", lw=1.2, ls="--")),
    ("native-gain", "native gain", dict(color="tab:green", lw=1.2)),
    ("native-biquad", "native biquad", dict(color="tab:olive", lw=1.2)),
    ("python-gain-sandbox", "Python gain, sandbox (sync)", dict(color="tab:blue", lw=1.8)),
    ("python-gain-sandbox-paced", "Python gain, sandbox, sync paced", dict(color="tab:cyan", lw=1.2, ls="--")),
    ("python-gain-sandbox-pipelined", "Python gain, sandbox, pipelined", dict(color="tab:purple", lw=1.4)),
    ("python-gain-sandbox-cycle", "Python gain, sync, cycle-paced, wake-lead 100", dict(color="tab:red", lw=1.4)),
    ("python-gain-sandbox-cycle-sleeping", "Python gain, sync, cycle-paced, wake-lead 0",
     dict(color="tab:brown", lw=1.2, ls="--")),
    ("python-gain-inprocess", "Python gain, in-process CPython", dict(color="tab:orange", lw=1.2)),
]


def save_small(fig, path):
    """PNG with a 64-colour palette: a third of the size, for figures committed under docs/img."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=64).save(path, optimize=True)
    print(f"wrote {path}")


def load_samples(directory, path, channels, frames):
    f = os.path.join(directory, f"{path}-{channels}ch-{frames}.u64")
    if not os.path.exists(f):
        return None
    return np.sort(np.fromfile(f, dtype="<u8").astype(np.float64) / 1000.0)  # µs


def plot_cdf(args):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=90)
    shown = 0
    for path, label, style in PATHS:
        us = load_samples(args.samples, path, args.channels, args.frames)
        if us is None or us.size == 0:
            continue
        n = us.size
        # At most ~3000 points per curve, denser in the tail, to keep the PNG small.
        idx = np.unique(np.concatenate([np.linspace(0, n - 1, 1500), n - 1 - np.geomspace(1, n, 1500) + 1]).astype(int))
        idx = idx[(idx >= 0) & (idx < n)]
        x = us[idx]
        frac = (idx + 1) / n
        ax1.plot(x, frac, label=label, **style)
        ax2.plot(x, np.maximum(1.0 - idx / n, 1.0 / n), label=label, **style)
        shown += 1
    if shown == 0:
        sys.exit(f"plot.py: no samples for {args.channels} ch x {args.frames} in {args.samples}")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("time per block (µs, log)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("fraction of blocks ≤ t")
    ax1.set_title(f"Per-block time, {args.channels} ch × {args.frames} frames")
    ax2.set_yscale("log")
    ax2.set_ylabel("fraction of blocks > t (log)")
    ax2.set_title("Tail")
    ax2.axvline(250, color="red", lw=0.8, ls=":")
    ax2.text(260, 0.3, "250 µs target (p99.9)", color="red", fontsize=7)
    ax2.axhline(1e-3, color="red", lw=0.8, ls=":")
    ax1.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_small(fig, args.out)


def read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))

    def col(name, default=0.0):
        out = []
        for r in rows:
            v = r.get(name, "")
            out.append(float(v) if v not in ("", None) else default)
        return np.array(out)

    return col


def plot_soak(args):
    col = read_csv(args.csv)
    t = col("t_s")
    if t.size == 0:
        sys.exit(f"plot.py: {args.csv} is empty")
    minutes = t / 60.0
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 7.2), dpi=90, sharex=True)
    period = col("period_us")
    ax1.plot(minutes, col("node_busy_max_us"), color="tab:red", lw=0.6, label="max per second")
    ax1.plot(minutes, col("node_busy_p99_us"), color="tab:orange", lw=0.8, label="p99 per second")
    ax1.plot(minutes, col("node_busy_p50_us"), color="tab:blue", lw=1.0, label="p50 per second")
    if period.max() > 0:
        ax1.axhline(period.max(), color="black", lw=0.8, ls="--", label=f"cycle period {period.max():.0f} µs")
    ax1.set_yscale("log")
    ax1.set_ylabel("node BUSY per cycle (µs)")
    ax1.set_title(args.title or os.path.basename(os.path.dirname(os.path.abspath(args.csv))))
    ax1.legend(fontsize=7, loc="upper right", ncol=2)
    ax1.grid(True, which="both", alpha=0.3)

    ax2.plot(minutes, np.cumsum(col("node_late_cycles")), color="tab:red", label="late cycles (PipeWire, cumulative)")
    ax2.plot(minutes, np.cumsum(col("driver_overruns")), color="tab:brown", ls="--", label="driver overruns (cumulative)")
    ax2.plot(minutes, col("crashes_injected"), color="black", ls=":", label="crashes injected")
    ax2.plot(minutes, col("sandbox_starts"), color="tab:green", ls="-.", label="sandbox starts after launch")
    misses = col("sp_deadline_misses", default=np.nan)
    if not np.all(np.isnan(misses)):
        ax2.plot(minutes, misses, color="tab:purple", label="Sandpipe deadline misses")
    ax2.set_ylabel("count")
    ax2.legend(fontsize=7, loc="upper left")
    ax2.grid(True, alpha=0.3)

    ax3.plot(minutes, col("host_rss_kb") / 1024.0, color="tab:blue", label="host RSS")
    ax3.plot(minutes, col("sandboxes_rss_kb") / 1024.0, color="tab:orange", label="sandboxes RSS (sum)")
    ax3b = ax3.twinx()
    ax3b.plot(minutes, col("host_cpu_pct"), color="tab:blue", lw=0.5, alpha=0.5, label="host CPU %")
    ax3b.plot(minutes, col("sandboxes_cpu_pct"), color="tab:orange", lw=0.5, alpha=0.5, label="sandboxes CPU %")
    ax3b.set_ylabel("CPU % (1 s samples)")
    ax3.set_ylabel("RSS (MiB)")
    ax3.set_xlabel("minutes")
    ax3.set_ylim(bottom=0)
    ax3b.set_ylim(bottom=0)
    lines = ax3.get_legend_handles_labels()
    lines2 = ax3b.get_legend_handles_labels()
    ax3.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    ax3.grid(True, alpha=0.3)
    fig.tight_layout()
    save_small(fig, args.out)


def print_tables(args):
    import json

    r = json.load(open(args.json))
    labels = {p: label for p, label, _ in PATHS}
    hop = r["hop"]
    paths = [p for p, _, _ in PATHS if any(h["path"] == p for h in hop)]
    print(f"2 ch × 512 frames, {r['settings']['iterations']} blocks per row, µs:\n")
    print("| path | p50 | p99 | p99.9 | max | mean | misses |\n|---|---:|---:|---:|---:|---:|---:|")
    for p in paths:
        h = next(h for h in hop if h["path"] == p and h["channels"] == 2 and h["frames"] == 512)
        print(f"| {labels[p]} | {h['p50_us']:.2f} | {h['p99_us']:.1f} | {h['p999_us']:.1f} | {h['max_us']:.0f} | "
              f"{h['mean_us']:.2f} | {h['deadline_misses']} |")
    configs = sorted({(h["channels"], h["frames"]) for h in hop}, key=lambda c: (c[0] != 2, c[0], c[1]))
    print("\np50 / p99.9 in µs per configuration (channels × frames):\n")
    print("| path | " + " | ".join(f"{c}×{f}" for c, f in configs) + " |")
    print("|---|" + "---:|" * len(configs))
    for p in paths:
        cells = []
        for c, f in configs:
            h = next((h for h in hop if h["path"] == p and h["channels"] == c and h["frames"] == f), None)
            cells.append("–" if h is None else f"{h['p50_us']:.2f} / {h['p999_us']:.0f}")
        print(f"| {labels[p]} | " + " | ".join(cells) + " |")
    print("\n| ch × frames | sandbox p50 / futex p50 | sandbox p99.9 / futex p99.9 | p50 / futex-spin p50 | p99.9 / futex-spin p99.9 |")
    print("|---|---:|---:|---:|---:|")
    for x in r["ratios"]:
        print(f"| {x['channels']}×{x['frames']} | {x['sandbox_over_futex_p50']:.2f} | {x['sandbox_over_futex_p999']:.2f} | "
              f"{x['sandbox_over_futex_spin_p50']:.2f} | {x['sandbox_over_futex_spin_p999']:.2f} |")
    s = r["seed_comparison"]
    print(f"\nseed: p50 {s['sandbox_p50_us']:.1f} µs → {s['cheaper_p50_low_x']:.0f}–{s['cheaper_p50_high_x']:.0f}× cheaper; "
          f"p99.9 {s['sandbox_p999_us']:.0f} µs → {s['cheaper_p999_low_x']:.1f}× (vs 5 ms)")
    print("\n| render | block | audio s | wall s | × real time |\n|---|---:|---:|---:|---:|")
    for x in r["render"]:
        print(f"| {x['path']} | {x['block']} | {x['audio_s']:.0f} | {x['wall_s']:.2f} | {x['x_realtime']:.0f} |")
    print(f"\nmachine: {r['machine']}")


SCALE_PATHS = [  # path in the report, label, style
    ("native", "native gains (in the RT thread)", dict(color="tab:green", marker="s")),
    ("python-isolated", "Python, each its own sandbox", dict(color="tab:blue", marker="o")),
    ("python-grouped", "Python, one sandbox group", dict(color="tab:purple", marker="^")),
    ("python-inprocess", "Python in-process (earlier design)", dict(color="tab:orange", marker="x", ls="--")),
]


def plot_scale(args):
    import json

    r = json.load(open(args.json))
    frames = sorted({c["frames"] for c in r["cost"]})
    fig, axes = plt.subplots(1, len(frames), figsize=(3.2 * len(frames), 3.4), sharey=True)
    for ax, f in zip(np.atleast_1d(axes), frames):
        for path, label, style in SCALE_PATHS:
            rows = sorted((c for c in r["cost"] if c["path"] == path and c["frames"] == f), key=lambda c: c["plugins"])
            if rows:
                ax.plot([c["plugins"] for c in rows], [c["p50_us"] for c in rows], label=label, lw=1.3, ms=4, **style)
        period = f / r["settings"]["sample_rate"] * 1e6
        ax.axhline(period, color="gray", lw=0.8, ls=":")
        ax.text(1, period * 1.1, f"period {period:.0f} µs", fontsize=7, color="gray")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{f} frames", fontsize=9)
        ax.set_xlabel("plugins in the chain (N)")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("p50 µs per block")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_small(fig, args.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cdf")
    c.add_argument("--samples", required=True)
    c.add_argument("--channels", type=int, default=2)
    c.add_argument("--frames", type=int, default=512)
    c.add_argument("--out", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--csv", required=True)
    s.add_argument("--title", default="")
    s.add_argument("--out", required=True)
    t = sub.add_parser("tables")
    t.add_argument("--json", required=True)
    g = sub.add_parser("scale")
    g.add_argument("--json", required=True)
    g.add_argument("--out", required=True)
    args = ap.parse_args()
    {"cdf": plot_cdf, "soak": plot_soak, "tables": print_tables, "scale": plot_scale}[args.cmd](args)


if __name__ == "__main__":
    main()
