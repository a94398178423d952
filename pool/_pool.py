"""The user-side API: :class:`Pool` and :class:`Execution`, a client of the supervisor.

Owns: this client's view of the executions it submitted (status, outcome)
and, for a pool it created, the supervisor process. ``Pool(...)`` starts a
supervisor as a fresh interpreter (``python -m interrupt_pool._supervisor``,
handed one socket and nothing else) and is its *owner*: its exit drains the
pool. ``Pool.connect(name)`` attaches to a running named pool as one more
client.

Threads: a reader thread is the only writer of execution state on this side;
it applies the supervisor's frames in order. A dispatcher thread runs done
callbacks and event listeners, so they may call any Pool method (a callback
on the reader thread would wait for a reply that only the reader can read).
User threads send frames under ``_lock`` and wait: on ``_changed`` for
executions, on a future for the reply to a request.

Memory: a live execution is held by the pool until it ends; after that only
by the user's handle (a weak map finds it by id while the user keeps it), so
ended executions cost nothing once their handles are dropped. The supervisor
keeps a bounded history for ``status`` and :meth:`Pool.outcome`.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import itertools
import os
import pickle
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Iterator, Sequence

from . import _naming
from ._agents import build_task, check_budget, check_id, check_timeout
from ._events import Event, EventKind
from ._exceptions import BudgetExceeded, PoolBroken, PoolClosed, QueueFull, error_for
from ._models import Escalation, ExecutionInfo, ExecutionResult, Group, StopRequest, WorkerInfo
from ._proc import cgroup_kill, cgroup_remove, kill_pids, pids_with_env, start_ticks
from .shared import ExecutionStatus, InterruptMode, InterruptReason, InterruptSource
from .shared import _protocol as P

if TYPE_CHECKING:
    from ._executor import Executor

__all__ = ("Pool", "Execution")

_open_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
_VETO_THREADS = 4  # before_interrupt questions asked at once
_SUBMIT_BATCH = 2000  # executions per Submit frame: bounds one frame's size
_START_TIMEOUT = 60.0  # seconds for a new supervisor to answer (a loaded CI machine can be slow)
WORKER_MEMORY_ESTIMATE = 4 << 20  # bytes a worker needs at least (measured: under 3 MiB of its own)


class Execution:
    """A handle on one submitted execution.

    The pool's reader thread is the only writer of its state; it settles it once,
    under the pool's ``_changed`` condition, with the supervisor's Ended frame. The
    ExecutionResult model is built on the first ``outcome()``.
    """

    __slots__ = ("id", "_pool", "_status", "_worker_id", "_ended", "_value", "_outcome", "_callbacks", "_reserved",
                 "_watchers", "_future", "_chunk", "__weakref__")  # fmt: skip

    def __init__(self, pool: "Pool", id: str):
        self.id = id
        self._pool = pool
        self._status = ExecutionStatus.QUEUED
        self._worker_id: int | None = None
        self._ended: dict | None = None  # the Ended frame's info, once it has ended
        self._value: Any = None
        self._outcome: ExecutionResult | None = None
        self._callbacks: list | None = None
        self._watchers: list | None = None  # functions the reader thread calls with it when it ends: must not block
        self._reserved = False  # holds one of the pool's max_queued places
        self._future = None  # the Executor future that mirrors it (set before it is sent), or None
        self._chunk: str | None = None  # the chunk it runs in (map with a chunksize), or None

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

    def cancel(self, mode: InterruptMode | str = InterruptMode.GRACEFUL,
               reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
               source: InterruptSource | str = InterruptSource.USER) -> bool:  # fmt: skip
        """Stop this execution; see :meth:`Pool.cancel`."""
        return self._pool.cancel(self.id, mode, reason, message, source=source)

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
            assert self._ended is not None  # (waited for)
            self._outcome = ExecutionResult.from_wire(self._ended, self._value)  # built twice at worst: same value
        return self._outcome

    def result(self, timeout: float | None = None) -> Any:
        """The agent's return value, or raise ExecutionInterrupted / ExecutionFailed / WorkerCrashed."""
        self._wait(timeout)
        if self._status is ExecutionStatus.COMPLETED:
            return self._value
        raise error_for(self.outcome())

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the execution has started on a worker (True) or ended without
        ever starting, e.g. cancelled while queued (False). ``TimeoutError`` after ``timeout``."""
        cond = self._pool._changed
        with cond:
            if not cond.wait_for(lambda: self._worker_id is not None or self._ended is not None, timeout):
                raise TimeoutError(f"execution {self.id!r} is still {self._status.value} after {timeout} s")
        return self._worker_id is not None

    def logs(self) -> str:
        """What this execution printed so far (stdout and stderr as they came, its tools'
        included), from its log: the last ``max_log_bytes`` to twice that. "" if nothing."""
        log_dir = self._pool.log_dir
        if log_dir is None:
            raise RuntimeError("this pool does not capture output (it was created with log_dir=None)")
        from ._supervisor.output import read_log

        return read_log(log_dir, self.id)

    def __await__(self):
        """``await execution``: its value, or raise as :meth:`result` does, without blocking the
        event loop. Cancelling the awaiting task does not stop the execution (see :meth:`wait`)."""
        return self._await_result().__await__()

    async def _await_result(self) -> Any:
        await self.wait()
        return self.result(0)

    async def wait(self, *, timeout: float | None = None, cancel_on_cancel: bool = False) -> ExecutionResult:
        """``await ex.wait()``: its outcome once it has ended, from asyncio. ``TimeoutError`` after
        ``timeout`` (the execution goes on). If the awaiting task is cancelled the execution goes
        on too, unless ``cancel_on_cancel=True``: then it is stopped gracefully (reason
        user_cancelled) before the CancelledError propagates."""
        if self._ended is None:
            import asyncio

            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def ended(_ex) -> None:  # the reader thread: hand over to the loop, never block
                try:
                    loop.call_soon_threadsafe(lambda: None if done.done() else done.set_result(None))
                except RuntimeError:
                    pass  # the loop has closed: nobody is waiting any more

            if self._when_ended("_watchers", ended):
                try:
                    await asyncio.wait_for(asyncio.shield(done), timeout)
                except asyncio.TimeoutError:
                    raise TimeoutError(f"execution {self.id!r} is still {self._status.value} after {timeout} s") from None
                except asyncio.CancelledError:
                    if cancel_on_cancel and self._ended is None:
                        self.cancel(InterruptMode.GRACEFUL, message="the asyncio task awaiting it was cancelled")
                    raise
                finally:
                    self._unwatch(ended)
        return self.outcome(0)

    def add_done_callback(self, fn: Callable[["Execution"], Any]) -> None:
        """Call ``fn(execution)`` once it has ended, on the pool's callback thread (or
        right here if it already has). ``fn`` may call any method of the pool."""
        if not self._when_ended("_callbacks", fn):
            fn(self)

    def _unwatch(self, fn) -> None:
        """Take back a watcher that is no longer wanted (a wait that timed out or was cancelled)."""
        with self._pool._changed:
            if self._watchers and fn in self._watchers:
                self._watchers.remove(fn)

    def _when_ended(self, attr: str, item) -> bool:
        """Append ``item`` to the list in ``attr`` for the reader thread to act on at the end;
        False (nothing appended) if it has ended already."""
        with self._pool._changed:
            if self._ended is not None:
                return False
            if getattr(self, attr) is None:
                setattr(self, attr, [])
            getattr(self, attr).append(item)
            return True


def _request_codes(mode, reason, source) -> tuple[int, int, int]:
    """Wire codes of a stop request's mode, reason and source; ValueError naming a bad one."""
    return (_parse(InterruptMode, mode, "mode").code, _parse(InterruptReason, reason, "reason").code,
            _parse(InterruptSource, source, "source").code)  # fmt: skip


