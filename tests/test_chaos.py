"""The fault-injection suite, short sizes: python -m benchmarks.chaos all --short."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_every_chaos_scenario_keeps_every_invariant():
    """Under injected faults (workers SIGKILLed, SIGSTOPped and SIGTERMed from outside, random
    cancels, the supervisor SIGKILLed or frozen, the user process SIGKILLed, checkpoints cut
    by SIGKILL mid-write, hostile agents, 50 workers, thousands queued, threaded hosts, LangGraph
    agents stopped at random points in random modes and resumed up to three times), every
    submitted execution ends in exactly one terminal status with its value or error, none is
    lost, stops end within grace + term_grace + 1 s, checkpoints read back complete, and no
    process, zombie, descriptor or /dev/shm entry is left. The suite runs in a subprocess so its
    signals cannot touch this test process; it takes about 35 s on a 2-core machine. A resumed
    LangGraph agent must end with the state an uninterrupted run reaches."""
    r = subprocess.run([sys.executable, "-m", "benchmarks.chaos", "all", "--short"], cwd=ROOT,
                       capture_output=True, text=True, timeout=230)  # fmt: skip
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    report = "\n".join(json.dumps(d) for d in lines) + "\n--- stderr (tail) ---\n" + r.stderr[-4000:]
    assert len(lines) == 10, f"expected one JSON line per scenario, got {len(lines)}:\n{report}"
    failed = [d["scenario"] for d in lines if d.get("ok") is not True]
    assert r.returncode == 0 and not failed, f"exit code {r.returncode}; failed scenarios {failed}:\n{report}"
