"""Budgets: stop an execution once it, an ancestor of it or its group has spent its budget.

Owns: the groups (name, budget, spend, live members) and the spend of every
execution as its worker reports it. The agent's ``ctx.spend`` adds to the
slot's cost word and sends a Spend frame with the run's running total; here
the increase is added to the execution, to every ancestor (a parent's budget
covers its descendants) and to its group. A budget is used up once the spend
reaches it: the execution (or every live member of the group) is stopped
gracefully with reason ``budget_exceeded``, timed from the spend that crossed
the line; an agent that stops spending is still stopped by the escalation. The
agent also gets an allowance in its Run frame, so the spend that crosses its
own line raises in the agent at once, without waiting for the supervisor.

A used-up group takes no new executions (the submit is refused with the
reason) until its budget is raised with ``pool.group(name, budget=...)``.
"""

from __future__ import annotations

import math
import time

from ...shared import ExecutionStatus, InterruptMode, InterruptReason, InterruptSource
from ...shared import _protocol as P
from ._base import Source

__all__ = ("Budgets",)

MAX_GROUPS = 10_000  # groups live as long as the pool: bounded, so a client inventing names cannot grow it
_LIVE = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.CANCELLING)


def _budget_ok(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)


class _Group:
    __slots__ = ("name", "budget", "spent", "live", "exhausted", "submitted")

    def __init__(self, name: str, budget: float | None):
        self.name, self.budget = name, budget
        self.spent = 0.0
        self.live: dict = {}  # id -> _Exec: queued or running members, in submission order
        self.exhausted = False
        self.submitted = 0

    def row(self) -> dict:
        return {"name": self.name, "budget": self.budget, "spent": self.spent, "live": len(self.live),
                "exhausted": self.exhausted, "submitted": self.submitted}  # fmt: skip


