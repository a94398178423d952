"""The worker process: runs one agent call at a time for the supervisor.

Owns: the worker's own process (its session and process group, its cgroup,
signal dispositions, descriptors 0-2 and exit), the observed_ns word of the
slot it currently runs in, the processes its executions start (it is their
child subreaper), and its cache of agent functions (imported by name, or
unpickled from the bytes of an agent shipped by value). It is forked from the
supervisor, and this is the only place agent code is ever imported.

Per execution: acknowledge it (the slot's ``begun`` word), restore a clean slate (default signal
dispositions, an empty signal mask, fds 0-2 as they were, stdin on /dev/null,
the starting directory), run the agent, stop every process it started (unless
the pool keeps tools), send the Result.

Signals: SIGTERM raises :class:`Interrupted` in the agent (stage ``sigterm``)
so its ``finally`` blocks run, from the moment its module starts loading. The
handler first checks the slot's ``signalled`` word: a SIGTERM the supervisor
sent for the execution this worker has *just finished* is ignored (it raced
the Result), one sent for the running execution (or by someone outside the
pool) stops it. Inside the library's critical sections (a checkpoint write,
a frame) the Interrupted is deferred to the end of the section. If the
agent's unwinding then blocks on one of its own threads for longer than a
short bound, a watchdog thread saves what it can, sends the Result at stage
``sigterm`` and exits. A worker that was stopped by SIGTERM always exits after
its Result: the supervisor replaces it.

Interrupt sources, worker side: ``ctx.shield()`` uses the same critical
section (a SIGTERM waits for its end; a flag seen inside it is raised as it
ends); ``ctx.submit`` sends SubmitChild through the worker's :class:`Tree`
(pool/_children.py), whose lock and condition every execution of this worker
uses in turn; the Run frame carries the execution's budget allowance and how
many children it asked for in earlier runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from ._children import Tree
from ._proc import (
    cgroup_join,
    descendants,
    direct_children,
    kill_pids,
    set_child_subreaper,
    set_name,
    set_pdeathsig,
    start_ticks,
)
from .shared import Context, ExecutionStatus, Interrupted, InterruptMode, Stage
from .shared import _protocol as P
from .shared._checkpoint import CheckpointInfo
from .shared._context import ExecutionCheckpoints
from .shared import _context
from .shared._flags import BEGUN, ITEM, ITEM_NS, LIMIT, PENDING, SIGNALLED
from .shared._protocol import OUTPUT_END

if TYPE_CHECKING:
    import asyncio  # (imported only when an async agent runs)

__all__ = ("AgentCache", "worker_main")

# Signals whose disposition a clean slate resets (SIGKILL and SIGSTOP cannot be changed).
_RESETTABLE = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
_OURS: dict[int, Any] = {signal.SIGTERM: None, signal.SIGINT: signal.SIG_IGN, signal.SIGPIPE: signal.SIG_IGN,
                         signal.SIGXFSZ: signal.SIG_IGN}  # None: _on_sigterm; the rest as CPython starts them
_UNWIND_BOUND_S = 1.0  # at most this long (and at most half the term grace) for a stuck unwinding


class AgentCache:
    """The by-value agents a worker keeps: at most ``size``, least recently used out first.
    The supervisor keeps one per worker with the same rule, updated for the same Run frames
    in the same order, so it knows without asking whether the worker still has an agent."""

    def __init__(self, size: int = 64):
        self.size = size
        self.order: dict[str, None] = {}
        self.evicted: list[str] = []

    def touch(self, spec: str) -> bool:
        """Record a use; True if it was already held."""
        held = self.order.pop(spec, False) is None
        self.order[spec] = None
        while len(self.order) > self.size:
            self.evicted.append(next(iter(self.order)))
            del self.order[self.evicted[-1]]
        return held


class _State:
    """The worker's view of what runs now; written by the main thread, read by the SIGTERM
    handler (which Python runs in the main thread) and the unwinding watchdog."""

    armed = False  # agent code runs in the main thread: SIGTERM raises Interrupted there
    term_seen = False  # a SIGTERM for the running execution arrived: exit after its Result
    critical = 0  # depth of library critical sections (any thread): SIGTERM waits for their end
    deferred = False  # a SIGTERM arrived inside a critical section
    current: tuple[int, int] | None = None  # (control index, armed) of the execution taken, from its Run on
    ctx: Context | None = None  # the execution running now
    finished: tuple[int, int] | None = None  # (control index, armed) of the one that ended last
    words: memoryview  # the flag array's words (set at the worker's start, before any use)
    chan: _Chan  # the supervisor's channel (set at the worker's start, before any use)
    result_lock = threading.Lock()  # serialises the one Result of the running execution
    result_for: Context | None = None  # the execution whose Result has been sent
    hook = None  # the running execution's on_interrupt hook, for the watchdog
    watchdog: threading.Timer | None = None
    bound = _UNWIND_BOUND_S
    pid = 0
    capture = False  # fds 1 and 2 are the supervisor's output pipe
    task: asyncio.Task[Any] | None = None  # an async agent's task and event loop while it runs
    loop: Any = None  # (an asyncio event loop: only read while task is set)
    task_stage = Stage.FLAG
    max_value = P.DEFAULT_MAX_FRAME
    chunk_id: str | None = None  # the chunk running now: its item results not sent yet, from chunk_sent on
    chunk_results: list = []
    chunk_sent = 0
    chunk_marks = 0  # items of the chunk whose end of output is marked
    checkpoint_dir: str | None = None  # the pool's (for the executions of a batched chunk)
    slate: "_Slate | None" = None
    keep_tools = False
    keep_checkpoints = 3
    flush_lock = threading.Lock()  # the chunk's results: sent by the main thread or the flusher
    flusher: "_Flusher | None" = None


S = _State()


class _Chan(P.Channel):
    """The worker's channel: sends from any thread are serialised."""

    __slots__ = ("_send_lock", "read_lock")

    def __init__(self, sock, max_frame: int):
        super().__init__(sock, max_frame, validate=False)
        self._send_lock = threading.Lock()
        self.read_lock = threading.Lock()  # the main loop's recv and agent threads' polls, one at a time

    def send(self, msg) -> None:
        data = P.encode(msg)
        with self._send_lock:
            self.sock.sendall(data)

    def send_many(self, msgs) -> None:
        data = b"".join(map(P.encode, msgs))
        with self._send_lock:
            self.sock.sendall(data)


