"""The invariants every chaos scenario checks, and its one-line JSON summary.

Owns: the environment marker that tags every process a scenario starts, the
baseline taken before the scenario's first pool (processes, descriptors,
/dev/shm), the tally of outcomes, and the checks run when it ends.

Timing tolerance (``ALLOWANCE_S``): an interrupted execution must have ended
within ``grace + term_grace`` of its stop request, plus one second. The
second covers what the pool does not control on this shared 2-core machine:
the supervisor being scheduled late while four to two hundred workers and the
chaos thread compete for two cores, the kernel tearing down a SIGKILLed worker
and its tools, and the reaping round trip. The pool's own figures (README:
signals sent about 0.5 ms late at p99) are far below it; the maximum lateness
observed is reported so a regression shows long before it breaks the bound.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import psutil

from interrupt_pool._proc import pids_with_env

from interrupt_pool import ExecutionStatus

MARK = "CHAOS_MARK"  # set to a fresh value per scenario; every process it starts inherits it
SUITE_MARK = "CHAOS_SUITE_MARK"  # set by 'all' for the whole run: it finds what a scenario process left
ALLOWANCE_S = 1.0  # see the module docstring
LEAK_WAIT_S = 5.0  # after every pool has shut down, leftovers get this long to disappear (as tests/conftest.py)
GONE_WITHIN_S = 2.5  # the bound for 'everything gone' after a supervisor or user process is killed
MAX_LISTED = 40  # violations listed in the JSON line; the count is always exact

_SHM_PREFIXES = ("pool", "ipool", "interrupt", "psm_")  # as tests/conftest.py
TERMINAL = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.INTERRUPTED, ExecutionStatus.CRASHED)


def marked_pids(var: str = MARK, value: str | None = None) -> list[int]:
    """Live (non-zombie: a zombie's environment cannot be read) processes of this user
    whose environment carries ``var=value``, other than this one."""
    value = os.environ.get(var) if value is None else value
    if not value:
        return []
    return pids_with_env(f"{var}={value}")


def describe(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"pid {pid} ({p.name()}, {p.status()}, ppid {p.ppid()}) {' '.join(p.cmdline()[:5])}"
    except psutil.Error:
        return f"pid {pid} (gone)"


def zombie_children() -> list[int]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.NoSuchProcess:
            continue  # reaped just now
    return out


def shm_entries() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.lower().startswith(_SHM_PREFIXES)}


def fds() -> dict[int, str]:
    """This process's sockets, pipes and anonymous inodes (pidfds, eventfds): what a pool could leak."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor
        if target.startswith(("socket:", "pipe:", "anon_inode:")):
            out[int(fd)] = target
    return out


def wait_gone(pids: list[int], timeout: float) -> tuple[list[int], float]:
    """(pids still alive and not zombies after ``timeout``, seconds it took for all to go)."""
    t0 = time.monotonic()
    alive = list(pids)
    while True:
        alive = [p for p in alive if _alive(p)]
        took = time.monotonic() - t0
        if not alive or took > timeout:
            return alive, took
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))]


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1e3, 3)


