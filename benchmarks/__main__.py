"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME ...]``.

Prints markdown tables and writes JSON (with machine, Python and load) to
benchmarks/results/.

Only ``sys`` is imported at module level, and each section's module only when
it runs: ``multiprocessing``'s spawn and forkserver children (and loky's)
re-import the parent's main module, and the startup section must not charge
the peers for importing the whole suite.
"""

import sys

# section -> (module, function); imported on use (see the docstring)
SECTIONS = {
    "startup": ("bench_startup", "startup"),
    "memory": ("bench_memory", "memory"),
    "check": ("bench_core", "check_overhead"),
    "latency": ("bench_core", "cooperative_latency"),
    "stages": ("bench_peers", "stop_latency"),
    "stuck": ("bench_peers", "stuck_task"),
    "throughput": ("bench_peers", "throughput"),
    "resources": ("bench_peers", "resources"),
    "checkpoint": ("bench_checkpoint", "checkpoint_cost"),
    "sources": ("bench_sources", "sources"),
    "ecosystem": ("bench_ecosystem", "ecosystem"),
    "langgraph": ("bench_langgraph", "langgraph"),
    "preload": ("bench_preload", "preload"),
}


def machine() -> dict:
    import os
    import platform
    from pathlib import Path

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
        "executable": sys.executable,
        "platform": platform.platform(),
        "loadavg_before": os.getloadavg(),
        # With PYTHONDONTWRITEBYTECODE set, every fresh interpreter (our supervisor, spawn and
        # loky workers) recompiles what it imports: startup figures would not be an installed package's.
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "dont_write_bytecode": sys.dont_write_bytecode,
    }


def source_state() -> dict:
    """The commit measured and any uncommitted changes in the checkout (the package is installed editable)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "uncommitted": [line for line in git("status", "--porcelain").splitlines() if line]}  # fmt: skip


def main(argv=None) -> int:
    import argparse
    import datetime as dt
    import importlib
    import json
    import os
    import time
    from pathlib import Path

    from ._optional import missing, run_note

    t_all = time.monotonic()  # the total printed at the end: everything main() does
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: every section, fewer repeats and smaller sizes; under 30 s on 2 cores")
    ap.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run only these sections")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="directory for the JSON")
    args = ap.parse_args(argv)
    info = machine()
    print(f"# interrupt-pool benchmarks{' (quick)' if args.quick else ''}\n")
    bytecode = ("bytecode caches written (PYTHONDONTWRITEBYTECODE unset or empty)" if not sys.dont_write_bytecode
                else "PYTHONDONTWRITEBYTECODE is set: fresh interpreters recompile every import, startup figures "
                     "are pessimistic; run with `PYTHONDONTWRITEBYTECODE=` for installed-package behaviour")  # fmt: skip
    print(f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, load {info['loadavg_before'][0]:.2f}; "
          f"{bytecode}\n")  # fmt: skip
    peers_note = run_note()  # the one install hint of the run; sections only say which rows they skipped
    if peers_note:
        print(f"{peers_note}\n", flush=True)
    results = {"machine": info, "source": source_state(), "quick": args.quick, "argv": list(sys.argv[1:] if argv is None else argv),
               "started": dt.datetime.now(dt.timezone.utc).isoformat()}  # fmt: skip
    for name in args.only or SECTIONS:
        module, fn = SECTIONS[name]
        t = time.monotonic()
        res = getattr(importlib.import_module(f".{module}", __package__), fn)(args.quick)
        res["seconds"] = round(time.monotonic() - t, 2)
        res["loadavg_after"] = os.getloadavg()  # a busy neighbour on the machine shows here
        print(res["markdown"] + "\n", flush=True)
        results[name] = res
    results["seconds"] = round(time.monotonic() - t_all, 2)
    results["peers_missing"] = missing()
    results["peers_note"] = peers_note
    results["machine"]["loadavg_after"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{'quick' if args.quick else 'full'}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"Total {results['seconds']:.1f} s{' (quick; the target is under 30 s)' if args.quick else ''}. JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