def _parse(enum_cls, value, name: str):
    try:
        return enum_cls(value.lower() if isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(m.value for m in enum_cls)
        raise ValueError(f"{name} must be one of {choices}; got {value!r}") from None


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return value


def check_workers_fit(workers: int) -> None:
    """Refuse a worker count this machine cannot hold, saying what fits."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY:
        try:
            mine = sum(1 for p in os.listdir("/proc") if p.isdigit() and os.stat(f"/proc/{p}").st_uid == os.getuid())
        except OSError:
            mine = 0
        room = soft - mine - 8  # the supervisor, replacements, the tools agents start
        if workers > room:
            raise ValueError(f"workers={workers} does not fit the process limit (RLIMIT_NPROC {soft}, {mine} "
                             f"processes already yours): at most {max(room, 0)} fit; raise 'ulimit -u' or use fewer")  # fmt: skip
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return
    fit = int(avail * 0.5 // WORKER_MEMORY_ESTIMATE)
    if workers > fit:
        raise ValueError(f"workers={workers} does not fit this machine's memory: {avail >> 20} MiB available, a worker "
                         f"needs at least {WORKER_MEMORY_ESTIMATE >> 20} MiB before its agent runs, and half of the "
                         f"memory is kept for the agents: at most {fit} workers fit")  # fmt: skip


def _preload_names(preload: Any) -> list[str]:
    """``preload`` as a list of module names, or TypeError/ValueError saying how to write it."""
    if isinstance(preload, (str, bytes)):
        raise TypeError(f"preload takes a list of module names, e.g. preload=[{preload!r}], not a string")
    try:
        names = list(preload)
    except TypeError:
        raise TypeError(f"preload takes a list of module names, e.g. preload=['langgraph'], got {preload!r}") from None
    for name in names:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"preload: {name!r} is not a module name (dotted identifiers, e.g. 'langgraph.graph')")
    return names


def _launch(start: P.Start) -> tuple[socket.socket, subprocess.Popen, P.Welcome, P.Channel]:
    """Start a supervisor as a fresh interpreter handed one socket; return its Welcome."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "interrupt_pool._supervisor", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        )  # fmt: skip
    except OSError as exc:
        ours.close()
        raise PoolBroken(f"cannot start the supervisor with {sys.executable!r}: {exc}") from exc
    finally:
        theirs.close()
    chan = P.Channel(ours, start.max_frame, validate=False)  # our own supervisor: trusted
    ours.settimeout(_START_TIMEOUT)
    try:
        chan.send(start)
        msg = chan.recv()
    except (OSError, P.ProtocolError) as exc:
        msg = exc
    ours.settimeout(None)
    if type(msg) is P.Welcome:
        return ours, proc, msg, chan
    ours.close()
    # Whatever went wrong, the supervisor does not outlive this call. It forks no worker before its
    # Welcome, so killing it leaves nothing behind: at once when it did not answer in time (stuck,
    # e.g. in a preloaded module's import); otherwise it is exiting (a refusal exits at once).
    if isinstance(msg, TimeoutError):
        proc.kill()
    try:
        code = proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if type(msg) is P.Refused:
        raise ValueError(msg.message)
    hint = (f"; a module in preload={start.preload} may hang or take longer than {_START_TIMEOUT:g} s to import "
            "there" if start.preload and isinstance(msg, TimeoutError) else "")  # fmt: skip
    raise PoolBroken(f"the supervisor (pid {proc.pid}) did not start: {msg or 'no answer'} (exit code {code}){hint}; "
                     "its error, if any, is on stderr")  # fmt: skip


class Pool:
    """Agent workers under one supervisor process; stops any execution on demand.

    ``capacity`` is the number of slots in the shared flag array: how many
    executions can be running, waiting on their children or being stopped at once
    (at least ``workers``; the default, ``4 * workers + 64``, leaves room for
    replacement workers while killed ones are reaped and for agent trees).
    ``before_interrupt(request)`` is asked, in this process, before a graceful or
    immediate stop a user or a program requested (from any client) goes ahead:
    returning False vetoes it (an event says so); kills, timeouts, budgets,
    stalls, preemption and shutdown are never asked about. ``after_interrupt(outcome)``
    runs once for each interrupted execution of this Pool, with its checkpoint.
    Both run on a thread of the pool, never the one that reads the supervisor's frames.
    ``max_queued`` bounds the executions this pool has submitted that have not
    started: ``submit`` then blocks (or raises :class:`QueueFull`). ``history`` is how
    many ended executions the supervisor keeps for ``status`` and :meth:`outcome`.
    ``initializer(*initargs)`` runs once in each worker before its first execution;
    ``max_tasks_per_child`` replaces a worker after that many executions.
    ``spare_worker`` keeps one more worker forked and idle, outside ``workers``: when a
    worker is stopped by a signal or recycled, the spare takes its place at once and a new
    spare is forked in the background (one more process, a few MiB).
    ``preload`` names modules the supervisor imports once, before it forks any worker, so
    every worker (and every replacement) starts with them imported: a framework's import is
    paid once per pool, not once per worker. A module that starts a thread as it is imported
    is refused (the supervisor forks, so it stays single-threaded): import it in
    ``initializer`` instead.
    """

    _proc: subprocess.Popen[bytes] | None  # the supervisor, if this client created it
    _before_interrupt: Callable[[StopRequest], Any] | None
    _after_interrupt: Callable[[ExecutionResult], Any] | None

    def __init__(self, workers: int | None = None, escalation: Escalation | None = None, capacity: int | None = None,
                 *, name: str | None = None, on_event: Callable[[Event], Any] | None = None,
                 checkpoint_dir: str | os.PathLike | None = ".pool/checkpoints", keep_checkpoints: int = 3,
                 max_queued: int | None = None, history: int = 1000, max_frame: int = P.DEFAULT_MAX_FRAME,
                 keep_tools: bool = False, log_dir: str | os.PathLike | None = ".pool/logs",
                 max_log_bytes: int = 1 << 20, memory_limit: int | None = None,
                 before_interrupt: Callable[[StopRequest], Any] | None = None,
                 after_interrupt: Callable[[ExecutionResult], Any] | None = None,
                 initializer: Callable[..., Any] | str | None = None, initargs: tuple = (),
                 max_tasks_per_child: int | None = None, spare_worker: bool = True,
                 preload: Iterable[str] = ()):  # fmt: skip
        if workers is None:
            workers = os.cpu_count() or 1
        _whole("workers", workers, 1)
        if escalation is None:
            escalation = Escalation()
        if not isinstance(escalation, Escalation):
            raise TypeError(f"escalation must be an Escalation(grace=..., term_grace=...), got {escalation!r}")
        if capacity is None:
            capacity = 4 * workers + 64
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < workers:
            raise ValueError(f"capacity must be a whole number of at least workers={workers}, got {capacity!r}")
        _whole("keep_checkpoints", keep_checkpoints, 1)
        if max_queued is not None:
            _whole("max_queued", max_queued, 1)
        _whole("history", history, 0)
        _whole("max_frame", max_frame, 1 << 16)
        for what, fn in (("on_event", on_event), ("before_interrupt", before_interrupt),
                         ("after_interrupt", after_interrupt)):  # fmt: skip
            if fn is not None and not callable(fn):
                raise TypeError(f"{what} must be a function, got {fn!r}")
        if name is not None:
            _naming.check_name(name)
        check_workers_fit(workers)
        _whole("max_log_bytes", max_log_bytes, 4096)
        if memory_limit is not None:
            _whole("memory_limit", memory_limit, 1 << 20)
        if max_tasks_per_child is not None:
            _whole("max_tasks_per_child", max_tasks_per_child, 1)
        preload = _preload_names(preload)
        init: tuple[str | None, bytes | None, bytes | None] = (None, None, None)
        if initializer is not None:
            from ._agents import agent_spec

            spec, blob = agent_spec(initializer, {}, "initializer")
            try:
                args = pickle.dumps(tuple(initargs), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise TypeError(f"initargs cannot be pickled ({type(exc).__name__}: {exc}); pass plain data") from exc
            init = (spec, blob, args)
        elif initargs:
            raise TypeError("initargs were given without an initializer")
        log_dir = None if log_dir is None else os.path.abspath(os.fspath(log_dir))
        # Absolute now: agents may chdir, and 'pool checkpoints' must find the same place.
        checkpoint_dir = None if checkpoint_dir is None else os.path.abspath(os.fspath(checkpoint_dir))
        self._init_client(on_event, max_queued, workers)
        self._before_interrupt, self._after_interrupt = before_interrupt, after_interrupt
        start = P.Start(os.getpid(), workers, capacity, escalation.grace, escalation.term_grace, checkpoint_dir,
                        keep_checkpoints, name, [p for p in sys.path if isinstance(p, str)], max_frame, history,
                        max_queued, bool(keep_tools), log_dir, max_log_bytes, memory_limit,
                        before_interrupt is not None, *init, max_tasks_per_child, bool(spare_worker),
                        preload or None)  # fmt: skip
        sock, self._proc, welcome, chan = _launch(start)
        self._supervisor_ticks = start_ticks(self._proc.pid)
        self.escalation = escalation
        self._attach(sock, chan, welcome, owner=True)

    @classmethod
    def connect(cls, name: str | None = None, *, on_event: Callable[[Event], Any] | None = None,
                timeout: float = 10.0) -> "Pool":  # fmt: skip
        """Attach to a running named pool (``Pool(name=...)`` or ``pool serve``) as one more
        client: submit, wait, cancel, status and events work as on the pool that created it;
        ``shutdown()`` only disconnects this client (the pool goes on)."""
        try:
            addr = _naming.find_pool(name)
        except _naming.NameError_ as exc:
            raise PoolClosed(str(exc)) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        chan = P.Channel(sock, validate=False)  # a supervisor of this user (0700 directory, 0600 socket)
        try:
            sock.connect(str(addr.path))
            chan.send(P.Hello(P.PROTOCOL_VERSION, os.getpid(), "client"))
            msg = chan.recv()
        except (OSError, P.ProtocolError) as exc:
            sock.close()
            raise PoolClosed(f"pool {addr.name!r} is not answering ({exc}); it may just have exited") from None
        if type(msg) is not P.Welcome:
            sock.close()
            raise PoolClosed(msg.message if type(msg) is P.Refused else f"pool {addr.name!r} closed the connection")
        sock.settimeout(None)
        self = cls.__new__(cls)
        self._init_client(on_event, None, msg.workers)
        self._proc = None
        self.escalation = Escalation(grace=msg.grace, term_grace=msg.term_grace)
        self._attach(sock, chan, msg, owner=False)
        return self

    def _init_client(self, on_event, max_queued: int | None, workers: int) -> None:
        self._workers = workers
        self._max_queued = max_queued
        self._queued = 0  # executions holding a max_queued place
        self._listeners: list[Callable[[Event], Any]] = [on_event] if on_event else []
        self._event_queues: list = []  # one SimpleQueue per live events() iterator
        self._subscribed = False
        self._reader_done = False  # set under _lock by the reader thread as it ends: no new waits after it
        self._lock = threading.Lock()  # guards sending and _live/_replies membership
        self._changed = threading.Condition()  # notified by the reader thread when an execution starts or ends
        self._live: dict[str, Execution] = {}  # not yet ended: held here until they end
        self._chunks: dict[str, list] = {}  # chunk id -> [items not ended, [item handles]] (map with a chunksize)
        self._handles: weakref.WeakValueDictionary[str, Execution] = weakref.WeakValueDictionary()
        self._replies: dict[int, cf.Future] = {}
        self._req_ids = itertools.count(1)
        self._auto_ids = itertools.count(1)
        self._id_prefix = os.urandom(5).hex()  # auto ids: unique in this pool, and across runs in practice
        self._ref_cache: _LRU = _LRU(256)  # function -> (spec, blob): bounded, so closures made per call do not pile up
        self._closed = False
        self._broken: str | None = None
        self._pid = os.getpid()
        self._forked_away = False  # set in a child the user forks: this pool is its parent's
        self._calls: queue.SimpleQueue = queue.SimpleQueue()  # (fn, arg) for the callback thread
        self._before_interrupt = self._after_interrupt = None
        self._sources: list[_SourceThread] = []  # add_interrupt_source threads
        self._veto_asks: queue.SimpleQueue = queue.SimpleQueue()  # VetoAsk frames for the veto threads
        self._veto_threads = self._veto_idle = 0  # under _lock

    def _attach(self, sock: socket.socket, chan: P.Channel, welcome: P.Welcome, owner: bool) -> None:
        chan.max_frame = welcome.max_frame
        self._sock, self._chan, self._owner = sock, chan, owner
        self.supervisor_pid = welcome.supervisor_pid
        self.name = welcome.name
        self.socket_path = welcome.socket_path
        self.checkpoint_dir = welcome.checkpoint_dir
        self._cgroup = welcome.cgroup
        self.log_dir = welcome.log_dir
        self._max_frame = welcome.max_frame
        _open_pools.add(self)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name=f"pool-callbacks-{self.supervisor_pid}",
                                            daemon=True)  # fmt: skip
        self._dispatcher.start()
        self._reader = threading.Thread(target=self._read_loop, name=f"pool-reader-{self.supervisor_pid}", daemon=True)
        self._reader.start()
        if self._listeners:
            self._subscribe()

    # -- context manager ---------------------------------------------------

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        interrupted = exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit))
        self.shutdown(wait=True, cancel=interrupted)

    def __repr__(self) -> str:
        state = "broken" if self._broken else "closed" if self._closed else "open"
        return f"<Pool {self.name or ''} supervisor={self.supervisor_pid} {'owner' if self._owner else 'client'} {state}>"

    # -- submitting ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._forked_away:
            raise PoolClosed(f"this Pool belongs to process {self._pid}; a forked child cannot use it: create a "
                             "new Pool in the child, or attach to a named one with Pool.connect(name)")  # fmt: skip
        if self._broken:
            raise PoolBroken(self._broken)
        if self._closed:
            raise PoolClosed("this pool was shut down; create a new Pool to run more work")

    def _task(self, fn, input, id, timeout, escalation, resume=False, on_interrupt=None, memory_limit=None,
              budget=None, stall_timeout=None, group=None, priority=0, preemptible=False,
              call=0, retries=0, retry_on=None, backoff=1.0) -> tuple[P.Task, list]:  # fmt: skip
        """The Task frame for one execution, and the DefineAgent frames it needs first."""
        id = f"{self._id_prefix}-{next(self._auto_ids)}" if id is None else check_id(id)
        return build_task(fn, input, id, self._ref_cache, self._max_frame, self.checkpoint_dir is not None, timeout,
                          escalation, resume, on_interrupt, memory_limit, budget, stall_timeout, group, priority,
                          preemptible, call, retries, retry_on, backoff)  # fmt: skip

    def _reserve(self, n: int, block: bool, timeout: float | None) -> None:
        """Take ``n`` max_queued places, waiting for room (bounded by ``timeout``)."""
        limit = self._max_queued
        if limit is None:
            return
        if n > limit:
            raise ValueError(f"cannot submit {n} executions at once to a pool with max_queued={limit}")
        with self._changed:
            ok = self._changed.wait_for(lambda: self._queued + n <= limit or self._reader_done,
                                        timeout if block else 0)  # fmt: skip
            if self._reader_done:
                raise PoolBroken(self._broken) if self._broken else PoolClosed("this pool was shut down")
            if not ok:
                why = "block=False" if not block else f"after waiting {timeout} s"
                raise QueueFull(f"{self._queued} executions are queued, max_queued={limit}; not submitted ({why}); "
                                "wait for some to start, or raise max_queued")  # fmt: skip
            self._queued += n

    def _unreserve(self, n: int) -> None:
        if self._max_queued is not None and n:
            with self._changed:
                self._queued -= n
                self._changed.notify_all()

    def _register(self, tasks: list[P.Task], defs: list, reserved: bool, grouped: bool,
                  future=None) -> tuple[list[Execution], list]:  # fmt: skip
        """Record and send Submit frames (and the futures of their acceptance); caller holds ``_lock``."""
        live = self._live
        ids = [i for t in tasks for i in (t.items or (t.id,))]
        if any(i in live for i in ids) or len(set(ids)) != len(ids):
            clash = next(i for n, i in enumerate(ids) if i in live or i in ids[:n])
            raise ValueError(f"execution id {clash!r} is already in use by a live execution; pick another id")
        frames: list = []
        execs = []
        handles = self._handles
        for t in tasks:
            if t.items is None:
                ex = Execution(self, t.id)
                ex._reserved = reserved
                ex._future = future
                live[t.id] = handles[t.id] = ex
                execs.append(ex)
                continue
            items = []
            for i in t.items:
                ex = Execution(self, i)
                ex._reserved = reserved
                ex._chunk = t.id
                live[i] = handles[i] = ex
                items.append(ex)
            self._chunks[t.id] = [len(items), items]
            execs.extend(items)
        if self._listeners or self._event_queues:
            now = time.monotonic_ns()
            for ex in execs:
                self._emit(Event.model_construct(kind=EventKind.SUBMITTED, mono_ns=now, execution_id=ex.id))
        acks = []
        for batch in self._batches(tasks):
            # A by-value agent travels with every frame that needs it: the supervisor keeps it only
            # while executions use it, so nothing accumulates for the pool's life.
            frames.extend(defs)
            req = 0
            # Another client's live id is refused with a reply, not a failed execution; so is a group's
            # submission once its budget is used up, for every client.
            if not self._owner or grouped:
                req = next(self._req_ids)
                acks.append((self._replies.setdefault(req, cf.Future()), batch))
            frames.append(P.Submit(req, batch))
        try:
            self._send_many(frames)
        except BaseException:
            self._forget(tasks)
            raise
        return execs, acks

    def _batches(self, tasks: list[P.Task]) -> Iterator[list[P.Task]]:
        """Tasks in frames of at most _SUBMIT_BATCH and of at most half of max_frame in bytes."""
        limit = self._max_frame // 2
        batch: list[P.Task] = []
        size = 0
        for t in tasks:
            n = len(t.input) + len(t.id) + len(t.agent) + 64 + (sum(len(i) + 2 for i in t.items) if t.items else 0)
            if batch and (len(batch) >= _SUBMIT_BATCH or size + n > limit):
                yield batch
                batch, size = [], 0
            batch.append(t)
            size += n
        if batch:
            yield batch

    def _forget(self, tasks: list[P.Task]) -> None:
        for t in tasks:
            self._chunks.pop(t.id, None)
            for i in t.items or (t.id,):
                self._live.pop(i, None)
                self._handles.pop(i, None)

    def _submit_linked(self, task: P.Task, defs: list, future) -> Execution:
        """Submit one task whose Executor future the reader thread settles (linked before it is sent)."""
        return self._submit_tasks([task], defs, False, future)[0]

    def _submit_tasks(self, tasks: list[P.Task], defs: list, grouped: bool = False, future=None) -> list[Execution]:
        """Register and send; for a connected client, or tasks of a group (whose budget may be used
        up), wait for the supervisor's acceptance."""
        with self._lock:
            self._check_open()
            execs, acks = self._register(tasks, defs, self._max_queued is not None, grouped, future)
        refused = None
        for fut, batch in acks:
            try:
                fut.result()
            except _RequestError as exc:  # that frame was refused as a whole; the others stand
                with self._lock:
                    self._forget(batch)
                refused = refused or exc
        if refused is not None:
            text = str(refused)
            if refused.kind == "BudgetExceeded":
                raise BudgetExceeded(text) from None
            raise (QueueFull(text) if "queue is full" in text else ValueError(text)) from None
        return execs

    def submit(self, fn: Callable | str, input: Any = None, *, id: str | None = None, timeout: float | None = None,
               escalation: Escalation | None = None, resume: bool = False,
               on_interrupt: Callable | str | None = None, block: bool = True,
               queue_timeout: float | None = None, memory_limit: int | None = None, budget: float | None = None,
               stall_timeout: float | None = None, group: str | None = None, priority: int = 0,
               preemptible: bool = False, retries: int = 0, retry_on: Iterable[str] | str | None = None,
               backoff: float = 1.0) -> Execution:  # fmt: skip
        """Queue ``fn(ctx, input)``; ``fn`` is a function (importable ones travel by name; ones
        defined in ``__main__``, a notebook or another function travel by value) or a
        'module:function' string.

        ``timeout`` (seconds of running) stops the execution through the escalation
        policy with reason TIMEOUT; ``escalation`` overrides the pool's for this one.
        ``resume=True`` starts it with ``ctx.restore()`` returning the newest checkpoint
        its id saved before. ``on_interrupt(ctx, state)`` runs in the worker when it is
        stopped at the flag or SIGTERM stage, to save what it had; without one,
        ``ctx.state`` is checkpointed if the agent set it. With ``max_queued`` set, a full
        queue blocks here (``block=False``: raise QueueFull at once; ``queue_timeout``:
        after that many seconds). ``memory_limit`` (bytes; default the pool's) ends the
        execution as crashed, naming memory, once its worker and the processes it started
        use more.

        Interrupt sources: ``budget`` (cost units, spent with ``ctx.spend``; its children's
        spend counts) stops it with reason budget_exceeded once used up; ``stall_timeout``
        (seconds) stops it as stalled after that long without progress (``ctx.heartbeat``,
        ``sleep``, ``spend``, ``checkpoint``, a child's end); ``group`` (made with
        :meth:`group`) shares a budget and is cancelled together; ``priority`` (higher runs
        first); ``preemptible=True`` lets higher-priority work stop it (checkpointed) and
        requeue it to resume later.

        ``retries``: run it again, up to that many times, when it ends crashed (its worker
        died); ``retry_on`` widens that to ``"failed"`` (it raised) and ``"interrupted"``
        (by its timeout or stall only: a stop someone asked for is never retried). The
        first retry waits ``backoff`` seconds, each next one twice as long; every earlier
        run is in ``outcome().attempts``.
        """
        self._check_open()
        task, defs = self._task(fn, input, id, timeout, escalation, resume, on_interrupt, memory_limit, budget,
                                stall_timeout, group, priority, preemptible, 0, retries, retry_on, backoff)  # fmt: skip
        self._reserve(1, block, queue_timeout)
        try:
            return self._submit_tasks([task], defs, group is not None)[0]
        except BaseException:
            self._unreserve(1)
            raise

    def _submit_batch(self, fn: Callable | str, items: Sequence[tuple[str | None, Any]], timeout: float | None = None,
                      resume: bool = False, chunksize: int = 1, call: int = 0) -> list[Execution]:  # fmt: skip
        """Submit (id, input) pairs in as few frames as possible; all or none. With ``chunksize``
        above 1, every ``chunksize`` of them travel and run as one chunk (one input pickle, one
        slot, one Run), each still its own execution with its own id, result and cancel."""
        self._check_open()
        if chunksize > 1:
            built = []
            for n in range(0, len(items), chunksize):
                part = items[n : n + chunksize]
                ids = [f"{self._id_prefix}-{next(self._auto_ids)}" if i is None else check_id(i) for i, _ in part]
                task, defs = self._task(fn, [x for _, x in part], f"chunk:{ids[0]}", timeout, None, call=call)
                built.append((task._replace(items=ids), defs))
        else:
            built = [self._task(fn, x, id, timeout, None, resume, call=call) for id, x in items]
        tasks = [t for t, _ in built]
        defs = built[0][1] if built else []
        self._reserve(len(items), True, None)
        try:
            return self._submit_tasks(tasks, defs)
        except BaseException:
            self._unreserve(len(items))
            raise

    def imap(self, fn: Callable | str, inputs: Iterable[Any], *, timeout: float | None = None,
             window: int | None = None, chunksize: int = 1) -> Iterator[Any]:  # fmt: skip
        """Like :meth:`map`, as an iterator: the first ``window`` inputs are submitted at the call
        (a bad one raises here), the rest as values are consumed; at most ``window`` executions
        in flight (default: enough to keep every worker busy). Leaving the iterator stops the
        executions still in flight."""
        _whole("chunksize", chunksize, 1)
        if window is None:
            window = max(256, 16 * self._workers, 4 * chunksize * self._workers)
        _whole("window", window, 1)
        return self._imap(fn, inputs, timeout, window, chunksize, 0, lambda ex: ex.result())

    def _imap(self, fn, inputs, timeout, window: int, chunksize: int, call: int, value: Callable[[Execution], Any],
              track=None) -> Iterator[Any]:  # fmt: skip
        """Submit the first ``window`` inputs now (as ``concurrent.futures`` map does: a bad
        input raises here, and the work starts before the first ``next``); then yield ``value``
        of each execution in input order, topping the window up as they are consumed."""
        if self._max_queued is not None:
            window = min(window, self._max_queued)
        it = iter(inputs)
        pending: deque[Execution] = deque()

        def refill() -> None:
            batch = list(itertools.islice(it, window - len(pending)))
            if batch:
                execs = self._submit_batch(fn, [(None, x) for x in batch], timeout, chunksize=chunksize, call=call)
                pending.extend(execs)
                if track is not None:
                    track.update(execs)

        refill()
        return self._drain(pending, refill, window, value)

    def _drain(self, pending: deque, refill: Callable[[], None], window: int,
               value: Callable[[Execution], Any]) -> Iterator[Any]:  # fmt: skip
        try:
            while pending:
                result = value(pending.popleft())
                if len(pending) <= window // 2:
                    refill()
                yield result
        except BaseException:  # an execution failed, or the caller left (GeneratorExit): the rest stop
            self._cancel_many([ex.id for ex in pending if not ex.done()], InterruptMode.GRACEFUL,
                              InterruptReason.PARENT_CANCELLED, "another execution of the same map() failed")
            raise

    def map(self, fn: Callable | str, inputs: Iterable[Any], *, timeout: float | None = None,
            window: int | None = None, chunksize: int = 1) -> list:  # fmt: skip
        """Run ``fn`` over ``inputs``; return the values in input order.

        ``timeout`` is per execution, as in :meth:`submit`. Inputs are submitted lazily,
        at most ``window`` at a time. The first execution (in input order) that does not
        complete raises its error, after the rest were cancelled.

        ``chunksize`` above 1 sends that many items to a worker at once (one frame, one
        slot), for short items: the peers' ``map`` speed. Each item is still an execution
        of its own, with its own id, result and cancel: cancelling one ends only it, at
        stage ``queued`` if it had not begun or ``flag`` if it was running (the items
        after it run in a new chunk), and ``timeout`` counts for each item from its own
        start. Items of a chunk take no checkpoints (``ctx.checkpoint`` is not available).
        """
        return list(self.imap(fn, inputs, timeout=timeout, window=window, chunksize=chunksize))

    def executor(self, *, cancel_mode: InterruptMode | str = InterruptMode.GRACEFUL,
                 timeout: float | None = None) -> "Executor":  # fmt: skip
        """A ``concurrent.futures.Executor`` running on this pool (its shutdown leaves the pool
        running); see :class:`~interrupt_pool.Executor`."""
        from ._executor import Executor

        return Executor(pool=self, cancel_mode=cancel_mode, timeout=timeout)

    @staticmethod
    def as_completed(executions: Iterable[Execution], timeout: float | None = None) -> Iterator[Execution]:
        """Yield the executions as they end (any status), like concurrent.futures.as_completed.
        Safe from a done callback or a listener: it does not wait on the callback thread."""
        pending = list(executions)
        ended: queue.SimpleQueue = queue.SimpleQueue()
        for ex in pending:
            if not ex._when_ended("_watchers", ended.put):
                ended.put(ex)
        deadline = None if timeout is None else time.monotonic() + timeout
        for left in range(len(pending), 0, -1):
            try:
                yield ended.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{left} executions still live after {timeout} s") from None

    @staticmethod
    async def as_completed_async(executions: Iterable[Execution],
                                 timeout: float | None = None) -> AsyncIterator[Execution]:  # fmt: skip
        """``async for ex in pool.as_completed_async(execs)``: the executions as they end, from
        asyncio (the event loop is never blocked). ``TimeoutError`` once ``timeout`` has passed."""
        import asyncio

        loop = asyncio.get_running_loop()
        ended: asyncio.Queue = asyncio.Queue()
        pending = list(executions)

        def put(ex) -> None:
            try:
                loop.call_soon_threadsafe(ended.put_nowait, ex)
            except RuntimeError:
                pass  # the loop has closed

        for ex in pending:
            if not ex._when_ended("_watchers", put):
                ended.put_nowait(ex)
        deadline = None if timeout is None else loop.time() + timeout
        try:
            for left in range(len(pending), 0, -1):
                try:
                    yield await asyncio.wait_for(ended.get(),
                                                 None if deadline is None else max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise TimeoutError(f"{left} executions still live after {timeout} s") from None
        finally:
            for ex in pending:
                if ex._ended is None:
                    ex._unwatch(put)

    async def aevents(self) -> AsyncIterator[Event]:
        """``async for ev in pool.aevents()``: :meth:`events` for asyncio, from this call on, until
        the pool has shut down or this client disconnected."""
        import asyncio

        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        sink = _LoopSink(loop, q)
        with self._lock:
            if self._reader_done:
                return
            self._event_queues.append(sink)
        self._subscribe()
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            self._drop_queue(sink)

    # -- stopping ------------------------------------------------------------

    def cancel(self, id: str, mode: InterruptMode | str = InterruptMode.GRACEFUL,
               reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
               source: InterruptSource | str = InterruptSource.USER) -> bool:  # fmt: skip
        """Stop execution ``id`` (any execution of the pool, not only this client's).
        True if it was queued or running; False if unknown or ended.

        ``graceful``: flag, then SIGTERM after ``grace``, then SIGKILL after ``term_grace``;
        ``immediate``: flag and SIGTERM now; ``kill``: SIGKILL of its process group now.
        Repeated requests are idempotent and only escalate. When this returns True the
        flag is already set.
        """
        codes = _request_codes(mode, reason, source)
        if self._broken or self._reader_done:
            return False
        try:
            return bool(self._call(lambda req: P.Cancel(req, id, *codes, message)))
        except PoolClosed:
            return False

    def _cancel_many(self, ids: list[str], mode, reason, message: str | None) -> int:
        """Stop many executions with one request (what an abandoned map leaves); how many were live."""
        if not ids or self._broken or self._reader_done:
            return 0
        codes = _request_codes(mode, reason, InterruptSource.USER)
        try:
            return int(self._call(lambda req: P.CancelMany(req, ids, *codes, message)))
        except (PoolClosed, PoolBroken):
            return 0

    def cancel_worker(self, worker_id: int, mode: InterruptMode | str = InterruptMode.GRACEFUL,
                      reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
                      source: InterruptSource | str = InterruptSource.USER) -> bool:  # fmt: skip
        """Stop whatever execution worker ``worker_id`` runs. False if it runs nothing or does not exist."""
        codes = _request_codes(mode, reason, source)
        if self._broken or self._reader_done or isinstance(worker_id, bool) or not isinstance(worker_id, int):
            return False
        try:
            return bool(self._call(lambda req: P.CancelWorker(req, worker_id, *codes, message)))
        except PoolClosed:
            return False

    def cancel_all(self, mode: InterruptMode | str = InterruptMode.GRACEFUL,
                   reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
                   source: InterruptSource | str = InterruptSource.USER, mine_only: bool = False) -> None:  # fmt: skip
        """Stop every queued and running execution of the pool (``mine_only``: only this
        client's). Idempotent; only escalates."""
        codes = _request_codes(mode, reason, source)
        try:
            self._send(P.CancelAll(0, *codes, message, bool(mine_only)))
        except (PoolBroken, PoolClosed):
            pass  # nothing left to stop: the reader thread settles every execution

    def group(self, name: str, budget: float | None | EllipsisType = ...) -> Group:
        """Create group ``name`` and return it (its budget, spend, members); ``budget=`` sets or
        changes its budget (None: no budget); without it, an existing group is left as it is.
        Executions submitted with ``group=name`` (and their children) share its budget: once
        their spend reaches it, every live one is stopped gracefully (reason budget_exceeded)
        and new submissions raise :class:`BudgetExceeded` until the budget is raised here."""
        if not isinstance(name, str) or not name or len(name) > 256 or "\x00" in name:
            raise ValueError(f"group name must be a string of 1 to 256 characters without NUL, got {name!r}")
        keep = budget is ...
        value = None if keep else check_budget("budget", budget)
        self._check_usable()
        return Group(**self._call(lambda req: P.DefineGroup(req, name, value, keep)))

    def cancel_group(self, name: str, mode: InterruptMode | str = InterruptMode.GRACEFUL,
                     reason: InterruptReason | str = InterruptReason.USER_CANCELLED, message: str | None = None, *,
                     source: InterruptSource | str = InterruptSource.USER) -> int:  # fmt: skip
        """Stop every queued and running execution of group ``name`` (their children with them);
        returns how many. ValueError for a group the pool does not have."""
        codes = _request_codes(mode, reason, source)
        self._check_usable()
        return self._call(lambda req: P.CancelGroup(req, name, *codes, message))

    # -- interrupt sources in this process ------------------------------------

    def add_interrupt_source(self, fn: Callable[[], Any], interval: float = 0.1) -> "_SourceThread":
        """Call ``fn()`` every ``interval`` seconds on a thread of its own; it returns the
        executions to stop: ids (graceful, reason custom), :class:`StopRequest` objects or
        dicts with ``execution_id`` (or ``id``), ``mode``, ``reason``, ``message``; or
        None. E.g. a Redis key or a database row that says "stop". An exception in ``fn``
        or a value that is none of these is an event (``source_error``), never fatal.
        Returns a handle whose ``remove()`` stops the calls; shutdown stops them too."""
        if not callable(fn):
            raise TypeError(f"an interrupt source must be a function taking no arguments, got {fn!r}")
        if interval is None:
            raise TypeError("interval must be a positive number of seconds between calls, got None")
        interval = check_timeout("interval", interval)
        self._check_open()
        src = _SourceThread(self, fn, interval)
        with self._lock:
            self._sources.append(src)
        src.start()
        return src

    def handle_signals(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM), *,
                       announce: Callable[[str, InterruptMode], Any] | None = None) -> "_SignalLadder":  # fmt: skip
        """``with pool.handle_signals():`` gives this program the CLI's ladder: the first
        SIGINT or SIGTERM stops every execution of the pool gracefully, the second
        immediately, the third kills them; the previous handlers come back on exit.
        ``announce(signal_name, mode)`` is called before each step (the CLI prints it).
        Enter it in the main thread (Python runs signal handlers there). The handler
        itself only queues the step: the main thread may hold the pool's locks."""
        return _SignalLadder(self, tuple(signals), announce)

    def _ask_veto(self, msg: P.VetoAsk) -> None:
        """A VetoAsk from the supervisor (reader thread): answered by the veto threads, so a slow
        hook holds neither the frames nor the callbacks. Up to _VETO_THREADS questions are asked
        at once (a hook that itself cancels another execution gets that one answered meanwhile);
        a cancel_all of many executions queues its questions, never a thread each."""
        with self._lock:
            self._veto_asks.put(msg)
            if self._veto_idle or self._veto_threads >= _VETO_THREADS:
                return
            self._veto_threads += 1
        try:
            threading.Thread(target=self._veto_loop, name=f"pool-veto-{self.supervisor_pid}", daemon=True).start()
        except RuntimeError:  # no thread can be started now: the threads there are will answer
            with self._lock:
                self._veto_threads -= 1
                alone = self._veto_threads == 0
            if alone:
                self._send(P.VetoAnswer(msg.req, True))  # never leave a stop unanswered for 10 s

    def _veto_loop(self) -> None:
        while True:
            with self._lock:
                self._veto_idle += 1
            msg = self._veto_asks.get()
            with self._lock:
                self._veto_idle -= 1
            if msg is None:
                return
            self._answer_veto(msg)

    def _answer_veto(self, msg: P.VetoAsk) -> None:
        allow = True
        try:
            request = StopRequest.model_construct(
                execution_id=msg.id, mode=InterruptMode.from_code(msg.mode),
                reason=InterruptReason.from_code(msg.reason), source=InterruptSource.from_code(msg.source),
                message=msg.message)  # fmt: skip
            hook = self._before_interrupt
            allow = hook is None or hook(request) is not False
        except Exception as exc:  # a broken hook must not block stops: it allows, and says so
            self._source_error(f"before_interrupt raised {type(exc).__name__}: {exc}; the stop goes ahead", msg.id)
        try:
            self._send(P.VetoAnswer(msg.req, allow))
        except (PoolBroken, PoolClosed):
            pass  # the pool is gone: nothing to stop any more

    def _run_after_interrupt(self, ex: Execution) -> None:
        hook = self._after_interrupt
        if hook is None:
            return
        try:
            hook(ex.outcome())
        except Exception as exc:
            self._source_error(f"after_interrupt raised {type(exc).__name__}: {exc}", ex.id)

    def _source_error(self, text: str, id: str | None = None) -> None:
        """An interrupt source or hook of this process failed: an event, never fatal."""
        if self._watched:
            self._emit(Event.model_construct(kind=EventKind.SOURCE_ERROR, mono_ns=time.monotonic_ns(),
                                             execution_id=id, message=text))  # fmt: skip

    # -- inspecting ------------------------------------------------------------

    def workers(self) -> list[WorkerInfo]:
        """The live workers: id, pid, state (starting, idle, busy, stopping), current execution."""
        self._check_usable()
        rows = self._call(lambda req: P.Query(req, "workers"))
        return [WorkerInfo(id=i, pid=p, state=s, execution_id=e) for i, p, s, e in rows]

    def executions(self) -> list[ExecutionInfo]:
        """This client's live executions and the ended ones whose handles are still held."""
        with self._lock:
            execs = list(self._handles.values())
        return [ExecutionInfo(id=e.id, status=e._status, worker_id=e._worker_id) for e in execs]

    def execution(self, id: str) -> Execution:
        """The handle of execution ``id`` (live, or ended and still held by someone)."""
        ex = self._handles.get(id)
        if ex is None:
            raise KeyError(f"no execution with id {id!r} is held by this client (it was never submitted here, "
                           "or it ended and every handle on it was dropped); Pool.outcome(id) asks the supervisor")  # fmt: skip
        return ex

    def status(self) -> dict:
        """The supervisor's view: workers, live executions and the recent ended ones
        (``history`` of them), counts by status; what ``pool status --json`` prints."""
        self._check_usable()
        return self._call(lambda req: P.Query(req, "status"))

    def has(self, id: str) -> bool:
        """True if the pool has execution ``id`` live or in its history."""
        self._check_usable()
        return bool(self._call(lambda req: P.Query(req, "has", id)))

    def outcome(self, id: str, timeout: float | None = None) -> ExecutionResult:
        """Wait for execution ``id`` (any client's) to end and return how it ended. Works for
        live executions and the ``history`` most recent ended ones; KeyError otherwise."""
        ex = self._handles.get(id)
        if ex is not None:
            return ex.outcome(timeout)
        self._check_usable()
        fut = self._request(lambda req: P.Wait(req, id))
        try:
            info, value = fut.result(timeout)
        except cf.TimeoutError:
            with self._lock:
                for req, f in list(self._replies.items()):
                    if f is fut:
                        del self._replies[req]  # the supervisor keeps only this client's newest wait
            raise TimeoutError(f"execution {id!r} has not ended after {timeout} s") from None
        except _RequestError as exc:
            raise KeyError(str(exc)) from None
        return ExecutionResult.from_wire(info, *self._unpickle(id, info, value))

    def _live_rows(self) -> list[list]:
        """[id, status code, worker id, elapsed s, stage] of every live execution, from the supervisor."""
        return self._call(lambda req: P.Query(req, "executions"))

    def _check_usable(self) -> None:
        if self._broken:
            raise PoolBroken(self._broken)
        if self._reader_done:
            raise PoolClosed("this pool was shut down")

    # -- shutting down ---------------------------------------------------------

    def shutdown(self, wait: bool = True, cancel: bool | InterruptMode | str = False) -> None:
        """Take no more work; with ``cancel`` stop everything queued or running
        (graceful, or the given mode); with ``wait`` return once the supervisor
        and all workers are gone. On a pool attached with :meth:`connect`, this
        client's own executions are waited for (or cancelled) and then it
        disconnects: the pool goes on."""
        mode = 0
        if cancel:
            mode = (InterruptMode.GRACEFUL if cancel is True else _parse(InterruptMode, cancel, "cancel")).code
        if self._forked_away:
            return  # a forked child's copy: the pool is its parent's
        with self._lock:
            first = not self._closed
            self._closed = True
            sources, self._sources = self._sources, []
        for src in sources:
            src.remove()
        if self._owner:
            try:
                if first or mode:
                    self._send(P.Shutdown(mode, InterruptReason.SHUTDOWN.code, InterruptSource.USER.code))
            except (PoolBroken, PoolClosed, OSError):
                pass  # already gone: the reader thread has settled everything
        else:
            if mode:
                self.cancel_all(InterruptMode.from_code(mode), InterruptReason.SHUTDOWN, "the client is shutting down",
                                mine_only=True)  # fmt: skip
            if wait:
                with self._changed:
                    self._changed.wait_for(lambda: not self._live or self._reader_done)
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # the reader sees EOF and settles what is left
            except OSError:
                pass
        if wait and threading.current_thread() is not self._reader:
            self._reader.join()
            if threading.current_thread() is not self._dispatcher:
                self._dispatcher.join()

    close = shutdown

    # -- plumbing ----------------------------------------------------------------

    def _send(self, msg) -> None:
        with self._lock:
            self._send_many([msg])

    def _send_many(self, msgs: list) -> None:
        """Send frames; caller holds ``_lock``."""
        if self._reader_done:
            raise PoolBroken(self._broken) if self._broken else PoolClosed("this pool was shut down")
        try:
            self._chan.send_many(msgs)
        except OSError as exc:
            raise PoolBroken(self._broken or f"the supervisor process (pid {self.supervisor_pid}) is gone") from exc

    def _request(self, build: Callable[[int], Any]) -> cf.Future:
        if self._forked_away:
            self._check_open()  # raises: the pool belongs to the parent
        fut: cf.Future = cf.Future()
        with self._lock:
            if self._reader_done:
                raise PoolBroken(self._broken) if self._broken else PoolClosed("this pool was shut down")
            req = next(self._req_ids)
            self._replies[req] = fut
            self._send_many([build(req)])
        return fut

    def _call(self, build: Callable[[int], Any]):
        try:
            return self._request(build).result()
        except _RequestError as exc:
            raise ValueError(str(exc)) from None

    def _subscribe(self) -> None:
        with self._lock:
            if self._subscribed or self._reader_done:
                return
            self._subscribed = True
            self._send_many([P.Subscribe(0)])

    def _dispatch_loop(self) -> None:
        calls = self._calls
        while True:
            item = calls.get()
            if item is None:
                return
            fn, arg = item
            try:
                fn(arg)
            except Exception:  # a callback's or listener's bug must not stop the others
                traceback.print_exc()

    def _read_loop(self) -> None:
        chan = self._chan
        clean = False
        try:
            while True:
                msg = chan.recv()
                if msg is None:
                    break
                kind = type(msg)
                if kind is P.Ended:
                    self._on_ended(msg)
                elif kind is P.Started:
                    self._on_started(msg)
                elif kind is P.Cancelling:
                    ex = self._live.get(msg.id)
                    for ex in [ex] if ex is not None else self._chunk_items(msg.id) if self._chunks else []:
                        ex._status = ExecutionStatus.CANCELLING
                elif kind is P.Reply:
                    fut = self._replies.pop(msg.req, None)
                    if fut is not None:
                        if msg.ok:
                            fut.set_result(msg.value)
                        else:
                            fut.set_exception(_RequestError(msg.error, msg.value))
                elif kind is P.Event:
                    if self._watched:
                        self._emit(Event.from_wire(msg.kind, msg.id, msg.worker_id, msg.mono_ns, msg.data))
                elif kind is P.Requeued:
                    ex = self._live.get(msg.id)
                    if ex is not None:
                        with self._changed:
                            ex._status = ExecutionStatus.QUEUED
                            ex._worker_id = None
                elif kind is P.VetoAsk:
                    self._ask_veto(msg)
                elif kind is P.Gone:
                    clean = True
        except (OSError, P.ProtocolError):
            pass  # the socket broke: treated as the supervisor being gone
        finally:
            self._on_supervisor_gone(clean)

    def _chunk_items(self, id: str) -> list[Execution]:
        """The live items of chunk ``id`` (a requeued tail is ``<chunk id>#<index>``)."""
        while True:
            entry = self._chunks.get(id)
            if entry is not None:
                return [ex for ex in entry[1] if ex._ended is None]
            id, sep, _ = id.rpartition("#")
            if not sep:
                return []

    def _on_started(self, msg: P.Started) -> None:
        ex = self._live.get(msg.id)
        execs = [ex] if ex is not None else self._chunk_items(msg.id) if self._chunks else []
        if not execs:
            return
        with self._changed:
            for ex in execs:
                ex._worker_id = msg.worker_id
                if ex._status is ExecutionStatus.QUEUED:  # not back from CANCELLING
                    ex._status = ExecutionStatus.RUNNING
                if ex._reserved:
                    ex._reserved = False
                    self._queued -= 1
            self._changed.notify_all()
        for ex in execs:
            fut = ex._future
            if fut is not None:
                fut._started()

    @property
    def _watched(self) -> bool:
        return bool(self._listeners or self._event_queues)

    def _emit(self, event: Event) -> None:
        for q in list(self._event_queues):
            q.put(event)
        for listener in list(self._listeners):
            self._calls.put((listener, event))

    def events(self) -> Iterator[Event]:
        """Iterate over events from this call on (the subscription starts here, not at the
        first ``next``) until the pool has shut down or this client disconnected."""
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            if self._reader_done:
                return iter(())
            self._event_queues.append(q)
        self._subscribe()
        gen = self._drain_events(q)
        weakref.finalize(gen, self._drop_queue, q)  # an iterator dropped before it ran still lets go
        return gen

    def _drop_queue(self, q) -> None:
        try:
            self._event_queues.remove(q)
        except ValueError:
            pass

    def _drain_events(self, q: queue.SimpleQueue) -> Iterator[Event]:
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

    def _unpickle(self, id: str, info: dict, value: bytes | None) -> tuple[Any]:
        if value is None:
            return (None,)
        try:
            return (pickle.loads(value),)
        except Exception as exc:
            info["status"] = ExecutionStatus.FAILED.code
            info["error"] = [type(exc).__name__, f"the result of execution {id!r} cannot be unpickled here: {exc}",
                             traceback.format_exc()]  # fmt: skip
            return (None,)

    def _on_ended(self, msg: P.Ended) -> None:
        ex = self._live.get(msg.id)
        if ex is None:
            return
        (value,) = self._unpickle(msg.id, msg.info, msg.value)
        self._settle(ex, msg.info, value)

    def _settle(self, ex: Execution, d: dict, value: Any = None) -> None:
        """Record the end of ``ex`` (the Ended frame's info) and wake whoever waits."""
        status = ExecutionStatus.from_code(d["status"])
        with self._changed:
            ex._value = value
            ex._status = status
            if d.get("worker_id") is not None:
                ex._worker_id = d["worker_id"]
            ex._ended = d
            if ex._reserved:
                ex._reserved = False
                self._queued -= 1
            callbacks, ex._callbacks = ex._callbacks, None
            watchers, ex._watchers = ex._watchers, None
            self._live.pop(ex.id, None)  # from now on only the user's handles keep it
            self._changed.notify_all()
        for fn in watchers or ():
            fn(ex)
        fut = ex._future
        if fut is not None:
            fut._settle(ex)
        if ex._chunk is not None:
            entry = self._chunks.get(ex._chunk)
            if entry is not None:
                entry[0] -= 1
                if not entry[0]:
                    del self._chunks[ex._chunk]
        for fn in callbacks or ():
            self._calls.put((fn, ex))
        if self._after_interrupt is not None and status is ExecutionStatus.INTERRUPTED:
            self._calls.put((self._run_after_interrupt, ex))

    def _on_supervisor_gone(self, clean: bool) -> None:
        how = ""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # if we stopped reading (a bad frame), the supervisor sees EOF
        except OSError:
            pass
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # it is draining its executions: it ends them within the graces
                self._proc.kill()
                code = self._proc.wait()
            how = f" with exit code {code}" if code >= 0 else f" by signal {signal.Signals(-code).name}"
        try:
            self._sock.close()
        except OSError:
            pass
        _open_pools.discard(self)
        if not clean and self._owner:
            self._broken = f"the supervisor process (pid {self.supervisor_pid}) died{how}; create a new Pool"
            _kill_what_the_pool_started(self.supervisor_pid, self._supervisor_ticks, self._cgroup)
        if self._owner:
            reason = self._broken or "the pool shut down before this execution ended"
            etype = "SupervisorDied" if self._broken else "PoolClosed"
        elif clean or self._closed:
            reason = (f"this client disconnected from pool {self.name!r} before the execution ended; it goes on "
                      f"there: Pool.connect({self.name!r}).outcome(id) or 'pool wait ID' gives its result")  # fmt: skip
            etype = "ClientDisconnected"
        else:
            reason = f"the connection to pool {self.name!r} (supervisor pid {self.supervisor_pid}) broke"
            etype = "PoolBroken"
        for ex in list(self._live.values()):
            self._settle(ex, {"id": ex.id, "status": ExecutionStatus.CRASHED.code, "worker_id": ex._worker_id,
                              "error": [etype, reason, None]})  # fmt: skip
        with self._lock:
            self._reader_done = True  # no new request or events() iterator can start waiting now
            replies, self._replies = list(self._replies.values()), {}
            queues = list(self._event_queues)
        with self._changed:
            self._changed.notify_all()
        for fut in replies:
            fut.set_exception(PoolBroken(reason) if self._broken else PoolClosed(reason))
        for q in queues:
            q.put(None)  # ends each events() iterator
        for src in list(self._sources):
            src.remove(wait=False)  # the reader thread must not wait on a user's function
        for _ in range(self._veto_threads):
            self._veto_asks.put(None)
        self._calls.put(None)  # the callback thread ends after what is queued


