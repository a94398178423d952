"""Agents the benchmarks run inside real workers (module-level: found by name)."""

from __future__ import annotations

import multiprocessing
import threading
import time


def loop_ns(fn, n: int) -> float:
    t = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t) / n


def ctx_loops(ctx) -> dict:
    """Tight loops of n calls: the empty loop (the floor to subtract), ctx.check(), and
    ctx.heartbeat() / ctx.spend() where this ctx has them (issue 10 on)."""

    def empty(n):
        for _ in range(n):
            pass

    # Each loop binds what it uses to locals, as agent code does with its ctx argument.
    def check(n, c=ctx):
        for _ in range(n):
            c.check()

    def heartbeat(n, c=ctx):
        for _ in range(n):
            c.heartbeat()

    def spend(n, c=ctx):
        for _ in range(n):
            c.spend(1e-9)

    loops = {"empty": empty, "check": check}
    if hasattr(ctx, "heartbeat"):
        loops.update(heartbeat=heartbeat, spend=spend)
    return loops


def measure_check(ctx, params: dict) -> dict:
    """ns per operation, each measured as a tight loop in this worker, net of the empty loop."""
    n, repeats = params["n"], params["repeats"]
    words, ctl = ctx._words, ctx._ctl
    mp_event = multiprocessing.Event()
    th_event = threading.Event()

    loops = ctx_loops(ctx)
    empty, check = loops["empty"], loops["check"]

    def interrupted(n, c=ctx):
        for _ in range(n):
            c.interrupted  # noqa: B018 - the read is what we measure

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
            raw[name].append(loop_ns(fn, n // scale))
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
        out["without"].append(loop_ns(without, steps))
        out["with"].append(loop_ns(with_check, steps))
    return out


def agent_state(size: int = 7000) -> dict:
    """A ~6 KB agent state: a conversation, tool results and counters."""
    msgs = []
    i = 0
    while len(str(msgs)) < size - 300:
        msgs.append({"role": "assistant" if i % 2 else "user", "content": f"message {i} " + "lorem ipsum " * 8,
                     "tool_calls": [{"name": "search", "args": {"q": f"query {i}"}}] if i % 3 == 0 else []})  # fmt: skip
        i += 1
    return {"messages": msgs, "step": i, "budget": {"tokens": 12345, "usd": 0.42}, "done": list(range(20))}


def measure_checkpoint(ctx, params: dict) -> dict:
    """Floor (encode + durable write by hand) against ctx.checkpoint, interleaved, in this worker."""
    import os
    import tempfile

    import msgpack

    state = agent_state()
    floor_dir = tempfile.mkdtemp(prefix="ckpt-floor-", dir=params["dir"])
    out = {"floor": [], "checkpoint": [], "checkpoint_nondurable": [], "floor_nondurable": [],
           "bytes": len(msgpack.packb(state))}  # fmt: skip

    def floor(durable: bool, n: int) -> None:
        data = msgpack.packb(state, use_bin_type=True)
        tmp = os.path.join(floor_dir, f".tmp-{n}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data)
        if durable:
            os.fsync(fd)
        os.close(fd)
        os.replace(tmp, os.path.join(floor_dir, f"ckpt-{n % 3}"))
        if durable:
            dfd = os.open(floor_dir, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)

    for n in range(params["n"]):
        state["step"] = n  # a new state each time, as an agent's would be
        t = time.perf_counter_ns()
        floor(True, n)
        out["floor"].append((time.perf_counter_ns() - t) / 1e3)
        t = time.perf_counter_ns()
        ctx.checkpoint(state)
        out["checkpoint"].append((time.perf_counter_ns() - t) / 1e3)
        state["step"] = n + 0.5  # differs from the one just saved, or checkpoint() would skip it
        t = time.perf_counter_ns()
        floor(False, n)
        out["floor_nondurable"].append((time.perf_counter_ns() - t) / 1e3)
        t = time.perf_counter_ns()
        ctx.checkpoint(state, durable=False)
        out["checkpoint_nondurable"].append((time.perf_counter_ns() - t) / 1e3)
    return out
