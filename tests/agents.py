"""Agents used by the tests: module-level, so workers find them by name."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from interrupt_pool import Interrupted


def identity(ctx, x):
    return x


HOST_LOCK = threading.Lock()


def takes_host_lock(ctx, _):
    """True if this process can take HOST_LOCK (a host that forked while holding it passes it on held)."""
    ok = HOST_LOCK.acquire(timeout=5)
    if ok:
        HOST_LOCK.release()
    return ok


def logs_and_returns(ctx, x):
    """Logs through the standard logging module (whose locks a forked host could hold)."""
    import logging

    logging.getLogger("agent").info("item %s", x)
    return x


def big_result(ctx, n):
    return b"r" * n


def count(ctx, n):
    total = 0
    for i in range(n):
        ctx.check()
        total += i
    return total


def check_forever(ctx, marker=None):
    """Checks its flag in a loop; records that it started."""
    if marker:
        Path(marker).write_text(str(os.getpid()))
    while True:
        ctx.check()


def spin(ctx, marker):
    """Never checks; writes 'finally' to ``marker`` during clean-up."""
    Path(marker).write_text(str(os.getpid()))
    try:
        while True:
            pass
    finally:
        Path(marker).write_text("finally ran")


def ignore_term_sleep(ctx, marker=None):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(1000)


def spawn_tools(ctx, pidfile):
    """Starts a child in its process group and one that called setsid, then hangs ignoring SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    a = subprocess.Popen(["sleep", "1000"])
    b = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    Path(pidfile).write_text(f"{a.pid} {b.pid} {os.getpid()}")
    time.sleep(1000)


def sleeper(ctx, seconds):
    ctx.sleep(seconds)
    return seconds


def write_pid_and_sleep(ctx, path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(1000)


def fail(ctx, message):
    raise ValueError(message)


def exit3(ctx, _):
    os._exit(3)


def segfault(ctx, _):
    """Die of a real SIGSEGV (a read of address 0 in C), quietly. Were faulthandler enabled here (the
    worker's clean slate resets the SIGSEGV handler that PYTHONFAULTHANDLER installs, but an agent or
    a module it imports may enable it), it would print a "Fatal Python error" dump into the execution's
    log, or into the test's output for a pool that does not capture output. No core file either."""
    faulthandler.disable()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)


def unpicklable_result(ctx, _):
    import threading

    return threading.Lock()


def whoami(ctx, _):
    return {"execution_id": ctx.execution_id, "worker_id": ctx.worker_id, "pid": os.getpid()}


def swallow_exceptions(ctx, marker):
    """A broad ``except Exception`` must not swallow Interrupted."""
    Path(marker).write_text("running")
    while True:
        try:
            ctx.check()
        except Exception:
            return "swallowed"


def report_interrupt(ctx, marker):
    """Catches Interrupted and returns what ctx says about the request."""
    Path(marker).write_text("running")
    try:
        while True:
            ctx.check()
    except Interrupted as exc:
        i = ctx.interrupt
        return {
            "interrupted": ctx.interrupted,
            "mode": i.mode.value,
            "reason": i.reason.value,
            "source": i.source.value,
            "message": i.message,
            "text": str(exc),
        }


def sleep_and_time(ctx, params):
    """Returns how long ctx.sleep actually slept (monotonic seconds) when cut short."""
    t0 = time.monotonic_ns()
    Path(params["marker"]).write_text("sleeping")
    try:
        ctx.sleep(params["seconds"])
    except Interrupted:
        return {"slept_ns": time.monotonic_ns() - t0, "t0": t0}
    return None


def cli_job(ctx, item):
    """For CLI batches: item fields say what to do. 'marker': write our pid there on start;
    'wait': sleep that long through ctx.sleep (stops at once when asked); 'spin': never check."""
    if item.get("say"):
        print(item["say"])
        print(f"{item['say']} (stderr)", file=sys.stderr)
        subprocess.run(["echo", f"{item['say']} (a tool)"])
    if item.get("marker"):
        Path(item["marker"]).write_text(str(os.getpid()))
    if item.get("spin"):
        while True:
            pass
    if item.get("wait"):
        ctx.sleep(item["wait"])
    if item.get("fail"):
        raise RuntimeError(item["fail"])
    return item.get("value")


# -- checkpoints ------------------------------------------------------------------------


def ckpt_steps(ctx, params):
    """Does params['n'] steps of params.get('step', 0) s (through ctx.sleep), checkpointing
    after each; resumes from ctx.restore(). Writes params['marker'] after step params['marker_at']."""
    state = ctx.restore() or {"done": [], "resumed_at": None}
    if state["done"]:
        state["resumed_at"] = len(state["done"])
    ctx.state = state
    for i in range(len(state["done"]), params["n"]):
        ctx.sleep(params.get("step", 0))
        state["done"].append(i)
        ctx.checkpoint(state)
        if params.get("marker") and params.get("marker_at", 2) == i:
            Path(params["marker"]).write_text("reached")
    return state


def ckpt_writer(ctx, params):
    """Writes checkpoints as fast as it can; each state carries the digest of its payload."""
    import hashlib
    import random

    rng = random.Random(params["seed"])
    Path(params["marker"]).write_text("writing")
    i = 0
    while True:
        i += 1
        data = rng.randbytes(rng.randint(100, params["max_size"]))
        ctx.checkpoint({"i": i, "data": data, "sha": hashlib.sha256(data).hexdigest()})


def state_then_spin(ctx, params):
    """Sets ctx.state, then never checks: stopped by SIGTERM, its state is saved by default."""
    ctx.state = {"progress": params["progress"], "tags": ("a", "b")}
    Path(params["marker"]).write_text("spinning")
    while True:
        pass


def with_hook(ctx, params):
    ctx.state = {"n": 1}
    Path(params).write_text("running")
    while True:
        ctx.check()


def _hook(ctx, state):
    ctx.checkpoint({"saved_by": "hook", "had": state})


with_hook.on_interrupt = _hook


def save_by_hook(ctx, state):
    ctx.checkpoint({"saved_by": "submit hook", "had": state})


def save_bad(ctx, _):
    class Tool:
        pass

    ctx.checkpoint({"messages": [{"role": "user"}, {"tool": Tool()}]})


def save_types(ctx, state):
    ctx.checkpoint(state, durable=False)
    return ctx.restore()


async def async_agent(ctx, params):
    """An async agent: awaits (like a model call); its finally records how it ended."""
    import asyncio

    Path(params["marker"]).write_text("awaiting")
    try:
        if params.get("block"):
            while True:  # a CPU-bound stretch with no await: only SIGTERM reaches it
                pass
        await asyncio.sleep(params.get("sleep", 1000))
        return "slept"
    finally:
        Path(params["marker"]).write_text("finally ran")


def prints(ctx, text):
    print(text)
    return len(text)


def own_sigterm_handler(ctx, _):
    """Installs a SIGTERM handler of its own, then returns normally."""

    def mine(signum, frame):
        raise RuntimeError("the agent's own handler ran")

    signal.signal(signal.SIGTERM, mine)
    return os.getpid()