def _kill_what_the_pool_started(supervisor_pid: int, ticks: int | None, cgroup: str | None) -> None:
    """The last resort when a supervisor died without cleaning up (SIGKILL, a crash). Its
    workers died with it (PR_SET_PDEATHSIG); the processes their agents started are killed
    here: by the pool's cgroup where the host gave it one, and in every case by the marker
    every worker's environment carries (a tool that cleared its environment and left every
    cgroup escapes; README says so). This scans /proc once, on this rare path only."""
    if cgroup:
        cgroup_kill(cgroup)
    kill_pids(pids_with_env(f"INTERRUPT_POOL_SUPERVISOR={supervisor_pid}:{ticks}"))
    if cgroup:
        deadline = time.monotonic() + 2.0
        while not cgroup_remove(cgroup) and time.monotonic() < deadline:
            time.sleep(0.01)  # killed processes leave their cgroup as init reaps them


class _SourceThread:
    """One external interrupt source: ``fn()`` called every ``interval`` on its own thread."""

    def __init__(self, pool: Pool, fn, interval: float):
        self.pool, self.fn, self.interval = pool, fn, interval
        self._stop = threading.Event()  # set by remove(): also ends the wait between calls at once
        self._thread = threading.Thread(target=self._loop, name=f"pool-source-{getattr(fn, '__name__', 'fn')}",
                                        daemon=True)  # fmt: skip
        self.calls = 0
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def remove(self, wait: bool = True) -> None:
        """Stop calling the source (with ``wait``: return once a call under way has finished)."""
        self._stop.set()
        with self.pool._lock:
            if self in self.pool._sources:
                self.pool._sources.remove(self)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _loop(self) -> None:
        pool = self.pool
        while not self._stop.wait(self.interval):
            if pool._closed or pool._reader_done:
                return
            self.calls += 1
            try:
                found = _requests(self.fn(), self.fn, pool)  # a generator runs (and may raise) in _requests
            except Exception as exc:
                self.errors += 1
                pool._source_error(f"interrupt source {self.fn!r} raised {type(exc).__name__}: {exc}")
                continue
            for item in found:
                try:
                    pool.cancel(item.execution_id, item.mode, item.reason, item.message, source=item.source)
                except Exception as exc:  # never the end of the source: the next call may do better
                    pool._source_error(f"interrupt source {self.fn!r}: {type(exc).__name__}: {exc}", item.execution_id)