@contextlib.contextmanager
def critical():
    """Library work that a SIGTERM's Interrupted must not cut in half; the deferred stop
    is delivered again at the end (to the main thread, whichever thread ran this)."""
    S.critical += 1
    try:
        yield
    finally:
        S.critical -= 1
        if S.deferred and S.critical == 0:
            S.deferred = False
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs now that nothing is in the way


def _exit(code: int = 0) -> None:
    """Leave without running the supervisor's atexit handlers, but with what the agents
    printed flushed (os._exit would drop a pipe's block-buffered output)."""
    _flush_std()
    os._exit(code)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass  # closed or replaced by the agent: nothing we can deliver


def _targets(ctl: int, armed: int) -> bool:
    return S.words[ctl + SIGNALLED] == armed


def _on_sigterm(signum, frame):
    ctx = S.ctx
    if S.current is None or not _targets(*S.current):
        if S.finished is not None and _targets(*S.finished):
            return  # meant for the execution that has just ended: it raced its Result
        if S.current is None:
            _exit(0)  # from outside the pool, between executions: the worker simply ends
        # from outside the pool while an execution runs: a stop of that execution, as ever
    S.term_seen = True
    if ctx is None:
        return  # taken but not started: _run sees term_seen as soon as it arms
    if S.critical:
        S.deferred = True
        return
    if S.armed:
        S.armed = False  # raise once; a second SIGTERM must not hit the agent's finally
        ctx._observe()
        _start_watchdog(ctx)
        if S.task is not None:  # an async agent
            import asyncio

            if asyncio.current_task(S.loop) is None:  # the loop's own code runs, not the agent's:
                S.task_stage = Stage.SIGTERM  # cancel the agent's task instead of raising in asyncio
                S.loop.call_soon_threadsafe(S.task.cancel, "SIGTERM")
                return
        exc = Interrupted("worker received SIGTERM", stage=Stage.SIGTERM)
        exc._from_pool = True
        raise exc


