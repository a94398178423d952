"""Functions for the Executor and chunked-map tests: module-level, so workers find them by name.

Plain ``fn(*args)`` functions are for :class:`interrupt_pool.Executor` (it calls
``fn(*args, **kwargs)``); ``fn(ctx, x)`` agents are for ``Pool.map``/``imap`` and
``Pool._submit_batch`` with a ``chunksize``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import interrupt_pool

# -- plain functions for the Executor --------------------------------------------------


def mul(x, y):
    return x * y


def capture(*args, **kwargs):
    return args, kwargs


def _deeper(message):
    raise ValueError(message)


def raise_value_error(message):
    """Raises ValueError(message) one call down (its remote traceback names both frames)."""
    _deeper(message)


def sleep_then(seconds, value=None):
    """Plain time.sleep, then return ``value`` (it never looks at its stop flag)."""
    time.sleep(seconds)
    return value


def whoami():
    """The execution this call runs as, from ``interrupt_pool.current()``, and the worker's pid."""
    ctx = interrupt_pool.current()
    return {"execution_id": ctx.execution_id, "pid": os.getpid()}


def current_in_a_thread():
    """``current()`` read from a thread the function started (it is the worker's, not the thread's)."""
    import threading

    got = {}

    def look():
        got["id"] = interrupt_pool.current().execution_id

    t = threading.Thread(target=look)
    t.start()
    t.join()
    return got["id"]


def cooperative_wait(path):
    """Writes its pid to ``path``, starts a ``sleep 1000`` tool, then sleeps through
    ``current().sleep`` (woken by a stop's doorbell); writes 'finally' + pid on its way out."""
    tool = subprocess.Popen(["sleep", "1000"])
    Path(path).write_text(f"{os.getpid()} {tool.pid}")
    try:
        while True:
            interrupt_pool.current().sleep(1000)
    finally:
        Path(f"{path}.finally").write_text("cooperative")


def stubborn_wait(path):
    """Writes its pid and its tool's pid to ``path``, then loops on plain ``time.sleep`` (never
    reads its flag): only the escalation's SIGTERM stops it."""
    tool = subprocess.Popen(["sleep", "1000"])
    Path(path).write_text(f"{os.getpid()} {tool.pid}")
    try:
        while True:
            time.sleep(0.05)
    finally:
        Path(f"{path}.finally").write_text("sigterm")


def exit_worker(code):
    """Ends its worker process at once (no clean-up, no result)."""
    os._exit(code)


def exit_after(seconds, code):
    """Plain-sleeps ``seconds``, then ends its worker process at once."""
    time.sleep(seconds)
    os._exit(code)


def kill_own_worker():
    """SIGKILLs its own worker process."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # the signal is delivered before this returns


def write_then_sleep(path, seconds):
    """Writes 'started' to ``path``, then plain-sleeps ``seconds``; returns ``seconds``."""
    Path(path).write_text("started")
    time.sleep(seconds)
    return seconds


# -- fn(ctx, x) agents for chunked maps --------------------------------------------------


def job(ctx, spec):
    """One item of a chunk. An int is returned as it is. A dict says what to do, in this order:
    'log': append '<execution id> <pid>' to that file (which items ran, and how often);
    'marker': write the pid there (the 'I started' signal);
    'sleep': ctx.sleep that long (cut short by a stop); 'busy': plain time.sleep that long
    (never reads the flag); 'fail': raise ValueError with that text; 'exit': os._exit with
    that code; 'check': loop on ctx.check() forever; then return 'value'."""
    if isinstance(spec, int):
        return spec
    if spec.get("log"):
        with open(spec["log"], "a") as f:  # one short O_APPEND write per line: lines never interleave
            f.write(f"{ctx.execution_id} {os.getpid()}\n")
    if spec.get("marker"):
        Path(spec["marker"]).write_text(str(os.getpid()))
    if spec.get("sleep"):
        ctx.sleep(spec["sleep"])
    if spec.get("busy"):
        deadline = time.monotonic() + spec["busy"]
        while time.monotonic() < deadline:
            time.sleep(0.01)
    if spec.get("fail"):
        raise ValueError(spec["fail"])
    if spec.get("exit") is not None:
        os._exit(spec["exit"])
    if spec.get("check"):
        while True:
            ctx.check()
    if spec.get("catch"):
        try:
            ctx.sleep(1000)
        except interrupt_pool.Interrupted:
            return "caught"
    if spec.get("report"):
        try:
            ctx.sleep(1000)
        except interrupt_pool.Interrupted as exc:
            request = ctx.interrupt
            return {"message": request.message if request else None, "stage": exc.stage.value}
    return spec.get("value")


def item_id(ctx, x):
    """(x, the id this item runs as): each item of a chunk is its own execution."""
    return x, ctx.execution_id
