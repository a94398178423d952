"""Pydantic models of the public API: tunables, results, snapshots.

Owns: the shape of everything the pool hands back to its user. The client
builds these from supervisor frames (``ExecutionResult.from_wire``); nothing
else constructs them from raw dicts.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from .shared import ExecutionStatus, InterruptMode, InterruptReason, InterruptSource, Stage

__all__ = ("Attempt", "Escalation", "ErrorInfo", "InterruptInfo", "ExecutionResult", "WorkerInfo", "ExecutionInfo", "CheckpointRef",
           "Group", "Preemption", "StopRequest")  # fmt: skip


MAX_GRACE_S = 7 * 86400.0  # a week: longer grace periods are a mistake, and must fit in nanoseconds


class Escalation(BaseModel):
    """How long each stage of a stop may take before the next, harder one.

    ``graceful`` stop: flag, wait ``grace``; SIGTERM, wait ``term_grace``;
    SIGKILL of the worker's process group. ``immediate`` skips the first wait.
    """

    model_config = ConfigDict(frozen=True)

    grace: float = Field(5.0, ge=0.0, le=MAX_GRACE_S, allow_inf_nan=False)
    """Seconds a flagged agent has to stop on its own (at its next ``ctx.check()``)
    before SIGTERM. Longer lets agents save work cleanly; shorter frees stuck
    workers sooner."""

    term_grace: float = Field(2.0, ge=0.0, le=MAX_GRACE_S, allow_inf_nan=False)
    """Seconds after SIGTERM (which raises ``Interrupted`` in the agent, so its
    ``finally`` blocks run) before SIGKILL of the whole process group. Longer
    gives clean-up code time; shorter bounds the worst case."""

    def __init__(self, grace: float = 5.0, term_grace: float = 2.0, **kw: Any) -> None:
        super().__init__(grace=grace, term_grace=term_grace, **kw)


class ErrorInfo(BaseModel):
    """The exception an agent raised, or why its worker died."""

    type: str
    message: str
    traceback: str | None = None


def _ns_to_s(a: int | None, b: int | None) -> float | None:
    if not a or not b:
        return None
    return (b - a) / 1e9


class InterruptInfo(BaseModel):
    """The stop request that ended (or tried to end) an execution, with its timeline.

    Timestamps are ``time.monotonic_ns()`` values (one clock for every process
    on the machine); the ``*_latency`` fields are derived seconds.
    """

    mode: InterruptMode
    reason: InterruptReason
    source: InterruptSource
    message: str | None = None
    stage: Stage | None = None
    requested_ns: int | None = None
    observed_ns: int | None = None
    """When the agent first saw the request (flag read or SIGTERM handler)."""
    sigterm_ns: int | None = None
    sigterm_deadline_ns: int | None = None
    sigkill_ns: int | None = None
    sigkill_deadline_ns: int | None = None
    ended_ns: int | None = None
    shield_ns: int | None = None
    """How long a ``ctx.shield()`` held this stop back (None: no shield was in the way)."""

    @computed_field  # type: ignore[prop-decorator]  # (pydantic's documented way)
    @property
    def observe_latency(self) -> float | None:
        """Seconds from the request to the agent seeing it."""
        return _ns_to_s(self.requested_ns, self.observed_ns)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stop_latency(self) -> float | None:
        """Seconds from the request to the execution having ended."""
        return _ns_to_s(self.requested_ns, self.ended_ns)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def shield_delay(self) -> float | None:
        """Seconds a ``ctx.shield()`` held this stop back (None: none did)."""
        return self.shield_ns / 1e9 if self.shield_ns else None


class CheckpointRef(BaseModel):
    """One checkpoint file of an execution."""

    seq: int
    path: str
    size: int
    """Bytes on disk, header included."""
    time: _dt.datetime

    @classmethod
    def from_wire(cls, w: list[Any] | None) -> "CheckpointRef | None":
        if not w:
            return None
        seq, path, size, wall = w
        return cls.model_construct(seq=seq, path=path, size=size,
                                   time=_dt.datetime.fromtimestamp(wall, tz=_dt.timezone.utc))  # fmt: skip


class Attempt(BaseModel):
    """One earlier run of an execution that was retried (``submit(retries=...)``)."""

    status: ExecutionStatus
    error: ErrorInfo | None = None
    worker_id: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: _dt.datetime | None = None
    ended_at: _dt.datetime | None = None


class Preemption(BaseModel):
    """One time a preemptible execution was stopped for higher-priority work and requeued."""

    at: _dt.datetime
    stage: Stage | None = None
    """The stage that stopped it (flag: it saved its state at a check)."""
    checkpoint_seq: int | None = None
    """The checkpoint it resumed from (None: it had saved none and started over)."""


class ExecutionResult(BaseModel):
    """How one execution ended: exactly one per submitted execution."""

    id: str
    status: ExecutionStatus
    value: Any = None
    error: ErrorInfo | None = None
    interrupt: InterruptInfo | None = None
    worker_id: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    """Exit status of a worker that died on its own (CRASHED)."""
    signal: int | None = None
    """Signal number that killed the worker (CRASHED, or INTERRUPTED at stage sigkill)."""
    started_at: _dt.datetime | None = None
    ended_at: _dt.datetime | None = None
    checkpoint: CheckpointRef | None = None
    """The newest complete checkpoint this execution left (or resumed from)."""
    resume: str | None = None
    """None if resume was not asked for; "restored" if it started from ``resumed_from``;
    "fresh" if resume was asked for but its id had no checkpoint, so it started from scratch."""
    resumed_from: CheckpointRef | None = None
    value_dropped: bool = False
    """True when this outcome came from the supervisor's history, which keeps results only up to
    a byte budget: the value was too large to keep (its submitting client received it)."""
    cost: float = 0.0
    """What it spent (``ctx.spend``), its descendants' spend included."""
    own_cost: float = 0.0
    """What its own agent spent."""
    budget: float | None = None
    group: str | None = None
    priority: int = 0
    parent_id: str | None = None
    """The execution that started it with ``ctx.submit`` (None for one a client submitted)."""
    children: list[str] = []
    """The ids of the child executions it started, in order."""
    preemptions: list[Preemption] = []
    attempts: list[Attempt] = []
    """The earlier runs of a retried execution, oldest first (this outcome is the last run's)."""

    @property
    def ok(self) -> bool:
        return self.status is ExecutionStatus.COMPLETED

    @classmethod
    def from_wire(cls, d: dict[str, Any], value: Any = None) -> "ExecutionResult":
        """Build from the supervisor's ENDED frame (trusted: no validation)."""
        err = d.get("error")
        intr = d.get("interrupt")
        return cls.model_construct(
            id=d["id"],
            status=ExecutionStatus.from_code(d["status"]),
            value=value,
            error=ErrorInfo.model_construct(type=err[0], message=err[1], traceback=err[2]) if err else None,
            interrupt=_interrupt_from_wire(intr) if intr else None,
            worker_id=d.get("worker_id"),
            pid=d.get("pid"),
            exit_code=d.get("exit_code"),
            signal=d.get("signal"),
            started_at=_wall(d.get("started_ns")),
            ended_at=_wall(d.get("ended_wall_ns")),
            checkpoint=CheckpointRef.from_wire(d.get("checkpoint")),
            resume=(("restored" if d.get("resumed_from") else "fresh") if d.get("resume") else None),
            resumed_from=CheckpointRef.from_wire(d.get("resumed_from")),
            value_dropped=bool(d.get("value_dropped")),
            cost=d.get("cost", 0.0),
            own_cost=d.get("own_cost", 0.0),
            budget=d.get("budget"),
            group=d.get("group"),
            priority=d.get("priority", 0),
            parent_id=d.get("parent"),
            children=d.get("children") or [],
            preemptions=[Preemption.model_construct(at=_wall(p["at"]), checkpoint_seq=p.get("checkpoint"),
                                                    stage=Stage.from_code(p["stage"]) if p.get("stage") is not None
                                                    else None) for p in d.get("preemptions") or ()],  # fmt: skip
            attempts=[Attempt.model_construct(
                status=ExecutionStatus.from_code(a["status"]), worker_id=a.get("worker_id"), pid=a.get("pid"),
                error=ErrorInfo.model_construct(type=a["error"][0], message=a["error"][1], traceback=a["error"][2])
                if a.get("error") else None, exit_code=a.get("exit_code"), signal=a.get("signal"),
                started_at=_wall(a.get("started_ns")), ended_at=_wall(a.get("ended_wall_ns")))
                for a in d.get("attempts") or ()],  # fmt: skip
        )


