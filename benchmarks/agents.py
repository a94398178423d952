"""Agents the benchmarks run inside real workers (module-level: found by name)."""

from __future__ import annotations

import multiprocessing
import threading
import time


def _loop_ns(fn, n: int) -> float:
    t = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t) / n


def measure_check(ctx, params: dict) -> dict:
    """ns per operation, each measured as a tight loop in this worker, net of the empty loop."""
    n, repeats = params["n"], params["repeats"]
    words, ctl = ctx._words, ctx._ctl
    mp_event = multiprocessing.Event()
    th_event = threading.Event()

    def empty(n):
        for _ in range(n):
            pass

    # Each loop binds what it uses to locals, as agent code does with its ctx argument.
    def check(n, c=ctx):
        for _ in range(n):
            c.check()

    def interrupted(n, c=ctx):
        for _ in range(n):
            c.interrupted

    def bare(n, words=words, ctl=ctl):
        for _ in range(n):
            words[ctl]

    def mp_is_set(n, e=mp_event):
        for _ in range(n):
            e.is_set()

    def th_is_set(n, e=th_event):
        for _ in range(n):
            e.is_set()

    def noop_method(n):
        o = _Noop()
        for _ in range(n):
            o.noop()

    cases = {
        "empty loop": empty,
        "ctx.check()": check,
        "ctx.interrupted": interrupted,
        "bare shared-memory read": bare,
        "any method call (floor)": noop_method,
        "threading.Event.is_set()": th_is_set,
        "multiprocessing.Event.is_set()": mp_is_set,
    }
    raw = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            scale = 10 if name.startswith("multiprocessing") else 1  # it is ~10x slower: fewer iterations
            raw[name].append(_loop_ns(fn, n // scale))
    return raw


class _Noop:
    __slots__ = ()

    def noop(self):
        pass


def check_loop(ctx, _):
    """A cooperative agent: checks its flag in a tight loop until stopped."""
    while True:
        ctx.check()


def agent_step(ctx, params: dict) -> dict:
    """A realistic agent step (a few µs of Python work) with and without one check per step."""
    steps, repeats = params["steps"], params["repeats"]

    def work(i):
        d = {"role": "tool", "step": i, "content": "x" * 16}
        s = sum(len(str(v)) for v in d.values())
        return [s] * 8

    def without(n):
        for i in range(n):
            work(i)

    def with_check(n, c=ctx):
        for i in range(n):
            c.check()
            work(i)

    out = {"without": [], "with": []}
    for _ in range(repeats):
        out["without"].append(_loop_ns(without, steps))
        out["with"].append(_loop_ns(with_check, steps))
    return out
