"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME ...]``.

Prints markdown tables and writes JSON (with machine, Python and load) to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

from . import bench_checkpoint, bench_core, bench_peers

SECTIONS = {
    "check": bench_core.check_overhead,
    "latency": bench_core.cooperative_latency,
    "stages": bench_peers.stop_latency,
    "stuck": bench_peers.stuck_task,
    "throughput": bench_peers.throughput,
    "resources": bench_peers.resources,
    "checkpoint": bench_checkpoint.checkpoint_cost,
}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": os.getloadavg(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    ap.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="directory for the JSON")
    args = ap.parse_args(argv)
    info = machine()
    print(f"# interrupt-pool benchmarks{' (quick)' if args.quick else ''}\n")
    print(f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, load {info['loadavg_before'][0]:.2f}\n")
    results = {"machine": info, "quick": args.quick, "started": dt.datetime.now(dt.timezone.utc).isoformat()}
    for name in args.only or SECTIONS:
        t = time.monotonic()
        res = SECTIONS[name](args.quick)
        res["seconds"] = round(time.monotonic() - t, 2)
        print(res["markdown"] + "\n", flush=True)
        results[name] = res
    results["machine"]["loadavg_after"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{'quick' if args.quick else 'full'}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
