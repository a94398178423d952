"""Memory: bytes per queued execution, what stays after many have ended, and memory per worker.

(a) One worker kept busy by a long agent; N small executions (1 kB input each,
    fresh random bytes the user does not keep) are submitted and held as
    handles; user-process and supervisor RSS deltas (after gc.collect, once the
    supervisor has answered a request sent after the last Submit) divided by N.
(b, c) User-process and supervisor RSS before and after 100,000 trivial
    executions have ended and their handles were dropped: half through
    ``map`` (lazy, bounded window), half submitted and dropped at once
    (``max_queued`` gives the backpressure). "Before" is after a warm-up of
    1,000 executions; the RSS right after ``Pool()`` is shown too.
(d) Per-worker memory at two pool sizes: every worker has run a task; sum of
    each worker's PSS and USS (``/proc/PID/smaps_rollup``) divided by workers,
    and the supervisor's RSS and PSS.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import psutil

from interrupt_pool import Pool

from . import peer_agents as pa
from ._stats import table

MiB = 1 << 20


def _rss(pid: int | None = None) -> int:
    return psutil.Process(pid).memory_info().rss


def _smaps(pid: int) -> dict[str, int]:
    """Rss, Pss and Uss in bytes, from /proc/PID/smaps_rollup (psutil's full info where it is missing)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            kb = {}
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    kb[parts[0].rstrip(":")] = int(parts[1]) * 1024
        return {"rss": kb["Rss"], "pss": kb["Pss"], "uss": kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)}
    except (OSError, KeyError):
        m = psutil.Process(pid).memory_full_info()
        return {"rss": m.rss, "pss": getattr(m, "pss", m.uss), "uss": m.uss}


class _Peak:
    """Samples user and supervisor RSS every 50 ms on a thread: the high-water mark while work runs."""

    def __init__(self, sup_pid: int):
        self.sup = psutil.Process(sup_pid)
        self.me = psutil.Process()
        self.user = self.supervisor = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.user = max(self.user, self.me.memory_info().rss)
                self.supervisor = max(self.supervisor, self.sup.memory_info().rss)
            except psutil.NoSuchProcess:
                return  # the supervisor went away: the section itself will say why

    def __enter__(self) -> "_Peak":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def _settled(pool: Pool) -> None:
    """gc here, and a round trip to the supervisor: every frame sent before has been handled."""
    gc.collect()
    pool.has("-")


def per_queued(n: int) -> dict:
    with Pool(workers=1, checkpoint_dir=None) as pool:
        pool.map(pa.triv_agent, range(1000))  # warm-up: one-time allocations on both sides
        blocker = pool.submit(pa.sleeps, 3600)
        blocker.wait_started()
        _settled(pool)
        user0, sup0 = _rss(), _rss(pool.supervisor_pid)
        t0 = time.perf_counter()
        execs = [pool.submit(pa.triv_agent, os.urandom(1024)) for _ in range(n)]
        submit_s = time.perf_counter() - t0
        assert pool.has(execs[-1].id)  # the supervisor holds the last one: it has read every Submit
        _settled(pool)
        user1, sup1 = _rss(), _rss(pool.supervisor_pid)
        queued = sum(1 for e in execs if e.status.value == "queued")
        pool.cancel_all()
        for e in execs:
            e.outcome()
        blocker.outcome()
        del execs
    return {
        "n": n,
        "input_bytes": 1024,
        "still_queued_when_measured": queued,
        "submit_us_per_execution": submit_s / n * 1e6,
        "user_rss_before": user0, "user_rss_after": user1,
        "supervisor_rss_before": sup0, "supervisor_rss_after": sup1,
        "user_bytes_per_execution": (user1 - user0) / n,
        "supervisor_bytes_per_execution": (sup1 - sup0) / n,
    }  # fmt: skip