def resolve(spec: str, cache: dict, blobs: dict):
    """The function ``spec`` names: ``module:qualname`` imported, or ``blob:<digest>``
    unpickled from the bytes the supervisor sent the first time this worker needed it."""
    fn = cache.get(spec)
    if fn is not None:
        return fn
    if spec.startswith("blob:"):
        blob = blobs.get(spec)
        if blob is None:
            raise RuntimeError(f"agent {spec} was never sent to this worker (a supervisor bug)")
        fn = pickle.loads(blob)  # cloudpickle output; cloudpickle's helpers are imported on demand
    else:
        module, _, qualname = spec.partition(":")
        fn = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
    cache[spec] = fn
    return fn


_set_signal = signal.signal
_touched: set[int] = set()  # signals agent code set a handler for since the last clean slate


def _recording_signal(sig, handler):
    """signal.signal as agents see it in a worker: the same, and the clean slate learns which
    dispositions to put back (a disposition set through ctypes is not seen: README says so)."""
    _touched.add(sig)
    return _set_signal(sig, handler)


class _Slate:
    """What every execution starts from: taken when the worker starts, restored before each."""

    def __init__(self):
        self.cwd = os.getcwd()
        self.stdio = [(st.st_dev, st.st_ino) for st in map(os.fstat, (1, 2))]
        self.saved = [os.dup(fd) for fd in (1, 2)]  # cloexec: tools never see these
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        null = os.fstat(self.devnull)
        self.null_id = (null.st_dev, null.st_ino)
        os.dup2(self.devnull, 0, inheritable=True)
        self.wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.rang = False  # the wake pipe was written (a stop came): drain it before the next execution

    def restore(self, everything: bool = False) -> None:
        """A handful of syscalls: the mask, three fstats, getcwd. Dispositions: those the last
        execution set through signal.signal (recorded as it set them), or all of them."""
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for sig in _RESETTABLE if everything else list(_touched):
            want = _OURS.get(sig, signal.SIG_DFL) if sig in _OURS else signal.SIG_DFL
            if want is None:
                want = _on_sigterm
            try:
                if signal.getsignal(sig) is not want:
                    _set_signal(sig, want)
            except (OSError, ValueError, RuntimeError):
                pass  # a real-time or reserved signal Python cannot set: left as it is
        _touched.clear()
        self._fd(0, None)
        for i, fd in enumerate((1, 2)):
            self._fd(fd, i)
        for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
            stream = getattr(sys, name)
            if stream is None or getattr(stream, "closed", True) or getattr(stream, "fileno", None) is None:
                setattr(sys, name, open(fd, mode, closefd=False, buffering=1 if fd else -1))
        try:
            if os.getcwd() != self.cwd:
                os.chdir(self.cwd)
        except OSError:
            os.chdir(self.cwd)  # the agent's directory was removed
        if self.rang:
            self.rang = False
            try:
                while os.read(self.wake[0], 4096):
                    pass  # a stop of the previous execution rang it
            except BlockingIOError:
                pass

    def _fd(self, fd: int, i: int | None) -> None:
        """fd 0 on /dev/null; fds 1 and 2 on what they were when the worker started."""
        try:
            st = os.fstat(fd)
            same = (st.st_dev, st.st_ino) == (self.null_id if i is None else self.stdio[i])
        except OSError:
            same = False  # closed by the agent
        if not same:
            os.dup2(self.devnull if i is None else self.saved[i], fd, inheritable=True)


def _stop_tools(keep: bool) -> None:
    """Stop every process the execution started (they are our descendants: we are their
    subreaper, so even setsid and double-forked ones are), and reap them. With no thread of
    the agent left, one read of our children list says whether there is anything to do."""
    if keep:
        _reap()
        return
    me = S.pid
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        found = _main_thread_children(me) if threading.active_count() == 1 else descendants(me)
        if not found:
            return
        found = descendants(me)  # the whole tree, killed at once
        kill_pids(found)
        _reap()  # what died is reaped; grandchildren re-parent to us as their parents go
        alive = direct_children_alive(me)
        if alive:
            _wait_for_exit(alive, deadline)
    _reap()