def _requests(found, fn, pool: Pool) -> list[StopRequest]:
    """What an interrupt source returned, as requests; garbage is reported, not raised."""
    if found is None:
        return []
    if isinstance(found, (str, dict, StopRequest)):
        found = [found]
    out = []
    try:
        items = list(found)
    except TypeError:
        if not hasattr(found, "__iter__"):
            pool._source_error(f"interrupt source {fn!r} returned {type(found).__name__} {found!r:.80}; return a list "
                               "of execution ids, StopRequest objects or dicts, or None")  # fmt: skip
            return []
        raise  # raised while iterating (a generator): the caller reports it like any exception of fn
    for item in items:
        try:
            if isinstance(item, str):
                out.append(StopRequest(execution_id=item))
            elif isinstance(item, StopRequest):
                out.append(item)
            elif isinstance(item, dict):
                d = dict(item)
                if "id" in d and "execution_id" not in d:
                    d["execution_id"] = d.pop("id")
                out.append(StopRequest(**d))
            else:
                raise TypeError(f"{type(item).__name__} {item!r:.80}")
        except Exception as exc:
            pool._source_error(f"interrupt source {fn!r} returned an item that is not an execution id, StopRequest "
                               f"or dict with execution_id: {type(exc).__name__}: {exc}")  # fmt: skip
    return out


