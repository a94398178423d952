"""Agents for tests/test_sources.py (issue 10: budgets, stalls, agent trees, shields).

Module-level, so workers import them by name. Inputs are dicts; paths in them are
files under the test's tmp_path, through which an agent tells the test what it did
(monotonic timestamps are CLOCK_MONOTONIC nanoseconds, comparable across processes
and with the supervisor's ``requested_ns``).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from interrupt_pool import Interrupted


def _append(path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _started(ctx, p) -> None:
    """Write ``<p['dir']>/<execution id>`` (the test's 'this one runs' signal)."""
    if p and p.get("dir"):
        Path(p["dir"], ctx.execution_id).write_text(str(os.getpid()))


# -- budgets ------------------------------------------------------------------------------


def spend_steps(ctx, p):
    """Spends ``p['step']`` up to ``p['n']`` times, logging 'before i' / 'after i' around
    each ctx.spend (so the test sees which call raised); ``pause`` s of ctx.sleep between."""
    log = p.get("log")
    _started(ctx, p)
    for i in range(1, p.get("n", 1000) + 1):
        if log:
            _append(log, f"before {i}")
        total = ctx.spend(p["step"], note=f"step {i}")
        if log:
            _append(log, f"after {i} total {total!r}")
        if p.get("pause"):
            ctx.sleep(p["pause"])
    return ctx.cost


def spend_then_hang(ctx, p):
    """Spends past its budget once, swallows the Interrupted that ctx.spend raises and then
    hangs in time.sleep without ever checking (a stuck tool call): only SIGTERM stops it."""
    try:
        ctx.spend(p["amount"])
        _append(p["log"], "spend returned")
    except Interrupted as exc:
        _append(p["log"], f"spend raised: {exc}")
    try:
        while True:
            time.sleep(0.05)
    finally:
        _append(p["log"], "finally ran")


def hang(ctx, p):
    """Never checks, never spends: time.sleep forever (a stop must reach it by SIGTERM)."""
    _started(ctx, p)
    try:
        while True:
            time.sleep(0.05)
    finally:
        if p.get("log"):
            _append(p["log"], "finally ran")


def sleep_forever(ctx, p):
    """Cooperative and idle: ctx.sleep in a loop, forever."""
    _started(ctx, p)
    while True:
        ctx.sleep(0.05)


def spend_and_wait(ctx, p):
    """Spends ``p['amount']`` once, writes ``p['marker']``, then waits in ctx.sleep."""
    ctx.spend(p["amount"], note="one call")
    Path(p["marker"]).write_text("spent")
    while True:
        ctx.sleep(0.05)


def spend_bad_amounts(ctx, _):
    """Tries ctx.spend with bad amounts and notes; returns what each raised, and the cost after."""
    out = []
    for amount in (-1, -0.5, float("nan"), float("inf"), True, "3", None):
        try:
            ctx.spend(amount)
            out.append(["no error", repr(amount)])
        except Exception as exc:
            out.append([type(exc).__name__, str(exc)])
    try:
        ctx.spend(0.5, note=123)
        out.append(["no error", "note=123"])
    except Exception as exc:
        out.append([type(exc).__name__, str(exc)])
    return {"errors": out, "cost": ctx.cost}


def spending_children(ctx, p):
    """A parent that spends nothing itself: starts ``p['kids']`` children that spend, waits."""
    kids = [ctx.submit(spend_steps, {"step": p["step"], "pause": p["pause"], "n": 100_000})
            for _ in range(p["kids"])]  # fmt: skip
    return [k.result() for k in kids]


# -- stalls -------------------------------------------------------------------------------


def heartbeat_then_hang(ctx, p):
    """Heartbeats every 50 ms for ``p['busy']`` s, records the time of its last heartbeat,
    then hangs in time.sleep (no progress, no checks)."""
    end = time.monotonic() + p["busy"]
    beats = 0
    last = time.monotonic_ns()
    while time.monotonic() < end:
        last = time.monotonic_ns()  # taken before the heartbeat: the progress word is >= this
        ctx.heartbeat()
        beats += 1
        time.sleep(0.05)
    Path(p["log"]).write_text(f"{last} {beats}")
    while True:
        time.sleep(0.05)


def progress_for(ctx, p):
    """Makes progress of one kind (heartbeat, sleep, spend, checkpoint) every ~50 ms for
    ``p['seconds']`` s, without any other; returns how many times."""
    kind = p["kind"]
    end = time.monotonic() + p["seconds"]
    n = 0
    while time.monotonic() < end:
        if kind == "heartbeat":
            ctx.heartbeat()
            time.sleep(0.05)
        elif kind == "sleep":
            ctx.sleep(0.05)
        elif kind == "spend":
            ctx.spend(0.001)
            time.sleep(0.05)
        elif kind == "checkpoint":
            ctx.checkpoint({"n": n}, durable=False)
            time.sleep(0.05)
        else:
            raise ValueError(f"unknown kind {kind!r}")
        n += 1
    return n


def check_only(ctx, p):
    """Calls only ctx.check() in a busy loop (not progress); records its start time."""
    Path(p["log"]).write_text(str(time.monotonic_ns()))
    n = 0
    while True:
        ctx.check()
        n += 1


def check_and_wait(ctx, p):
    """Heartbeats once, writes ``p['marker']``, then loops ctx.check() + time.sleep (no progress)."""
    ctx.heartbeat()
    Path(p["marker"]).write_text(str(time.monotonic_ns()))
    while True:
        ctx.check()
        time.sleep(0.02)


def beat_and_wait(ctx, p):
    """Heartbeats every 20 ms; writes ``p['marker']`` once it has started."""
    Path(p["marker"]).write_text("beating")
    while True:
        ctx.heartbeat()
        ctx.check()
        time.sleep(0.02)


def sleep_for(ctx, seconds):
    ctx.sleep(seconds)
    return seconds


def sequential_children(ctx, p):
    """Runs ``p['n']`` children one after another, each sleeping ``p['each']`` s; the parent
    itself makes no progress of its own (no heartbeat, no ctx.sleep) while it waits."""
    done = 0
    for _ in range(p["n"]):
        done += 1 if ctx.submit(sleep_for, p["each"]).result() == p["each"] else 0
    return done


# -- agent trees --------------------------------------------------------------------------


def _bump(path, delta: int) -> None:
    """Add ``delta`` to the 'current max' counter in ``path`` (flock-serialised across processes)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = os.read(fd, 64).split() or [b"0", b"0"]
        cur, top = int(data[0]) + delta, int(data[1])
        top = max(top, cur)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{cur} {top}".encode())
    finally:
        os.close(fd)


def tree_sum(ctx, p):
    """A tree of ``fanout`` children per node, ``depth`` levels below this one; returns how
    many executions it had (itself included). Leaves count, in ``p['counter']``, how many
    of them run at once (for ``leaf_s`` s each, through ctx.sleep)."""
    if p["depth"] == 0:
        if p.get("counter"):
            _bump(p["counter"], +1)
            try:
                ctx.sleep(p.get("leaf_s", 0.02))
            finally:
                _bump(p["counter"], -1)
        return 1
    sub = {**p, "depth": p["depth"] - 1}
    if p.get("use_map"):
        return 1 + sum(ctx.map(tree_sum, [sub] * p["fanout"]))
    kids = [ctx.submit(tree_sum, sub) for _ in range(p["fanout"])]
    return 1 + sum(k.result() for k in kids)


def nested_forever(ctx, p):
    """A tree (``fanout``, ``depth``) whose inner nodes wait on their children and whose
    leaves ctx.sleep forever; each node writes ``<dir>/<its id>`` once it runs."""
    _started(ctx, p)
    if p["depth"] == 0:
        while True:
            ctx.sleep(0.05)
    kids = [ctx.submit(nested_forever, {**p, "depth": p["depth"] - 1}) for _ in range(p["fanout"])]
    return [k.result() for k in kids]


def family(ctx, p):
    """Starts two children that return their input and one grandchild each; returns the
    children's ids, values and parent-side outcomes."""
    kids = [ctx.submit(child_with_grandchild, i) for i in (1, 2)]
    values = [k.result() for k in kids]
    outs = [k.outcome() for k in kids]
    return {"ids": [k.id for k in kids], "values": values,
            "outcomes": [[o.id, o.status.value, o.parent_id, list(o.children)] for o in outs]}  # fmt: skip


def child_with_grandchild(ctx, x):
    g = ctx.submit(square, x * 10)
    return {"id": ctx.execution_id, "x": x, "grandchild": g.result(), "grandchild_id": g.id}


def square(ctx, x):
    return x * x


def map_squares(ctx, xs):
    return ctx.map(square, xs)


def map_item(ctx, x):
    """For ctx.map tests: 'fail' raises, 'hang' waits forever (writing its id), numbers square."""
    if x == "fail":
        raise ValueError("bad item")
    if isinstance(x, dict):
        _started(ctx, x)
        while True:
            ctx.sleep(0.05)
    return x * x


def map_first_fails(ctx, p):
    """ctx.map over [fail, hang, hang]: returns what map raised and the hanging siblings' ids."""
    try:
        ctx.map(map_item, ["fail", {"dir": p["dir"]}, {"dir": p["dir"]}])
    except Exception as exc:
        return {"raised": type(exc).__name__, "text": str(exc)}
    return {"raised": None}


def crash_after_child(ctx, p):
    """Starts a child that waits forever, waits until it runs, then dies (os._exit)."""
    child = ctx.submit(sleep_forever, {"dir": p["dir"]})
    _wait_file(Path(p["dir"], child.id))
    os._exit(7)


def return_without_waiting(ctx, p):
    """Starts a child that waits forever, waits until it runs, then returns without waiting for it."""
    child = ctx.submit(sleep_forever, {"dir": p["dir"]})
    _wait_file(Path(p["dir"], child.id))
    return child.id


def cancel_my_child(ctx, p):
    """Starts a child, waits until it runs, cancels it from here; returns its outcome as seen here."""
    child = ctx.submit(sleep_forever, {"dir": p["dir"]})
    _wait_file(Path(p["dir"], child.id))
    first = child.cancel(p.get("mode", "graceful"))
    out = child.outcome(timeout=10)
    again = child.cancel()
    return {"id": child.id, "first": first, "again": again, "status": out.status.value,
            "reason": out.interrupt.reason.value, "source": out.interrupt.source.value,
            "mode": out.interrupt.mode.value, "done": child.done()}  # fmt: skip


def submit_unknown_option(ctx, _):
    try:
        ctx.submit(square, 2, bogus=1)
    except TypeError as exc:
        return f"TypeError: {exc}"
    return "no error"


def leave_thread(ctx, p):
    """Returns at once, leaving a thread that, ``delay`` s later, tries ``p['what']``
    (submit a child, or enter a shield) on the ended execution's ctx and records what it raised."""

    def later():
        time.sleep(p.get("delay", 0.3))
        try:
            if p["what"] == "submit":
                ctx.submit(square, 3)
            else:
                with ctx.shield():
                    pass
            text = "no error"
        except BaseException as exc:
            text = f"{type(exc).__name__}: {exc}"
        Path(p["out"]).write_text(text)

    threading.Thread(target=later, daemon=True).start()
    return "returned"


def _wait_file(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.005)


# -- shields ------------------------------------------------------------------------------


def shielded(ctx, p):
    """Enters a shield, writes ``p['entered']``, works there for ``p['seconds']`` s (``how``:
    'ctx' = ctx.check() + ctx.sleep steps; 'sleep' = time.sleep, never checking; 'nested' =
    like 'ctx' inside an inner shield, then 0.3 s more in the outer one), writes
    ``p['done']`` (monotonic ns) at the end of the shield body, then ``p['after']`` after it."""
    how = p["how"]
    with ctx.shield():
        t0 = time.monotonic()
        Path(p["entered"]).write_text(str(os.getpid()))
        end = t0 + p["seconds"]
        if how == "sleep":
            while time.monotonic() < end:
                time.sleep(0.02)
        elif how == "nested":
            with ctx.shield():
                while time.monotonic() < end:
                    ctx.check()
                    ctx.sleep(0.02)
            Path(p["inner_done"]).write_text(str(time.monotonic_ns()))
            ctx.check()
            ctx.sleep(0.3)
        else:
            while time.monotonic() < end:
                ctx.check()  # does not raise inside a shield
                ctx.sleep(0.02)
        Path(p["done"]).write_text(str(time.monotonic_ns()))
    Path(p["after"]).write_text("after the shield")
    return "finished"


# -- review regressions -----------------------------------------------------------------------


def poll_child_done(ctx, p):
    """Starts a short child, then polls child.done() (no blocking ctx call) until it is True."""
    child = ctx.submit(sleep_for, p["child_s"])
    deadline = time.monotonic() + p["within_s"]
    while time.monotonic() < deadline:
        if child.done():
            return child.result()
        time.sleep(0.01)
    return "never done"


def high_priority_child(ctx, p):
    """A preemptible parent that starts a child of higher priority and waits for it."""
    _append(p["runs"], "run")
    return ctx.submit(sleep_for, 0.1, priority=p["priority"]).result()


def spend_past_then_continue(ctx, p):
    """Spends ``p['step']`` ``p['n']`` times, waiting for ``p['go']`` after the first spend (the test
    raises the group's budget meanwhile); returns its cost."""
    ctx.spend(p["step"])
    Path(p["marker"]).write_text("spent")
    while not Path(p["go"]).exists():
        ctx.sleep(0.01)
    for _ in range(p["n"] - 1):
        ctx.spend(p["step"])
    return ctx.cost
