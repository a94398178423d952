"""interrupt-pool: run many AI agents at once and stop any one of them on demand.

Public surface (everything else is private)::

    from pool import Pool, Escalation, InterruptMode, InterruptReason, ExecutionStatus, Interrupted
"""

from shared import (
    CheckpointError,
    Context,
    ExecutionStatus,
    InterruptMode,
    InterruptReason,
    InterruptRequest,
    InterruptSource,
    Interrupted,
    Stage,
)

from ._events import Event, EventKind
from ._exceptions import (
    ExecutionError,
    ExecutionFailed,
    ExecutionInterrupted,
    PoolBroken,
    PoolClosed,
    PoolError,
    WorkerCrashed,
)
from ._models import CheckpointRef, ErrorInfo, Escalation, ExecutionInfo, ExecutionResult, InterruptInfo, WorkerInfo
from ._pool import Execution, Pool

__version__ = "0.1.0"

__all__ = (
    "CheckpointError",
    "CheckpointRef",
    "Context",
    "ErrorInfo",
    "Escalation",
    "Event",
    "EventKind",
    "Execution",
    "ExecutionError",
    "ExecutionFailed",
    "ExecutionInfo",
    "ExecutionInterrupted",
    "ExecutionResult",
    "ExecutionStatus",
    "InterruptInfo",
    "InterruptMode",
    "InterruptReason",
    "InterruptRequest",
    "InterruptSource",
    "Interrupted",
    "Pool",
    "PoolBroken",
    "PoolClosed",
    "PoolError",
    "Stage",
    "WorkerCrashed",
    "WorkerInfo",
)