def _wait_for_exit(pids: list[int], deadline: float) -> None:
    """Block until one of ``pids`` has exited (their pidfds turn readable), 50 ms or the
    deadline at most: a SIGKILLed process is gone within a scheduler tick, no polling."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except OSError:
            pass  # exited (and reaped) since it was listed
    try:
        if fds:
            poller = select.poll()  # (select.select cannot take a descriptor numbered 1024 or more)
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.poll(max(0.0, min(0.05, deadline - time.monotonic())) * 1000)
    finally:
        for fd in fds:
            os.close(fd)


def direct_children_alive(pid: int) -> list[int]:
    """Children not yet reaped that are still running (not zombies)."""
    alive = []
    for child in direct_children(pid):
        try:
            with open(f"/proc/{child}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z":
            alive.append(child)
    return alive


def _main_thread_children(pid: int) -> list[bytes]:
    """Our children (zombies included) forked by the main thread: three syscalls."""
    fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16).split()
    finally:
        os.close(fd)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def worker_main(chan: P.Channel, words, worker_id: int, supervisor_pid: int, checkpoint_dir: str | None,
                keep_checkpoints: int, cgroup: str | None = None, keep_tools: bool = False,
                max_frame: int = P.DEFAULT_MAX_FRAME, capture: bool = False, initializer=None) -> None:  # fmt: skip
    """Serve tasks until told to exit, the supervisor vanishes, or a SIGTERM stop."""
    os.setsid()  # session leader, own process group, no controlling terminal
    set_pdeathsig(signal.SIGKILL)
    set_child_subreaper()  # orphans of the tools it starts re-parent here, so it can stop them all
    set_name(f"pool-worker-{worker_id}")
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        _exit(1)
    if cgroup is not None:
        # Moving into a cgroup waits for the kernel's RCU grace period (about 10 ms here): done
        # beside the first execution rather than before it. Until it is done, what an agent
        # starts is still its worker's descendant, in its session, under its subreaper.
        threading.Thread(target=cgroup_join, args=(cgroup,), name="cgroup-join", daemon=True).start()
    # Tools inherit it: the owner's last resort finds them by it if the supervisor is SIGKILLed.
    os.environ["INTERRUPT_POOL_SUPERVISOR"] = f"{supervisor_pid}:{start_ticks(supervisor_pid)}"
    S.pid = os.getpid()
    S.capture = capture
    S.checkpoint_dir, S.keep_checkpoints = checkpoint_dir, keep_checkpoints
    chan = _Chan(chan.sock, max_frame)
    S.words, S.chan, S.max_value = words, chan, max_frame - 64 * 1024  # room for the rest of the Result
    signal.set_wakeup_fd(-1)
    try:
        # What agents print reaches their log as they print it (TextIO lacks reconfigure: typeshed's view).
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    slate = S.slate = _Slate()
    S.keep_tools = keep_tools
    slate.restore(everything=True)
    signal.signal = _recording_signal
    cache: dict[str, object] = {}  # spec -> function
    blobs: dict[str, bytes] = {}  # by-value agents' bytes, as they arrived (the supervisor sends them when needed)
    held = AgentCache()  # which by-value agents this worker keeps
    pending: list = []
    begin_delay = float(os.environ.get("_INTERRUPT_POOL_TEST_BEGIN_DELAY", "0"))  # tests force the race window
    tree = Tree(chan, critical, max_frame, checkpoint_dir is not None)
    if initializer is not None:
        _initialize(chan, initializer, cache, blobs)
    chan.send(P.WorkerReady(os.getpid()))
    while True:
        if pending:
            msg = pending.pop(0)
        else:
            with chan.read_lock:  # a thread an earlier execution left behind cannot read our frames
                msg = chan.recv()
        if msg is None or type(msg) is P.Exit:
            _exit(0)
        if type(msg) is P.Warm:  # a spare: import what the pool runs now, before it takes over
            for spec, blob in msg.agents:
                if spec.startswith("blob:"):
                    held.touch(spec)  # as the supervisor did when it sent this
                    if blob is not None:
                        blobs[spec] = blob
                try:
                    resolve(spec, cache, blobs)
                except BaseException:  # SystemExit at import too: the spare must live on
                    pass  # the execution that needs it reports why it cannot load
            continue
        if type(msg) is not P.Run:
            continue  # a late Interrupt for an execution that already ended
        for spec, blob in ((msg.agent, msg.agent_blob), (msg.hook, msg.hook_blob)):
            if spec is not None and spec.startswith("blob:"):
                held.touch(spec)  # as the supervisor did when it sent this Run
                if blob is not None:
                    blobs[spec] = blob
        for spec in held.evicted:
            blobs.pop(spec, None)
            cache.pop(spec, None)
        held.evicted.clear()
        S.current, S.term_seen = (msg.control_index, msg.armed), False  # from here a SIGTERM may be for it
        if begin_delay:
            time.sleep(begin_delay)
        if not words[msg.control_index + PENDING]:  # already stopped: skipped at the flag, never begun
            words[msg.control_index + BEGUN] = msg.armed  # the acknowledgement: signals may come from now on
        slate.restore()
        ckpt = None if checkpoint_dir is None or msg.items is not None else ExecutionCheckpoints(checkpoint_dir, keep_checkpoints, msg.id,
                                                                        msg.resume, chan)  # fmt: skip
        tree.reset(msg.children_before)
        ctx = Context(words, msg.control_index, msg.armed, chan, msg.id, worker_id, ckpt, slate.wake, critical,
                      msg.allowance, tree)  # fmt: skip
        S.ctx, S.hook = ctx, None
        _context._current = ctx
        S.bound = max(0.05, min(_UNWIND_BOUND_S, msg.term_grace / 2))
        if msg.items is None:
            status, value, error, stage, own = _run(ctx, cache, blobs, msg)
        else:
            status, value, error, stage, own = _run_chunk(ctx, cache, blobs, msg)
        _context._current = None
        _cancel_watchdog()
        ctx._done = True  # a thread of the agent that outlives it can no longer use it
        slate.rang = ctx._details is not None  # its stop's details were read: the wake pipe was written
        if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
            _set_signal(signal.SIGTERM, _on_sigterm)  # the agent replaced it: ours again, before the send
        _stop_tools(keep_tools)
        if msg.items is None:
            _end_of_output()
        else:  # one mark per item (each had its own): the ones it never began, now
            for _ in range(len(msg.items) - S.chunk_marks):
                _end_of_output()
        if not _send_result(ctx, status, value, error, stage, own):
            _exit(0)  # the watchdog sent it and is ending the process
        pending.extend(ctx._pending)
        S.finished, S.current, S.ctx = S.current, None, None
        S.chunk_id = None
        if stage == Stage.SIGTERM.code:
            _exit(0)  # stopped by SIGTERM: the supervisor replaces us (a late one was ignored above)


def _initialize(chan, initializer, cache: dict, blobs: dict) -> None:
    """Run the pool's ``initializer(*initargs)`` once, before the first execution (one model
    client per worker, say). If it raises, the supervisor hears why and the worker exits."""
    spec, blob, args = initializer
    try:
        if blob is not None:
            blobs[spec] = blob
        fn = resolve(spec, cache, blobs)
        fn(*(pickle.loads(args) if args is not None else ()))
    except BaseException as exc:
        name = spec if blob is None else "(shipped by value)"
        chan.send(P.InitFailed(_error(exc, f"the pool's initializer {name} raised {type(exc).__name__}: ")))
        _exit(3)
    finally:
        blobs.pop(spec, None)
        cache.pop(spec, None)


def _send_result(ctx: Context, status, value, error, stage, own) -> bool:
    """Send the execution's one Result; False if another thread (the watchdog) already did."""
    with S.result_lock:
        if S.result_for is ctx:
            return False
        S.result_for = ctx
        _flush_std()
        ckpt = ctx._ckpt
        newest = resumed = None
        done = None
        if S.chunk_id is not None:
            done = _flush_items()
        if ckpt is not None:
            resumed = ckpt.restored_from.to_wire() if ckpt.restored_from else None
            best = ckpt.latest or ckpt.restored_from
            newest = best.to_wire() if best else None
        with critical():
            S.chan.send(P.Result(S.chunk_id or ctx.execution_id, status.code, value, error, stage, ctx._observed_ns(),
                                 newest, resumed, own, ctx.shield_ns, done))  # fmt: skip
    return True


