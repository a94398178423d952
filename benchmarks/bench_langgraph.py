"""The LangGraph adapter (issue 12, ``interrupt_pool.langgraph``): what ``run_graph`` costs per
execution and per superstep, how big its checkpoints are, and how fast a graceful stop lands,
each against the alternatives measured in the same run. The graphs (``lg_bench_agents``) are a
model node with a scripted chat model (no network) and a ``ToolNode``; without LangGraph the
section says so and is skipped.

(1) Per-execution overhead. A graph of 3 supersteps (model → instant tool → model's answer),
    run N times each way: ``graph.invoke`` in this process; our Pool (2 workers) running an agent
    that calls ``run_graph`` (durable checkpoints, and ``durable=False``); the same Pool running
    the same graph with ``graph.invoke`` in the agent (no adapter: the pool's own cost); and
    ProcessPoolExecutor (2 workers) running ``graph.invoke``. "one at a time" submits one run
    and waits for its result before the next (latency: the round trip and the run); "N at
    once" submits all N and divides the wall time by N (throughput on 2 workers: an in-process
    row has none). "in the worker" is the graph run itself, timed inside the process that ran
    it: the adapter's own cost is its difference from the no-adapter row. Every pool is
    started and warmed up first, off the clock (each worker has imported LangGraph, about
    0.7 s; the executor forks from this process, which has already imported it); each repeat
    runs every row once, in the same order; the figure is the median over the repeats.
(2) Checkpoint size and time per superstep against the number of supersteps. Graphs whose
    model calls one instant tool per turn, 2k + 1 supersteps. For each: the size of the
    execution's newest checkpoint (``outcome.checkpoint.size``, header included), the final
    state's own size (``len(json.dumps(value))``), and ms per superstep of the run timed inside
    the worker, all in the same pool, for ``run_graph`` (durable, non-durable), ``graph.invoke``
    (no checkpoints: the floor), the same graph with LangGraph's ``InMemorySaver`` and
    ``durability="sync"`` (what run_graph asks LangGraph for) and nothing exported, and the naive
    export users wrote by hand before the adapter (``InMemorySaver``, its whole content pickled
    and saved with ``ctx.checkpoint`` after every superstep). "saver" is (run_graph −
    graph.invoke) per superstep, split into LangGraph's own sync checkpointing (InMemorySaver
    sync − graph.invoke) and the adapter's export and checkpoint writes (run_graph −
    InMemorySaver sync): measured from outside, nothing in pool/ is wrapped. "saves/step" is
    the checkpoint sequence number the run ended at (how many checkpoints it wrote) per step.
(3) Graceful stop latency, ``requested → ended`` from the outcome's ``monotonic_ns`` stamps
    (one clock for every process), median and p90 over several stops, in the same pool
    (``Escalation(grace=1 s, term_grace=1 s)``):
    (a) between supersteps: every model turn thinks 20 ms in ``time.sleep`` (it never checks),
        the graph has 200 turns; the stop is requested at a random moment of a think. Nothing
        can end the execution before the model's step returns, so the latency is (the think's
        remaining time) + (the step's end → the execution's end: saving the step, the check,
        unwinding, reporting). The table gives both parts: "remaining think" is the think's end
        stamp minus the request, "after the step" is the end minus the think's end stamp; the
        second is what the adapter adds. ``observe_latency`` (request → the agent's check saw
        the flag) is the remaining think plus the save.
    (b) inside a tool that waits in ``current().sleep(60)`` (a stop wakes it);
    (c) inside a CPU tool that calls ``current().check()`` every 1000 iterations.
    Each also with ``graph.invoke`` in the agent (no adapter). Between supersteps nothing
    checks, so a graceful stop waits out the whole 1 s grace and ends by SIGTERM (the worker is
    replaced); inside a tool that uses ``current()`` the tool itself sees the flag, with or
    without the adapter.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from ._stats import pct, summary, table

THINK = 0.020  # seconds a model turn thinks in (3a)
STOP_TURNS = 200  # model turns of the (3a) graph: far more than a stop ever lets run
GRACE = 1.0

R_INPROC = "in process: graph.invoke"
R_OURS = "Pool + run_graph (durable)"
R_OURS_ND = "Pool + run_graph(durable=False)"
R_POOL_INVOKE = "Pool + graph.invoke (no adapter)"
R_PPE = "ProcessPoolExecutor + graph.invoke"
ROWS = (R_INPROC, R_OURS, R_OURS_ND, R_POOL_INVOKE, R_PPE)


def _unavailable() -> str | None:
    """Why the section cannot run (None: it can)."""
    try:
        import langgraph.graph  # noqa: F401

        import interrupt_pool.langgraph  # noqa: F401
    except ImportError as exc:
        return (f"LangGraph is not installed ({type(exc).__name__}: {exc}); "
                '`pip install "interrupt-pool[langgraph]"` installs it')  # fmt: skip
    return None


def _answer(turns: int) -> str:
    return "answer | " + "; ".join(f"result for q{i}" for i in range(turns))


def _check(out: dict, turns: int) -> None:
    """Every row must end with the same final answer (message ids differ: LangGraph's uuids)."""
    last = out["value"]["messages"][-1]["data"]["content"]
    if last != _answer(turns) or out["steps"] != 2 * turns + 1:
        raise AssertionError(f"wrong final state: {last!r} after {out['steps']} supersteps")


# -- (1) per-execution overhead ---------------------------------------------------------------------


def overhead(pool, ppe, quick: bool) -> dict:
    from . import lg_bench_agents as L

    n_seq, n_par, repeats = (10, 20, 2) if quick else (100, 200, 5)
    task = {"turns": 1}
    base = {"turns": 1, "durable": True}
    seq: dict[str, list[float]] = {r: [] for r in ROWS}  # ms per execution, one at a time
    par: dict[str, list[float]] = {r: [] for r in ROWS if r != R_INPROC}  # ms per execution, N at once
    inner: dict[str, list[float]] = {r: [] for r in ROWS}  # ms of the graph run inside its process

    def pool_row(fn, t):
        def one():
            return pool.submit(fn, t).result(timeout=60)

        def many():
            return pool.map(fn, [t] * n_par)

        return one, many

    calls = {
        R_INPROC: (lambda: L.invoke(task), None),
        R_OURS: pool_row(L.adapter, base),
        R_OURS_ND: pool_row(L.adapter, {**base, "durable": False}),
        R_POOL_INVOKE: pool_row(L.invoke_agent, task),
        R_PPE: (lambda: ppe.submit(L.invoke, task).result(timeout=60), lambda: list(ppe.map(L.invoke, [task] * n_par))),
    }  # fmt: skip
    for _ in range(repeats):
        for row in ROWS:
            one, many = calls[row]
            runs = []
            t = time.perf_counter()
            for _ in range(n_seq):
                runs.append(one())
            seq[row].append((time.perf_counter() - t) / n_seq * 1e3)
            if many is not None:
                t = time.perf_counter()
                outs = many()
                par[row].append((time.perf_counter() - t) / n_par * 1e3)
                runs += outs
            for out in runs:
                _check(out, 1)
            inner[row].append(statistics.median(out["run_s"] for out in runs) * 1e3)

    med = {k: {r: statistics.median(v) for r, v in d.items()}
           for k, d in (("seq", seq), ("par", par), ("inner", inner))}
    rows = []
    for r in ROWS:
        s = med["seq"][r]
        p = med["par"].get(r)
        rows.append([r, f"{s:.2f}", f"{s / med['seq'][R_PPE]:.2f}×", f"{s / med['seq'][R_INPROC]:.2f}×",
                     "-" if p is None else f"{p:.2f}", "-" if p is None else f"{p / med['par'][R_PPE]:.2f}×",
                     f"{med['inner'][r]:.2f}"])  # fmt: skip
    adapter_cost = med["inner"][R_OURS] - med["inner"][R_POOL_INVOKE]
    adapter_cost_nd = med["inner"][R_OURS_ND] - med["inner"][R_POOL_INVOKE]
    res = {"n_one_at_a_time": n_seq, "n_at_once": n_par, "repeats": repeats, "workers": 2, "supersteps": 3,
           "ms_per_execution_one_at_a_time": {r: summary(v) for r, v in seq.items()},
           "ms_per_execution_at_once": {r: summary(v) for r, v in par.items()},
           "ms_graph_run_in_process": {r: summary(v) for r, v in inner.items()},
           "adapter_ms_per_execution": adapter_cost, "adapter_ms_per_execution_nondurable": adapter_cost_nd,
           "raw": {"one_at_a_time": seq, "at_once": par, "in_worker": inner}}  # fmt: skip
    res["markdown"] = (
        f"### LangGraph: per-execution overhead (ms per execution of a 3-superstep graph, 2 workers, median of "
        f"{repeats} repeats)\n\n"
        f"model → instant tool → model's answer. 'one at a time': {n_seq} runs, each submitted after the previous "
        f"one's result; 'N at once': {n_par} runs submitted together, wall / N. 'in the worker': the graph run timed "
        "inside the process that ran it. Ratios divide by rows of the same run.\n\n"
        + table(["how the graph runs", "one at a time", "vs PPE", "vs in process", "N at once", "vs PPE",
                 "in the worker"], rows)  # fmt: skip
        + "\n\nThe adapter's own cost (run_graph − graph.invoke, in the worker): "
        f"{adapter_cost:.2f} ms per execution with durable checkpoints, {adapter_cost_nd:.2f} ms with durable=False."
    )
    return res


# -- (2) checkpoint size and time per superstep ---------------------------------------------------


def growth(pool, quick: bool) -> dict:
    from . import lg_bench_agents as L

    turns_list, repeats = ((2, 10), 2) if quick else ((2, 10, 40), 3)
    kinds = {"ours": (L.adapter, True), "ours_nd": (L.adapter, False), "invoke": (L.invoke_agent, True),
             "memory": (L.memory_saver, True), "naive": (L.naive, True)}  # fmt: skip
    data: dict = {}
    for turns in turns_list:
        d = data[2 * turns + 1] = {k: {"ms_per_step": [], "ckpt_bytes": [], "saves": []} for k in kinds}
        for _ in range(repeats):
            for kind, (fn, durable) in kinds.items():
                o = pool.submit(fn, {"turns": turns, "durable": durable}).outcome(timeout=120)
                if o.error is not None:
                    raise AssertionError(f"{kind} with {turns} turns failed: {o.error}")
                _check(o.value, turns)
                d[kind]["ms_per_step"].append(o.value["run_s"] / o.value["steps"] * 1e3)
                d[kind]["ckpt_bytes"].append(o.checkpoint.size if o.checkpoint else 0)
                d[kind]["saves"].append(o.checkpoint.seq if o.checkpoint else 0)
                d["state_bytes"] = len(json.dumps(o.value["value"]))

    size_rows, time_rows, res_rows = [], [], {}
    for steps, d in data.items():
        m = {k: statistics.median(d[k]["ms_per_step"]) for k in kinds}
        ours_b, naive_b, state_b = d["ours"]["ckpt_bytes"][-1], d["naive"]["ckpt_bytes"][-1], d["state_bytes"]
        saves = statistics.median(d["ours"]["saves"])
        size_rows.append([steps, f"{state_b:,}", f"{ours_b:,}", f"{ours_b / state_b:.2f}×", f"{naive_b:,}",
                          f"{naive_b / state_b:.1f}×", f"{naive_b / ours_b:.1f}×"])  # fmt: skip
        split = {"saver": m["ours"] - m["invoke"], "saver_nondurable": m["ours_nd"] - m["invoke"],
                 "langgraph_sync": m["memory"] - m["invoke"], "ours_writes": m["ours"] - m["memory"],
                 "ours_writes_nondurable": m["ours_nd"] - m["memory"]}  # fmt: skip
        time_rows.append([steps, f"{m['invoke']:.2f}", f"{m['memory']:.2f}", f"{m['ours']:.2f}", f"{m['ours_nd']:.2f}",
                          f"{m['naive']:.2f}", f"{split['saver']:.2f}", f"{split['langgraph_sync']:.2f}",
                          f"{split['ours_writes']:.2f} / {split['ours_writes_nondurable']:.2f}",
                          f"{saves / steps:.2f}", f"{m['naive'] / m['ours']:.2f}×"])  # fmt: skip
        res_rows[steps] = {"state_bytes": state_b, "ours_checkpoint_bytes": ours_b, "naive_checkpoint_bytes": naive_b,
                           "ms_per_superstep": {k: summary(d[k]["ms_per_step"]) for k in kinds},
                           "split_ms_per_superstep": split, "ours_saves": saves, "raw": d}  # fmt: skip
    res = {"repeats": repeats, "rows": res_rows}
    res["markdown"] = (
        "### LangGraph: checkpoint size against the number of supersteps (bytes of the execution's newest "
        "checkpoint, header included)\n\n"
        "Graphs whose model calls one instant tool per turn (2 supersteps a turn, plus the answer). 'state': the "
        "final state as JSON. 'naive export': LangGraph's InMemorySaver with its whole content pickled and saved "
        "after every superstep, as users did by hand.\n\n"
        + table(["supersteps", "state (JSON)", "run_graph checkpoint", "/ state", "naive export", "/ state",
                 "naive / run_graph"], size_rows)  # fmt: skip
        + f"\n\n### LangGraph: time per superstep (ms, the run timed inside the worker, median of {repeats})\n\n"
        "All in the same pool. 'graph.invoke': no checkpoints (the floor). 'InMemorySaver sync': LangGraph's own "
        "saver with durability='sync', as run_graph asks, nothing exported. 'saver': run_graph − graph.invoke, "
        "split into LangGraph's sync checkpointing (InMemorySaver sync − graph.invoke) and the adapter's export and "
        "checkpoint writes (run_graph − InMemorySaver sync; durable / durable=False). 'saves/step': checkpoints "
        "run_graph wrote per superstep.\n\n"
        + table(["supersteps", "graph.invoke", "InMemorySaver sync", "run_graph", "run_graph(durable=False)",
                 "naive export", "saver", "of which LangGraph's", "of which ours (durable / not)", "saves/step",
                 "naive / run_graph"], time_rows)  # fmt: skip
    )
    return res


# -- (3) graceful stop latency --------------------------------------------------------------------


def _stamps(path: Path) -> list[tuple[str, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [(k, int(v)) for k, v in (line.split() for line in text.splitlines() if line.count(" ") == 1)]


def _wait_for(path: Path, kind: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(k == kind for k, _ in _stamps(path)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the graph never reached {count} {kind!r} stamps in {timeout} s")
        time.sleep(0.0005)


def _one_stop(pool, fn, task: dict, tmp: Path, rng: random.Random, n: int) -> dict:
    """Run ``task`` with ``fn``; once it reached its slow part, a graceful stop at a random moment of it."""
    path = tmp / f"stamps-{n}"
    ex = pool.submit(fn, {**task, "stamps": str(path)})
    if task.get("think"):
        _wait_for(path, "s", 3)  # the third model turn is thinking: everything is warm
        time.sleep(rng.uniform(0, THINK * 0.9))
    else:
        _wait_for(path, "t", 1)
        time.sleep(rng.uniform(0, 0.005))
    ex.cancel()
    o = ex.outcome(timeout=30)
    it = o.interrupt
    if it is None:
        raise AssertionError(f"the stopped run ended {o.status.value} without an interrupt: {o.error}")
    rec = {"status": o.status.value, "stage": it.stage.value if it.stage else None,
           "stop_ms": it.stop_latency * 1e3, "observe_ms": (it.observe_latency or float("nan")) * 1e3}  # fmt: skip
    if task.get("think"):  # which think the request landed in, and when that think ended
        stamps = _stamps(path)
        starts = [v for k, v in stamps if k == "s"]
        ends = [v for k, v in stamps if k == "e"]
        inside = [(s, e) for s, e in zip(starts, ends, strict=False) if s <= it.requested_ns < e]
        if inside:
            rec["remaining_think_ms"] = (inside[0][1] - it.requested_ns) / 1e6
            rec["after_step_ms"] = (it.ended_ns - inside[0][1]) / 1e6
    return rec


def stops(pool, quick: bool, tmp: Path) -> dict:
    from . import lg_bench_agents as L

    n_ours, n_invoke_between = (3, 1) if quick else (15, 6)
    rng = random.Random(12)
    scenarios: dict[str, dict] = {
        "between supersteps (model thinks 20 ms in time.sleep)": {"turns": STOP_TURNS, "think": THINK},
        "inside a tool in current().sleep(60)": {"turns": 1, "tool": "nap"},
        "inside a CPU tool checking every 1000 iterations": {"turns": 1, "tool": "crunch"},
    }
    out: dict = {}
    i = 0
    for name, task in scenarios.items():
        out[name] = {}
        between = "think" in task
        n_invoke = n_invoke_between if between else n_ours  # each between-steps stop of graph.invoke takes ~2 s
        for runner, fn, n in (("run_graph", L.adapter, n_ours),
                              ("graph.invoke (no adapter)", L.invoke_agent, n_invoke)):
            recs = []
            for _ in range(n):
                recs.append(_one_stop(pool, fn, task, tmp, rng, i))
                i += 1
            out[name][runner] = recs

    def med(recs, key):
        vals = [r[key] for r in recs if key in r]
        return (statistics.median(vals), pct(vals, 90)) if vals else (float("nan"), float("nan"))

    rows: list[list] = []
    res_rows: dict[str, dict] = {}
    for name, by_runner in out.items():
        ours_med = med(by_runner["run_graph"], "stop_ms")[0]
        for runner, recs in by_runner.items():
            stages: dict[str, int] = {}
            for r in recs:
                stages[r["stage"] or r["status"]] = stages.get(r["stage"] or r["status"], 0) + 1
            stop_m, stop_p90 = med(recs, "stop_ms")
            obs_m, _ = med(recs, "observe_ms")
            rem_m, _ = med(recs, "remaining_think_ms")
            aft_m, aft_p90 = med(recs, "after_step_ms")
            between = "remaining_think_ms" in (recs[0] if recs else {})
            rows.append([name if runner == "run_graph" else "", runner, len(recs),
                         ", ".join(f"{k} {v}" for k, v in sorted(stages.items())),
                         f"{stop_m:.1f}", f"{stop_p90:.1f}", f"{obs_m:.1f}",
                         f"{rem_m:.1f}" if between else "-",
                         f"{aft_m:.2f} / {aft_p90:.2f}" if between and runner == "run_graph" else "-",
                         f"{stop_m / ours_med:.1f}×"])  # fmt: skip
            res_rows.setdefault(name, {})[runner] = {
                "n": len(recs), "stages": stages, "stop_ms_median": stop_m, "stop_ms_p90": stop_p90,
                "observe_ms_median": obs_m, "remaining_think_ms_median": rem_m, "after_step_ms_median": aft_m,
                "after_step_ms_p90": aft_p90, "vs_run_graph": stop_m / ours_med, "raw": recs}  # fmt: skip
    res = {"grace_s": GRACE, "think_s": THINK, "rows": res_rows}
    res["markdown"] = (
        f"### LangGraph: graceful stop latency (ms, request → end; grace {GRACE:.0f} s)\n\n"
        f"Between supersteps the stop is requested at a random moment of a {THINK * 1e3:.0f} ms model think that "
        "never checks: 'remaining think' is that think's end minus the request, 'after the step' the execution's "
        "end minus the think's end (median / p90): the step's save, the check, unwinding and reporting, what the "
        "adapter adds. 'observe' is request → the agent saw the flag. Inside a tool, the stop is requested 0–5 ms "
        "after the tool began. 'vs run_graph' divides by the run_graph row's median of the same scenario.\n\n"
        + table(["where the stop lands", "agent runs the graph with", "stops", "stage", "median", "p90", "observe",
                 "remaining think", "after the step", "vs run_graph"], rows)  # fmt: skip
    )
    return res


# -- warm workers --------------------------------------------------------------------------------------


def warm_workers(quick: bool, tmp: Path) -> dict:
    """Pool(preload=interrupt_pool.langgraph.PRELOAD) against no preload, each on fresh pools of 1 worker:

    - *first result*: from ``Pool(...)`` to the first run_graph execution's result (the pool's
      start included: with preload the import happens there, once for every worker to come);
    - *replacement*: an execution that never checks is killed (``mode="kill"``) and the next
      run_graph execution runs on the worker that replaces it: from the cancel to its result.
      With ``spare_worker=True`` (the default) a forked spare takes the place.

    Without preload every new worker imports LangGraph (~0.7 s) before it can run the graph."""
    from interrupt_pool import Pool
    from interrupt_pool.langgraph import PRELOAD

    from . import lg_bench_agents as L

    reps = 1 if quick else 5
    spares = (False,) if quick else (False, True)
    rows = []
    for spare in spares:
        for preload in ((), PRELOAD):
            first, replace = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                with Pool(workers=1, preload=preload, spare_worker=spare, log_dir=None,
                          checkpoint_dir=tmp / "warm") as pool:  # fmt: skip
                    _check(pool.submit(L.adapter, {"turns": 1}).result(timeout=60), 1)
                    first.append(time.perf_counter() - t0)
                    marker = tmp / f"deaf-{len(rows)}-{len(replace)}"
                    stuck = pool.submit(L.deaf, {"marker": str(marker)})
                    deadline = time.monotonic() + 30
                    while not marker.exists():  # it runs (wait_started() returns before its worker began it)
                        if time.monotonic() > deadline:
                            raise RuntimeError("the deaf execution never began")
                        time.sleep(0.001)
                    t1 = time.perf_counter()
                    stuck.cancel(mode="kill")
                    _check(pool.submit(L.adapter, {"turns": 1}).result(timeout=60), 1)
                    replace.append(time.perf_counter() - t1)
            rows.append({"preload": bool(preload), "spare_worker": spare, "first_ms": summary([x * 1e3 for x in first]),
                         "replacement_ms": summary([x * 1e3 for x in replace])})  # fmt: skip
    lines = ["### Warm workers: LangGraph imported once per pool (`preload=interrupt_pool.langgraph.PRELOAD`)", "",
             f"ms, median of {reps} fresh pools of 1 worker each; replacement = kill a deaf execution → the next "
             "run_graph execution's result on the worker that replaced it.", "",
             "| spare_worker | preload | pool start → first result | replacement | no preload / this |",
             "|---|---|---|---|---|"]  # fmt: skip
    base = {}
    for r in rows:
        med = r["replacement_ms"]["median"]
        if not r["preload"]:
            base[r["spare_worker"]] = med
        ratio = f"{base[r['spare_worker']] / med:.1f}×" if r["preload"] else "1.0×"
        lines.append(f"| {r['spare_worker']} | {'PRELOAD' if r['preload'] else 'none'} | "
                     f"{r['first_ms']['median']:.0f} | {med:.0f} | {ratio} |")  # fmt: skip
    return {"rows": rows, "markdown": "\n".join(lines)}


# -- the section ------------------------------------------------------------------------------------


def langgraph(quick: bool) -> dict:
    why = _unavailable()
    if why is not None:
        return {"skipped": why, "markdown": f"### LangGraph adapter\n\nSkipped: {why}."}
    from interrupt_pool import Escalation, Pool

    from . import lg_bench_agents as L

    res: dict = {"workers": 2}
    with contextlib.ExitStack() as stack:
        # The executor first: it forks from this process, which must not have our pool's threads yet.
        ppe = stack.enter_context(cf.ProcessPoolExecutor(2))
        list(ppe.map(L.invoke, [{"turns": 1}] * 8))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pool-bench-", dir=".")))
        pool = stack.enter_context(Pool(workers=2, checkpoint_dir=tmp / "ck", log_dir=None,
                                        escalation=Escalation(grace=GRACE, term_grace=1.0)))  # fmt: skip
        warm = [{"turns": 1}] * 8  # each worker imports LangGraph (off the clock)
        for fn in (L.adapter, L.invoke_agent, L.memory_saver, L.naive):
            pool.map(fn, warm)
        for _ in range(3):
            L.invoke({"turns": 1})
        res["overhead"] = overhead(pool, ppe, quick)
        res["checkpoints"] = growth(pool, quick)
        res["stops"] = stops(pool, quick, tmp)  # last: a stop of graph.invoke replaces its worker
        res["warm_workers"] = warm_workers(quick, tmp)
    res["markdown"] = "\n\n".join(res[k].pop("markdown") for k in ("overhead", "checkpoints", "stops", "warm_workers"))
    return res
