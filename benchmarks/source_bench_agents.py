"""Agents for the interrupt-sources section (``bench_sources``); module-level, so workers find them by name.

Importing it costs next to nothing: the "before issue 10" micro-benchmark runs
these same agents against the older package, so they use only what both have
(``ctx.check``, ``ctx.sleep``, ``ctx.state``, ``ctx.restore``) unless the
benchmark that runs them is about a newer feature.
"""

from __future__ import annotations

import time

from benchmarks.agents import loop_ns, ctx_loops


def _work(i: int) -> int:
    """A few µs of Python work, as one step of an agent loop."""
    d = {"role": "tool", "step": i, "content": "x" * 16}
    return sum(len(str(v)) for v in d.values())


# -- budgets -----------------------------------------------------------------------------


def spend_checking(ctx, p: dict):
    """A cooperative agent: pays ``step`` per step (about ``step_s`` of work, checking between)
    until the spend that reaches its budget raises Interrupted inside ``ctx.spend``."""
    step, step_s = p["step"], p["step_s"]
    i = 0
    while True:
        until = time.perf_counter() + step_s
        while time.perf_counter() < until:
            ctx.check()
            _work(i)
        ctx.spend(step)
        i += 1


def spend_then_block(ctx, p: dict):
    """Spends past its budget in one call, swallows the Interrupted it gets (as a retry
    wrapper around an LLM call might) and blocks in C without checking: only the
    escalation (SIGTERM after the grace) ends it."""
    from interrupt_pool import Interrupted

    time.sleep(p.get("settle", 0.0))
    try:
        ctx.spend(p["amount"])
    except Interrupted:
        pass  # the bug being measured: the agent ignores the stop
    time.sleep(60)


def blocks(ctx, _):
    """A stuck tool call: blocks in C (time.sleep), never checks, never spends."""
    time.sleep(60)


def spend_once(ctx, p: dict):
    """Spends ``amount`` once after ``settle`` seconds, then keeps checking."""
    time.sleep(p.get("settle", 0.0))
    ctx.spend(p["amount"])
    while True:
        ctx.check()
        time.sleep(0.0005)


# -- stalls ------------------------------------------------------------------------------


def busy_no_progress(ctx, _):
    """Checks its flag in a loop of Python work but never marks progress: stalls."""
    i = 0
    while True:
        ctx.check()
        _work(i)
        i += 1


# -- trees -------------------------------------------------------------------------------


def tree_node(ctx, p: dict):
    """A node of a tree of fan-out ``fanout`` and ``depth`` levels below it: leaves sleep in
    ctx.sleep(60); inner nodes start their children and wait on them."""
    depth = p["depth"]
    if depth == 0:
        ctx.sleep(60)
        return 0
    children = [ctx.submit(tree_node, {"depth": depth - 1, "fanout": p["fanout"]}) for _ in range(p["fanout"])]
    return sum(c.result() for c in children)


def sleeps(ctx, seconds: float):
    ctx.sleep(seconds)


# -- priority ----------------------------------------------------------------------------


def low_steps(ctx, p: dict):
    """Low-priority work in short steps: ctx.sleep(step) then records its progress in
    ctx.state (checkpointed when it is preempted; resumed with ctx.restore)."""
    state = ctx.restore() or {"i": 0, "resumed": 0}
    if state["i"]:
        state["resumed"] += 1
    ctx.state = state
    while state["i"] < p["steps"]:
        ctx.sleep(p["step"])
        state["i"] += 1
        ctx.state = state
    return state


def stamp(ctx, _):
    """High-priority work: returns the monotonic time its agent code started."""
    return time.monotonic_ns()


def timed_work(ctx, seconds: float):
    """Non-preemptible low work of a known length (ctx.sleep in steps)."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        ctx.sleep(min(0.005, left))


# -- before/after micro-benchmark ------------------------------------------------------------


def check_cost(ctx, p: dict) -> dict:
    """ns per ctx.check() (and ctx.heartbeat(), ctx.spend() where the tree has them) and per
    iteration of the empty loop, interleaved repeats."""
    n, repeats = p["n"], p["repeats"]
    loops = ctx_loops(ctx)
    counts = {"spend": max(1, n // 100)}  # spend sends a frame: fewer
    out: dict[str, list] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, fn in loops.items():
            out[name].append(loop_ns(fn, counts.get(name, n)))
    return out


def triv(ctx, x):
    return x
