"""interrupt-pool: run many AI agents at once and stop any one of them on demand.

Public surface (everything else is private)::

    from interrupt_pool import Pool, Escalation, InterruptMode, InterruptReason, ExecutionStatus, Interrupted

Names are loaded on first use, so that the supervisor process (which imports
this package to reach its own module) starts without the API's dependencies.
"""

import importlib
import typing

__version__ = "0.2.0"

# public name -> the private module that defines it
_WHERE = {
    "CheckpointError": ".shared",
    "Context": ".shared",
    "ExecutionStatus": ".shared",
    "InterruptMode": ".shared",
    "InterruptReason": ".shared",
    "InterruptRequest": ".shared",
    "InterruptSource": ".shared",
    "Interrupted": ".shared",
    "Stage": ".shared",
    "current": ".shared",
    "Executor": "._executor",
    "Event": "._events",
    "EventKind": "._events",
    "ExecutionError": "._exceptions",
    "ExecutionFailed": "._exceptions",
    "ExecutionInterrupted": "._exceptions",
    "PoolBroken": "._exceptions",
    "PoolClosed": "._exceptions",
    "PoolError": "._exceptions",
    "QueueFull": "._exceptions",
    "BudgetExceeded": "._exceptions",
    "WorkerCrashed": "._exceptions",
    "CheckpointRef": "._models",
    "ErrorInfo": "._models",
    "Escalation": "._models",
    "ExecutionInfo": "._models",
    "ExecutionResult": "._models",
    "InterruptInfo": "._models",
    "WorkerInfo": "._models",
    "Group": "._models",
    "Preemption": "._models",
    "Attempt": "._models",
    "StopRequest": "._models",
    "ChildExecution": "._children",
    "Execution": "._pool",
    "Pool": "._pool",
}

__all__ = tuple(sorted(_WHERE))


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'interrupt_pool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if typing.TYPE_CHECKING:  # what type checkers and IDEs see; "X as X" re-exports X explicitly (mypy --strict)
    from ._events import Event as Event, EventKind as EventKind
    from ._children import ChildExecution as ChildExecution
    from ._exceptions import (
        BudgetExceeded as BudgetExceeded,
        ExecutionError as ExecutionError,
        ExecutionFailed as ExecutionFailed,
        ExecutionInterrupted as ExecutionInterrupted,
        PoolBroken as PoolBroken,
        PoolClosed as PoolClosed,
        PoolError as PoolError,
        QueueFull as QueueFull,
        WorkerCrashed as WorkerCrashed,
    )
    from ._models import (
        Attempt as Attempt,
        CheckpointRef as CheckpointRef,
        ErrorInfo as ErrorInfo,
        Escalation as Escalation,
        ExecutionInfo as ExecutionInfo,
        ExecutionResult as ExecutionResult,
        Group as Group,
        InterruptInfo as InterruptInfo,
        Preemption as Preemption,
        StopRequest as StopRequest,
        WorkerInfo as WorkerInfo,
    )
    from ._pool import Execution as Execution, Pool as Pool
    from .shared import (
        CheckpointError as CheckpointError,
        Context as Context,
        ExecutionStatus as ExecutionStatus,
        InterruptMode as InterruptMode,
        InterruptReason as InterruptReason,
        InterruptRequest as InterruptRequest,
        InterruptSource as InterruptSource,
        Interrupted as Interrupted,
        Stage as Stage,
        current as current,
    )
    from ._executor import Executor as Executor
