"""Startup: from constructing a pool until the first trivial task's result is back.

Shutdown is not counted (it runs after the clock stops, before the next
round), nor are imports (each starter imports its library first). Rounds are
interleaved across pools (A B C ... A B C ...), so load drifts on a shared
machine hit every pool alike.

Warm: in this process, after one uncounted round of each pool, which pays the
one-time costs every later pool of a process reuses (the forkserver process,
multiprocessing's and loky's resource trackers, first imports of the user-side
modules). Cold (full run only): the first pool of a fresh process, one
process per round, so those one-time costs are in.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ._optional import peer, skipped_note
from ._starters import OURS, PPE_FORKSERVER, PPE_SPAWN, STARTERS
from ._stats import summary, table

_ROOT = Path(__file__).resolve().parent.parent  # where `python -m benchmarks._starters` finds the package


def _descendants() -> set[int]:
    return {c.pid for c in psutil.Process().children(recursive=True)}


def _cold(label: str) -> float:
    out = subprocess.run([sys.executable, "-m", "benchmarks._starters", label], cwd=_ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"cold start of {label} failed (exit {out.returncode}):\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def _rows(times: dict[str, list[float]], extra) -> tuple[dict, list]:
    ours = statistics.median(times[OURS])
    res, rows = {}, []
    for name, v in times.items():
        s = summary(v)
        paired = [o / p for o, p in zip(times[OURS], v, strict=True)]  # same round: ours over this pool
        res[name] = {**s, "vs_ours": s["median"] / ours, "ours_over_this_paired_median": statistics.median(paired)}
        rows.append([name, f"{s['median']:.1f}", f"{s['min']:.1f}", f"{s['max']:.1f}", *extra(name),
                     f"{s['median'] / ours:.2f}×"])  # fmt: skip
    return res, rows


def _verdict(res: dict) -> tuple[bool, str]:
    ours = res[OURS]["median"]
    parts, ok_all = [], True
    for key in (PPE_FORKSERVER, PPE_SPAWN):
        theirs = res[key]["median"]
        ok = ours <= theirs
        ok_all &= ok
        parts.append(f"{key.split(', ')[1]} {theirs:.1f} ms, ours/theirs {ours / theirs:.2f} "
                     f"(paired per round {res[key]['ours_over_this_paired_median']:.2f}): {'met' if ok else 'NOT met'}")  # fmt: skip
    return ok_all, f"ours {ours:.1f} ms; " + "; ".join(parts)


def startup(quick: bool) -> dict:
    rounds = 1 if quick else 21  # quick: round 0 and one counted round (billiard alone closes in ~1 s)
    cold_rounds = 0 if quick else 7
    impls, skipped = {}, []
    for label, (fn, needs) in STARTERS.items():
        if needs is not None and peer(needs) is None:
            skipped.append(needs)
        else:
            impls[label] = fn

    first: dict[str, float] = {}
    started: dict[str, int] = {}
    warm: dict[str, list[float]] = {k: [] for k in impls}
    for r in range(rounds + 1):  # round 0: the one-time costs, reported apart
        for name, fn in impls.items():
            gc.collect()
            before = _descendants()
            dt, close = fn()
            if r == 1:  # new processes alive when the result was back (ours: the supervisor and its workers)
                started[name] = len(_descendants() - before)
            close()
            if r:
                warm[name].append(dt * 1e3)
            else:
                first[name] = dt * 1e3
            time.sleep(0.02)  # let exited processes be reaped before the next pool starts
    res: dict = {"unit": "ms", "rounds": rounds, "cold_rounds": cold_rounds, "skipped": skipped}
    res["warm"], rows = _rows(warm, lambda n: [f"{first[n]:.1f}", started.get(n, "-")])
    for name in impls:
        res["warm"][name].update(first_round=first[name], processes_started=started.get(name))
    ok, verdict = _verdict(res["warm"])
    res["target_met_warm"] = ok
    md = (
        f"### Startup: construct a pool → first trivial task's result back (ms; warm: median of {rounds} "
        "interleaved rounds in one process)\n\n"
        "Imports and shutdown are not counted. The first round of each pool runs before the counted ones and is "
        "shown apart: it pays one-time costs (the forkserver process, resource trackers). 'Processes started' counts "
        "the new processes alive when the result is back (ours: the supervisor and its 2 workers; "
        "ProcessPoolExecutor with forkserver or spawn starts workers on demand, so one task starts one).\n\n"
        + table(["pool", "median", "min", "max", "first round", "processes started", "vs ours"], rows)
        + f"\n\nTarget, ours no slower than ProcessPoolExecutor with forkserver or spawn (warm): {verdict}."
    )
    if cold_rounds:
        cold: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(cold_rounds):
            for name in impls:
                cold[name].append(_cold(name))
        res["cold"], crows = _rows(cold, lambda n: [])
        ok_c, verdict_c = _verdict(res["cold"])
        res["target_met_cold"] = ok_c
        md += (
            f"\n\n#### Cold: the first pool of a fresh process (ms, median of {cold_rounds} processes per pool, "
            "interleaved)\n\n"
            + table(["pool", "median", "min", "max", "vs ours"], crows)
            + f"\n\nTarget (cold): {verdict_c}."
        )
    res["markdown"] = md + skipped_note(skipped)
    return res