def after_many(n: int) -> dict:
    half = n // 2
    with Pool(workers=2, checkpoint_dir=None, max_queued=512) as pool:
        _settled(pool)
        user_cold, sup_cold = _rss(), _rss(pool.supervisor_pid)
        pool.map(pa.triv_agent, range(1000))  # warm-up
        _settled(pool)
        user0, sup0 = _rss(), _rss(pool.supervisor_pid)
        with _Peak(pool.supervisor_pid) as peak:
            t0 = time.perf_counter()
            out = pool.map(pa.triv_agent, range(half))
            assert len(out) == half and out[-1] == half - 1
            del out
            _settled(pool)
            user_mid, sup_mid = _rss(), _rss(pool.supervisor_pid)
            for i in range(n - half):  # submitted and dropped at once: the pool holds each until it ends
                pool.submit(pa.triv_agent, i)
            while pool.executions():  # this client's live executions (and ended ones still held): none left
                time.sleep(0.01)
            elapsed = time.perf_counter() - t0
        _settled(pool)
        user1, sup1 = _rss(), _rss(pool.supervisor_pid)
        history = pool.status()["history_limit"]
    return {
        "n": n, "via_map": half, "via_submit_and_drop": n - half, "seconds": elapsed,
        "supervisor_history_limit": history,
        "user_rss_cold": user_cold, "user_rss_before": user0, "user_rss_after_map": user_mid, "user_rss_after": user1,
        "user_rss_peak": peak.user, "user_after_over_before": user1 / user0,
        "supervisor_rss_cold": sup_cold, "supervisor_rss_before": sup0, "supervisor_rss_after_map": sup_mid,
        "supervisor_rss_after": sup1, "supervisor_rss_peak": peak.supervisor,
        "supervisor_after_over_before": sup1 / sup0,
    }  # fmt: skip


def per_worker(workers: int) -> dict:
    t0 = time.perf_counter()
    with Pool(workers=workers, checkpoint_dir=None) as pool:
        deadline = time.monotonic() + 120
        while True:
            ws = pool.workers()
            if len(ws) == workers and all(w.state == "idle" for w in ws):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} workers not all idle after 120 s: {len(ws)} live")
            time.sleep(0.05)
        ready_s = time.perf_counter() - t0
        idle = [_smaps(w.pid) for w in ws]
        sup_idle = _smaps(pool.supervisor_pid)
        # One task per worker at least (idle workers are picked longest-idle first), as in use.
        ran = len(set(pool.map(pa.pid_agent, range(2 * workers), window=2 * workers)))
        gc.collect()
        pids = [w.pid for w in pool.workers()]
        mem = [_smaps(pid) for pid in pids]
        sup = _smaps(pool.supervisor_pid)
    total = {k: sum(m[k] for m in mem) for k in ("rss", "pss", "uss")}
    total_idle = {k: sum(m[k] for m in idle) for k in ("rss", "pss", "uss")}
    return {
        "workers": workers, "workers_measured": len(mem), "workers_that_ran_a_task": ran,
        "seconds_until_all_idle": ready_s,
        "worker_sum": total,
        "per_worker": {k: v / len(mem) for k, v in total.items()},
        "supervisor": sup,
        "pool_pss_per_worker": (total["pss"] + sup["pss"]) / len(mem),
        "before_any_task": {"worker_sum": total_idle, "per_worker": {k: v / len(idle) for k, v in total_idle.items()},
                            "supervisor": sup_idle},
    }  # fmt: skip


