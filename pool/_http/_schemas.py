"""Request and response bodies of the HTTP API: what ``/openapi.json`` documents.

Owns: the wire shape of the gateway. Outcomes are the library's own
:class:`~interrupt_pool.ExecutionResult` (a JSON-able ``value``); the rest are small
models here. Request models forbid unknown fields, so a misspelt field is a 422 that
names it rather than a silently ignored option.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._models import ExecutionResult, WorkerInfo
from ..shared import ExecutionStatus, InterruptMode

__all__ = ("CancelManyRequest", "CancelManyResult", "CancelRequest", "CancelResult", "ErrorBody", "ExecutionDetail",
           "ExecutionList", "ExecutionRow", "Health", "SubmitRequest", "Submitted", "TimelineStep", "WorkerCancelResult",
           "WorkerList")  # fmt: skip

MAX_S = 7 * 86400.0  # a week, as Escalation's grace periods
_AGENT = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
_NO_NUL = r"^[^\x00]+$"
LIVE = ("queued", "running", "cancelling")


class _Model(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)


class ErrorBody(_Model):
    """Every error the gateway answers (4xx, 5xx): one sentence saying what to change."""

    error: str
    detail: Any = None
    """For 422: the validation errors, each with its location (``loc``) and message."""


class SubmitRequest(_Model):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    agent: str = Field(max_length=512, pattern=_AGENT, examples=["mypkg.agents:research"])
    """The agent as ``module:function``, importable by the pool's workers (and by the gateway,
    which checks that its module can be found)."""
    input: Any = None
    """Any JSON value: the agent's ``input`` argument."""
    id: str | None = Field(default=None, min_length=1, max_length=256, pattern=_NO_NUL)
    """Your id for it (unique among live executions); generated if absent."""
    timeout: float | None = Field(default=None, gt=0, le=MAX_S, allow_inf_nan=False)
    """Seconds of running after which it is stopped (reason ``timeout``)."""
    budget: float | None = Field(default=None, ge=0, le=1e15, allow_inf_nan=False)
    """Cost units (``ctx.spend``) after which it is stopped (reason ``budget_exceeded``)."""
    group: str | None = Field(default=None, min_length=1, max_length=256, pattern=_NO_NUL)
    """A group to run it in (created, without a budget, if the pool does not have it)."""
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1)
    """Higher runs first."""


class Submitted(_Model):
    id: str
    status: ExecutionStatus
    url: str
    """Where to read it: ``/v1/executions/{id}``."""


class ExecutionRow(_Model):
    """One execution as the supervisor lists it (live, or in its bounded history)."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    id: str
    status: ExecutionStatus
    worker: int | None = None
    elapsed: float | None = None
    """Seconds since it started (live) or that it ran (ended)."""
    stage: str | None = None
    """The furthest stop stage reached (live) or the stage that ended it."""
    group: str | None = None
    cost: float | None = None
    budget: float | None = None
    priority: int | None = None
    parent: str | None = None
    children: list[str] | None = None


class ExecutionList(_Model):
    items: list[ExecutionRow]
    total: int
    """How many match the filters (before paging)."""
    offset: int
    limit: int
    next_offset: int | None
    """The ``offset`` of the next page; null on the last one."""


class TimelineStep(_Model):
    step: Literal["requested", "observed", "sigterm", "sigkill", "ended"]
    mono_ns: int
    """``time.monotonic_ns()`` on the pool's machine."""
    after_s: float | None
    """Seconds after the request (null for the request itself if unknown)."""


class ExecutionDetail(_Model):
    id: str
    status: ExecutionStatus
    live: bool
    row: ExecutionRow | None = None
    """The supervisor's row for it (worker, elapsed, stage so far, group, cost)."""
    outcome: ExecutionResult | None = None
    """How it ended (null while it is live)."""
    timeline: list[TimelineStep] = []
    """The stop's steps: from its outcome once ended; while it is live, the steps this gateway saw."""


class CancelRequest(_Model):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    mode: InterruptMode = InterruptMode.GRACEFUL
    """graceful: flag, then SIGTERM after the pool's grace, then SIGKILL; immediate: flag and
    SIGTERM now; kill: SIGKILL now."""
    reason: str | None = Field(default=None, max_length=1000)
    """Free text kept as the stop's message (its reason is ``user_cancelled``)."""


class CancelResult(_Model):
    id: str
    cancelled: bool
    """True if it was queued or running (the stop was requested); false if it had ended."""
    outcome: ExecutionResult | None = None
    """With ``wait=true``: how it ended."""
    timeline: list[TimelineStep] = []


class CancelManyRequest(_Model):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    ids: list[str] | None = Field(default=None, max_length=10_000)
    group: str | None = Field(default=None, min_length=1, max_length=256)
    status: list[Literal["queued", "running", "cancelling"]] | None = None
    """Only live executions in these statuses."""
    mode: InterruptMode = InterruptMode.GRACEFUL
    reason: str | None = Field(default=None, max_length=1000)


class CancelManyResult(_Model):
    cancelled: int
    """How many were live and asked to stop."""
    ids: list[str]
    """Those ids (empty when a whole group was stopped in one request)."""


class WorkerList(_Model):
    workers: list[WorkerInfo]


class WorkerCancelResult(_Model):
    worker_id: int
    cancelled: bool
    """True if it ran an execution, which is now being stopped."""
    execution_id: str | None


class Health(_Model):
    reachable: bool
    """Whether the gateway reaches the pool's supervisor now."""
    pool: str
    supervisor_pid: int | None = None
    error: str | None = None
