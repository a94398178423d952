"""Enumerations and the worker-side exception shared by supervisor and workers.

Owns: the numeric codes that cross process boundaries (in shared-memory words
and msgpack frames). Each enum's integer value is its wire code, so changing a
value is a layout change (bump ``shared._flags.LAYOUT_VERSION``).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Self

__all__ = (
    "ExecutionStatus",
    "InterruptMode",
    "InterruptReason",
    "InterruptSource",
    "Stage",
    "Interrupted",
)


class _CodedEnum(str, enum.Enum):
    """A string enum that also carries a small integer wire code."""

    _value_: str
    code: int  # the member's wire code (set by __new__; not a member itself)

    if TYPE_CHECKING:
        # What type checkers see: a member is *looked up* by its value alone
        # (InterruptMode("graceful")), and its value is the string, not the (value, code)
        # pair it is *defined* with (mypy would read the pair from the class body).
        def __new__(cls, value: str) -> Self: ...

        @property
        def value(self) -> str: ...

    else:

        def __new__(cls, value: str, code: int):
            obj = str.__new__(cls, value)
            obj._value_ = value
            obj.code = code
            return obj

    @classmethod
    def from_code(cls, code: int) -> Self:
        """The member whose wire code is ``code`` (KeyError for an unknown code)."""
        return _BY_CODE[cls][code]  # type: ignore[return-value]  # (no cast: it is on the hot path)

    def __str__(self) -> str:  # "graceful", not "InterruptMode.GRACEFUL"
        return self.value


class ExecutionStatus(_CodedEnum):
    QUEUED = ("queued", 0)
    RUNNING = ("running", 1)
    CANCELLING = ("cancelling", 2)
    COMPLETED = ("completed", 3)
    FAILED = ("failed", 4)
    INTERRUPTED = ("interrupted", 5)
    CRASHED = ("crashed", 6)

    @property
    def terminal(self) -> bool:
        return self.code >= 3


class InterruptMode(_CodedEnum):
    """How hard to stop: each mode starts further along flag → SIGTERM → SIGKILL."""

    GRACEFUL = ("graceful", 1)
    IMMEDIATE = ("immediate", 2)
    KILL = ("kill", 3)


class InterruptReason(_CodedEnum):
    USER_CANCELLED = ("user_cancelled", 1)
    TIMEOUT = ("timeout", 2)
    BUDGET_EXCEEDED = ("budget_exceeded", 3)
    STALLED = ("stalled", 4)
    PARENT_CANCELLED = ("parent_cancelled", 5)
    SHUTDOWN = ("shutdown", 6)
    PRIORITY_OVERRIDE = ("priority_override", 7)
    CUSTOM = ("custom", 8)


class InterruptSource(_CodedEnum):
    USER = ("user", 1)
    SIGNAL = ("signal", 2)
    PROGRAMMATIC = ("programmatic", 3)
    TIMEOUT = ("timeout", 4)
    BUDGET = ("budget", 5)
    SYSTEM = ("system", 6)
    AGENT = ("agent", 7)  # the agent raised Interrupted itself


class Stage(_CodedEnum):
    """The escalation stage that ended an interrupted execution."""

    QUEUED = ("queued", 0)
    FLAG = ("flag", 1)
    SIGTERM = ("sigterm", 2)
    SIGKILL = ("sigkill", 3)


_BY_CODE: dict[type[_CodedEnum], dict[int, _CodedEnum]] = {
    cls: {m.code: m for m in cls}
    for cls in (ExecutionStatus, InterruptMode, InterruptReason, InterruptSource, Stage)
}


class Interrupted(BaseException):
    """Raised inside an agent when a stop of its execution was requested.

    Derives from BaseException (like KeyboardInterrupt and asyncio's
    CancelledError) so that ``except Exception`` in agent code cannot swallow
    it; ``finally`` blocks and context managers still run.
    """

    def __init__(self, message: str = "execution interrupted", *, stage: Stage = Stage.FLAG) -> None:
        super().__init__(message)
        self.stage = stage
        self._from_pool = False  # True when the pool raised it (a stop request), False when the agent did
