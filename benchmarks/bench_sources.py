"""Interrupt sources (issue 10): budget and stall stops by stage, the cascade that stops an
agent tree, preemption for higher-priority work, and ``ctx.check()`` / per-task submit cost
before and after the issue, measured in the same run.

Every figure comes from real pools: a real supervisor, real workers, the agents in
``source_bench_agents``. Stop timelines are the outcome's ``monotonic_ns`` stamps (one clock
for every process): ``requested_ns`` is the spend call that crossed the budget (its own
stamp, taken in the agent) or the stall deadline (last progress + ``stall_timeout``), not
the moment the supervisor noticed, so lateness in noticing is inside every figure.

Before/after: the package at commit ``BEFORE`` (the parent of the issue's first commit) is
exported with ``git archive`` into a temporary directory (nothing is added to the
repository: no worktree, no branch) and both trees are imported through a throw-away
``interrupt_pool`` directory of symlinks on ``PYTHONPATH``, by the same interpreter with
the same dependencies, in alternating fresh processes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from interrupt_pool import Escalation, ExecutionStatus, Pool

from . import source_bench_agents as A
from ._stats import pct, summary, table

BEFORE = "b16ed1c"  # the commit before issue 10 (c4cc7df implemented it)
GRACE = 0.05  # the grace (flag → SIGTERM) of the budget and stall stops
STALL = 0.05  # the stall_timeout of the stall stops
ROOT = Path(__file__).resolve().parent.parent


def _ms(a: int | None, b: int | None) -> float | None:
    return None if not a or not b else (b - a) / 1e6


def _row(label: str, vals: list[float], digits: int = 2) -> list:
    if not vals:
        return [label, 0, "-", "-", "-"]
    return [label, len(vals), f"{pct(vals, 50):.{digits}f}", f"{pct(vals, 99):.{digits}f}", f"{max(vals):.{digits}f}"]


def _stages(outcomes) -> dict:
    out: dict[str, int] = {}
    for o in outcomes:
        key = o.interrupt.stage.value if o.interrupt and o.interrupt.stage else o.status.value
        out[key] = out.get(key, 0) + 1
    return out


def _fmt_stages(st: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(st.items(), key=lambda kv: -kv[1]))


class _Timeline:
    """Per-stage intervals (ms) of many stops, from their outcomes."""

    def __init__(self):
        self.outcomes = []
        self.iv: dict[str, list[float]] = {}

    def add(self, o, reason: str) -> None:
        i = o.interrupt
        if o.status is not ExecutionStatus.INTERRUPTED or i is None or i.reason.value != reason:
            raise AssertionError(f"{o.id}: expected an interrupt with reason {reason}, got {o.status.value} {i}")
        self.outcomes.append(o)
        for name, a, b in (("observed", i.requested_ns, i.observed_ns), ("ended", i.requested_ns, i.ended_ns),
                           ("sigterm", i.requested_ns, i.sigterm_ns), ("sigterm_to_end", i.sigterm_ns, i.ended_ns),
                           ("observed_to_end", i.observed_ns, i.ended_ns),
                           ("sigterm_to_observed", i.sigterm_ns, i.observed_ns),
                           ("sigterm_late", i.sigterm_deadline_ns, i.sigterm_ns)):  # fmt: skip
            v = _ms(a, b)
            if v is not None:
                self.iv.setdefault(name, []).append(v)

    def result(self) -> dict:
        return {"stages": _stages(self.outcomes), **{k: summary(v) for k, v in self.iv.items()}}


# -- 1. budget stops ---------------------------------------------------------------------------


def budget_stops(quick: bool) -> dict:
    n_flag, n_term, n_group = (10, 5, 3) if quick else (200, 80, 40)
    checking, blocked, member, spender = _Timeline(), _Timeline(), _Timeline(), _Timeline()
    esc = Escalation(grace=GRACE, term_grace=1.0)
    with Pool(workers=2, escalation=esc, checkpoint_dir=None, log_dir=None) as pool:
        pool.map(A.triv, range(20))
        for i in range(max(n_flag, n_term, n_group)):  # interleaved: load drifts hit every kind alike
            if i < n_flag:  # 10 steps of ~1 ms, 1.0 each: the 10th spend reaches the budget
                o = pool.submit(A.spend_checking, {"step": 1.0, "step_s": 0.001}, budget=10.0).outcome()
                checking.add(o, "budget_exceeded")
            if i < n_term:
                o = pool.submit(A.spend_then_block, {"amount": 2.0, "settle": 0.002}, budget=1.0).outcome()
                blocked.add(o, "budget_exceeded")
            if i < n_group:  # a member blocked in C is stopped when another member uses up the group's budget
                g = f"g{i}"
                pool.group(g, budget=1.0)
                stuck = pool.submit(A.blocks, None, group=g)
                stuck.wait_started()
                o = pool.submit(A.spend_once, {"amount": 1.0, "settle": 0.005}, group=g).outcome()
                spender.add(o, "budget_exceeded")
                member.add(stuck.outcome(), "budget_exceeded")
    res = {"grace_s": GRACE, "checking": checking.result(), "blocked": blocked.result(),
           "group_spender": spender.result(), "group_blocked_member": member.result()}  # fmt: skip
    c, b, m, s = checking.iv, blocked.iv, member.iv, spender.iv
    rows = [
        _row(f"checking agent ({_fmt_stages(res['checking']['stages'])}): spend → Interrupted raised in it",
             c["observed"], 3),
        _row("checking agent: spend → execution ended", c["ended"], 3),
        _row(f"blocked agent ({_fmt_stages(res['blocked']['stages'])}): spend → SIGTERM sent", b["sigterm"]),
        _row("blocked agent: SIGTERM → execution ended", b["sigterm_to_end"]),
        _row("blocked agent: spend → execution ended", b["ended"]),
        _row("blocked agent: SIGTERM later than its deadline", b["sigterm_late"], 3),
        _row(f"group: the member that spends ({_fmt_stages(res['group_spender']['stages'])}): spend → ended",
             s["ended"], 3),
        _row(f"group: a member blocked in C ({_fmt_stages(res['group_blocked_member']['stages'])}): "
             "another's spend → SIGTERM", m["sigterm"]),
        _row("group: blocked member: SIGTERM → ended", m["sigterm_to_end"]),
        _row("group: blocked member: spend → ended", m["ended"]),
    ]  # fmt: skip
    res["markdown"] = (
        f"### Budget stops (ms from the spend that reached the budget; grace {GRACE * 1000:g} ms)\n\n"
        "The checking agent pays 1.0 per ~1 ms step with a budget of 10.0: its tenth `ctx.spend` raises. "
        "The blocked agent spends past its budget, swallows the Interrupted and blocks in `time.sleep`: "
        "the supervisor's escalation ends it. The group rows: one member spends the group's whole budget "
        "while another is blocked in `time.sleep`.\n\n"
        + table(["stop, stage", "n", "p50", "p99", "max"], rows)
    )
    return res


# -- 2. stall stops ----------------------------------------------------------------------------


def stall_stops(quick: bool) -> dict:
    n = 3 if quick else 80
    checking, blocked = _Timeline(), _Timeline()
    with Pool(workers=1, escalation=Escalation(grace=GRACE, term_grace=1.0), checkpoint_dir=None, log_dir=None) as pool:
        pool.map(A.triv, range(10))
        for _ in range(n):
            checking.add(pool.submit(A.busy_no_progress, None, stall_timeout=STALL).outcome(), "stalled")
            blocked.add(pool.submit(A.blocks, None, stall_timeout=STALL).outcome(), "stalled")
    res = {"stall_timeout_s": STALL, "grace_s": GRACE, "checking": checking.result(), "blocked": blocked.result()}
    c, b = checking.iv, blocked.iv
    rows = [
        _row(f"checking agent ({_fmt_stages(res['checking']['stages'])}): deadline → observed at a check",
             c["observed"]),
        _row("checking agent: observed → execution ended", c["observed_to_end"]),
        _row("checking agent: deadline → execution ended", c["ended"]),
        _row(f"blocked agent ({_fmt_stages(res['blocked']['stages'])}): deadline → SIGTERM sent", b["sigterm"]),
        _row("blocked agent: SIGTERM → execution ended", b["sigterm_to_end"]),
        _row("blocked agent: … of which SIGTERM → its handler ran (observed)", b["sigterm_to_observed"]),
        _row("blocked agent: … and observed → ended (unwind, clean-up, result)", b["observed_to_end"]),
        _row("blocked agent: deadline → execution ended", b["ended"]),
        _row("blocked agent: SIGTERM later than its deadline", b["sigterm_late"], 3),
    ]
    res["markdown"] = (
        f"### Stall stops (ms from the stall deadline = last progress + stall_timeout {STALL * 1000:g} ms; "
        f"grace {GRACE * 1000:g} ms)\n\n"
        "Neither agent marks progress: one checks its flag in a loop of Python work, the other blocks in "
        "`time.sleep`. The deadline → observed interval includes the supervisor's timer firing late.\n\n"
        + table(["stop, stage", "n", "p50", "p99", "max"], rows)
    )
    return res


# -- 3. cascade --------------------------------------------------------------------------------


def _running(pool: Pool, ids_prefix: str | None, ids: set | None, want: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r["id"] for r in pool.status()["executions"]
                if r["status"] == "running" and (ids is None or r["id"] in ids)
                and (ids_prefix is None or r["id"] == ids_prefix or r["id"].startswith(ids_prefix + "."))]  # fmt: skip
        if len(rows) == want:
            return rows
        time.sleep(0.005)
    raise TimeoutError(f"{want} executions not running after {timeout} s (have {len(rows)})")


def cascade(quick: bool) -> dict:
    reps = 1 if quick else 12
    settle = 0.2  # once all 40 run, let the leaves reach ctx.sleep: we measure the stop, not the start
    tree_ms, tree_call, indep_ms, indep_call = [], [], [], []
    tree_client, indep_client = [], []
    stages_tree: dict[str, int] = {}
    max_workers = 0
    # 40 workers: all 40 executions run at once, and the 13 parents waiting on their children
    # need no stand-ins (the lending is exercised by the tests); both variants share the pool.
    with Pool(workers=40, escalation=Escalation(grace=2.0, term_grace=1.0), checkpoint_dir=None, log_dir=None) as pool:
        pool.map(A.triv, range(120))
        for rep in range(reps):
            for variant in (("tree", "indep") if rep % 2 == 0 else ("indep", "tree")):
                if variant == "tree":
                    root = pool.submit(A.tree_node, {"depth": 3, "fanout": 3}, id=f"tree-{rep}")
                    ids = _running(pool, root.id, None, 40)
                    time.sleep(settle)
                    max_workers = max(max_workers, len(pool.workers()))
                    t0 = time.monotonic_ns()
                    pool.cancel(root.id)
                    t1 = time.monotonic_ns()
                    outs = [pool.outcome(i) for i in ids]
                    t2 = time.monotonic_ns()
                    for o in outs:
                        want = "user_cancelled" if o.id == root.id else "parent_cancelled"
                        assert o.interrupt is not None and o.interrupt.reason.value == want, (o.id, o.interrupt)
                    st = _stages(outs)
                    for k, v in st.items():
                        stages_tree[k] = stages_tree.get(k, 0) + v
                    tree_ms.append((max(o.interrupt.ended_ns for o in outs) - t0) / 1e6)
                    tree_call.append((t1 - t0) / 1e6)
                    tree_client.append((t2 - t0) / 1e6)
                else:
                    exs = [pool.submit(A.sleeps, 60, id=f"indep-{rep}-{k}") for k in range(40)]
                    _running(pool, None, {e.id for e in exs}, 40)
                    time.sleep(settle)
                    t0 = time.monotonic_ns()
                    for e in exs:
                        pool.cancel(e.id)
                    t1 = time.monotonic_ns()
                    outs = [e.outcome() for e in exs]
                    t2 = time.monotonic_ns()
                    assert all(o.interrupt is not None and o.interrupt.reason.value == "user_cancelled" for o in outs)
                    indep_ms.append((max(o.interrupt.ended_ns for o in outs) - t0) / 1e6)
                    indep_call.append((t1 - t0) / 1e6)
                    indep_client.append((t2 - t0) / 1e6)
    med_t, med_i = statistics.median(tree_ms), statistics.median(indep_ms)
    res = {
        "reps": reps, "workers": 40, "max_worker_processes": max_workers, "tree_stages": stages_tree,
        "tree_ms": summary(tree_ms), "independent_ms": summary(indep_ms),
        "tree_cancel_call_ms": summary(tree_call), "independent_cancel_calls_ms": summary(indep_call),
        "tree_client_saw_all_ms": summary(tree_client), "independent_client_saw_all_ms": summary(indep_client),
        "independent_over_tree": med_i / med_t,
    }  # fmt: skip

    def row(label, vals):
        return [label, f"{statistics.median(vals):.1f}", f"{min(vals):.1f}", f"{max(vals):.1f}"]

    res["markdown"] = (
        f"### Cascade: stop 40 executions (ms, median of {reps}; 40 workers, all 40 running)\n\n"
        "A tree: root → 3 children → 9 → 27 leaves in `ctx.sleep(60)` (inner nodes wait on `child.result()`), "
        "stopped by one `pool.cancel(root)`; against 40 independent executions in `ctx.sleep(60)` stopped by "
        "`pool.cancel` in a loop. The clock runs from the first cancel call until the last of the 40 has "
        "ended at the supervisor (the latest `interrupt.ended_ns`).\n\n"
        + table(["measure", "median", "min", "max"], [
            row("tree: cancel(root) → all 40 ended", tree_ms),
            row("40 independent: cancel × 40 → all 40 ended", indep_ms),
            row("tree: the one cancel() call", tree_call),
            row("40 independent: the 40 cancel() calls", indep_call),
            row("tree: → this client has all 40 outcomes (pool.outcome per id)", tree_client),
            row("40 independent: → this client has all 40 outcomes", indep_client),
        ])  # fmt: skip
        + f"\n\nCancelling the root stops the whole tree {med_i / med_t:.2f}× faster than cancelling the 40 one by "
        f"one (medians). Stages that ended the tree's executions: {_fmt_stages(stages_tree)}."
    )
    return res


# -- 4. preemption ---------------------------------------------------------------------------


def preemption(quick: bool) -> dict:
    reps = 3 if quick else 30
    reps_np = 1 if quick else 10
    step = 0.01  # the low-priority agents' ctx.sleep step
    low_len, submit_at = 0.3, 0.1  # the non-preemptible comparison: 300 ms tasks, high one submitted 100 ms in
    events: list = []
    lock = threading.Lock()

    def on_event(ev):
        if ev.kind.value in ("preempted", "requeued", "started"):
            with lock:
                events.append(ev)

    to_agent, to_started_evt, to_wait_started = [], [], []
    to_preempted, preempted_to_requeued, requeued_to_started = [], [], []
    victims_stage: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-preempt-") as d:
        with Pool(workers=2, escalation=Escalation(grace=1.0, term_grace=1.0), checkpoint_dir=d, log_dir=None,
                  on_event=on_event) as pool:  # fmt: skip
            pool.map(A.triv, range(20))
            lows = [pool.submit(A.low_steps, {"steps": 10**7, "step": step}, id=f"low-{k}", preemptible=True)
                    for k in range(2)]  # fmt: skip
            low_ids = {x.id for x in lows}
            for rep in range(reps):
                _busy(pool, low_ids)
                time.sleep(0.1)  # a resumed one is back in its loop
                t0 = time.monotonic_ns()
                hi = pool.submit(A.stamp, None, id=f"high-{rep}", priority=10)
                hi.wait_started()
                t1 = time.monotonic_ns()
                ran = hi.result()
                to_agent.append((ran - t0) / 1e6)
                to_wait_started.append((t1 - t0) / 1e6)
                started = None
                deadline = time.monotonic() + 10
                while started is None and time.monotonic() < deadline:  # the events are on their way
                    time.sleep(0.005)
                    with lock:
                        evs = [e for e in events if e.mono_ns >= t0]
                    started = next((e for e in evs if e.kind.value == "started" and e.execution_id == hi.id), None)
                if started is None:
                    raise TimeoutError(f"no started event for {hi.id}")
                time.sleep(0.005)  # the requeued event left the supervisor before the started one
                to_started_evt.append((started.mono_ns - t0) / 1e6)
                pre = next((e for e in evs if e.kind.value == "preempted" and e.execution_id in low_ids), None)
                req = next((e for e in evs if e.kind.value == "requeued" and e.execution_id in low_ids), None)
                if pre is not None:
                    to_preempted.append((pre.mono_ns - t0) / 1e6)
                    if req is not None:
                        preempted_to_requeued.append((req.mono_ns - pre.mono_ns) / 1e6)
                        requeued_to_started.append((started.mono_ns - req.mono_ns) / 1e6)
            for x in lows:
                x.cancel()
            preemptions = []
            for x in lows:
                o = x.outcome()
                preemptions.append(len(o.preemptions))
                for p in o.preemptions:
                    k = p.stage.value if p.stage else "none"
                    victims_stage[k] = victims_stage.get(k, 0) + 1
            resumed_from_checkpoint = sum(1 for x in lows for p in x.outcome().preemptions if p.checkpoint_seq)
        # Without preemption: the high one waits for a worker to finish its (non-preemptible) low work.
        waits = []
        with Pool(workers=2, escalation=Escalation(grace=1.0, term_grace=1.0), checkpoint_dir=None,
                  log_dir=None) as pool:  # fmt: skip
            pool.map(A.triv, range(20))
            for rep in range(reps_np):
                lows_np = [pool.submit(A.timed_work, low_len) for _ in range(2)]
                for x in lows_np:
                    x.wait_started()
                time.sleep(submit_at)
                t0 = time.monotonic_ns()
                ran = pool.submit(A.stamp, None, priority=10).result()
                waits.append((ran - t0) / 1e6)
                for x in lows_np:
                    x.outcome()
    res = {
        "reps": reps, "workers": 2, "low_step_s": step, "preemptions_per_low": preemptions,
        "victim_stages": victims_stage, "resumed_from_checkpoint": resumed_from_checkpoint,
        "submit_to_agent_running_ms": summary(to_agent), "submit_to_started_event_ms": summary(to_started_evt),
        "submit_to_wait_started_ms": summary(to_wait_started), "submit_to_preempted_ms": summary(to_preempted),
        "preempted_to_requeued_ms": summary(preempted_to_requeued),
        "requeued_to_started_ms": summary(requeued_to_started),
        "without_preemption": {"low_task_s": low_len, "submitted_after_s": submit_at, "reps": reps_np,
                               "submit_to_agent_running_ms": summary(waits)},
    }  # fmt: skip
    res["markdown"] = (
        f"### Preemption: a priority-10 submit while 2 workers run preemptible priority-0 work ({reps} submits)\n\n"
        f"The busy agents `ctx.sleep({step:g})` in steps and keep their progress in `ctx.state`, which is "
        "checkpointed when they are preempted; they resume from it. Times in ms from the high-priority "
        "`submit()` call.\n\n"
        + table(["interval", "n", "p50", "p99", "max"], [
            _row("submit → the supervisor chose a victim (preempted event)", to_preempted),
            _row("preempted → victim checkpointed, ended, requeued (requeued event)", preempted_to_requeued),
            _row("requeued → the high one started on the freed worker (started event)", requeued_to_started),
            _row("submit → started (supervisor's started event)", to_started_evt),
            _row("submit → the high one's agent code runs", to_agent),
            _row("submit → wait_started() returned in this client", to_wait_started),
            _row(f"without preemption: submit → agent runs (non-preemptible {low_len * 1000:g} ms tasks, "
                 f"submitted {submit_at * 1000:g} ms in)", waits),
        ])  # fmt: skip
        + f"\n\nVictims were stopped at stage {_fmt_stages(victims_stage)}; {resumed_from_checkpoint} of "
        f"{sum(preemptions)} preemptions resumed from a checkpoint."
    )
    return res


def _busy(pool: Pool, ids: set, timeout: float = 10.0) -> None:
    """Wait until every one of ``ids`` is running again with no stop under way and nothing queued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = pool.status()
        rows = {r["id"]: r for r in st["executions"] if r["id"] in ids}
        if len(rows) == len(ids) and all(r["status"] == "running" and not r.get("stage") for r in rows.values()):
            if not any(r["status"] == "queued" for r in st["executions"]):
                return
        time.sleep(0.002)
    raise TimeoutError(f"{sorted(ids)} not all running after {timeout} s")


