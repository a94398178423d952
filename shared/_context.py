"""The worker-side view of one execution: the ``ctx`` an agent receives.

Owns: the agent's reads of its slot (the fast path of :meth:`Context.check`)
and the one write a worker makes to the control part of a slot, the
``observed_ns`` stamp. The stop request's details (its free-text message)
arrive on the worker's channel, which the supervisor writes *before* it sets
the flag; the same channel is the doorbell that wakes :meth:`Context.sleep`.

Threads: every method may be called from any thread of the agent. Reads of the
channel are serialised; when one thread reads the stop's details it also
writes the worker's wake pipe, which every sleeping thread watches, so a stop
wakes all sleepers. Checkpoints are serialised (one sequence). Library work
that must not be cut in half by SIGTERM (a checkpoint write, a frame) runs
inside the worker's *critical section*, which defers the SIGTERM's
``Interrupted`` to its end.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NamedTuple

from ._checkpoint import CheckpointInfo, CheckpointStore
from ._flags import COST, OBSERVED_NS, PENDING, PROGRESS, REASON, REQUESTED_NS, SHIELD
from ._types import InterruptMode, InterruptReason, InterruptSource, Interrupted, Stage
from . import _protocol as P

if TYPE_CHECKING:  # types only: this package never imports the rest of interrupt_pool at run time
    from .._children import ChildExecution

__all__ = ("Context", "InterruptRequest", "current")

_STOPPED = (1,)  # what Context._flag becomes once a stop's details have arrived (see _read_locked)
_current: "Context | None" = None  # the execution this worker runs now; written only by the worker's loop


def current() -> "Context":
    """The ``ctx`` of the execution running in this worker, from any of its threads: for
    functions that take no ``ctx`` (``Executor.submit(fn, ...)``) and for tools deep in a
    call stack. RuntimeError outside an execution (e.g. in the process that submits)."""
    ctx = _current
    if ctx is None:
        raise RuntimeError("interrupt_pool.current() is only available inside an execution, in a worker of a pool "
                           "(it is None in the process that submits work); pass values to the function instead")
    return ctx



class InterruptRequest(NamedTuple):
    """What the supervisor asked for when it stopped this execution."""

    mode: InterruptMode
    reason: InterruptReason
    source: InterruptSource
    message: str | None
    requested_ns: int  # time.monotonic_ns() in the supervisor when it was written


class ExecutionCheckpoints:
    """One execution's checkpoints, worker side: the store, the sequence floor and
    what was restored. A fresh (not resumed) execution never sees checkpoints an
    earlier execution of the same id left: its floor is the next sequence number."""

    __slots__ = ("store", "resume", "floor", "latest", "restored_from", "_chan", "_lock")

    def __init__(self, root, keep: int, execution_id: str, resume: bool, chan):
        self.store = CheckpointStore(root, execution_id, keep)
        self.resume = resume
        self.floor: int | None = None
        self.latest: CheckpointInfo | None = None
        self.restored_from: CheckpointInfo | None = None
        self._chan = chan
        self._lock = threading.Lock()  # agent threads checkpoint one at a time: one sequence, one temp file

    def _min_seq(self) -> int:
        if self.floor is None:
            self.floor = 1 if self.resume else self.store.next_seq()
        return self.floor

    def save(self, state, durable: bool) -> CheckpointInfo:
        with self._lock:
            self._min_seq()  # fixed before our first write
            self.latest = self.store.write(state, durable, before_commit=self._announce, skip_if_unchanged=True)
            return self.latest

    def _announce(self, info: CheckpointInfo) -> None:
        # Before os.replace: a kill after the file became visible is always known.
        self._chan.send(P.CheckpointAnnounce(self.store.execution_id, *info.to_wire()))

    def newest(self):
        return self.store.newest(min_seq=self._min_seq())


class Context:
    """Handed to every agent as ``ctx``; valid only during its execution.

    ``ctx.state`` is the agent's own slot for its work in progress: whatever it
    holds when the execution is stopped (flag or SIGTERM) is checkpointed,
    unless an ``on_interrupt(ctx, state)`` hook decides otherwise.
    """

    __slots__ = ("_words", "_ctl", "_flag", "_armed", "_chan", "execution_id", "worker_id", "_details", "_pending",
                 "_ckpt", "_in_hook", "state", "_wake", "_critical", "_read_lock", "_done", "_allowance", "_spent",
                 "_lock", "_shield_depth", "_shield_since", "shield_ns", "_held", "_tree", "_cond", "_waiting",
                 "_child_ended", "_verdicts")  # fmt: skip

    def __init__(self, words: memoryview, control_index: int, armed: int, chan: P.Channel, execution_id: str,
                 worker_id: int, checkpoints: ExecutionCheckpoints | None = None, wake: tuple[int, int] | None = None,
                 critical: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
                 allowance: float | None = None, tree: Any = None) -> None:  # fmt: skip
        self._words = words
        self._ctl = control_index
        # A one-word view of the slot's pending word (0 until a stop is requested): the
        # fast path then costs one attribute load and one constant-index read.
        self._flag: memoryview | tuple[int] = words[control_index + PENDING : control_index + PENDING + 1]
        self._armed = armed
        self._chan = chan
        self.execution_id = execution_id
        self.worker_id = worker_id
        self._details: dict | None = None
        self._pending: list = []  # frames read off the channel that are not ours to handle
        self._ckpt = checkpoints
        self._in_hook = False
        self.state: Any = None
        self._wake = wake  # (read fd, write fd) of the worker's wake pipe: readable once a stop arrived
        self._critical = critical  # context manager: SIGTERM waits for its end
        self._read_lock = getattr(chan, "read_lock", None) or threading.Lock()  # the worker's, shared with its loop
        self._done = False  # its execution has ended: a thread that outlived it must not read the channel
        self._allowance = allowance  # spend at which it stops itself (its budget or one above it); None: no limit
        self._spent = 0.0  # cost spent in this run
        self._verdicts = 0  # crossed Spend frames not answered yet (by an Allowance, or by the stop)
        # Spend totals and shield depth (from any thread); notified when a channel reader lets go or
        # routes a child's end. A worker runs one execution at a time, so it lends every one the same two.
        self._lock = tree.lock if tree is not None else threading.Lock()
        self._cond = tree.cond if tree is not None else threading.Condition()
        self._shield_depth = 0
        self._shield_since = 0  # monotonic ns the outermost shield was entered
        self.shield_ns = 0  # how long shields held a stop of this execution back, in all
        self._held = False  # a stop arrived inside a shield: it is delivered when the shield ends
        self._tree = tree  # the worker's child-execution support (None outside a worker)
        self._waiting = 0  # threads blocked on children (the supervisor lends our worker's place meanwhile)
        self._child_ended = tree.on_ended if tree is not None else None  # routes ChildEnded frames
        words[control_index + PROGRESS] = time.monotonic_ns()

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop of this execution was requested.

        The fast path is one read of the slot's pending word and one test.
        """
        if self._flag[0]:
            self._stop(Stage.FLAG)

    @property
    def interrupted(self) -> bool:
        """True once a stop of this execution has been requested (does not raise)."""
        # The slot is re-armed (pending cleared) only after this execution ended.
        return self._flag[0] != 0

    @property
    def interrupt(self) -> InterruptRequest | None:
        """The stop request's details, or None while none was made."""
        if not self.interrupted and self._details is None:
            return None
        self._read_channel()
        w, b = self._words, self._ctl
        d = self._details or {}
        mode = d.get("mode") or (w[b] & 0xFF)
        reason = w[b + REASON]
        return InterruptRequest(
            mode=InterruptMode.from_code(mode),
            reason=InterruptReason.from_code(d.get("reason") or (reason >> 8) or 1),
            source=InterruptSource.from_code(d.get("source") or (reason & 0xFF) or 3),
            message=d.get("message"),
            requested_ns=d.get("requested_ns") or w[b + REQUESTED_NS],
        )

    def sleep(self, seconds: float) -> None:
        """Sleep like ``time.sleep``, but end early (within about 1 ms) when a
        stop is requested, by raising :class:`Interrupted` like :meth:`check`.
        Safe from any thread: a stop wakes every sleeping thread."""
        if self._done:
            raise Interrupted(f"execution {self.execution_id!r} has ended; a thread it left behind stops here")
        self.heartbeat()
        deadline = time.monotonic() + max(0.0, seconds)
        self._wait_until(lambda: False, deadline)
        self.heartbeat()

    def _wait_until(self, done, deadline: float | None) -> bool:
        """Block until ``done()`` (True) or ``deadline`` (False), reading the channel: a stop
        raises Interrupted (unless a shield holds it), a child's end is routed. One thread
        reads the channel at a time; the others wait on ``_cond``, which every reader
        notifies when it lets go, so no wake-up is lost and nobody polls."""
        chan_fd = self._chan.fileno()
        while True:
            if self._done:
                raise Interrupted(f"execution {self.execution_id!r} has ended; a thread it left behind stops here")
            self.check()
            if self._details is not None:  # another thread read the doorbell for us
                self._stop(Stage.FLAG)
            if done():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            # A stop held by a shield leaves the wake pipe readable: then only the channel is watched.
            fds = (chan_fd, self._wake[0]) if self._wake and not self._held else (chan_fd,)
            with self._cond:
                if not self._read_lock.acquire(blocking=False):
                    self._cond.wait(remaining)  # a reader is at work: it notifies when it lets go
                    continue
            try:
                readable, _, _ = select.select(fds, (), (), remaining)
                if chan_fd in readable:
                    self._read_locked()
            finally:
                with self._cond:
                    self._read_lock.release()
                    self._cond.notify_all()

    # -- budgets, progress, shields ------------------------------------------

    def heartbeat(self) -> None:
        """Mark progress: an execution with a ``stall_timeout`` is stopped as stalled only
        after that long without any. One store to shared memory; no frame."""
        self._words[self._ctl + PROGRESS] = time.monotonic_ns()

    def spend(self, amount: float, note: str | None = None) -> float:
        """Add ``amount`` (in whatever unit the pool's budgets use: dollars, tokens) to this
        execution's cost and return its total. Raises :class:`Interrupted` (reason
        ``budget_exceeded``) once its budget, or a budget above it (its parent's, its
        group's), is used up. Also marks progress."""
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"ctx.spend(amount): amount must be a finite number >= 0, got {amount!r}")
        if note is not None and not isinstance(note, str):
            raise TypeError(f"ctx.spend(note=...): note must be a string or None, got {type(note).__name__}")
        if self._done:
            raise RuntimeError(f"execution {self.execution_id!r} has ended; its cost can no longer change")
        now = time.monotonic_ns()
        with self._lock:
            self._spent += float(amount)
            total = self._spent
            self._words[self._ctl + COST] = struct.unpack("<Q", struct.pack("<d", total))[0]
            self._words[self._ctl + PROGRESS] = now
            crossed = self._allowance is not None and total >= self._allowance and not self._in_hook
            if crossed:
                self._verdicts += 1  # an Allowance frame, or the stop, answers this one
            with self._critical():
                try:
                    self._chan.send(P.Spend(self.execution_id, total, note, now, crossed))
                except OSError:
                    pass  # the supervisor is gone; PDEATHSIG ends us
        if crossed:
            # The supervisor decides (a budget may have been raised meanwhile): it stops us (the flag,
            # with reason budget_exceeded, raised right here) or sends a new allowance. One round trip,
            # only when a budget is reached.
            self._wait_until(lambda: self._verdicts == 0 or self._held, None)
        if not self._in_hook:
            self.check()
        return total
    @property
    def cost(self) -> float:
        """What this run of the execution has spent so far (``ctx.spend``)."""
        return self._spent

    @contextlib.contextmanager
    def shield(self) -> Iterator[Context]:
        """A critical section (a payment, a commit) that a stop waits for: inside it,
        ``check()`` does not raise and a SIGTERM is held; the stop is delivered as the
        outermost shield ends. The stop's SIGKILL deadline still applies, so a shield
        can delay a stop but never prevent it. The outcome records the delay."""
        if self._done:
            raise RuntimeError(f"execution {self.execution_id!r} has ended; a thread it left behind cannot "
                               "enter a shield")  # fmt: skip
        with self._lock:
            self._shield_depth += 1
            if self._shield_depth == 1:
                self._shield_since = self._words[self._ctl + SHIELD] = time.monotonic_ns()
        outermost = False
        with self._critical():  # a SIGTERM waits for the end of the section
            try:
                yield self
            finally:
                with self._lock:
                    self._shield_depth -= 1
                    outermost = self._shield_depth == 0
                    if outermost:
                        self._words[self._ctl + SHIELD] = 0
                        if self.interrupted or self._held:
                            since = max(self._shield_since, self._words[self._ctl + REQUESTED_NS] or 0)
                            self.shield_ns += max(0, time.monotonic_ns() - since)
                        self._held = False
        if outermost and not self._in_hook:
            self.check()  # the stop it held, now

    # -- child executions ----------------------------------------------------

    def submit(self, fn: Callable[..., Any] | str, input: Any = None, **options: Any) -> ChildExecution:
        """Start a child execution of ``fn(ctx, input)`` in the same pool and return its
        handle (``result()``, ``outcome()``, ``cancel()``). Stopping this execution stops
        its children; its budget covers their spend. Options as ``Pool.submit``:
        ``id``, ``timeout``, ``budget``, ``stall_timeout``, ``priority``, ``preemptible``,
        ``escalation``, ``resume``, ``memory_limit``."""
        if self._tree is None:
            raise RuntimeError("ctx.submit works only inside an agent run by a Pool")
        if self._done:
            raise RuntimeError(f"execution {self.execution_id!r} has ended; it cannot start children")
        return self._tree.submit(self, fn, input, options)

    def map(self, fn: Callable[..., Any] | str, inputs: Iterable[Any], **options: Any) -> list[Any]:
        """Run ``fn`` over ``inputs`` as child executions and return their values in order;
        the first that does not complete raises, after the others were cancelled."""
        children = [self.submit(fn, x, **options) for x in inputs]
        try:
            return [child.result() for child in children]
        except BaseException:
            for child in children:
                child.cancel()
            raise

    # -- checkpoints -----------------------------------------------------

    def checkpoint(self, state: Any, *, durable: bool = True) -> CheckpointInfo:
        """Save ``state`` (msgpack-able, plus tuples, sets, datetimes, UUIDs, Decimals,
        pydantic models) as this execution's newest checkpoint, then check for a stop
        request: a natural stopping point. ``durable=False`` skips the fsyncs (the
        last write may be lost to a power cut, never to a crash of this process).
        Raises ``CheckpointError`` naming the path of a value that cannot be saved."""
        info = self._save(state, durable)
        if not self._in_hook:
            self.check()
        return info

    def _save(self, state: Any, durable: bool) -> CheckpointInfo:
        """:meth:`checkpoint` without its check: for library code that saves from a thread
        where a raised stop would land in someone else's machinery (LangGraph's savers)."""
        if self._ckpt is None:
            raise RuntimeError(f"execution {self.execution_id!r} has no checkpoints: its pool was made with "
                               "checkpoint_dir=None, or it runs as an item of a chunk (map with a chunksize); "
                               "give the pool a checkpoint_dir, or map with chunksize=1")
        with self._critical():  # never a half-written file: a SIGTERM waits for the end of the write
            info = self._ckpt.save(state, durable)
        self.heartbeat()
        return info

    def restore(self) -> Any:
        """The state of this execution's newest complete checkpoint, or None. A
        resumed execution starts with the checkpoints its id saved before."""
        if self._ckpt is None:
            return None
        found = self._ckpt.newest()
        return None if found is None else found[1]

    # -- slow path -------------------------------------------------------

    def _read_channel(self) -> None:
        if self._done or not self._read_lock.acquire(blocking=False):
            return  # another thread is reading it: it will wake us through the wake pipe
        try:
            self._read_locked()
        finally:
            with self._cond:
                self._read_lock.release()
                self._cond.notify_all()

    def _read_locked(self) -> None:
        """Route what the channel holds now; the caller holds the read lock."""
        if self._done:
            return
        for msg in self._chan.poll():
            kind = type(msg)
            if kind is P.Allowance and msg.id == self.execution_id:
                with self._lock:
                    self._allowance = msg.allowance
                    self._verdicts = max(0, self._verdicts - 1)
                with self._cond:
                    self._cond.notify_all()
                continue
            if kind is P.ChildEnded and msg.parent == self.execution_id and self._child_ended is not None:
                self._child_ended(msg)
                with self._cond:
                    self._cond.notify_all()
                continue
            if kind is P.Interrupt and msg.id == self.execution_id and msg.armed == self._armed:
                self._details = {
                    "mode": msg.mode,
                    "reason": msg.reason,
                    "source": msg.source,
                    "message": msg.message,
                    "requested_ns": msg.requested_ns,
                }
                # The supervisor sends the details just before it writes the flag: a thread woken by
                # them may return and reach a check() before that store is visible. From here on
                # the check reads this stand-in instead, so it raises all the same.
                self._flag = _STOPPED
                if self._wake:
                    os.write(self._wake[1], b"!")  # every sleeping thread wakes
            else:
                self._pending.append(msg)

    def _observe(self) -> None:
        """Stamp the first sight of the request in the slot and tell the supervisor
        (for the live event stream), inside the critical section: a frame cut in
        half by SIGTERM's Interrupted would corrupt the channel."""
        slot_observed = self._ctl + OBSERVED_NS
        if self._words[slot_observed] == 0:
            now = self._words[slot_observed] = time.monotonic_ns()
            with self._critical():
                try:
                    self._chan.send(P.Observed(self.execution_id, now))
                except OSError:
                    pass  # the supervisor is gone; PDEATHSIG ends us

    def _stop(self, stage: Stage) -> None:
        word = self._words[self._ctl]
        if stage is Stage.FLAG and (word >> 8 != self._armed >> 8 or word & 0xFF == 0):
            # Not for this generation (cannot happen while we run) or the doorbell
            # rang without a flag: only a request we can see stops us.
            if self._details is None:
                return
        if self._shield_depth and stage is Stage.FLAG:
            self._held = True  # delivered as the outermost shield ends
            return
        self._observe()
        request = self.interrupt
        what = f"{request.reason.value}, {request.mode.value}" if request else "stop requested"
        text = f"execution {self.execution_id!r} was asked to stop ({what})"
        if request and request.message:
            text += f": {request.message}"
        exc = Interrupted(text, stage=stage)
        exc._from_pool = True
        raise exc

    def _observed_ns(self) -> int:
        return self._words[self._ctl + OBSERVED_NS]
