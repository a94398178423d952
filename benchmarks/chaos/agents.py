"""Agents the chaos scenarios run: module-level, so workers import them by name.

Each returns something the scenario can check (its input, a sum it can
recompute), so a completed execution is also a correct one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path


def instant(ctx, x):
    return x


def cpu(ctx, n):
    """CPU work that checks its flag every step; returns sum(range(n))."""
    total = 0
    for i in range(n):
        ctx.check()
        total += i
    return total


def nap(ctx, seconds):
    """A model-call-like wait: ctx.sleep ends at once when a stop is requested."""
    ctx.sleep(seconds)
    return seconds


def tool(ctx, seconds):
    """Runs a tool (a child process in the worker's group) and waits for it."""
    subprocess.run(["sleep", str(seconds)], check=True)
    return seconds


def setsid_tool(ctx, seconds):
    """Starts a tool in a session of its own and leaves it running: the pool must stop it
    when this execution ends, however it ends."""
    p = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    ctx.sleep(seconds)
    return p.pid


def deaf(ctx, seconds):
    """Ignores SIGTERM and never checks its flag: only SIGKILL stops it early."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return seconds


def raising(ctx, message):
    raise ValueError(message)


def exits(ctx, code):
    os._exit(code)


async def async_nap(ctx, seconds):
    await asyncio.sleep(seconds)
    return seconds


def hang_with_tools(ctx, pidfile):
    """Starts a tool in its group and a setsid one, records their pids and its own, then
    hangs ignoring SIGTERM (for the supervisor and user kill scenarios)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    a = subprocess.Popen(["sleep", "1000"])
    b = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    Path(pidfile).write_text(f"{a.pid} {b.pid} {os.getpid()}")
    while True:
        time.sleep(1000)


def write_pid_and_nap(ctx, params):
    Path(params["pidfile"]).write_text(str(os.getpid()))
    ctx.sleep(params["seconds"])
    return params["seconds"]


def checkpoint_writer(ctx, params):
    """Writes checkpoints of random sizes as fast as it can, each carrying the SHA-256 of its
    payload and its own sequence number. Resumed, it first verifies what it restored."""
    rng = random.Random(params["seed"])
    state = ctx.restore()
    if state is not None and hashlib.sha256(state["data"]).hexdigest() != state["sha"]:
        raise RuntimeError(f"restored checkpoint {state['i']} does not match its digest")
    i = state["i"] if state else 0
    Path(params["marker"]).write_text("writing")
    while True:
        i += 1
        data = rng.randbytes(rng.randint(0, params["max_size"]))
        info = ctx.checkpoint({"i": i, "data": data, "sha": hashlib.sha256(data).hexdigest()},
                              durable=rng.random() < 0.5)  # fmt: skip
        if info.seq != i:
            raise RuntimeError(f"checkpoint {i} was saved as seq {info.seq}")


def logs(ctx, x):
    """Logs through the standard logging module in the worker, then returns its input."""
    import logging

    logging.getLogger("chaos.agent").info("item %s", x)
    return x
