"""Child executions an agent starts with ``ctx.submit`` / ``ctx.map``: the worker side.

Owns: the handles of the running execution's children and their ends as the
supervisor reports them (``ChildEnded`` frames, which the Context's channel
reader routes here). A child is an execution like any other: queued in the
same pool, run by any worker, stopped through the same escalation; the
supervisor links it to its parent, so stopping the parent stops it (reason
``parent_cancelled``) and its spend counts against the parent's budget.

Capacity rule: a parent that blocks waiting on a child (``result()``,
``outcome()``, ``ctx.map``) tells the supervisor (``Waiting``), which lends
that worker's place to a stand-in worker until the parent goes on. So at most
``workers`` executions run agent code at once, and a tree wider and deeper
than the pool still completes; the bound is the pool's ``capacity`` (flag
slots), which a waiting parent keeps.
"""

from __future__ import annotations

import pickle
import threading
import time
import weakref
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Generator

if TYPE_CHECKING:
    from ._models import ExecutionResult
    from .shared._context import Context

from ._agents import build_task, check_id
from .shared import ExecutionStatus, InterruptMode
from .shared import _protocol as P

__all__ = ("ChildExecution", "Tree")


class ChildExecution:
    """A handle on one child execution, valid while its parent runs."""

    __slots__ = ("id", "_tree", "_ctx", "_info", "_value", "_outcome", "__weakref__")

    def __init__(self, tree: "Tree", ctx: "Context", id: str) -> None:
        self.id = id
        self._tree, self._ctx = tree, ctx
        self._info: dict[str, Any] | None = None  # the Ended info, once it has ended
        self._value: bytes | None = None
        self._outcome: ExecutionResult | None = None

    def __repr__(self) -> str:
        return f"<ChildExecution {self.id!r} {'ended' if self._info else 'live'}>"

    def done(self) -> bool:
        """True once it has ended (reads what the supervisor has sent so far, without blocking)."""
        if self._info is None and not self._ctx._done:
            self._ctx._read_channel()
        return self._info is not None

    def outcome(self, timeout: float | None = None) -> "ExecutionResult":
        """Wait for its end and return its ExecutionResult (never raises for its failure).
        A stop of the parent raises Interrupted here, as anywhere in the agent."""
        self._tree.wait(self._ctx, self, timeout)
        info = self._info
        assert info is not None  # wait() returned: it has ended
        if self._outcome is None:
            from ._models import ExecutionResult

            value = None
            if self._value is not None:
                try:
                    value = pickle.loads(self._value)
                except Exception as exc:
                    info["status"] = ExecutionStatus.FAILED.code  # its value cannot be read here
                    info["error"] = ["UnpicklingError", f"the result of child {self.id!r} cannot be "
                                     f"unpickled: {type(exc).__name__}: {exc}", None]  # fmt: skip
            self._outcome = ExecutionResult.from_wire(info, value)
        return self._outcome

    def result(self, timeout: float | None = None) -> Any:
        """Its value, or raise ExecutionInterrupted / ExecutionFailed / WorkerCrashed."""
        out = self.outcome(timeout)
        if out.ok:
            return out.value
        from ._exceptions import error_for

        raise error_for(out)

    def __await__(self) -> Generator[Any, None, Any]:
        """``await child`` in an async agent: its value (or its error), waited for on a thread so
        the agent's event loop goes on (a stop of the agent still cancels it at this await)."""
        import asyncio

        return asyncio.get_running_loop().run_in_executor(None, self.result).__await__()

    def cancel(self, mode: InterruptMode | str = InterruptMode.GRACEFUL, message: str | None = None) -> bool:
        """Stop this child (and its own children). False if it has already ended."""
        if self._info is not None or self._ctx._done:
            return False
        code = InterruptMode(mode.lower() if isinstance(mode, str) else mode).code
        self._tree.send(self._ctx, P.CancelChild(self._ctx.execution_id, self.id, code, message))
        return True


class Tree:
    """The running execution's children; one per worker, reset for each execution."""

    def __init__(self, chan: P.Channel, critical: Callable[[], AbstractContextManager[object]], max_frame: int,
                 checkpoints: bool) -> None:  # fmt: skip
        self.chan, self.critical, self.max_frame, self.checkpoints = chan, critical, max_frame, checkpoints
        self.refs: dict[Any, tuple[str, bytes | None]] = {}  # function -> (spec, blob), as the Pool keeps it
        # The handles the agent still holds (a dropped one, and the value it would have received, go).
        self.children: weakref.WeakValueDictionary[str, ChildExecution] = weakref.WeakValueDictionary()
        self.seq = 0
        self.lock = threading.Lock()  # the running execution's ctx uses these two (see Context)
        self.cond = threading.Condition()

    def reset(self, children_before: int) -> None:
        """A new execution starts; its children are numbered on from ``children_before``
        (a resumed execution keeps its numbering, so a new child never reuses a live id)."""
        if self.children:
            self.children.clear()  # (made once: a WeakValueDictionary costs microseconds to create)
        self.seq = children_before

    def send(self, ctx: "Context", msg: Any) -> None:
        with self.critical():
            self.chan.send(msg)

    def submit(self, ctx: "Context", fn: Callable[..., Any] | str, input: Any,
               options: dict[str, Any]) -> ChildExecution:  # fmt: skip
        allowed = {"id", "timeout", "budget", "stall_timeout", "priority", "preemptible", "escalation", "resume",
                   "memory_limit", "on_interrupt"}  # fmt: skip
        unknown = set(options) - allowed
        if unknown:
            raise TypeError(f"ctx.submit() got unknown options {sorted(unknown)}; it takes {sorted(allowed)}")
        if len(self.refs) > 256:
            self.refs.clear()  # bounded: closures made per call do not pile up
        self.seq += 1
        id = options.pop("id", None)
        id = f"{ctx.execution_id}.{self.seq}" if id is None else check_id(id)
        options.setdefault("priority", 0)
        task, defs = build_task(fn, input, id, self.refs, self.max_frame, checkpoints=self.checkpoints, **options)
        handle = ChildExecution(self, ctx, id)
        if id in self.children and not self.children[id].done():
            raise ValueError(f"child id {id!r} is already in use by a live child of {ctx.execution_id!r}")
        self.children[id] = handle
        with self.critical():
            self.chan.send_many([*defs, P.SubmitChild(ctx.execution_id, task)])
        return handle

    def on_ended(self, msg: P.ChildEnded) -> None:
        """A ChildEnded frame for the running execution (called by its channel reader)."""
        handle = self.children.get(msg.id)
        if handle is not None and handle._info is None:
            handle._value = msg.value
            handle._info = msg.info

    def wait(self, ctx: "Context", handle: ChildExecution, timeout: float | None) -> None:
        if handle._info is not None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._lend(ctx, +1)
        try:
            ended = ctx._wait_until(handle.done, deadline)
        finally:
            self._lend(ctx, -1)
        if not ended:
            raise TimeoutError(f"child execution {handle.id!r} is still live after {timeout} s")

    def _lend(self, ctx: "Context", delta: int) -> None:
        """Tell the supervisor when the first thread starts, and the last stops, waiting on children."""
        with ctx._lock:
            ctx._waiting += delta
            edge = ctx._waiting == (1 if delta > 0 else 0)
        if edge and not ctx._done:
            try:
                self.send(ctx, P.Waiting(ctx.execution_id, delta > 0))
            except OSError:
                pass  # the supervisor is gone; PDEATHSIG ends us