class _SignalLadder:
    """The context manager of :meth:`Pool.handle_signals`."""

    _LADDER = (InterruptMode.GRACEFUL, InterruptMode.IMMEDIATE, InterruptMode.KILL)

    def __init__(self, pool: Pool, signals: tuple, announce=None):
        self.pool, self.watched, self.announce = pool, signals, announce
        self.signals: list[int] = []  # the signals received, in order
        self._previous: dict = {}

    def __enter__(self) -> "_SignalLadder":
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("pool.handle_signals() must be entered in the main thread (Python delivers signals "
                               "there); run it there, or call pool.cancel_all() from your own handler")  # fmt: skip
        self._steps: queue.SimpleQueue = queue.SimpleQueue()
        # Its own thread: a step never waits behind a slow done-callback, listener or after_interrupt.
        self._thread = threading.Thread(target=self._run_steps, name="pool-signals", daemon=True)
        self._thread.start()
        for sig in self.watched:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self._steps.put(None)
        self._thread.join()

    def _on_signal(self, signum, frame) -> None:
        # Runs between two bytecodes of the main thread, which may hold the pool's locks: the
        # step is handed to the ladder's thread (SimpleQueue.put is safe here).
        if self.pool._closed or self.pool._reader_done:
            previous = self._previous.get(signum)  # nothing left to stop: the program's own handling
            if callable(previous):
                return previous(signum, frame)
            if previous != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)  # as if we were not there (__exit__ restores it anyway)
                os.kill(os.getpid(), signum)
            return
        mode = self._LADDER[min(len(self.signals), len(self._LADDER) - 1)]
        self.signals.append(signum)
        self._steps.put((mode, signal.Signals(signum).name))

    def _run_steps(self) -> None:
        while True:
            step = self._steps.get()
            if step is None:
                return
            self._cancel_all(step)

    def _cancel_all(self, arg) -> None:
        mode, name = arg
        if self.announce is not None:
            try:
                self.announce(name, mode)
            except Exception:
                traceback.print_exc()  # a broken announcement must not keep the stop from happening
        self.pool.cancel_all(mode, InterruptReason.USER_CANCELLED, f"{name} received ({mode.value})",
                             source=InterruptSource.SIGNAL)  # fmt: skip


