"""Priority and preemption: higher-priority work first, and room made for it (reason ``priority_override``).

Owns: the choice of which running execution to preempt. The run queue
already serves the highest priority first; when its head cannot get a worker
and a lower-priority *preemptible* execution runs, that one is stopped
gracefully (its agent checkpoints ``ctx.state`` or runs its ``on_interrupt``,
as for any stop), and instead of ending it goes back to the head of its own
priority with ``resume=True``, to continue from that checkpoint when a worker
frees up. It ends once, with its final result; its outcome lists each
preemption. One execution is preempted per higher-priority execution waiting
(none while enough preemptions are already under way). Executions submitted
without ``preemptible=True`` are never preempted; a stop for any other reason
(a cancel, a timeout) that comes while it is being preempted ends it for real.
"""

from __future__ import annotations

import time

from ...shared import ExecutionStatus, InterruptMode, InterruptReason, InterruptSource
from ._base import Source

__all__ = ("Priority",)


def _is_ancestor(a, ex) -> bool:
    node = ex.parent
    while node is not None:
        if node is a:
            return True
        node = node.parent
    return False


class Priority(Source):
    def __init__(self, sup):
        super().__init__(sup)
        self.running: dict = {}  # id -> _Exec: preemptible executions running now
        self.preempting = 0  # preemptions under way

    def started(self, ex) -> None:
        if ex.preemptible:
            self.running[ex.id] = ex

    def blocked(self, head) -> None:
        if not self.running:
            return
        # A parent waiting on its children frees no hands (a stand-in already took its place).
        victims = [ex for ex in self.running.values() if ex.status is ExecutionStatus.RUNNING and not ex.mode
                   and ex.priority < head.priority and not (ex.worker is not None and ex.worker.lent)]  # fmt: skip
        if not victims:
            return
        victims.sort(key=lambda ex: (ex.priority, -ex.started_ns))  # the lowest, and of those the newest
        waiting = [q for q in self.sup.queue.above(victims[0].priority)
                   if q.status is ExecutionStatus.QUEUED and q.worker is None]  # fmt: skip
        for q in waiting[self.preempting :]:
            # Never an ancestor of the one it makes room for: stopping it would stop that one too.
            v = next((v for v in victims if v.priority < q.priority and not _is_ancestor(v, q)), None)
            if v is None:
                continue
            victims.remove(v)
            self.preempting += 1
            v.preempting = True
            self.sup._event("preempted", v, v.worker, None, message=f"for {q.id!r} (priority {q.priority})")
            self.sup._escalate(v, InterruptMode.GRACEFUL.code, InterruptReason.PRIORITY_OVERRIDE.code,
                               InterruptSource.SYSTEM.code, f"preempted by execution {q.id!r} of priority "
                               f"{q.priority} (this one has {v.priority}); it resumes when a worker is free")  # fmt: skip

    def intercept(self, ex, status, stage, checkpoint) -> bool:
        self.running.pop(ex.id, None)
        if not ex.preempting:
            return False
        ex.preempting = False
        self.preempting -= 1
        if (status is not ExecutionStatus.INTERRUPTED or ex.reason != InterruptReason.PRIORITY_OVERRIDE.code
                or self.sup.stopping):  # fmt: skip
            return False  # it finished first, or was stopped for another reason as well: it ends
        if ex.preemptions is None:
            ex.preemptions = []
        ex.preemptions.append({"at": time.time_ns(), "stage": stage.code if stage is not None else None,
                               "checkpoint": checkpoint[0] if checkpoint else None})  # fmt: skip
        self.sup._requeue_preempted(ex, checkpoint)
        return True

    def ended(self, ex, info: dict, value) -> None:
        if ex.preemptions:
            info["preemptions"] = ex.preemptions
        if ex.priority:
            info["priority"] = ex.priority

    def row(self, ex, row: dict) -> None:
        if ex.priority:
            row["priority"] = ex.priority
        if ex.preemptions:
            row["preemptions"] = len(ex.preemptions)
