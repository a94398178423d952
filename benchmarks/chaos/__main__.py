"""``python -m benchmarks.chaos SCENARIO|all [--short] [--seed N]`` (run from the repository root).

One scenario runs in this process and prints its one JSON line; ``all`` runs
every scenario in a child process of its own (``--short`` and ``--seed`` are
passed on), forwards each child's line, and checks after each that nothing
the child started outlived it (every process of the run carries
``CHAOS_SUITE_MARK``); a child that leaves something, dies without a line or
overruns its time limit gets a line with ``ok: false`` written for it.
Exit code 0 if and only if every invariant of every scenario held.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # agents are imported by name from benchmarks.chaos and tests
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos._harness import SUITE_MARK, Scenario, describe, emit, marked_pids, wait_gone  # noqa: E402
from benchmarks.chaos.scenarios import SCENARIOS  # noqa: E402

# Per scenario process in 'all': generous against the sizes (short ones take about 10 s).
TIME_LIMIT_S = {True: 90.0, False: 3600.0}


def run_one(name: str, short: bool, seed: int) -> dict:
    scen = Scenario(name, seed, short)
    error = None
    try:
        SCENARIOS[name](scen)
    except Exception as exc:  # the scenario itself broke: still one line, with the reason
        error = f"the scenario raised {type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
    return scen.finish(error)


def run_all(short: bool, seed: int | None) -> int:
    os.environ.setdefault(SUITE_MARK, f"{os.getpid()}-{os.urandom(6).hex()}")
    failed = 0
    for name in SCENARIOS:
        cmd = [sys.executable, "-m", "benchmarks.chaos", name] + (["--short"] if short else [])
        if seed is not None:
            cmd += ["--seed", str(seed)]
        t0 = time.monotonic()
        # A session of its own: on a time limit the whole child (and any host script it runs) is killed.
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, _ = child.communicate(timeout=TIME_LIMIT_S[short])
            why = None if child.returncode in (0, 1) else f"the scenario process exited with code {child.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            out, _ = child.communicate()
            why = f"the scenario process overran its {TIME_LIMIT_S[short]:.0f} s limit and was killed"
        summary = _last_json(out)
        if summary is None:
            summary = {"scenario": name, "ok": False, "seed": seed, "short": short,
                       "seconds": round(time.monotonic() - t0, 2), "executions": None, "by_status": {},
                       "violations": [why or "the scenario process printed no JSON line"]}  # fmt: skip
        elif why:
            summary["ok"] = False
            summary["violations"].append(why)
        left, _ = wait_gone(marked_pids(SUITE_MARK), 5.0)
        if left:
            summary["ok"] = False
            summary["violations"] += [f"outlived the scenario process: {describe(p)}" for p in left]
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass  # gone meanwhile
        emit(summary)
        failed += not summary["ok"]
    return 1 if failed else 0


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=[*SCENARIOS, "all"])
    ap.add_argument("--short", action="store_true", help="the small size of each scenario (about 10 s each)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed in the JSON)")
    args = ap.parse_args(argv)
    if args.scenario == "all":
        return run_all(args.short, args.seed)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    summary = run_one(args.scenario, args.short, seed)
    emit(summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