def _interrupt_from_wire(d: dict[str, Any]) -> InterruptInfo:
    return InterruptInfo.model_construct(
        mode=InterruptMode.from_code(d["mode"]),
        reason=InterruptReason.from_code(d["reason"]),
        source=InterruptSource.from_code(d["source"]),
        message=d.get("message"),
        stage=Stage.from_code(d["stage"]) if d.get("stage") is not None else None,
        requested_ns=d.get("requested_ns"),
        observed_ns=d.get("observed_ns") or None,
        sigterm_ns=d.get("sigterm_ns"),
        sigterm_deadline_ns=d.get("sigterm_deadline_ns"),
        sigkill_ns=d.get("sigkill_ns"),
        sigkill_deadline_ns=d.get("sigkill_deadline_ns"),
        ended_ns=d.get("ended_ns"),
        shield_ns=d.get("shield_ns"),
    )


def _wall(ns: int | None) -> _dt.datetime | None:
    if not ns:
        return None
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc)


class StopRequest(BaseModel):
    """A stop about to be made: what ``before_interrupt`` is asked about, and what an
    interrupt source (``Pool.add_interrupt_source``) may return instead of a bare id."""

    execution_id: str
    mode: InterruptMode = InterruptMode.GRACEFUL
    reason: InterruptReason = InterruptReason.CUSTOM
    source: InterruptSource = InterruptSource.PROGRAMMATIC
    message: str | None = None


class Group(BaseModel):
    """A named set of executions sharing a budget (``Pool.group``); cancelled together."""

    name: str
    budget: float | None = None
    spent: float = 0.0
    live: int = 0
    """Members queued or running now."""
    submitted: int = 0
    exhausted: bool = False
    """Its budget is used up: its members were stopped and it takes no new ones until the budget is raised."""


class WorkerInfo(BaseModel):
    """One worker process as the supervisor sees it."""

    id: int
    pid: int
    state: str  # starting | idle | busy | stopping
    execution_id: str | None = None


class ExecutionInfo(BaseModel):
    """A point-in-time view of one execution."""

    id: str
    status: ExecutionStatus
    worker_id: int | None = None
