"""The event stream: what happened to executions and workers, as it happens.

Owns: the :class:`Event` model and :class:`EventKind`. The supervisor emits
the stop-related events (requested, escalated, observed, sigterm, sigkill)
and the worker lifecycle; the client derives ``submitted``, ``started`` and
``ended`` from the frames it already receives, so no event costs an extra
frame on the hot path.
"""

from __future__ import annotations

import datetime as _dt
import enum
import time
from typing import Any

from pydantic import BaseModel

from .shared import ExecutionStatus, InterruptMode, InterruptReason, Stage

__all__ = ("Event", "EventKind")

# monotonic -> wall clock, for display; both read once so every event shares one offset
_WALL_OFFSET_NS = time.time_ns() - time.monotonic_ns()


class EventKind(str, enum.Enum):
    SUBMITTED = "submitted"
    STARTED = "started"
    REQUESTED = "requested"  # a stop was requested (mode, reason in the event)
    ESCALATED = "escalated"  # a later, stronger request
    OBSERVED = "observed"  # the agent saw the request (flag read or SIGTERM handler)
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"
    ENDED = "ended"
    OUTPUT = "output"  # lines an execution (or an idle worker) printed, in ``text``
    WORKER_STARTED = "worker_started"
    WORKER_EXITED = "worker_exited"
    SPENT = "spent"  # ctx.spend: the execution's own total in ``cost``, the note in ``message``
    BUDGET_EXHAUSTED = "budget_exhausted"  # a group used up its budget (its members are being stopped)
    VETOED = "vetoed"  # before_interrupt refused a stop request
    PREEMPTED = "preempted"  # stopped to make room for higher-priority work
    REQUEUED = "requeued"  # a preempted execution waits to resume
    SOURCE_ERROR = "source_error"  # an interrupt source or hook raised or returned garbage (in this process)

    def __str__(self) -> str:
        return self.value


class Event(BaseModel):
    """One thing that happened; ``mono_ns`` is ``time.monotonic_ns()`` (one clock machine-wide)."""

    kind: EventKind
    mono_ns: int
    execution_id: str | None = None
    worker_id: int | None = None
    pid: int | None = None
    status: ExecutionStatus | None = None
    stage: Stage | None = None
    mode: InterruptMode | None = None
    reason: InterruptReason | None = None
    message: str | None = None
    late_ms: float | None = None
    """For sigterm/sigkill: how long after its deadline the signal went out."""
    text: str | None = None
    """For output: the complete lines printed (stdout and stderr, as they came), joined by newlines."""
    cost: float | None = None
    """For spent: the execution's own spend so far."""

    @property
    def at(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp((self.mono_ns + _WALL_OFFSET_NS) / 1e9, tz=_dt.timezone.utc)

    @classmethod
    def from_wire(cls, kind: str, execution_id: str | None, worker_id: int | None, mono_ns: int,
                  data: dict[str, Any] | None) -> "Event":  # fmt: skip
        d = data or {}
        return cls.model_construct(
            kind=EventKind(kind),
            mono_ns=mono_ns,
            execution_id=execution_id,
            worker_id=worker_id,
            pid=d.get("pid"),
            status=ExecutionStatus.from_code(d["status"]) if "status" in d else None,
            stage=Stage.from_code(d["stage"]) if d.get("stage") is not None else None,
            mode=InterruptMode.from_code(d["mode"]) if d.get("mode") else None,
            reason=InterruptReason.from_code(d["reason"]) if d.get("reason") else None,
            message=d.get("message"),
            late_ms=d.get("late_ms"),
            text=d.get("text"),
            cost=d.get("cost"),
        )
