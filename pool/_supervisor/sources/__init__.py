"""Stop sources: every reason to stop an execution other than a client's request.

Each source is one small module with one class. It watches executions
through the hooks below and, when its condition holds, asks the one
escalator (``Supervisor._escalate(ex, mode, reason, source, message)``) for a
stop; it never writes a flag or sends a signal itself. Adding a source is
adding a module here and its class to ``SOURCES``: the supervisor calls only
the hooks a source defines, so an unused hook costs nothing per execution.

Hooks (all optional)::

    check(task) -> str | (type, str) | None
                                    refuse a submission, with the sentence the client sees (and
                                    the name of the exception it raises there, ValueError if none)
    submitted(ex)                   an execution was queued (by a client or a parent agent)
    started(ex)                     it began running on a worker (its clocks start)
    escalated(ex, mode, source)     a stop of it was requested or hardened
    blocked(head)                   ``head`` is queued and no worker can take it now
    intercept(ex, status, stage, checkpoint) -> bool
                                    it is about to end: True if the source takes it back instead
    ended(ex, info, value)          it ended; ``info`` is its Ended record (a source may add to it)
    settled(ex, info, value)        after every ``ended``: the record is complete (tree: tell the parent)
    row(ex, row)                    add this source's fields to its ``status`` row
    status(doc)                     add to the ``status`` document
    worker_messages / client_messages: {message class: method name}

The sources: ``budget`` (budget_exceeded: budgets of executions, their
ancestors and groups), ``stall`` (stalled: no progress for stall_timeout),
``tree`` (parent_cancelled: child executions, the cascade, lending a waiting
parent's place), ``priority`` (priority_override: preempt, checkpoint and
requeue). Timeouts, memory limits, client requests, shutdown and the loss of
the owner predate this package and live in the core.
"""

from ._base import Source
from .budget import Budgets
from .priority import Priority
from .stall import Stalls
from .tree import Tree

__all__ = ("SOURCES", "Source")

SOURCES = (Budgets, Stalls, Tree, Priority)