def memory(quick: bool) -> dict:
    n_queued = 2_000 if quick else 20_000
    n_many = 4_000 if quick else 100_000
    sizes = (20, 100) if quick else (100, 1000)
    t = time.monotonic()
    a = per_queued(n_queued)
    t_a = time.monotonic() - t
    t = time.monotonic()
    b = after_many(n_many)
    t_b = time.monotonic() - t
    t = time.monotonic()
    d = [per_worker(w) for w in sizes]
    t_d = time.monotonic() - t
    lo, hi = d
    marginal = ((hi["worker_sum"]["pss"] + hi["supervisor"]["pss"]) - (lo["worker_sum"]["pss"] + lo["supervisor"]["pss"])) \
        / (hi["workers"] - lo["workers"])  # fmt: skip
    res = {"per_queued_execution": a, "after_many": b, "per_worker": d,
           "marginal_pss_per_worker": marginal, "part_seconds": {"a": t_a, "bc": t_b, "d": t_d}}  # fmt: skip
    ratio = b["user_after_over_before"]
    res["targets"] = {
        "user_rss_after_within_10pct": abs(ratio - 1) <= 0.10,
        "per_worker_pss_at_largest_le_3MiB": hi["per_worker"]["pss"] <= 3 * MiB,
    }

    def mib(x: float) -> str:
        return f"{x / MiB:.2f}"

    rows_a = [
        ["user process (the pool's client)", f"{a['user_bytes_per_execution']:.0f}",
         f"{mib(a['user_rss_before'])} → {mib(a['user_rss_after'])} MiB"],
        ["supervisor", f"{a['supervisor_bytes_per_execution']:.0f}",
         f"{mib(a['supervisor_rss_before'])} → {mib(a['supervisor_rss_after'])} MiB"],
    ]  # fmt: skip
    rows_b = [
        ["user process", mib(b["user_rss_cold"]), mib(b["user_rss_before"]), mib(b["user_rss_after_map"]),
         mib(b["user_rss_after"]), mib(b["user_rss_peak"]), f"{b['user_after_over_before']:.3f}"],
        ["supervisor", mib(b["supervisor_rss_cold"]), mib(b["supervisor_rss_before"]), mib(b["supervisor_rss_after_map"]),
         mib(b["supervisor_rss_after"]), mib(b["supervisor_rss_peak"]), f"{b['supervisor_after_over_before']:.3f}"],
    ]  # fmt: skip
    rows_d = [[x["workers"], x["workers_that_ran_a_task"], mib(x["per_worker"]["pss"]), mib(x["per_worker"]["uss"]), mib(x["per_worker"]["rss"]),
               mib(x["before_any_task"]["per_worker"]["pss"]), mib(x["supervisor"]["rss"]), mib(x["supervisor"]["pss"]),
               mib(x["pool_pss_per_worker"]), f"{x['seconds_until_all_idle']:.1f}"] for x in d]  # fmt: skip
    res["markdown"] = (
        f"### Memory per queued execution ({n_queued:,} queued behind one busy worker, 1 kB input each)\n\n"
        + table(["process", "bytes per queued execution", "RSS before → after"], rows_a)
        + f"\n\n{a['still_queued_when_measured']:,} of {n_queued:,} still queued when measured; the user keeps "
        "every handle, not the inputs; submit took "
        f"{a['submit_us_per_execution']:.1f} µs per execution.\n\n"
        f"### RSS before and after {n_many:,} trivial executions ended and their handles were dropped (MiB)\n\n"
        f"{b['via_map']:,} through `map`, then {b['via_submit_and_drop']:,} submitted and dropped at once "
        f"(`max_queued=512`); 2 workers; {b['seconds']:.1f} s. 'Before' is after a warm-up of 1,000 executions; "
        "peak is sampled every 50 ms.\n\n"
        + table(["process", "right after Pool()", "before", f"after {b['via_map']:,} via map", "after all",
                 "peak", "after / before"], rows_b)  # fmt: skip
        + f"\n\nTarget, user RSS after within 10 % of before: {ratio:.3f} "
        + f"({'met' if res['targets']['user_rss_after_within_10pct'] else 'NOT met'}). The supervisor keeps the "
        + f"last {b['supervisor_history_limit']:,} ended executions for `status` and `outcome` (`history`).\n\n"
        + "### Memory per worker (MiB; sums over all workers / workers, after every worker has run a task)\n\n"
        + "PSS shares each shared page among the processes mapping it, so the workers' PSS sum is what the pool adds; "
        + "the worker's first task imports the agent's module (here `benchmarks.peer_agents`: `os`, `time`) and "
        + "`pickle`, which the supervisor never imports.\n\n"
        + table(["workers", "ran a task", "PSS per worker", "USS per worker", "RSS per worker", "PSS per worker before any task",
                 "supervisor RSS", "supervisor PSS", "(workers' + supervisor PSS) / workers", "s until all idle"],
                rows_d)  # fmt: skip
        + f"\n\nFrom {lo['workers']} to {hi['workers']} workers the pool's PSS grows by {mib(marginal)} MiB per "
        + f"worker. Target, ≤ 3 MiB per worker at {hi['workers']}: {mib(hi['per_worker']['pss'])} MiB PSS "
        + f"({'met' if res['targets']['per_worker_pss_at_largest_le_3MiB'] else 'NOT met'})."
    )
    return res
