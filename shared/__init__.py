"""What the supervisor and the workers both use.

The shared-memory flag array and its slot layout (``_flags``), the typed
wire protocol (``_protocol``), the codes that cross process boundaries (``_types``) and
the worker-side context an agent receives (``_context``). It never imports the
rest of ``interrupt_pool``.
"""

from ._checkpoint import CheckpointError, CheckpointInfo
from ._context import Context, InterruptRequest, current
from ._flags import FlagArray
from ._types import (
    ExecutionStatus,
    InterruptMode,
    InterruptReason,
    InterruptSource,
    Interrupted,
    Stage,
)

__all__ = (
    "CheckpointError",
    "CheckpointInfo",
    "Context",
    "ExecutionStatus",
    "FlagArray",
    "InterruptMode",
    "InterruptReason",
    "InterruptSource",
    "InterruptRequest",
    "Interrupted",
    "Stage",
    "current",
)
