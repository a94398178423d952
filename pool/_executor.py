"""A ``concurrent.futures.Executor`` on top of a :class:`~interrupt_pool.Pool`.

Owns: the futures it hands out and their link to executions. Each future
mirrors one execution; the pool's reader thread settles it (never a thread of
ours), so ``wait``, ``as_completed``, ``asyncio.wrap_future`` and
``loop.run_in_executor`` see it end as soon as the pool does.

What differs from ``ProcessPoolExecutor`` (and why), also in README.md:

- ``future.cancel()`` on a *running* future stops it through the escalation
  (graceful by default: flag, SIGTERM, SIGKILL of everything it started) and
  returns True; ProcessPoolExecutor can only cancel futures still pending.
- One function that crashes its worker ends only its own future
  (``WorkerCrashed``); ProcessPoolExecutor breaks the whole pool
  (``BrokenProcessPool``) and every pending future with it.
- Functions run in forked workers of a supervisor, with a clean slate per call;
  ``interrupt_pool.current()`` gives them the execution's context.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
import weakref
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ._exceptions import error_for
from .shared import ExecutionStatus, InterruptMode, InterruptReason

if TYPE_CHECKING:
    from ._pool import Execution, Pool

__all__ = ("Executor",)


class _RemoteTraceback(Exception):
    """The traceback of the function's exception in its worker (the ``__cause__`` of what
    ``result()`` raises, as ProcessPoolExecutor does)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class _Future(cf.Future):
    """A future whose ``cancel()`` also stops a running execution."""

    def __init__(self, executor: "Executor"):
        super().__init__()
        self._executor = executor
        self._execution: Execution | None = None
        self._cancel_asked = False  # cancel() sent a stop: an interrupted end then reads as cancelled

    def cancel(self) -> bool:
        """Cancel: a pending one never runs; a running one is stopped through the pool's
        escalation (the executor's ``cancel_mode``, graceful by default). True unless it
        has already finished (then the result stands)."""
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
        ex = self._execution
        if ex is not None and ex.done():  # it ended before this call (its future is being settled): that stands
            self._settle(ex)
            return self.cancelled()
        with self._condition:
            self._cancel_asked = True
        if ex is not None:
            ex._pool.cancel(ex.id, self._executor.cancel_mode, InterruptReason.USER_CANCELLED,
                            "future.cancel() was called")  # fmt: skip
        return self._mark_cancelled()

    def _mark_cancelled(self) -> bool:
        """CANCELLED, as Future.cancel() does, plus what the executor's worker loop does for a
        cancelled future (notify wait() and as_completed()); False if it had finished."""
        with self._condition:
            if self._state == FINISHED:
                return False  # it finished before the stop reached it
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED
            self._condition.notify_all()
            self.set_running_or_notify_cancel()  # under the (re-entrant) lock: no _started() in between
        self._executor._futures.discard(self)
        self._invoke_callbacks()
        return True

    def _invoke_callbacks(self) -> None:
        # Done callbacks may call any method of the pool (cancel another future, say), which
        # waits for frames only the reader thread reads: from there, they go to the pool's
        # callback thread, as Execution.add_done_callback's do.
        pool = self._executor._pool
        if threading.current_thread() is pool._reader:
            pool._calls.put((_invoke_callbacks, self))
        else:
            _invoke_callbacks(self)

    def _started(self) -> None:
        with self._condition:  # re-entrant: the state cannot change between the test and the call
            if self._state == PENDING:
                self.set_running_or_notify_cancel()

    def _settle(self, ex) -> None:
        """Called by the pool's reader thread once the execution has ended."""
        with self._condition:
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED):
                return
        if self._cancel_asked and ex._status is ExecutionStatus.INTERRUPTED:
            self._mark_cancelled()  # the stop cancel() asked for (its Ended may beat cancel()'s own return)
            return
        self._executor._futures.discard(self)
        try:
            if ex._status is ExecutionStatus.COMPLETED:
                self.set_result(ex._value)
            else:
                self.set_exception(_exception(ex))
        except cf.InvalidStateError:
            pass  # cancelled in between: the cancel stands


_invoke_callbacks = cf.Future._invoke_callbacks  # type: ignore[attr-defined]  # (CPython's; typeshed lacks it)


def _exception(ex) -> BaseException:
    """What the future raises: the function's own exception (traceback as its cause) when it
    failed and could travel; otherwise the pool's error (interrupted, crashed)."""
    outcome = ex.outcome()
    exc = ex._value  # the function's exception, unpickled by the reader thread (None if it could not travel)
    if ex._status is ExecutionStatus.FAILED and isinstance(exc, BaseException):
        if outcome.error and outcome.error.traceback:
            exc.__cause__ = _RemoteTraceback(f'\n"""\n{outcome.error.traceback}"""')
        return exc
    return error_for(outcome)


