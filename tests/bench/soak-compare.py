"""Side by side: a soak and the native-only baseline run before it (soak.sh --baseline).

    soak-compare.py OUT      reads OUT/baseline/summary.json and OUT/chain/summary.json,
                             writes OUT/comparison.json and prints a table

The machine loses cycles by itself (hypervisor stalls); the bar for Sandpipe is what the
native-only graph lost in the same session, counting only what the stall watch does not explain.
"""
import json
import os
import sys


def row(summary):
    verdict, machine = summary["verdict"], summary["machine"]
    cycles = summary.get("monitor", {}).get("profiler", {}).get("node_cycles") or 0
    lost = machine["probe_lost_cycles"]
    return {
        "preset": summary["preset"],
        "node_cycles": cycles,
        "machine_stalls": machine["stalls"],
        "stall_ms_total": machine["stall_ms_total"],
        "probe_lost_cycles": lost,
        "lost_share_pct": round(100 * lost / cycles, 3) if cycles else None,
        "lost_not_during_stalls": verdict["probe_lost_cycles_not_during_stalls"],
        "deadline_misses": verdict["deadline_misses"],
        "misses_not_during_stalls": verdict["deadline_misses_not_during_stalls"],
        "node_overruns_not_during_stalls": verdict["node_overruns_not_during_stalls"] or 0,
        "sandpipe_survived": verdict["sandpipe_survived"],
    }


def main():
    out = sys.argv[1]
    base, chain = (row(json.load(open(os.path.join(out, d, "summary.json")))) for d in ("baseline", "chain"))
    met = (chain["lost_not_during_stalls"] <= base["lost_not_during_stalls"]
           and chain["node_overruns_not_during_stalls"] <= base["node_overruns_not_during_stalls"]
           and chain["misses_not_during_stalls"] == 0 and chain["sandpipe_survived"])
    with open(os.path.join(out, "comparison.json"), "w") as f:
        json.dump({"rows": [base, chain], "unexplained_no_worse_than_baseline": met}, f, indent=2)
    keys = list(base)
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in (base, chain):
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(f"soak {chain['preset']} beside the native baseline: what the stall watch does not explain is "
          f"{'no worse than' if met else 'WORSE than'} the baseline's ({out}/comparison.json)")


if __name__ == "__main__":
    main()
