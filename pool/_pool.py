"""The user-side API: :class:`Pool` and :class:`Execution`.

Owns: the user's view of every execution it submitted (status, outcome) and
the supervisor process it forked. A reader thread is the only writer of
execution state on this side: it applies the supervisor's frames (STARTED,
CANCELLING, ENDED, REPLY) in order. User threads only send frames, under
``_lock``, and wait: on the pool's ``_changed`` condition for executions, on a
future for the reply to a request (cancel, queries).

The supervisor is forked from the calling thread before the reader thread
starts, so functions defined in ``__main__`` or a test module are found by
name in the workers without re-importing anything.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import importlib
import itertools
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Callable, Iterable, Iterator

import psutil

from shared import ExecutionStatus, InterruptMode, InterruptReason, InterruptSource
from shared._wire import Channel, Msg, packb

from ._control import ControlServer, check_name
from ._events import Event, EventKind
from ._exceptions import ExecutionFailed, ExecutionInterrupted, PoolBroken, PoolClosed, WorkerCrashed
from ._models import Escalation, ExecutionInfo, ExecutionResult, WorkerInfo, check_timeout
from ._proc import killpg
from ._supervisor import supervisor_main

__all__ = ("Pool", "Execution")

_open_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
_SUBMIT_BATCH = 2000  # executions per SUBMIT frame in map(): bounds one frame's size


class Execution:
    """A handle on one submitted execution.

    The pool's reader thread is the only writer of its state; it settles it once,
    under the pool's ``_changed`` condition, with the supervisor's ENDED frame. The
    ExecutionResult model is built from that frame on the first ``outcome()``, so
    callers who only want ``result()`` values never pay for it.
    """

    __slots__ = ("id", "_pool", "_status", "_worker_id", "_ended", "_value", "_outcome", "_callbacks", "__weakref__")

    def __init__(self, pool: "Pool", id: str):
        self.id = id
        self._pool = pool
        self._status = ExecutionStatus.QUEUED
        self._worker_id: int | None = None
        self._ended: dict | None = None  # the ENDED frame's dict, once it has ended
        self._value: Any = None
        self._outcome: ExecutionResult | None = None
        self._callbacks: list | None = None

    def __repr__(self) -> str:
        return f"<Execution {self.id!r} {self._status.value}>"

    @property
    def status(self) -> ExecutionStatus:
        return self._status

    @property
    def worker_id(self) -> int | None:
        """The worker that runs (or ran) it; None while queued."""
        return self._worker_id

    def done(self) -> bool:
        return self._ended is not None

    def cancel(self, mode: InterruptMode | str = InterruptMode.GRACEFUL, **kw) -> bool:
        """Stop this execution; see :meth:`Pool.cancel`."""
        return self._pool.cancel(self.id, mode, **kw)

    def _wait(self, timeout: float | None) -> None:
        if self._ended is None:
            cond = self._pool._changed
            with cond:
                if not cond.wait_for(self.done, timeout):
                    raise TimeoutError(f"execution {self.id!r} is still {self._status.value} after {timeout} s")

    def outcome(self, timeout: float | None = None) -> ExecutionResult:
        """Wait for the end and return how it ended. Never raises for the agent's
        own failure; raises ``TimeoutError`` if it is still live after ``timeout``."""
        self._wait(timeout)
        if self._outcome is None:
            self._outcome = ExecutionResult.from_wire(self._ended, self._value)  # built twice at worst: same value
        return self._outcome

    def result(self, timeout: float | None = None) -> Any:
        """The agent's return value, or raise ExecutionInterrupted / ExecutionFailed / WorkerCrashed."""
        self._wait(timeout)
        if self._status is ExecutionStatus.COMPLETED:
            return self._value
        out = self.outcome()
        if out.status is ExecutionStatus.INTERRUPTED:
            i = out.interrupt
            how = f" ({i.reason.value}, {i.mode.value}, ended at stage {i.stage.value})" if i and i.stage else ""
            raise ExecutionInterrupted(f"execution {self.id!r} was interrupted{how}", out)
        if out.status is ExecutionStatus.FAILED:
            e = out.error
            raise ExecutionFailed(f"execution {self.id!r} failed: {e.type}: {e.message}", out)
        raise WorkerCrashed(out.error.message if out.error else f"execution {self.id!r} crashed", out)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the execution has started on a worker (True) or ended without
        ever starting, e.g. cancelled while queued (False). ``TimeoutError`` after ``timeout``.
        Started means handed to a worker: the agent's first line may not have run yet
        (a stop that comes first ends it at the flag before any agent code runs)."""
        cond = self._pool._changed
        with cond:
            if not cond.wait_for(lambda: self._worker_id is not None or self._ended is not None, timeout):
                raise TimeoutError(f"execution {self.id!r} is still {self._status.value} after {timeout} s")
        return self._worker_id is not None

    def add_done_callback(self, fn: Callable[["Execution"], Any]) -> None:
        """Call ``fn(execution)`` once it has ended: from the pool's reader thread, or
        right here if it already has."""
        with self._pool._changed:
            if self._ended is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)


def _agent_ref(fn: Any, cache: dict) -> tuple[str, str]:
    """(module, qualname) by which a worker finds ``fn``; a clear error if it cannot."""
    if isinstance(fn, str):
        if fn in cache:
            return cache[fn]
        module, sep, qualname = fn.partition(":")
        if not sep or not module or not qualname:
            raise ValueError(f"agent {fn!r} must be written as 'module:function', e.g. 'mypkg.agents:research'")
    else:
        try:
            return cache[fn]
        except (KeyError, TypeError):
            pass
        if not callable(fn):
            raise TypeError(f"agent must be a function taking (ctx, input), got {type(fn).__name__} {fn!r}")
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
        if module is None or qualname is None:
            raise TypeError(
                f"agent {fn!r} has no __module__/__qualname__; pass a function defined with def at module level"
            )
        if "<lambda>" in qualname or "<locals>" in qualname:
            what = "a lambda" if "<lambda>" in qualname else "a function defined inside another function"
            raise TypeError(
                f"agent {module}.{qualname} is {what}, which a worker cannot find by name; "
                "define it with def at the top level of an importable module"
            )
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise TypeError(f"agent {module}:{qualname} cannot be imported ({type(exc).__name__}: {exc}); "
                        "check the module path and the function name") from exc  # fmt: skip
    if not isinstance(fn, str) and obj is not fn:
        raise TypeError(f"agent {fn!r} is not the object found at {module}:{qualname}; pass the module-level function")
    if not callable(obj):
        raise TypeError(f"agent {module}:{qualname} is a {type(obj).__name__}, not a function")
    ref = (module, qualname)
    try:
        cache[fn] = ref
    except TypeError:
        pass  # unhashable callable: just not cached
    return ref


def _check_id(id: Any) -> str:
    if not isinstance(id, str) or not id or len(id) > 256 or "\x00" in id:
        raise ValueError(f"execution id must be a non-empty string of at most 256 characters without NUL, got {id!r}")
    return id


def _request_codes(mode, reason, source) -> tuple[int, int, int]:
    """Wire codes of a stop request's mode, reason and source; ValueError naming a bad one."""
    return (_parse(InterruptMode, mode, "mode").code, _parse(InterruptReason, reason, "reason").code,
            _parse(InterruptSource, source, "source").code)  # fmt: skip


