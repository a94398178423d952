"""Warm workers (``Pool(preload=...)``, issue 12): what importing a framework once in the
supervisor, before it forks, saves each new worker. The agent module (``preload_bench_agents``)
imports ``langgraph.graph``, ``langgraph.prebuilt`` and ``langchain_core.messages`` at its top and
runs a one-node graph; preload off (each worker imports them when it first runs the agent) against
``preload=preload_bench_agents.PRELOAD``, interleaved in the same run, each repetition on fresh
pools of 1 worker, spare worker off and on:

- *pool start*: ``Pool(...)`` until it returns (with preload the import happens here, once for
  every worker the pool will ever fork);
- *first result*: submit → result of the first execution on that freshly started pool;
- *replacement*: an execution that never checks is killed (``cancel(mode="kill")``) once it has
  started, and the next execution's submit follows at once: from the cancel to that execution's
  result, which a new worker ran (checked by its pid). With ``spare_worker=False`` the new worker
  is forked after the kill; with the default spare worker, a spare forked earlier takes the place
  (without preload it imports the agent's module ahead of time, when the pool has run it).

The ``run_graph`` adapter's own warm-worker figures are in the langgraph section; this one needs
only LangGraph, not the adapter. Without LangGraph the section says so and is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import select
import tempfile
import time

from ._stats import summary, table


def _unavailable() -> str | None:
    """Why the section cannot run (None: it can). Found, not imported: this process needs none of it."""
    missing = [m for m in ("langgraph", "langchain_core") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"not installed: {', '.join(missing)}; "
                '`pip install "interrupt-pool[langgraph]"` installs LangGraph and LangChain core')  # fmt: skip
    return None


def _wait_for_writer(fifo: str, timeout: float) -> None:
    """Block until an agent has written to the FIFO ``fifo`` (no polling: select on it)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # (a read end opened first: the writer's open succeeds)
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no agent wrote to {fifo} within {timeout} s")
            if select.select([fd], [], [], left)[0] and os.read(fd, 1):
                return
            # (ready with b"": no writer yet or it closed without a byte; select again until the deadline)
    finally:
        os.close(fd)


def _one_pool(preload: tuple[str, ...], spare: bool, fifo: str) -> dict[str, float]:
    """One fresh pool of 1 worker: its start, its first result, one replacement (seconds)."""
    from interrupt_pool import Pool

    from . import preload_bench_agents as A

    t0 = time.perf_counter()
    with Pool(workers=1, preload=preload, spare_worker=spare, log_dir=None, checkpoint_dir=None) as pool:
        t1 = time.perf_counter()
        first = pool.submit(A.work, 41).result(timeout=120)
        t2 = time.perf_counter()
        if first["total"] != 42:
            raise AssertionError(f"wrong result {first!r}")
        stuck = pool.submit(A.deaf, fifo)
        _wait_for_writer(fifo, timeout=60)  # it runs (wait_started is too early: a kill before the
        t3 = time.perf_counter()            # worker takes it only skips it, and no worker is replaced)
        stuck.cancel(mode="kill")
        again = pool.submit(A.work, 1).result(timeout=120)
        t4 = time.perf_counter()
        if again["total"] != 2 or again["pid"] == first["pid"]:
            raise AssertionError(f"the replacement's result {again!r} (first ran in pid {first['pid']})")
    return {"start": t1 - t0, "first": t2 - t1, "replacement": t4 - t3}


def preload(quick: bool) -> dict:
    why = _unavailable()
    if why is not None:
        return {"skipped": why, "markdown": f"### Warm workers (preload)\n\nSkipped: {why}."}
    from . import preload_bench_agents as A  # (here only for its PRELOAD names; workers import it themselves)

    reps = 1 if quick else 7
    configs = [(spare, pre) for spare in (False, True) for pre in ((), A.PRELOAD)]
    samples: dict[tuple, dict[str, list[float]]] = {c: {"start": [], "first": [], "replacement": []} for c in configs}
    with tempfile.TemporaryDirectory(prefix="pool-bench-preload-") as tmp:
        fifo = os.path.join(tmp, "running")
        os.mkfifo(fifo)
        for _ in range(reps):  # interleaved: a noisy neighbour hits every configuration alike
            for spare, pre in configs:
                for k, v in _one_pool(pre, spare, fifo).items():
                    samples[(spare, pre)][k].append(v * 1e3)
    rows, out = [], []
    for spare, pre in configs:
        s = {k: summary(v) for k, v in samples[(spare, pre)].items()}
        out.append({"spare_worker": spare, "preload": list(pre), **{f"{k}_ms": v for k, v in s.items()}})
    for spare in (False, True):
        off = next(r for r in out if r["spare_worker"] is spare and not r["preload"])
        on = next(r for r in out if r["spare_worker"] is spare and r["preload"])
        for r in (off, on):
            rows.append([spare, "on" if r["preload"] else "off",
                         *(f"{r[k]['median']:.0f}" for k in ("start_ms", "first_ms", "replacement_ms")),
                         *((f"{off['first_ms']['median'] / on['first_ms']['median']:.1f}×",
                            f"{off['replacement_ms']['median'] / on['replacement_ms']['median']:.1f}×")
                           if r is on else ("", ""))])  # fmt: skip
    md = (f"### Warm workers (preload): LangGraph imported once in the supervisor\n\n"
          f"ms, median of {reps} fresh pools of 1 worker per row (interleaved); the agent's module imports "
          f"{', '.join(A.PRELOAD)}; preload on = `Pool(preload={list(A.PRELOAD)})`. *first result* is submit → "
          "result on the fresh pool, *replacement* is kill of a started execution → the next execution's result on "
          "a new worker. With preload, the import moves into *pool start* (once per pool). off/on = the ratio of "
          "medians.\n\n"
          + table(["spare_worker", "preload", "pool start", "first result", "replacement", "first off/on",
                   "replacement off/on"], rows))  # fmt: skip
    return {"reps": reps, "rows": out, "markdown": md}