def _end_of_output() -> None:
    """Mark the end of this execution's output in the pipe (one write, atomic under PIPE_BUF),
    so the supervisor cuts the stream exactly here even if it reads it late."""
    if S.capture:
        try:
            os.write(1, OUTPUT_END)
        except OSError:
            pass  # fd 1 is not the pipe any more (the clean slate restores it for the next one)


def _error(exc: BaseException, prefix: str = "") -> list:
    tb = "".join(traceback.format_exception(exc))
    return [type(exc).__name__, prefix + str(exc), tb]


def _run(ctx: Context, cache: dict, blobs: dict, msg: P.Run):
    """Run one execution; return (status, pickled value, error, stage code, own interrupt message)."""
    if ctx.interrupted:  # stopped before its first line ran (e.g. while prefetched): never run it
        ctx._observe()
        return ExecutionStatus.INTERRUPTED, None, None, Stage.QUEUED.code, None
    hook = None
    try:
        S.armed = True  # loading the agent's module runs agent code: a SIGTERM stops it there too
        try:
            if S.term_seen:  # a SIGTERM for it came before it started: it ends at that stage
                S.armed = False
                _start_watchdog(ctx)
                exc = Interrupted("worker received SIGTERM before the agent started", stage=Stage.SIGTERM)
                exc._from_pool = True
                raise exc
            try:
                fn = resolve(msg.agent, cache, blobs)
                hook = S.hook = resolve(msg.hook, cache, blobs) if msg.hook else getattr(fn, "on_interrupt", None)
                inp = pickle.loads(msg.input)
                if ctx._ckpt is not None and ctx._ckpt.resume:
                    found = ctx._ckpt.newest()
                    ctx._ckpt.restored_from = found[0] if found else None
                    if found:
                        with critical():
                            S.chan.send(P.Resumed(ctx.execution_id, found[0].to_wire()))
            except Exception as exc:
                what = msg.agent if not msg.agent.startswith("blob:") else "(shipped by value)"
                return ExecutionStatus.FAILED, None, _error(exc, f"could not load agent {what} or its input: "), None, None
            result = fn(*inp[0], **inp[1]) if msg.call else fn(ctx, inp)
            if type(result).__name__ == "coroutine":
                result = _run_async(ctx, result)
        finally:
            S.armed = False
    except Interrupted as exc:
        _cancel_watchdog()  # it unwound: the hook now has until SIGKILL, as documented
        if not exc._from_pool:  # the agent stopped itself: its message, source "agent"
            return ExecutionStatus.INTERRUPTED, None, _on_interrupt(ctx, hook), Stage.FLAG.code, str(exc)
        return ExecutionStatus.INTERRUPTED, None, _on_interrupt(ctx, hook), exc.stage.code, None
    except BaseException as exc:  # the agent's own failure, SystemExit included
        return ExecutionStatus.FAILED, _exception_value(exc) if msg.call else None, _error(exc), None, None
    return _value(ctx, result)