def _parse(enum_cls, value, name: str):
    try:
        return enum_cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum_cls)
        raise ValueError(f"{name} must be one of {choices}; got {value!r}") from None


class Pool:
    """A supervisor process with ``workers`` agent workers; stops any execution on demand.

    ``capacity`` is the number of slots in the shared flag array: how many
    executions can be running or being stopped at once (at least ``workers``;
    the default leaves room for replacement workers while killed ones are reaped).
    """

    def __init__(self, workers: int | None = None, escalation: Escalation | None = None, capacity: int | None = None,
                 *, name: str | None = None, on_event: Callable[[Event], Any] | None = None,
                 checkpoint_dir: str | os.PathLike | None = ".pool/checkpoints", keep_checkpoints: int = 3):  # fmt: skip
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")
        if escalation is None:
            escalation = Escalation()
        if not isinstance(escalation, Escalation):
            raise TypeError(f"escalation must be an Escalation(grace=..., term_grace=...), got {escalation!r}")
        if capacity is None:
            capacity = 2 * workers + 2
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < workers:
            raise ValueError(f"capacity must be a whole number of at least workers={workers}, got {capacity!r}")
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be a whole number of at least 1, got {keep_checkpoints!r}")
        # Absolute now: agents may chdir, and 'pool checkpoints' must find the same place.
        self.checkpoint_dir = None if checkpoint_dir is None else os.path.abspath(os.fspath(checkpoint_dir))
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be a function taking an Event, got {on_event!r}")
        if name is not None:
            check_name(name)
        self.escalation = escalation
        self.name = name
        self._workers = workers
        self._listeners: list[Callable[[Event], Any]] = [on_event] if on_event else []
        self._event_queues: list = []  # one SimpleQueue per live events() iterator
        self._reader_done = False  # set under _lock by the reader thread as it ends: no new waits after it
        self._control = None
        self._lock = threading.Lock()  # guards sending and _execs/_replies membership
        self._changed = threading.Condition()  # notified by the reader thread when an execution starts or ends
        self._execs: dict[str, Execution] = {}
        self._replies: dict[int, cf.Future] = {}
        self._req_ids = itertools.count(1)
        self._auto_ids = itertools.count(1)
        self._id_prefix = os.urandom(5).hex()  # auto ids: unique in this pool, and across runs in practice
        self._ref_cache: dict = {}
        self._worker_procs: dict[int, tuple[int, float]] = {}  # id -> (pid, create_time), for the last-resort kill
        self._closed = False
        self._broken: str | None = None
        ours, theirs = socket.socketpair()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # or the child would write our buffered output again
            except (AttributeError, ValueError, OSError):
                pass
        pid = os.fork()
        if pid == 0:  # the supervisor
            code = 0
            try:
                ours.close()
                for other in list(_open_pools):
                    fd = other._sock.detach()  # keep only our own client socket: another pool's
                    if fd >= 0:  # user end held here would hide that user's death from its supervisor
                        os.close(fd)
                supervisor_main(theirs, workers, capacity, escalation.grace, escalation.term_grace,
                                self.checkpoint_dir, keep_checkpoints)  # fmt: skip
            except BaseException:
                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)
        theirs.close()
        self.supervisor_pid = pid
        self._sock = ours
        _open_pools.add(self)
        self._reader = threading.Thread(target=self._read_loop, name=f"pool-reader-{pid}", daemon=True)
        self._reader.start()
        if name is not None:
            try:
                self._control = ControlServer(self, name)
            except BaseException:
                self.shutdown(wait=True, cancel=InterruptMode.KILL)
                raise

    # -- context manager ---------------------------------------------------

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        interrupted = exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit))
        self.shutdown(wait=True, cancel=interrupted)

    # -- submitting ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken:
            raise PoolBroken(self._broken)
        if self._closed:
            raise PoolClosed("this pool was shut down; create a new Pool to run more work")

    def _prepare(self, fn, input, id, timeout, escalation, resume=False, on_interrupt=None) -> list:
        module, qualname = _agent_ref(fn, self._ref_cache)
        hook = list(_agent_ref(on_interrupt, self._ref_cache)) if on_interrupt is not None else None
        if resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoints; this pool was created with checkpoint_dir=None")
        id = f"{self._id_prefix}-{next(self._auto_ids)}" if id is None else _check_id(id)
        timeout = check_timeout("timeout", timeout)
        grace = term_grace = None
        if escalation is not None:
            if not isinstance(escalation, Escalation):
                raise TypeError(f"escalation must be an Escalation(grace=..., term_grace=...), got {escalation!r}")
            grace, term_grace = escalation.grace, escalation.term_grace
        try:
            payload = pickle.dumps(input, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"the input of execution {id!r} cannot be pickled ({type(exc).__name__}: {exc}); "
                "pass plain data (str, numbers, lists, dicts) or picklable objects"
            ) from exc
        return [id, module, qualname, payload, timeout, grace, term_grace, bool(resume), hook]

    def _register(self, items: list[list]) -> list[Execution]:
        """Record and send SUBMIT frames; caller holds ``_lock``."""
        execs = []
        seen = set()
        for item in items:
            id = item[0]
            old = self._execs.get(id)
            if (old is not None and not old.done()) or id in seen:
                raise ValueError(f"execution id {id!r} is already in use by a live execution; pick another id")
            seen.add(id)
        watched = self._watched
        for item in items:
            ex = self._execs[item[0]] = Execution(self, item[0])
            execs.append(ex)
            if watched:
                self._emit(Event.model_construct(kind=EventKind.SUBMITTED, mono_ns=time.monotonic_ns(), execution_id=ex.id))
        for i in range(0, len(items), _SUBMIT_BATCH):
            self._send([Msg.SUBMIT, items[i : i + _SUBMIT_BATCH]])
        return execs

    def submit(self, fn: Callable | str, input: Any = None, *, id: str | None = None, timeout: float | None = None,
               escalation: Escalation | None = None, resume: bool = False,
               on_interrupt: Callable | str | None = None) -> Execution:  # fmt: skip
        """Queue ``fn(ctx, input)``; ``fn`` is a module-level function or a 'module:function' string.

        ``timeout`` (seconds of running) stops the execution through the escalation
        policy with reason TIMEOUT; ``escalation`` overrides the pool's for this one.
        ``resume=True`` starts it with ``ctx.restore()`` returning the newest checkpoint
        its id saved before. ``on_interrupt(ctx, state)`` (importable, like ``fn``) runs in
        the worker when it is stopped at the flag or SIGTERM stage, to save what it had;
        without one, ``ctx.state`` is checkpointed if the agent set it.
        """
        self._check_open()
        item = self._prepare(fn, input, id, timeout, escalation, resume, on_interrupt)
        with self._lock:
            self._check_open()
            return self._register([item])[0]

    def _submit_batch(self, fn: Callable | str, items: list[tuple[str | None, Any]], timeout: float | None = None,
                      resume: bool = False) -> list[Execution]:  # fmt: skip
        """Submit (id, input) pairs in as few frames as possible; all or none."""
        self._check_open()
        prepared = [self._prepare(fn, x, id, timeout, None, resume) for id, x in items]
        with self._lock:
            self._check_open()
            return self._register(prepared)

    def map(self, fn: Callable | str, inputs: Iterable[Any], *, timeout: float | None = None) -> list:
        """Run ``fn`` over ``inputs``; return the values in input order.

        ``timeout`` is per execution, as in :meth:`submit`. The first execution (in
        input order) that does not complete raises its error, after the rest were cancelled.
        """
        execs = self._submit_batch(fn, [(None, x) for x in inputs], timeout)
        try:
            return [ex.result() for ex in execs]
        except BaseException:
            for ex in execs:
                if not ex.done():
                    self.cancel(ex.id, InterruptMode.GRACEFUL, reason=InterruptReason.PARENT_CANCELLED,
                                message="another execution of the same map() failed")  # fmt: skip
            raise

    @staticmethod
    def as_completed(executions: Iterable[Execution], timeout: float | None = None) -> Iterator[Execution]:
        """Yield the executions as they end (any status), like concurrent.futures.as_completed."""
        pending = list(executions)
        ended: queue.SimpleQueue = queue.SimpleQueue()
        for ex in pending:
            ex.add_done_callback(ended.put)
        deadline = None if timeout is None else time.monotonic() + timeout
        for left in range(len(pending), 0, -1):
            try:
                yield ended.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{left} executions still live after {timeout} s") from None

    # -- stopping ------------------------------------------------------------

    def cancel(self, id: str, mode: InterruptMode | str = InterruptMode.GRACEFUL,
               reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
               source: InterruptSource | str = InterruptSource.USER) -> bool:  # fmt: skip
        """Stop execution ``id``. True if it was queued or running; False if unknown or ended.

        ``graceful``: flag, then SIGTERM after ``grace``, then SIGKILL after ``term_grace``;
        ``immediate``: flag and SIGTERM now; ``kill``: SIGKILL of its process group now.
        Repeated requests are idempotent and only escalate. When this returns True the
        flag is already set.
        """
        codes = _request_codes(mode, reason, source)
        ex = self._execs.get(id)
        if ex is None or ex.done() or self._broken:
            return False
        return self._call(lambda req: [Msg.CANCEL, req, id, *codes, message])

    def cancel_worker(self, worker_id: int, mode: InterruptMode | str = InterruptMode.GRACEFUL,
                      reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
                      source: InterruptSource | str = InterruptSource.USER) -> bool:  # fmt: skip
        """Stop whatever execution worker ``worker_id`` runs. False if it runs nothing."""
        codes = _request_codes(mode, reason, source)
        if self._broken:
            return False
        return self._call(lambda req: [Msg.CANCEL_WORKER, req, worker_id, *codes, message])

    # -- inspecting ------------------------------------------------------------

    def workers(self) -> list[WorkerInfo]:
        """The live workers: id, pid, state (starting, idle, busy, stopping), current execution."""
        self._check_open_or_draining()
        rows = self._call(lambda req: [Msg.QUERY, req, "workers"])
        return [WorkerInfo(id=i, pid=p, state=s, execution_id=e) for i, p, s, e in rows]

    def executions(self) -> list[ExecutionInfo]:
        """A snapshot of every execution submitted to this pool, in submission order."""
        with self._lock:
            execs = list(self._execs.values())
        return [ExecutionInfo(id=e.id, status=e._status, worker_id=e._worker_id) for e in execs]

    def execution(self, id: str) -> Execution:
        try:
            return self._execs[id]
        except KeyError:
            raise KeyError(f"no execution with id {id!r} was submitted to this pool") from None

    def _live_rows(self) -> list[list]:
        """[id, status code, worker id, elapsed s, stage] of every live execution, from the supervisor."""
        return self._call(lambda req: [Msg.QUERY, req, "executions"])

    def _check_open_or_draining(self) -> None:
        if self._broken:
            raise PoolBroken(self._broken)
        if self._reader_done:
            raise PoolClosed("this pool was shut down")

    # -- shutting down ---------------------------------------------------------

    def cancel_all(self, mode: InterruptMode | str = InterruptMode.GRACEFUL,
                   reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
                   source: InterruptSource | str = InterruptSource.USER) -> None:  # fmt: skip
        """Stop every queued and running execution (idempotent; only escalates)."""
        codes = _request_codes(mode, reason, source)
        with self._lock:
            try:
                self._send([Msg.CANCEL_ALL, *codes, message])
            except PoolBroken:
                pass  # nothing left to stop: the reader thread settles every execution

    def shutdown(self, wait: bool = True, cancel: bool | InterruptMode | str = False) -> None:
        """Take no more work; with ``cancel`` stop everything queued or running
        (graceful, or the given mode); with ``wait`` return once the supervisor
        and all workers are gone."""
        mode = 0
        if cancel:
            mode = (InterruptMode.GRACEFUL if cancel is True else _parse(InterruptMode, cancel, "cancel")).code
        with self._lock:
            first = not self._closed
            self._closed = True
            try:
                if first or mode:
                    self._send([Msg.SHUTDOWN, mode, InterruptReason.SHUTDOWN.code, InterruptSource.USER.code])
            except (PoolBroken, OSError):
                pass  # already gone: the reader thread has settled everything
        if wait and threading.current_thread() is not self._reader:
            self._reader.join()

    # -- plumbing ----------------------------------------------------------------

    def _send(self, msg: list) -> None:
        try:
            self._sock.sendall(packb(msg))
        except OSError as exc:
            raise PoolBroken(self._broken or f"the supervisor process (pid {self.supervisor_pid}) is gone") from exc

    def _call(self, build: Callable[[int], list]):
        fut: cf.Future = cf.Future()
        with self._lock:
            if self._reader_done:
                raise PoolBroken(self._broken) if self._broken else PoolClosed("this pool was shut down")
            req = next(self._req_ids)
            self._replies[req] = fut
            self._send(build(req))
        return fut.result()

    def _read_loop(self) -> None:
        chan = Channel(self._sock)
        clean = False
        try:
            while True:
                msg = chan.recv()
                if msg is None:
                    break
                kind = msg[0]
                if kind == Msg.ENDED:
                    self._on_ended(msg[1], msg[2], msg[3])
                elif kind == Msg.STARTED:
                    ex = self._execs.get(msg[1])
                    if ex is not None and not ex.done():
                        with self._changed:
                            ex._worker_id = msg[2]
                            if ex._status is ExecutionStatus.QUEUED:  # not back from CANCELLING
                                ex._status = ExecutionStatus.RUNNING
                            self._changed.notify_all()
                        if self._watched:
                            self._emit(Event.model_construct(kind=EventKind.STARTED, mono_ns=time.monotonic_ns(),
                                                             execution_id=msg[1], worker_id=msg[2], pid=msg[3]))  # fmt: skip
                elif kind == Msg.CANCELLING:
                    ex = self._execs.get(msg[1])
                    if ex is not None and not ex.done():
                        ex._status = ExecutionStatus.CANCELLING
                elif kind == Msg.REPLY:
                    fut = self._replies.pop(msg[1], None)
                    if fut is not None:
                        fut.set_result(msg[2])
                elif kind == Msg.WORKER:
                    self._worker_procs[msg[1]] = (msg[2], msg[3])
                elif kind == Msg.EVENT:
                    if self._watched:
                        self._emit(Event.from_wire(*msg[1:]))
                elif kind == Msg.GONE:
                    clean = True
        except OSError:
            pass  # the socket broke: treated as the supervisor being gone
        finally:
            self._on_supervisor_gone(clean)

    @property
    def _watched(self) -> bool:
        return bool(self._listeners or self._event_queues)

    def _emit(self, event: Event) -> None:
        for q in list(self._event_queues):
            q.put(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop result delivery
                traceback.print_exc()

    def events(self) -> Iterator[Event]:
        """Iterate over events from now on until the pool has shut down."""
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            if self._reader_done:
                return
            self._event_queues.append(q)
        try:
            while True:
                ev = q.get()
                if ev is None:
                    return
                yield ev
        finally:
            try:
                self._event_queues.remove(q)
            except ValueError:
                pass

    def _on_ended(self, id: str, d: dict, value: bytes | None) -> None:
        ex = self._execs.get(id)
        if ex is None or ex.done():
            return
        if value is not None:
            try:
                value = pickle.loads(value)
            except Exception as exc:
                d["status"] = ExecutionStatus.FAILED.code
                d["error"] = [type(exc).__name__, f"the result of execution {id!r} cannot be unpickled here: {exc}",
                              traceback.format_exc()]  # fmt: skip
                value = None
        self._settle(ex, d, value)

    def _settle(self, ex: Execution, d: dict, value: Any = None) -> None:
        """Record the end of ``ex`` (the ENDED frame's dict) and wake whoever waits."""
        status = ExecutionStatus.from_code(d["status"])
        with self._changed:
            ex._value = value
            ex._status = status
            if d.get("worker_id") is not None:
                ex._worker_id = d["worker_id"]
            ex._ended = d
            callbacks, ex._callbacks = ex._callbacks, None
            self._changed.notify_all()
        for fn in callbacks or ():
            try:
                fn(ex)
            except Exception:  # a callback's bug must not stop result delivery
                traceback.print_exc()
        if self._watched:
            i = d.get("interrupt") or {}
            self._emit(Event.from_wire("ended", ex.id, d.get("worker_id"), time.monotonic_ns(), {
                "status": d["status"], "stage": i.get("stage"), "mode": i.get("mode"), "reason": i.get("reason"),
                "pid": d.get("pid"), "message": d["error"][1] if d.get("error") else None,
            }))  # fmt: skip

    def _on_supervisor_gone(self, clean: bool) -> None:
        how = ""
        try:
            _, status = os.waitpid(self.supervisor_pid, 0)
            how = f" with exit code {os.waitstatus_to_exitcode(status)}" if os.WIFEXITED(status) else (
                f" by signal {signal.Signals(os.WTERMSIG(status)).name}")  # fmt: skip
        except ChildProcessError:
            pass  # someone else reaped it; we only lose the exit status
        try:
            self._sock.close()
        except OSError:
            pass
        _open_pools.discard(self)
        if not clean:
            self._broken = f"the supervisor process (pid {self.supervisor_pid}) died{how}; create a new Pool"
            for pid, create_time in self._worker_procs.values():
                # Workers die with their supervisor (PR_SET_PDEATHSIG); this is the
                # last resort for their tools, guarded against pid reuse by start time.
                try:
                    if abs(psutil.Process(pid).create_time() - create_time) < 0.01:
                        killpg(pid)
                except psutil.Error:
                    pass  # already gone
        reason = self._broken or "the pool shut down before this execution ended"
        for ex in list(self._execs.values()):
            if not ex.done():
                self._settle(ex, {"id": ex.id, "status": ExecutionStatus.CRASHED.code, "worker_id": ex._worker_id,
                                  "error": ["SupervisorDied" if self._broken else "PoolClosed", reason, None]})  # fmt: skip
        with self._lock:
            self._reader_done = True  # no new request or events() iterator can start waiting now
            replies, self._replies = list(self._replies.values()), {}
            queues = list(self._event_queues)
        for fut in replies:
            fut.set_exception(PoolBroken(reason) if self._broken else PoolClosed(reason))
        for q in queues:
            q.put(None)  # ends each events() iterator
        if self._control is not None:
            self._control.close()


@atexit.register
def _shutdown_open_pools() -> None:
    for pool in list(_open_pools):
        pool.shutdown(wait=True, cancel=True)
