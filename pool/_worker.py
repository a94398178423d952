"""The worker process: runs one agent call at a time for the supervisor.

Owns: the worker's own process (its process group, signal dispositions and
exit), the observed_ns word of the slot it currently runs in, and its cache of
agent functions (imported by name, or unpickled from the bytes of an agent
shipped by value). It is forked from the supervisor, and this is the only
place agent code is ever imported.

Signals: SIGTERM raises :class:`Interrupted` in the agent (stage
``sigterm``), so its ``finally`` blocks run; it is *armed* only while agent
code runs. Outside the agent (resolving, pickling, sending the result) our
handler only marks the worker for exit after its result is out, so it can
never cut a result frame in half; an agent that installed a handler of its own
gets ours back before the result is sent. A worker that saw SIGTERM always
exits after its result: the supervisor replaces it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import traceback

from .shared import Context, ExecutionStatus, Interrupted, Stage
from .shared import _protocol as P
from .shared._context import ExecutionCheckpoints

from ._proc import set_name, set_pdeathsig

__all__ = ("worker_main",)

_armed = False  # True only while agent code runs: SIGTERM then raises into it
_idle = True  # waiting for a task: SIGTERM simply ends the worker
_term_seen = False  # a SIGTERM arrived: exit once the current result is sent
_current: Context | None = None  # the execution whose agent code is running
_SIGTERM = {signal.SIGTERM}


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


def _on_sigterm(signum, frame):
    global _armed, _term_seen
    _term_seen = True
    if _idle:
        _exit(0)
    if _armed:
        _armed = False  # raise once; a second SIGTERM must not hit the agent's finally
        _current._observe()
        raise Interrupted("worker received SIGTERM", stage=Stage.SIGTERM)


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


def worker_main(chan: P.Channel, words, worker_id: int, supervisor_pid: int, checkpoint_dir: str | None,
                keep_checkpoints: int) -> None:  # fmt: skip
    """Serve tasks until told to exit, the supervisor vanishes, or a SIGTERM stop."""
    global _idle
    os.setpgid(0, 0)  # own process group: SIGKILL reaches tools the agent starts
    set_pdeathsig(signal.SIGKILL)
    set_name(f"pool-worker-{worker_id}")
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        _exit(1)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the supervisor's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGTERM)
    sys.stdin = None  # agents must not read the user's terminal
    cache: dict[str, object] = {}  # spec -> function
    blobs: dict[str, bytes] = {}  # by-value agents' bytes, kept as they arrive (the supervisor sends each once)
    pending: list = []
    chan.send(P.WorkerReady(os.getpid()))
    while True:
        _idle = True
        msg = pending.pop(0) if pending else chan.recv()
        _idle = False
        if msg is None or type(msg) is P.Exit:
            _exit(0)
        if type(msg) is not P.Run:
            continue  # a late Interrupt for an execution that already ended
        exec_id = msg.id
        if msg.agent_blob is not None:
            blobs[msg.agent] = msg.agent_blob
        if msg.hook_blob is not None:
            blobs[msg.hook] = msg.hook_blob
        ckpt = None if checkpoint_dir is None else ExecutionCheckpoints(checkpoint_dir, keep_checkpoints, exec_id,
                                                                        msg.resume, chan)  # fmt: skip
        ctx = Context(words, msg.control_index, msg.armed, chan, exec_id, worker_id, ckpt)
        status, value, error, stage = _run(ctx, cache, blobs, msg)
        if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
            signal.signal(signal.SIGTERM, _on_sigterm)  # the agent replaced it: ours again, before the send
        _flush_std()
        newest = resumed = None
        if ckpt is not None:
            resumed = ckpt.restored_from.to_wire() if ckpt.restored_from else None
            newest = (ckpt.latest or ckpt.restored_from).to_wire() if (ckpt.latest or ckpt.restored_from) else None
        chan.send(P.Result(exec_id, status.code, value, error, stage, ctx._observed_ns(), newest, resumed))
        pending.extend(ctx._pending)
        if _term_seen or stage == Stage.SIGTERM.code:
            _exit(0)


def _error(exc: BaseException, prefix: str = "") -> list:
    tb = "".join(traceback.format_exception(exc))
    return [type(exc).__name__, prefix + str(exc), tb]


def _run(ctx: Context, cache: dict, blobs: dict, msg: P.Run):
    """Run one execution; return (status, pickled value, error, stage code)."""
    global _armed, _current
    _current = ctx
    if ctx.interrupted:  # stopped before its first line ran (e.g. while prefetched): never run it
        ctx._observe()
        return ExecutionStatus.INTERRUPTED, None, None, Stage.QUEUED.code
    try:
        fn = resolve(msg.agent, cache, blobs)
        hook = resolve(msg.hook, cache, blobs) if msg.hook else getattr(fn, "on_interrupt", None)
        inp = pickle.loads(msg.input)
        if ctx._ckpt is not None and ctx._ckpt.resume:
            found = ctx._ckpt.newest()
            ctx._ckpt.restored_from = found[0] if found else None
    except Exception as exc:
        what = msg.agent if not msg.agent.startswith("blob:") else "(shipped by value)"
        return ExecutionStatus.FAILED, None, _error(exc, f"could not load agent {what} or its input: "), None
    try:
        _armed = True
        try:
            result = fn(ctx, inp)
            if type(result).__name__ == "coroutine":
                result = _run_async(ctx, result)
        finally:
            _armed = False
    except Interrupted as exc:
        return ExecutionStatus.INTERRUPTED, None, _on_interrupt(ctx, hook), exc.stage.code
    except BaseException as exc:  # the agent's own failure, SystemExit included
        return ExecutionStatus.FAILED, None, _error(exc), None
    try:
        return ExecutionStatus.COMPLETED, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), None, None
    except Exception as exc:
        return (
            ExecutionStatus.FAILED,
            None,
            _error(exc, f"the result of execution {ctx.execution_id!r} cannot be pickled; return plain data: "),
            None,
        )


def _run_async(ctx: Context, coro):
    """Run an ``async def`` agent; the doorbell (the worker channel) cancels its task
    at its current await, and the CancelledError comes back out as Interrupted."""

    import asyncio

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)
        fd = ctx._chan.fileno()

        def doorbell():
            ctx._read_channel()
            if (ctx.interrupted or ctx._details is not None) and not task.done():
                ctx._observe()
                task.cancel("stop requested")

        loop.add_reader(fd, doorbell)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and (ctx.interrupted or ctx._details is not None):
                ctx._stop(Stage.FLAG)  # raises Interrupted with the request's details
            raise
        finally:
            loop.remove_reader(fd)

    return asyncio.run(main())


def _on_interrupt(ctx: Context, hook) -> list | None:
    """Save what the agent had: its hook decides, else ``ctx.state`` is checkpointed.
    Runs with SIGTERM blocked; SIGKILL after term_grace still bounds it. Returns an
    error triple if saving failed (the execution stays INTERRUPTED)."""
    if ctx._ckpt is None or (hook is None and ctx.state is None):
        return None
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGTERM)
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
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return None