# -- 5. before / after -----------------------------------------------------------------------------


def _shim(tree: Path, into: Path) -> Path:
    """A directory holding an ``interrupt_pool`` package made of symlinks to ``tree``'s pool/
    and shared/ (the layout setuptools' package-dir maps); put it first on PYTHONPATH."""
    pkg = into / "interrupt_pool"
    pkg.mkdir(parents=True)
    for entry in (tree / "pool").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "shared").symlink_to(tree / "shared")
    return into


def _micro_in(shim: Path, params: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(shim))
    cp = subprocess.run([sys.executable, "-m", "benchmarks.bench_sources", "--micro", json.dumps(params)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    if cp.returncode != 0:
        raise RuntimeError(f"micro-benchmark against {shim} failed ({cp.returncode}):\n{cp.stderr[-3000:]}")
    return json.loads(cp.stdout.strip().splitlines()[-1])


def _micro(params: dict) -> dict:
    """Runs in a fresh interpreter with one tree's package on PYTHONPATH; prints JSON."""
    import interrupt_pool
    from interrupt_pool.shared._context import Context

    out: dict = {"package": interrupt_pool.__file__, "has_spend": hasattr(Context, "spend")}
    with Pool(workers=1, checkpoint_dir=None, log_dir=None) as pool:
        raw = pool.submit(A.check_cost, {"n": params["check_n"], "repeats": params["check_repeats"]}).result()
    out["check_net_ns"] = [c - e for c, e in zip(raw["check"], raw["empty"], strict=True)]
    out["empty_ns"] = raw["empty"]
    for name in ("heartbeat", "spend"):
        if name in raw:
            out[f"{name}_net_ns"] = [c - e for c, e in zip(raw[name], raw["empty"], strict=True)]
    n = params["tasks"]
    data = list(range(n))
    out["submit_us"], out["submit_result_us"], out["map_us"] = [], [], []
    with Pool(workers=2, checkpoint_dir=None, log_dir=None) as pool:
        pool.map(A.triv, range(200))
        procs = {"supervisor": [psutil.Process(pool.supervisor_pid)],
                 "workers": [psutil.Process(w.pid) for w in pool.workers()], "client": [psutil.Process()]}  # fmt: skip
        cpu0 = {k: sum(_cpu(p) for p in ps) for k, ps in procs.items()}
        for _ in range(params["task_repeats"]):
            t = time.perf_counter()
            exs = [pool.submit(A.triv, x) for x in data]
            t1 = time.perf_counter()
            assert [e.result() for e in exs] == data
            t2 = time.perf_counter()
            assert pool.map(A.triv, data) == data
            t3 = time.perf_counter()
            out["submit_us"].append((t1 - t) / n * 1e6)
            out["submit_result_us"].append((t2 - t) / n * 1e6)
            out["map_us"].append((t3 - t2) / n * 1e6)
        # CPU time per task (user + system, all processes of the pool): less sensitive than wall time
        # to a busy neighbour on the machine; clock ticks of 10 ms over 2 * tasks * repeats tasks.
        total = 2 * n * params["task_repeats"]
        for k, ps in procs.items():
            out[f"cpu_{k}_us"] = [(sum(_cpu(p) for p in ps) - cpu0[k]) / total * 1e6]
    return out


def _cpu(p) -> float:
    t = p.cpu_times()
    return t.user + t.system


def before_after(quick: bool) -> dict:
    rounds = 1 if quick else 6
    params = ({"check_n": 200_000, "check_repeats": 5, "tasks": 500, "task_repeats": 2} if quick else
              {"check_n": 1_000_000, "check_repeats": 9, "tasks": 3000, "task_repeats": 3})  # fmt: skip
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    try:
        before_tree = tmp / "before"
        before_tree.mkdir()
        # git archive: the old package's files without touching the repository (no worktree to leak)
        try:
            arch = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE, "pool", "shared"],
                                  capture_output=True, timeout=60, check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(before_tree)], input=arch, check=True, timeout=60)
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", BEFORE], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"commit {BEFORE} is not available from {ROOT} ({type(exc).__name__}: {exc})"
            return {"skipped": why, "markdown": f"### Before / after issue 10\n\nNot measured: {why}."}
        shims = {"before": _shim(before_tree, tmp / "shim-before"), "after": _shim(ROOT, tmp / "shim-after")}
        for r in range(rounds):  # alternate the order, so a load drift hits both alike
            for which in (("before", "after") if r % 2 == 0 else ("after", "before")):
                runs[which].append(_micro_in(shims[which], params))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for which, want_spend, tree in (("before", False, "shim-before"), ("after", True, "shim-after")):
        for run in runs[which]:  # each process imported the tree it was meant to
            assert tree in run["package"] and run["has_spend"] is want_spend, (which, run["package"])

    def per_run(which: str, key: str) -> list[float]:
        return [statistics.median(run[key]) for run in runs[which]]

    res: dict = {"before_commit": commit, "rounds": rounds, "params": params}
    rows = []
    for key, label, unit in (("check_net_ns", "ctx.check() (net of the loop)", "ns"),
                             ("submit_us", "pool.submit() call, per task", "µs"),
                             ("submit_result_us", "submit + result, per task (2 workers)", "µs"),
                             ("map_us", "pool.map, per task (2 workers)", "µs"),
                             ("cpu_client_us", "CPU per task (submit and map): this process", "µs"),
                             ("cpu_supervisor_us", "CPU per task: the supervisor", "µs"),
                             ("cpu_workers_us", "CPU per task: the 2 workers", "µs")):  # fmt: skip
        b, a = per_run("before", key), per_run("after", key)
        mb, ma = statistics.median(b), statistics.median(a)
        res[key] = {"before": summary(b), "after": summary(a), "after_over_before": ma / mb,
                    "raw_before": [run[key] for run in runs["before"]],
                    "raw_after": [run[key] for run in runs["after"]]}  # fmt: skip
        rows.append([f"{label} ({unit})", f"{mb:.2f}", f"{ma:.2f}", f"{ma / mb:.3f}×",
                     f"{min(b):.2f}–{max(b):.2f}", f"{min(a):.2f}–{max(a):.2f}"])  # fmt: skip
    new_calls = {}
    for name in ("heartbeat", "spend"):
        vals = per_run("after", f"{name}_net_ns")
        new_calls[name] = res[f"{name}_net_ns"] = summary(vals)
    res["markdown"] = (
        f"### Before / after issue 10: ctx.check() and per-task submit ({rounds} alternating fresh processes per "
        f"tree; median of the per-process medians)\n\n"
        f"Before: commit {commit[:7]}; after: this checkout. Same interpreter and dependencies; "
        f"ctx.check() is {params['check_n']:,} calls × {params['check_repeats']} repeats per process, net of the "
        f"empty loop; tasks: {params['tasks']:,} trivial tasks × {params['task_repeats']} per process.\n\n"
        + table(["measure", "before", "after", "after / before", "before range", "after range"], rows)
        + f"\n\nNew calls (after only, same processes, net of the loop): ctx.heartbeat() "
        f"{new_calls['heartbeat']['median']:.1f} ns, ctx.spend() {new_calls['spend']['median'] / 1000:.2f} µs "
        "(it sends a frame to the supervisor)."
    )
    return res


# -- the section -------------------------------------------------------------------------------------


PARTS = (("budget", budget_stops), ("stall", stall_stops), ("cascade", cascade), ("preemption", preemption),
         ("before_after", before_after))  # fmt: skip


def sources(quick: bool) -> dict:
    res: dict = {}
    md = []
    for name, fn in PARTS:
        t = time.monotonic()
        part = fn(quick)
        part["seconds"] = round(time.monotonic() - t, 2)
        md.append(part.pop("markdown"))
        res[name] = part
    res["markdown"] = "\n\n".join(md)
    return res


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--micro":
        print(json.dumps(_micro(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m benchmarks --only sources [--quick]")