def _value(ctx: Context, result):
    """(status, pickled value, error, stage, own) of a value an agent returned."""
    try:
        value = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        if len(value) > S.max_value:
            raise ValueError(f"it is {len(value)} bytes pickled, more than the pool's max_frame allows "
                             f"({S.max_value} for a value); return a path or a reference instead, or raise max_frame")  # fmt: skip
        return ExecutionStatus.COMPLETED, value, None, None, None
    except Exception as exc:
        return (ExecutionStatus.FAILED, None,
                _error(exc, f"the result of execution {ctx.execution_id!r} cannot be pickled; return plain data: "),
                None, None)  # fmt: skip


def _exception_value(exc: BaseException) -> bytes | None:
    """The exception itself, pickled, for callers that re-raise it (an Executor's future
    raises the function's own exception, as ProcessPoolExecutor's does); None if it cannot
    travel (the error triple still describes it)."""
    try:  # (its traceback does not travel in the pickle: the error's text carries it)
        value = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(value)  # some exceptions pickle but cannot be rebuilt (required arguments)
        return value if len(value) <= S.max_value else None
    except Exception:
        return None


class _ItemCheckpoints(ExecutionCheckpoints):
    """The checkpoints of one execution the pool batched into a chunk, set up on first use (most
    never checkpoint; one that does keeps its agent out of batching from then on)."""

    __slots__ = ("_args",)

    def __init__(self, root: str, keep: int, execution_id: str, chan: P.Channel) -> None:  # (no super: lazy)
        self._args: tuple | None = (root, keep, execution_id, chan)
        self.resume, self.floor, self.latest, self.restored_from = False, None, None, None

    def _ready(self) -> None:
        if self._args is not None:
            root, keep, execution_id, chan = self._args
            self._args = None
            ExecutionCheckpoints.__init__(self, root, keep, execution_id, False, chan)

    def save(self, state: Any, durable: bool) -> CheckpointInfo:
        self._ready()
        return super().save(state, durable)

    def newest(self) -> Any:
        self._ready()
        return super().newest()


_FLUSH_NS = 2_000_000  # a chunk reports its items' ends at least this often (a kill loses at most these)