class Budgets(Source):
    worker_messages = {P.Spend: "on_spend"}
    client_messages = {P.DefineGroup: "on_define", P.CancelGroup: "on_cancel_group"}

    def __init__(self, sup):
        super().__init__(sup)
        self.groups: dict[str, _Group] = {}

    # -- submissions ---------------------------------------------------------

    def check(self, t: P.Task) -> str | tuple[str, str] | None:
        """Called for tasks with a budget or a group."""
        if not _budget_ok(t.budget):
            return f"budget must be a finite number >= 0 (in your cost unit) or None, got {t.budget!r}"
        if t.group is None:
            return None
        g = self.groups.get(t.group)
        if g is None:
            return (f"group {t.group!r} is not defined in this pool; create it first with "
                    f"pool.group({t.group!r}, budget=...)")  # fmt: skip
        if g.exhausted:
            return ("BudgetExceeded", f"group {g.name!r} has spent {g.spent:g} of its budget {g.budget:g}; it takes "
                    f"no new executions until its budget is raised with pool.group({g.name!r}, budget=...)")  # fmt: skip
        return None

    def submitted(self, ex) -> None:
        parent = ex.parent
        if ex.group is None and parent is not None:
            ex.group = parent.group  # a child belongs to its parent's group
        g = self.groups.get(ex.group) if ex.group is not None else None
        if g is not None:
            g.live[ex.id] = ex
            g.submitted += 1
        ex.limited = ex.budget is not None or (g is not None and g.budget is not None) or (
            parent is not None and parent.limited)

    def allowance(self, ex) -> float | None:
        """The spend of this run at which the agent must ask (a crossed Spend): what it has spent
        in this run plus the least budget left on it, its ancestors and its group."""
        if not ex.limited:
            return None
        left = math.inf
        node = ex
        while node is not None:
            if node.budget is not None:
                left = min(left, node.budget - node.tree_cost)
            node = node.parent
        g = self.groups.get(ex.group) if ex.group is not None else None
        if g is not None and g.budget is not None:
            left = min(left, g.budget - g.spent)
        return None if left == math.inf else ex.run_spent + max(0.0, left)

    # -- spend ---------------------------------------------------------------

    def on_spend(self, w, msg: P.Spend) -> None:
        ex = w.exec
        if ex is None or ex.id != msg.id:
            return
        delta = msg.total - ex.run_spent
        if not delta > 0:
            return self._verdict(w, ex, msg)
        ex.plain = False  # it has a cost to report
        ex.run_spent = msg.total
        ex.cost += delta
        at = msg.at or time.monotonic_ns()
        sup = self.sup
        sup._event("spent", ex, w, at, cost=ex.cost, message=msg.note)
        node = ex
        while node is not None:
            node.tree_cost += delta
            if node.budget is not None and node.tree_cost >= node.budget and node.status in _LIVE:
                whose = "" if node is ex else " (its descendants' spend included)"
                sup._escalate(node, InterruptMode.GRACEFUL.code, InterruptReason.BUDGET_EXCEEDED.code,
                              InterruptSource.BUDGET.code, f"execution {node.id!r} has spent {node.tree_cost:g}{whose} "
                              f"of its budget {node.budget:g}", now=at)  # fmt: skip
            node = node.parent
        g = self.groups.get(ex.group) if ex.group is not None else None
        if g is not None:
            g.spent += delta
            self._maybe_exhausted(g, at)
        self._verdict(w, ex, msg)

    def _verdict(self, w, ex, msg: P.Spend) -> None:
        """A crossed Spend waits for an answer: the stop (its flag and doorbell) or a new allowance."""
        if msg.crossed and not ex.mode:
            self.sup._send_worker(w, P.Allowance(ex.id, self.allowance(ex)), now=True)

    def _maybe_exhausted(self, g: _Group, at: int | None = None) -> None:
        if g.exhausted or g.budget is None or g.spent < g.budget:
            return
        g.exhausted = True
        why = f"group {g.name!r} has spent {g.spent:g} of its budget {g.budget:g}"
        self.sup._event("budget_exhausted", None, None, at, message=why)
        for m in list(g.live.values()):
            self.sup._escalate(m, InterruptMode.GRACEFUL.code, InterruptReason.BUDGET_EXCEEDED.code,
                               InterruptSource.BUDGET.code, why, now=at)  # fmt: skip

    # -- groups --------------------------------------------------------------

    def on_define(self, c, msg: P.DefineGroup) -> None:
        sup = self.sup
        name = msg.name
        if not name or len(name) > 256 or "\x00" in name:
            return sup._reply(c, msg.req, error=f"group name {name!r} must be 1 to 256 characters without NUL")
        if not _budget_ok(msg.budget):
            return sup._reply(c, msg.req, error=f"the budget of group {name!r} must be a finite number >= 0 "
                                                f"(in your cost unit) or None, got {msg.budget!r}")  # fmt: skip
        g = self.groups.get(name)
        if g is None:
            if len(self.groups) >= MAX_GROUPS:
                return sup._reply(c, msg.req, error=f"the pool already has {MAX_GROUPS} groups; reuse one")
            g = self.groups[name] = _Group(name, msg.budget)
        elif not msg.keep_budget:
            g.budget = msg.budget
            if g.exhausted and (g.budget is None or g.spent < g.budget):
                g.exhausted = False  # a raised budget takes new executions again
        for m in g.live.values():
            m.limited = m.limited or g.budget is not None
        self._maybe_exhausted(g)
        sup._reply(c, msg.req, g.row())

    def on_cancel_group(self, c, msg: P.CancelGroup) -> None:
        sup = self.sup
        if not sup._request_ok(c, msg):
            return
        g = self.groups.get(msg.name)
        if g is None:
            return sup._reply(c, msg.req, error=f"group {msg.name!r} is not defined in this pool")
        sup._stop_many(c, msg.req, list(g.live.values()), msg.mode, msg.reason, msg.source,
                       msg.message or f"group {g.name!r} was cancelled")  # fmt: skip

    # -- ends and status -----------------------------------------------------

    def ended(self, ex, info: dict, value) -> None:
        if ex.cost or ex.tree_cost or ex.budget is not None:
            info["cost"] = ex.tree_cost
            info["own_cost"] = ex.cost
            info["budget"] = ex.budget
        if ex.group is not None:
            info["group"] = ex.group
            g = self.groups.get(ex.group)
            if g is not None:
                g.live.pop(ex.id, None)

    def row(self, ex, row: dict) -> None:
        if ex.tree_cost or ex.budget is not None:
            row["cost"] = ex.tree_cost
            row["budget"] = ex.budget
        if ex.group is not None:
            row["group"] = ex.group

    def status(self, doc: dict) -> None:
        doc["groups"] = [g.row() for g in self.groups.values()]
