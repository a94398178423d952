"""The run queue: queued executions by priority, highest first, in order within one priority.

Owns: the order in which queued executions reach workers. Entries are
``_Exec`` records, ordered by their ``rank``: ``2 * priority``, plus one for a
child execution, so within one priority children run before executions a
client submitted (a tree then runs depth first: fewer parents wait at once),
and in submission order otherwise. One that is stopped while queued stays in
its deque and is skipped when it reaches the head (the supervisor's
``n_queued`` counts only live ones). With every priority 0 and no trees (the
common case) it is one deque.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import TYPE_CHECKING, Iterator

from ..shared import ExecutionStatus

if TYPE_CHECKING:
    from .core import _Exec

__all__ = ("RunQueue",)


class RunQueue:
    __slots__ = ("_by_rank", "_ranks")

    def __init__(self) -> None:
        self._by_rank: dict[int, deque[_Exec]] = {}
        self._ranks: list[int] = []  # ascending; the highest is last

    def _deque(self, rank: int) -> deque[_Exec]:
        d = self._by_rank.get(rank)
        if d is None:
            d = self._by_rank[rank] = deque()
            bisect.insort(self._ranks, rank)
        return d

    def append(self, ex: _Exec) -> None:
        self._deque(ex.rank).append(ex)

    def appendleft(self, ex: _Exec) -> None:
        """Back to the head of its rank (it was taken out before it ran)."""
        self._deque(ex.rank).appendleft(ex)

    def head(self) -> _Exec | None:
        """The next execution in order, or None; empty ranks are dropped on the way."""
        ranks = self._ranks
        while ranks:
            d = self._by_rank[ranks[-1]]
            if d:
                return d[0]
            del self._by_rank[ranks.pop()]
        return None

    def waiting_head(self) -> _Exec | None:
        """The next execution still waiting; those stopped while queued (or taken by a worker
        another way) are dropped on the way."""
        while True:
            ex = self.head()
            if ex is None or (ex.status is ExecutionStatus.QUEUED and ex.worker is None):
                return ex
            self.drop_head()

    def popleft(self) -> _Exec | None:
        ex = self.head()
        if ex is not None:
            self.drop_head()
        return ex

    def drop_head(self) -> None:
        """Remove the entry :meth:`head` has just returned."""
        self._by_rank[self._ranks[-1]].popleft()

    def above(self, priority: int) -> list[_Exec]:
        """The entries (live or not) queued at a priority higher than ``priority``, highest first."""
        out: list[_Exec] = []
        for p in reversed(self._ranks):
            if p <= 2 * priority + 1:
                break
            out.extend(self._by_rank[p])
        return out

    def __bool__(self) -> bool:
        return self.head() is not None

    def __iter__(self) -> Iterator[_Exec]:
        for p in reversed(self._ranks):
            yield from self._by_rank[p]

    def clear(self) -> None:
        self._by_rank.clear()
        self._ranks.clear()