def _flush_items() -> int:
    """Send the chunk's item results not sent yet (one frame); return how many items it took."""
    with S.flush_lock:
        results, first = S.chunk_results, S.chunk_sent
        if len(results) > first and S.chunk_id is not None:
            S.chunk_sent = len(results)
            with critical():
                S.chan.send(P.ItemsDone(S.chunk_id, first, results[first:]))
        return len(results)


class _Flusher:
    """Sends a chunk's finished items' results within _FLUSH_NS even while the next item runs
    for long (so a kill then loses at most that window); one thread per worker, started on
    the first chunk, idle between them."""

    def __init__(self) -> None:
        self.armed = threading.Event()
        threading.Thread(target=self._loop, name="chunk-results", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.armed.wait()
            time.sleep(_FLUSH_NS / 1e9)  # the window itself: results gather, then go in one frame
            self.armed.clear()  # before the send: a result added from now on arms the next round
            _flush_items()


def _run_chunk(ctx: Context, cache: dict, blobs: dict, msg: P.Run):
    """Run the items of a chunk in turn, each under its own id with its own result (see
    ``ItemsDone``). Before each item the worker says which one it starts (the slot's
    ``item`` word) and then reads the supervisor's ``limit``; a stop of the chunk (its
    flag) or a limit it has reached ends the chunk at that item boundary, and the items not
    begun are the supervisor's to requeue or end. An item's own stop at the flag ends that
    item and then the chunk; an item that raises ``Interrupted`` itself ends only itself."""
    words, base = S.words, msg.control_index
    items = msg.items or []  # (a chunk's Run has them)
    n = len(items)
    skip = set(msg.skip) if msg.skip else ()
    S.chunk_id, S.chunk_results, S.chunk_sent, S.chunk_marks = msg.id, [], 0, 0
    results = S.chunk_results
    if S.flusher is None:
        S.flusher = _Flusher()
    armed = S.flusher.armed
    failed = ExecutionStatus.FAILED.code
    try:
        fn = resolve(msg.agent, cache, blobs)
        inputs = pickle.loads(msg.input) if msg.inputs is None else msg.inputs  # merged: pickled one by one
    except Exception as exc:
        what = msg.agent if not msg.agent.startswith("blob:") else "(shipped by value)"
        err = _error(exc, f"could not load agent {what} or its input: ")
        results.extend(None if k in skip else [failed, None, err, None, 0, None] for k in range(n))
        return ExecutionStatus.COMPLETED, None, None, None, None
    call, first, merged = msg.call, msg.first, msg.inputs is not None
    capture, slate = S.capture, S.slate
    assert slate is not None  # (made when the worker started)
    stopped = None
    for k in range(n):
        if k:
            if merged:  # separate executions, as if run one by one: the last one's tools stopped, a clean slate
                _stop_tools(S.keep_tools)
                slate.restore()
            if capture:
                _end_of_output()  # the previous item's output ends here
                S.chunk_marks = k
            if len(results) > S.chunk_sent:
                if merged:  # separate calls the pool batched: each one's end is reported before the next
                    _flush_items()  # begins, so a crash of the next never takes its neighbours' results
                elif not armed.is_set():
                    armed.set()
        if k in skip:
            results.append(None)
            continue
        now = time.monotonic_ns()
        words[base + ITEM_NS] = now
        words[base + ITEM] = k + 1  # written before the limit is read (see shared/_flags.py)
        limit = words[base + LIMIT]
        if (limit and k >= limit - 1) or words[base + PENDING] or S.term_seen:
            words[base + ITEM] = k  # not begun after all: the slot names the item before it
            stopped = Stage.SIGTERM if S.term_seen else Stage.FLAG
            break
        ctx.execution_id, ctx.state = items[k], None
        if merged and S.checkpoint_dir is not None:  # separate executions: each keeps its checkpoints
            ctx._ckpt = _ItemCheckpoints(S.checkpoint_dir, S.keep_checkpoints, items[k], S.chan)
        inp: Any = inputs[first + k]
        if merged:
            try:
                inp = pickle.loads(inp)
            except Exception as exc:
                results.append([failed, None, _error(exc, "could not load its input: "), None, 0, None])
                continue
        try:
            S.armed = True
            try:
                result = fn(*inp[0], **inp[1]) if call else fn(ctx, inp)
                if type(result).__name__ == "coroutine":
                    result = _run_async(ctx, result)
            finally:
                S.armed = False
        except Interrupted as exc:
            _cancel_watchdog()
            if not exc._from_pool:  # the item stopped itself: only it ends
                results.append([ExecutionStatus.INTERRUPTED.code, None, None, Stage.FLAG.code, 0, str(exc)])
                continue
            results.append([ExecutionStatus.INTERRUPTED.code, None, None, exc.stage.code, ctx._observed_ns(), None])
            stopped = exc.stage
            break
        except BaseException as exc:
            results.append([failed, _exception_value(exc) if call else None, _error(exc), None, 0, None])
        else:
            status, value, error, _, _ = _value(ctx, result)
            results.append([status.code, value, error, None, 0, None])
    if stopped is None and capture and n:
        _end_of_output()  # the last item's (a stopped chunk's are written by its caller, from chunk_marks on)
        S.chunk_marks = n
    if stopped is not None:
        return ExecutionStatus.INTERRUPTED, None, None, stopped.code, None
    return ExecutionStatus.COMPLETED, None, None, None, None


def _start_watchdog(ctx: Context) -> None:
    """After SIGTERM's Interrupted: if the agent's unwinding blocks (on one of its threads,
    an executor's shutdown), save what it had, report stage sigterm and exit."""
    t = threading.Timer(S.bound, _unwinding_stuck, args=(ctx,))
    t.daemon = True
    S.watchdog = t
    t.start()


def _cancel_watchdog() -> None:
    if S.watchdog is not None:
        S.watchdog.cancel()
        if S.watchdog is not threading.current_thread():
            S.watchdog.join()  # it wakes at once: then the end of the execution sees one thread (the fast path)
        S.watchdog = None


def _unwinding_stuck(ctx: Context) -> None:
    if S.ctx is not ctx:
        return  # it unwound in time
    error = _on_interrupt(ctx, S.hook)
    _stop_tools(S.keep_tools)  # before the Result: when its end is known, its processes are gone
    if _send_result(ctx, ExecutionStatus.INTERRUPTED, None, error, Stage.SIGTERM.code, None):
        _exit(0)


def _run_async(ctx: Context, coro):
    """Run an ``async def`` agent. The doorbell (the worker channel) cancels its task at its
    current await; so does a SIGTERM that arrives while the event loop's own code runs (a
    SIGTERM while the agent's code runs raises there, as in a sync agent). The
    CancelledError comes back out as Interrupted, at stage flag or sigterm; nothing is
    ever raised inside asyncio's machinery, so a stopped agent prints nothing."""

    import asyncio

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)
        fd = ctx._chan.fileno()

        def doorbell():
            ctx._read_channel()
            if ctx._shield_depth:
                ctx._held = True  # inside ctx.shield(): the shield's end raises it
                return
            if ctx._details is not None and ctx._details.get("mode") == InterruptMode.IMMEDIATE.code:
                return  # its SIGTERM follows at once and cancels the task at stage sigterm (below)
            if (ctx.interrupted or ctx._details is not None) and not task.done():
                ctx._observe()
                task.cancel("stop requested")

        loop.add_reader(fd, doorbell)
        S.task, S.loop, S.task_stage = task, loop, Stage.FLAG
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and S.task_stage is Stage.SIGTERM:
                exc = Interrupted("worker received SIGTERM", stage=Stage.SIGTERM)
                exc._from_pool = True
                raise exc from None
            if task.cancelled() and (ctx.interrupted or ctx._details is not None):
                ctx._stop(Stage.FLAG)  # raises Interrupted with the request's details
            raise
        finally:
            S.task = S.loop = None
            loop.remove_reader(fd)

    return asyncio.run(main())


def _on_interrupt(ctx: Context, hook) -> list | None:
    """Save what the agent had: its hook decides, else ``ctx.state`` is checkpointed.
    SIGKILL after term_grace still bounds it. Returns an error triple if saving failed
    (the execution stays INTERRUPTED)."""
    if ctx._ckpt is None or (hook is None and ctx.state is None):
        return None
    ctx._in_hook = True
    try:
        if hook is not None:
            hook(ctx, ctx.state)
        else:
            ctx.checkpoint(ctx.state)
    except BaseException as exc:
        return _error(exc, f"saving the state of interrupted execution {ctx.execution_id!r} failed: ")
    finally:
        ctx._in_hook = False
    return None
