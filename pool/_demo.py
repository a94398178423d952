"""The built-in demo batch: simulated agents that exercise every escalation stage.

Owns: the demo agents (importable, so workers find them by name) and the
batch that ``pool demo`` runs.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

from .shared import Context


def research_agent(ctx: Context, task: dict) -> dict:
    """LLM-call-like waits (ctx.sleep ends early on a stop) between tool steps."""
    rng = random.Random(task["seed"])
    notes = []
    for step in range(task["steps"]):
        ctx.sleep(rng.uniform(0.05, 0.25))  # "waiting for the model"
        notes.append(f"step {step}: {rng.choice(['search', 'read', 'summarise', 'plan'])}")
    return {"steps": len(notes), "last": notes[-1] if notes else None}


def cpu_agent(ctx: Context, task: dict) -> int:
    """CPU-bound work that checks its flag every iteration."""
    total = 0
    for i in range(task["n"]):
        ctx.check()
        total += i * i % 7
    return total


def stuck_tool_agent(ctx: Context, task: dict) -> None:
    """A tool call stuck in pure Python that never checks: only SIGTERM stops it."""
    try:
        while True:
            pass
    finally:
        pass  # clean-up still runs: SIGTERM raises Interrupted here


def stubborn_agent(ctx: Context, task: dict) -> None:
    """Ignores SIGTERM and starts a child process: only SIGKILL of the group stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "1000"])
    try:
        time.sleep(1000)
    finally:
        child.kill()


def batch() -> list[tuple[str, str, dict]]:
    """(id, agent, input) for the demo run."""
    jobs = [  # the ones the demo stops go first, so they are running when it does
        ("long-research", "interrupt_pool._demo:research_agent", {"seed": 99, "steps": 200}),
        ("cpu-huge", "interrupt_pool._demo:cpu_agent", {"n": 10**9}),
        ("stuck-tool", "interrupt_pool._demo:stuck_tool_agent", {}),
        ("stubborn", "interrupt_pool._demo:stubborn_agent", {}),
    ]
    for i in range(8):
        jobs.append((f"research-{i}", "interrupt_pool._demo:research_agent", {"seed": i, "steps": 4 + i % 4}))
    for i in range(4):
        jobs.append((f"cpu-{i}", "interrupt_pool._demo:cpu_agent", {"n": 300_000 * (i + 1)}))
    return jobs


# What the demo cancels while it runs: id -> seconds after the start.
CANCELS = {"long-research": 1.0, "cpu-huge": 1.2, "stuck-tool": 1.4, "stubborn": 1.6}
