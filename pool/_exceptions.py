"""The exceptions the public API raises.

Tree::

    BaseException
     └── Interrupted                 raised *inside an agent* when its stop is requested
    Exception
     └── PoolError                   anything the pool reports about an execution or itself
          ├── ExecutionError         an execution did not produce a value; ``.outcome`` has it all
          │    ├── ExecutionInterrupted   it was stopped (cancel, timeout, shutdown)
          │    ├── ExecutionFailed        the agent raised
          │    └── WorkerCrashed          its worker process died (exit code or signal)
          ├── PoolClosed             submit/cancel after shutdown(), or no such pool to connect to
          ├── PoolBroken             the supervisor process died; nothing new can run
          ├── QueueFull              max_queued executions are waiting; submit(block=False) or its timeout
          └── BudgetExceeded         the group submitted to has used up its budget

Bad arguments raise the built-in ``TypeError`` / ``ValueError`` with a
sentence that names the argument and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .shared import ExecutionStatus, Interrupted

if TYPE_CHECKING:
    from ._models import ExecutionResult

__all__ = (
    "BudgetExceeded",
    "ExecutionError",
    "ExecutionFailed",
    "ExecutionInterrupted",
    "Interrupted",
    "PoolBroken",
    "PoolClosed",
    "PoolError",
    "QueueFull",
    "WorkerCrashed",
)


class PoolError(Exception):
    """Base class of everything the pool raises about executions or itself."""


class ExecutionError(PoolError):
    """An execution ended without a value; ``outcome`` is its full ExecutionResult."""

    def __init__(self, message: str, outcome: "ExecutionResult") -> None:
        super().__init__(message)
        self.outcome = outcome


class ExecutionInterrupted(ExecutionError):
    """The execution was stopped before it returned."""


class ExecutionFailed(ExecutionError):
    """The agent raised an exception; ``outcome.error`` has its type, message and traceback."""


class WorkerCrashed(ExecutionError):
    """The worker running the execution died (exit code or signal in ``outcome``)."""


class PoolClosed(PoolError, RuntimeError):
    """The pool was shut down; it takes no new work."""


class PoolBroken(PoolError, RuntimeError):
    """The supervisor process died; the pool cannot run anything any more."""


class QueueFull(PoolError):
    """``max_queued`` executions are already waiting; nothing was submitted."""


class BudgetExceeded(PoolError):
    """The group has used up its budget; nothing was submitted (raise it with ``pool.group``)."""


def error_for(out: "ExecutionResult") -> Exception:
    """The exception that ``result()`` raises for an execution that did not complete."""
    if out.status is ExecutionStatus.INTERRUPTED:
        i = out.interrupt
        how = f" ({i.reason.value}, {i.mode.value}, ended at stage {i.stage.value})" if i and i.stage else ""
        return ExecutionInterrupted(f"execution {out.id!r} was interrupted{how}", out)
    if out.status is ExecutionStatus.FAILED:
        e = out.error
        why = f"{e.type}: {e.message}" if e else "no error was recorded"
        return ExecutionFailed(f"execution {out.id!r} failed: {why}", out)
    return WorkerCrashed(out.error.message if out.error else f"execution {out.id!r} crashed", out)