class Executor(cf.Executor):
    """A ``concurrent.futures.Executor`` whose futures can be stopped while they run.

    ``Executor(workers=4, ...)`` starts a pool of its own (every keyword of
    :class:`~interrupt_pool.Pool` is accepted; ``max_workers`` is a synonym of
    ``workers``) and shuts it down with the executor; ``pool.executor()`` uses an
    existing pool and leaves it running. ``submit(fn, *args, **kwargs)`` runs
    ``fn(*args, **kwargs)`` in a worker (inside, ``interrupt_pool.current()`` is its
    context); ``future.cancel()`` stops it even while it runs (``cancel_mode``).
    ``timeout`` (seconds of running, per call) stops calls that run too long.
    """

    def __init__(self, workers: int | None = None, *, max_workers: int | None = None, pool: Pool | None = None,
                 cancel_mode: InterruptMode | str = InterruptMode.GRACEFUL, timeout: float | None = None,
                 mp_context: object = None, **pool_kwargs: Any) -> None:  # fmt: skip
        from ._pool import Pool, _parse

        if workers is not None and max_workers is not None and workers != max_workers:
            raise TypeError(f"give workers or max_workers, not both ({workers} and {max_workers})")
        workers = workers if workers is not None else max_workers
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"max_workers must be greater than 0, got {workers!r}")  # CPython's own wording
        if mp_context is not None:
            raise TypeError("mp_context is not used: workers are forked by the pool's supervisor (a fresh "
                            "interpreter); drop the argument")  # fmt: skip
        self.cancel_mode = _parse(InterruptMode, cancel_mode, "cancel_mode")
        self._timeout = timeout
        if pool is None:
            self._pool = Pool(workers, **pool_kwargs)
            self._own = True
        else:
            if workers is not None or pool_kwargs:
                raise TypeError("Executor(pool=...) uses that pool as it is: give no workers or pool options")
            self._pool = pool
            self._own = False
        self._futures: set[_Future] = set()
        self._map_items: weakref.WeakSet = weakref.WeakSet()  # executions of map(chunksize > 1) calls
        self._shutdown = False

    @property
    def pool(self) -> Pool:
        """The :class:`~interrupt_pool.Pool` it runs on."""
        return self._pool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        pool = self._pool
        fut = _Future(self)
        task, defs = pool._task(fn, (args, kwargs), None, self._timeout, None, call=1)
        pool._reserve(1, True, None)
        self._futures.add(fut)  # until it settles (the reader thread takes it out)
        try:
            fut._execution = pool._submit_linked(task, defs, fut)
        except BaseException:
            self._futures.discard(fut)
            pool._unreserve(1)
            raise
        return fut

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None) -> Iterator[Any]:  # fmt: skip
        """Like ``concurrent.futures.Executor.map``: ``fn(*args)`` for each tuple of the
        iterables, values in order; ``timeout`` counts from this call. With ``chunksize``
        above 1, items travel and run in chunks (each still its own execution), for speed."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize!r}")
        if chunksize == 1 and buffersize is None:
            return super().map(fn, *iterables, timeout=timeout)
        if buffersize is not None and (isinstance(buffersize, bool) or not isinstance(buffersize, int)
                                       or buffersize < 1):  # fmt: skip
            raise ValueError(f"buffersize must be None or >= 1, got {buffersize!r}")
        deadline = None if timeout is None else time.monotonic() + timeout

        def value(ex) -> Any:
            try:
                ex._wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise cf.TimeoutError() from None
            if ex._status is ExecutionStatus.COMPLETED:
                return ex._value
            raise _exception(ex)

        # Lazily, at most ``buffersize`` (or enough for every worker) in flight; the items are the
        # executor's to wait for and cancel at shutdown, as its futures are.
        pool = self._pool
        window = buffersize or max(256, 4 * chunksize * pool._workers)
        if pool._max_queued is not None:
            window = min(window, pool._max_queued)
        return pool._imap(fn, ((args, {}) for args in zip(*iterables)), self._timeout, window, chunksize, 1, value,
                          self._map_items)  # fmt: skip

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; ``cancel_futures`` cancels the ones not yet running (as
        ProcessPoolExecutor does; running ones go on); ``wait`` waits for every call. An
        executor that made its pool shuts the pool down too."""
        self._shutdown = True
        if cancel_futures:
            for fut in list(self._futures):
                ex = fut._execution
                if ex is not None and ex._status is ExecutionStatus.QUEUED:
                    fut.cancel()
            queued = [ex.id for ex in list(self._map_items) if ex._status is ExecutionStatus.QUEUED]
            self._pool._cancel_many(queued, self.cancel_mode, InterruptReason.SHUTDOWN, "the executor shut down")
        if wait:
            cf.wait(list(self._futures))
            for ex in list(self._map_items):
                ex._wait(None)
        if self._own:
            self._pool.shutdown(wait=wait)
