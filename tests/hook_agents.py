"""Agents for tests/test_hooks.py (issue 10 parts 5-8: hooks, signals, external checkers,
priority and preemption).

Module-level, so workers import them by name. Inputs are dicts whose paths are files
under the test's tmp_path: an agent tells the test it runs by writing
``<p['dir']>/<execution id>`` and waits for the test by polling ``p['go']`` (a file the
test creates), so no test depends on how long anything takes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _append(path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _started(ctx, p) -> None:
    """Write ``<p['dir']>/<execution id>`` (the test's 'this one runs' signal); log 'start <id>'."""
    if p.get("log"):
        _append(p["log"], f"start {ctx.execution_id}")
    if p.get("dir"):
        Path(p["dir"], ctx.execution_id).write_text(str(os.getpid()))


def wait_for_go(ctx, p):
    """Cooperative: ctx.sleep in small steps (so a stop ends it at the flag) until ``p['go']``
    exists, then returns 'done'. ``p['state']``, if given, is put in ctx.state first."""
    if "state" in p:
        ctx.state = p["state"]
    _started(ctx, p)
    while not (p.get("go") and os.path.exists(p["go"])):
        ctx.sleep(0.02)
    return "done"


def never_checks(ctx, p):
    """Never checks its flag (a stuck tool call in time.sleep) but lets SIGTERM end it;
    returns 'done' once ``p['go']`` exists."""
    _started(ctx, p)
    while not (p.get("go") and os.path.exists(p["go"])):
        time.sleep(0.02)
    return "done"


def ignores_term(ctx, p):
    """Ignores SIGTERM and never checks: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _started(ctx, p)
    while True:
        time.sleep(0.05)


def spend_then_wait(ctx, p):
    """Spends ``p['amount']`` (a group member using up the group's budget) unless it is 0,
    then waits cooperatively for ``p['go']``."""
    _started(ctx, p)
    if p.get("amount"):
        ctx.spend(p["amount"])
    while not (p.get("go") and os.path.exists(p["go"])):
        ctx.sleep(0.02)
    return "done"


def record_start(ctx, p):
    """Appends 'start <id>' to ``p['log']``; then waits for ``p['go']`` if one is given."""
    _started(ctx, p)
    while p.get("go") and not os.path.exists(p["go"]):
        ctx.sleep(0.02)
    return ctx.execution_id


def counter(ctx, p):
    """A preemptible batch job: counts ``i`` up by one per step, keeping ``ctx.state``
    current so a stop checkpoints it, and resumes from ``ctx.restore()``. Logs
    'start <id> <i>' at each (re)start and writes ``<dir>/<id>`` once it has counted to
    ``p['ready']``; ends once ``i >= p['n']`` and ``p['go']`` exists. Returns the state:
    ``starts`` lists the value of ``i`` at each start, so [0, 12] means it was stopped
    once and went on from 12 instead of starting over."""
    state = ctx.restore() or {"i": 0, "starts": []}
    state["starts"].append(state["i"])
    _append(p["log"], f"start {ctx.execution_id} {state['i']}")
    while True:
        ctx.state = dict(state)
        if state["i"] == p.get("ready", 0) and p.get("dir"):
            Path(p["dir"], ctx.execution_id).write_text(str(os.getpid()))
        if state["i"] >= p.get("n", 0) and os.path.exists(p["go"]):
            return state
        ctx.sleep(0.01)
        state["i"] += 1


def checks_only_after_go(ctx, p):
    """Preemptible, and slow to notice a stop: counts like :func:`counter` but reads its flag
    only once ``p['go']`` exists (a step it cannot cut short), so a stop requested before
    then stays 'being made' until the test lets it through."""
    state = ctx.restore() or {"i": 0, "starts": []}
    state["starts"].append(state["i"])
    _append(p["log"], f"start {ctx.execution_id} {state['i']}")
    Path(p["dir"], ctx.execution_id).write_text(str(os.getpid()))
    while True:
        ctx.state = dict(state)
        if os.path.exists(p["go"]):
            ctx.check()
            if state["i"] >= p.get("n", 0):
                return state
        time.sleep(0.01)
        state["i"] += 1
