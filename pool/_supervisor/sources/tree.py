"""Agent trees: child executions an agent starts, and the cascade that stops them with it.

Owns: the parent and children links of executions, and the lending of a
waiting parent's place. An agent's ``ctx.submit`` sends SubmitChild; the child
is queued like any execution (at least at its parent's priority, in its
parent's group) and its end goes back to the parent's worker as ChildEnded.

Cascade: any stop of a parent (a client, a timeout, a budget, a stall, a
preemption, shutdown) stops every live descendant with the same mode and
reason ``parent_cancelled``; so does the parent's end, however it ended (a
crash included). A parent's own end is not held back for its children: each
of them ends within its own escalation bounds, right after.

Capacity: while a parent blocks on its children (Waiting), its worker is lent:
the supervisor may start a stand-in worker, so the workers running agent code
stay at ``workers`` and a tree wider and deeper than the pool cannot
deadlock. Stand-ins retire as soon as they are idle and no longer needed. A
waiting parent keeps its flag slot: the pool's ``capacity`` bounds how many
can wait at once, and a child that would need more is refused with that
reason rather than left to wait for ever.
"""

from __future__ import annotations

import time

from ...shared import ExecutionStatus, InterruptMode, InterruptReason, InterruptSource
from ...shared import _protocol as P
from ._base import Source

__all__ = ("Tree",)

_LIVE = (ExecutionStatus.RUNNING, ExecutionStatus.CANCELLING)
_MODES = {m.code for m in InterruptMode}


class Tree(Source):
    worker_messages = {P.SubmitChild: "on_submit_child", P.Waiting: "on_waiting", P.CancelChild: "on_cancel_child",
                       P.DefineAgent: "on_define_agent"}  # fmt: skip

    def on_define_agent(self, w, msg: P.DefineAgent) -> None:
        self.sup._store_agent(msg.digest, msg.blob)  # our own worker: no digest check needed

    def on_submit_child(self, w, msg: P.SubmitChild) -> None:
        sup = self.sup
        t = msg.task
        parent = sup.execs.get(msg.parent)
        err = None
        if parent is None or parent.worker is not w or parent.status not in _LIVE:
            err = ("ValueError", f"child {t.id!r} cannot start: its parent {msg.parent!r} has ended; a child "
                                 "must be started while its parent runs")  # fmt: skip
        else:
            parent.child_seq += 1  # every child it asked for, refused ones too: the worker numbers them so
            if sup.lent >= sup.cfg.capacity - sup.cfg.workers - 1:
                err = ("CapacityExhausted", f"child {t.id!r} of {parent.id!r} cannot start: the pool's capacity "
                       f"({sup.cfg.capacity} slots) is held by parents waiting on their children; create the "
                       "Pool with a larger capacity for trees this wide and deep")  # fmt: skip
            else:
                err = sup._task_error(t)
        if err:
            info = {"id": t.id, "status": ExecutionStatus.FAILED.code, "error": [err[0], err[1], None],
                    "ended_wall_ns": time.time_ns(), "parent": msg.parent}  # fmt: skip
            sup._send_worker(w, P.ChildEnded(msg.parent, t.id, info, None))
            return
        ex = sup._new_exec(t, None, parent)
        if parent.children is None:
            parent.children, parent.child_ids = {}, []
            parent.plain = False  # a parent: its stop and its end concern its children
        parent.children[ex.id] = ex
        parent.child_ids.append(ex.id)
        if parent.mode:  # it is being stopped: the child ends at once, as its siblings do
            sup._escalate(ex, parent.mode, InterruptReason.PARENT_CANCELLED.code, parent.source,
                          f"its parent {parent.id!r} is being stopped")  # fmt: skip

    def on_waiting(self, w, msg: P.Waiting) -> None:
        ex = w.exec
        if ex is None or ex.id != msg.id or msg.on == w.lent:
            return
        w.lent = msg.on
        self.sup.lent += 1 if msg.on else -1

    def on_cancel_child(self, w, msg: P.CancelChild) -> None:
        parent = w.exec
        if parent is None or parent.id != msg.parent:
            return
        child = parent.children.get(msg.id) if parent.children else None
        if child is not None and msg.mode in _MODES:
            self.sup._escalate(child, msg.mode, InterruptReason.PARENT_CANCELLED.code, InterruptSource.AGENT.code,
                               msg.message or f"its parent {parent.id!r} cancelled it")  # fmt: skip

    # -- the cascade -------------------------------------------------------------

    def escalated(self, ex, mode: int, source: int) -> None:
        for child in list(ex.children.values()) if ex.children else ():
            self.sup._escalate(child, mode, InterruptReason.PARENT_CANCELLED.code, source,
                               f"its parent {ex.id!r} is being stopped")  # fmt: skip

    def ended(self, ex, info: dict, value) -> None:
        sup = self.sup
        parent = ex.parent
        if parent is not None:
            info["parent"] = parent.id
            if parent.children:
                parent.children.pop(ex.id, None)
            parent.progress_ns = time.monotonic_ns()  # a child's end is progress for its parent
        if ex.child_ids:
            info["children"] = ex.child_ids
        if ex.children:  # it ended before they did: they stop with it
            mode = ex.mode or InterruptMode.GRACEFUL.code
            source = ex.source or InterruptSource.SYSTEM.code
            for child in list(ex.children.values()):
                sup._escalate(child, mode, InterruptReason.PARENT_CANCELLED.code, source,
                              f"its parent {ex.id!r} ended before it")  # fmt: skip
            ex.children.clear()

    def settled(self, ex, info: dict, value) -> None:
        """After every source added its fields: the parent's agent gets the same record the pool keeps."""
        parent = ex.parent
        if parent is None:
            return
        ex.parent = None
        pw = parent.worker
        if parent.status in _LIVE and pw is not None and not pw.killed and pw.exec is parent:
            self.sup._send_worker(pw, P.ChildEnded(parent.id, ex.id, info, value))

    # -- lending a waiting parent's place ---------------------------------------

    def blocked(self, head) -> None:
        sup = self.sup
        if sup.lent and not sup.stopping and sup._active_workers() < sup.cfg.workers + sup.lent:
            sup.standins = True
            sup._spawn()

    def row(self, ex, row: dict) -> None:
        if ex.parent is not None:
            row["parent"] = ex.parent.id
        if ex.children:
            row["children"] = list(ex.children)
        w = ex.worker
        if w is not None and w.lent and w.exec is ex:
            row["waiting"] = True