class Scenario:
    """One run of one scenario: its seed, temp directory, tally and invariants.

    Create it before the scenario's first pool (it sets the marker and takes the
    baseline); call :meth:`record` for every outcome and :meth:`lost` for every
    execution that never ended; :meth:`finish` runs the leak checks and returns
    the JSON summary.
    """

    def __init__(self, name: str, seed: int, short: bool):
        os.environ[MARK] = f"{name}-{os.getpid()}-{os.urandom(6).hex()}"
        self.name, self.seed, self.short = name, seed, short
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
        self.violations: list[str] = []
        self.n_violations = 0
        self.figures: dict[str, Any] = {}
        self.submitted = 0
        self.ended = 0
        self.by_status: Counter = Counter()
        self.by_stage: Counter = Counter()
        self.stop_latency: dict[str, list[float]] = defaultdict(list)  # stage -> seconds from request to end
        self.late = {"sigterm": None, "sigkill": None, "ended_past_budget": None}
        self.no_request = 0  # interrupted without a recorded request (the agent's own Interrupted, outside SIGTERM)
        self.allowance = ALLOWANCE_S
        self.lock = threading.RLock()  # record() is called from pools' callback threads and host threads
        self._base_fds = fds()
        self._base_shm = shm_entries()
        self._base_children = {p.pid for p in psutil.Process().children(recursive=True)}

    # -- tally -----------------------------------------------------------------

    def violation(self, text: str) -> None:
        with self.lock:
            self.n_violations += 1
            if len(self.violations) < MAX_LISTED:
                self.violations.append(text)

    def lost(self, id: str, why: str) -> None:
        with self.lock:
            self.by_status["lost"] += 1
            self.violation(f"execution {id!r} never ended: {why}")

    def record(self, out, grace: float, term_grace: float, check: Callable[[Any], str | None] | None = None) -> None:
        """Check one ExecutionResult: a terminal status with its payload, and its stop deadline.
        ``check(out)`` may add a scenario-specific complaint (a string) or None."""
        with self.lock:
            self._record(out, grace, term_grace, check)

    def settle(self, handles, checks, grace: float, term_grace: float, timeout: float = 60) -> None:
        """Wait for every handle and record it; ``checks[i]`` (or None) says whether a completed
        value is right; failed and crashed outcomes are violations here."""
        for ex, ok in zip(handles, checks):
            try:
                out = ex.outcome(timeout=timeout)
            except TimeoutError:
                self.lost(ex.id, f"still live {timeout:g} s after the batch")
                continue
            self.record(out, grace, term_grace,
                        lambda o, ok=ok: (f"completed with a wrong value {o.value!r}"
                                          if o.status is ExecutionStatus.COMPLETED and ok is not None and not ok(o)
                                          else f"unexpected {o.status.value}: {o.error}"
                                          if o.status in (ExecutionStatus.FAILED, ExecutionStatus.CRASHED)
                                          else None))  # fmt: skip

    def _record(self, out, grace, term_grace, check) -> None:
        self.ended += 1
        st = out.status
        self.by_status[st.value] += 1
        if st not in TERMINAL:
            self.violation(f"{out.id}: outcome with non-terminal status {st.value}")
            return
        if st is ExecutionStatus.COMPLETED:
            if out.error is not None:
                self.violation(f"{out.id}: completed with an error {out.error}")
        elif st is ExecutionStatus.FAILED:
            if out.error is None or not out.error.type:
                self.violation(f"{out.id}: failed without an error")
        elif st is ExecutionStatus.CRASHED:
            if out.error is None or not out.error.message:
                self.violation(f"{out.id}: crashed without an error message")
        elif st is ExecutionStatus.INTERRUPTED:
            self._interrupted(out, grace, term_grace)
        if check is not None:
            why = check(out)
            if why:
                self.violation(f"{out.id}: {why}")

    def _interrupted(self, out, grace: float, term_grace: float) -> None:
        i = out.interrupt
        if i is None or i.stage is None or i.ended_ns is None:
            self.violation(f"{out.id}: interrupted without a stage and timeline ({i!r})")
            return
        self.by_stage[i.stage.value] += 1
        for sig, at, deadline in (("sigterm", i.sigterm_ns, i.sigterm_deadline_ns),
                                  ("sigkill", i.sigkill_ns, i.sigkill_deadline_ns)):  # fmt: skip
            if at and deadline:
                late = (at - deadline) / 1e9
                self.late[sig] = late if self.late[sig] is None else max(self.late[sig], late)
        if i.requested_ns is None:
            self.no_request += 1  # the agent raised Interrupted itself, or a SIGTERM came from outside the pool
            return
        took = (i.ended_ns - i.requested_ns) / 1e9
        self.stop_latency[i.stage.value].append(took)
        past = took - (grace + term_grace)
        cur = self.late["ended_past_budget"]
        self.late["ended_past_budget"] = past if cur is None else max(cur, past)
        if past > self.allowance:
            self.violation(f"{out.id}: stop took {took:.3f} s (mode {i.mode.value}, stage {i.stage.value}), "
                           f"more than grace {grace} + term_grace {term_grace} + allowance {self.allowance} s")  # fmt: skip

    def collect(self, handles: list, grace: float, term_grace: float, check=None, within: float = 60.0,
                escalations: dict | None = None) -> None:  # fmt: skip
        """Wait for every handle (at most ``within`` seconds in all) and record it."""
        deadline = time.monotonic() + within
        for ex in handles:
            try:
                out = ex.outcome(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                self.lost(ex.id, f"still {ex.status.value} {within:.0f} s after the batch")
                continue
            g, tg = (escalations or {}).get(ex.id, (grace, term_grace))
            self.record(out, g, tg, check)

    # -- the end ----------------------------------------------------------------

    def check_leaks(self, wait: float = LEAK_WAIT_S) -> None:
        """No marked process, no zombie child, no new /dev/shm entry, no new descriptor."""
        deadline = time.monotonic() + wait
        while True:
            procs = marked_pids()
            zombies = [p for p in zombie_children() if p not in self._base_children]
            extra_fds = {fd: t for fd, t in fds().items() if self._base_fds.get(fd) != t}
            if (not procs and not zombies and not extra_fds) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid in procs:
            self.violation(f"left running after the scenario: {describe(pid)}")
        for pid in zombies:
            self.violation(f"zombie child not reaped: {describe(pid)}")
        for fd, t in sorted(extra_fds.items()):
            self.violation(f"descriptor {fd} -> {t} left open in the host process")
        for name in sorted(shm_entries() - self._base_shm):
            self.violation(f"/dev/shm/{name} created and left")
        self.figures["leftover_processes"] = len(procs)
        if procs:  # do not let one scenario's leak disturb the next one
            for pid in procs:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass  # gone meanwhile

    def finish(self, error: str | None = None) -> dict:
        if error:
            self.violation(error)
        try:
            self.check_leaks()
        except Exception as exc:  # the summary line must still be printed
            self.violation(f"leak check failed: {type(exc).__name__}: {exc}")
        if self.ended + self.by_status.get("lost", 0) != self.submitted:
            self.violation(f"{self.submitted} executions submitted, {self.ended} ended, "
                           f"{self.by_status.get('lost', 0)} lost: the count does not add up")  # fmt: skip
        shutil.rmtree(self.tmp, ignore_errors=True)
        stop = {stage: {"n": len(v), "p50_ms": ms(pct(v, 50)), "p99_ms": ms(pct(v, 99)), "max_ms": ms(max(v))}
                for stage, v in sorted(self.stop_latency.items())}  # fmt: skip
        violations = list(self.violations)
        if self.n_violations > len(violations):
            violations.append(f"... and {self.n_violations - len(violations)} more")
        summary = {
            "scenario": self.name,
            "ok": self.n_violations == 0,
            "seed": self.seed,
            "short": self.short,
            "seconds": round(time.monotonic() - self.t0, 2),
            "executions": self.submitted,
            "ended": self.ended,
            "by_status": dict(sorted(self.by_status.items())),
            "violations": violations,
        }
        if self.by_stage:
            summary["by_stage"] = dict(sorted(self.by_stage.items()))
        if stop:
            summary["stop_latency_by_stage"] = stop
        if any(v is not None for v in self.late.values()):
            summary["max_late_ms"] = {k: ms(v) for k, v in self.late.items()}
            summary["allowance_s"] = self.allowance
        if self.no_request:
            summary["interrupted_without_request"] = self.no_request
        summary.update(self.figures)
        return summary


def emit(summary: dict) -> None:
    sys.stdout.write(json.dumps(summary, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def rss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def uss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_full_info().uss
    except psutil.Error:
        return None
