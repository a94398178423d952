"""Agents for tests/test_pool_features.py: module-level, so workers find them by name."""

from __future__ import annotations

import asyncio
import os
import time

MODEL: dict = {}  # what the initializer sets up, once per worker


def init_model(name: str, log: str) -> None:
    """An initializer: one 'model client' per worker; each run is logged with its pid."""
    MODEL["name"] = name
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")


def failing_init(log: str) -> None:
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {time.monotonic()}\n")
    raise ValueError("no API key for the model")


def model_and_pid(ctx, _):
    return MODEL.get("name"), os.getpid()


def pid(ctx, _):
    return os.getpid()


def crash_until(ctx, arg):
    """Kills its own worker until it has run ``times`` times (counted in a file), then returns."""
    path, times = arg
    with open(path, "a") as f:
        f.write("x")
    if os.path.getsize(path) <= times:
        os._exit(7)
    return "ok"


def fail_until(ctx, arg):
    path, times = arg
    with open(path, "a") as f:
        f.write("x")
    if os.path.getsize(path) <= times:
        raise RuntimeError(f"attempt {os.path.getsize(path)} fails")
    return "ok"


def count_and_sleep(ctx, arg):
    """Counts its runs in a file, then sleeps cooperatively for ``seconds``."""
    path, seconds = arg
    with open(path, "a") as f:
        f.write("x")
    ctx.sleep(seconds)
    return os.path.getsize(path)


def sleeps(ctx, seconds):
    ctx.sleep(seconds)
    return seconds


def fails(ctx, _):
    raise KeyError("missing")


async def awaits_children(ctx, n):
    """An async agent that awaits child executions."""
    children = [ctx.submit(sleeps, 0.01 * i) for i in range(n)]
    values = [await c for c in children]
    await asyncio.sleep(0)
    return values


def ignores_flag(ctx, seconds):
    time.sleep(seconds)
    return seconds


def crash_on(ctx, x):
    """Returns x, but kills its own worker for the input 'crash'."""
    if x == "crash":
        os._exit(3)
    return x


def hangs_forever() -> None:
    """An initializer that never returns."""
    time.sleep(3600)


def fails_in_the_first_worker(flag: str) -> None:
    """An initializer that raises in the first process to run it, and works in every other."""
    try:
        fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    raise RuntimeError("the first worker could not reach its model")


def saves_when_told(ctx, arg):
    """Returns its input; with 'save', checkpoints it first (an agent that needs checkpoints only sometimes)."""
    if arg == "save":
        ctx.checkpoint({"saved": ctx.execution_id})
    return arg


def restores(ctx, _):
    return ctx.restore()


def leaves_a_tool(ctx, arg):
    """Returns its input; 'slow' takes two seconds; a pid file: starts a long tool (a process) first and
    leaves it running."""
    if arg == "slow":
        time.sleep(2)
    elif arg != "x":
        import subprocess

        tool = subprocess.Popen(["sleep", "1000"])
        with open(arg, "w") as f:
            f.write(str(tool.pid))
    return arg
