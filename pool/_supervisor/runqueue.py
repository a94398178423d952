"""The run queue: queued executions by priority, highest first, in order within one priority.

Owns: the order in which queued executions reach workers. Entries are
``_Exec`` records; one that is stopped while queued stays in its deque and is
skipped when it reaches the head (the supervisor's ``n_queued`` counts only
live ones). With every priority 0 (the common case) it is one deque.
"""

from __future__ import annotations

import bisect
from collections import deque

__all__ = ("RunQueue",)


class RunQueue:
    __slots__ = ("_by_prio", "_prios")

    def __init__(self):
        self._by_prio: dict[int, deque] = {}
        self._prios: list[int] = []  # ascending; the highest is last

    def _deque(self, prio: int) -> deque:
        d = self._by_prio.get(prio)
        if d is None:
            d = self._by_prio[prio] = deque()
            bisect.insort(self._prios, prio)
        return d

    def append(self, ex) -> None:
        self._deque(ex.priority).append(ex)

    def appendleft(self, ex) -> None:
        """Back to the head of its priority (it was taken out before it ran)."""
        self._deque(ex.priority).appendleft(ex)

    def head(self):
        """The next execution in order, or None; empty priorities are dropped on the way."""
        prios = self._prios
        while prios:
            d = self._by_prio[prios[-1]]
            if d:
                return d[0]
            del self._by_prio[prios.pop()]
        return None

    def popleft(self):
        ex = self.head()
        if ex is not None:
            self._by_prio[self._prios[-1]].popleft()
        return ex

    def above(self, prio: int) -> list:
        """The entries (live or not) queued at a priority higher than ``prio``, highest first."""
        out = []
        for p in reversed(self._prios):
            if p <= prio:
                break
            out.extend(self._by_prio[p])
        return out

    def __bool__(self) -> bool:
        return self.head() is not None

    def __iter__(self):
        for p in reversed(self._prios):
            yield from self._by_prio[p]

    def clear(self) -> None:
        self._by_prio.clear()
        self._prios.clear()