class _LoopSink:
    """An events() queue for an asyncio consumer: the reader thread's put hands over to the loop."""

    __slots__ = ("loop", "q")

    def __init__(self, loop, q) -> None:
        self.loop, self.q = loop, q

    def put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.q.put_nowait, item)
        except RuntimeError:
            pass  # the loop has closed: nobody is listening any more


class _LRU(dict):
    """A dict that forgets its oldest entries beyond ``size`` (insertion order is age)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        while len(self) > self.size:
            del self[next(iter(self))]


class _RequestError(Exception):
    """The supervisor answered a request with an error (its text is for the user; ``kind``
    names an exception class when it is not a ValueError)."""

    def __init__(self, text: str, kind: str | None = None):
        super().__init__(text)
        self.kind = kind


def _after_fork_in_child() -> None:
    """A child the user forks must not touch its parent's pools: their sockets are closed
    here (so the child holds no end of them), and its exit shuts nothing down."""
    for pool in list(_open_pools):
        pool._forked_away = True
        try:
            fd = pool._sock.detach()
            if fd >= 0:
                os.close(fd)
        except OSError:
            pass
    _open_pools.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _shutdown_open_pools() -> None:
    for pool in list(_open_pools):
        if pool._pid == os.getpid():
            pool.shutdown(wait=True, cancel=True)
