"""Stalls: stop an execution that made no progress for its ``stall_timeout`` (reason ``stalled``).

Owns: each execution's stall deadline. Progress is the slot's progress word,
which the agent writes with one store (``ctx.heartbeat``, ``sleep``,
``spend``, ``checkpoint``), the end of one of its children, which the
supervisor notes itself, and the progress of its live descendants (a parent
waiting on working children is not stalled). Nothing polls: one timer per execution is set for
``last progress + stall_timeout``; when it fires it reads the word and either
stops the execution or sets itself for the new deadline.
"""

from __future__ import annotations

import time

from ...shared import ExecutionStatus, InterruptMode, InterruptReason, InterruptSource
from ._base import Source

__all__ = ("Stalls",)


class Stalls(Source):
    def started(self, ex) -> None:
        if ex.stall_timeout:
            ex.progress_ns = ex.started_ns
            ex.timers.append(self.sup._at(ex.stall_timeout, self._due, ex))

    def last_progress(self, ex) -> int:
        """Its own last progress, or that of a live descendant: a parent is making progress
        while its children are (and a child's end is progress for it)."""
        sup = self.sup
        word = sup.flags.progress_ns(ex.slot) if ex.slot is not None and sup._begun(ex) else 0
        last = max(ex.progress_ns or 0, word, ex.started_ns or 0)
        for child in ex.children.values() if ex.children else ():
            if child.started_ns:
                last = max(last, self.last_progress(child))
        return last

    def _due(self, ex) -> None:
        if ex.status is not ExecutionStatus.RUNNING or ex.mode:
            return  # ended, or already being stopped for another reason
        stall_ns = int(ex.stall_timeout * 1e9)
        due = self.last_progress(ex) + stall_ns
        now = time.monotonic_ns()
        if now >= due:
            self.sup._escalate(ex, InterruptMode.GRACEFUL.code, InterruptReason.STALLED.code,
                               InterruptSource.SYSTEM.code, f"no progress for {ex.stall_timeout:g} s (progress: "
                               "ctx.heartbeat, ctx.sleep, ctx.spend, ctx.checkpoint or a child's end)", now=due)  # fmt: skip
        else:
            ex.timers = [t for t in ex.timers if not t.cancelled]
            ex.timers.append(self.sup._at((due - now) / 1e9, self._due, ex))

    def row(self, ex, row: dict) -> None:
        if ex.started_ns:
            row["idle"] = (time.monotonic_ns() - self.last_progress(ex)) / 1e9
