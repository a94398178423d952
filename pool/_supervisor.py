"""The supervisor process: owns the workers, the flag array and every stop.

::

 user process                supervisor process (single-threaded)         workers (forked by the supervisor)
 ┌────────────┐  socketpair  ┌──────────────────────────────────────┐  socketpair ┌──────────────────┐
 │ Pool       │◄────────────►│ event loop: one selector over        │◄───────────►│ worker loop      │
 │ Execution  │  msgpack     │  client channel, worker channels,    │  msgpack    │  agent(ctx, in)  │
 └────────────┘  frames      │  signal wake-up pipe (SIGCHLD, TERM) │             │  ctx.check()     │
                             │  + a timer heap (grace deadlines)    │  shm flags  │  reads its slot  │
                             │ owns: FlagArray, workers, executions │────────────►│  own pgid        │
                             └──────────────────────────────────────┘             └──────────────────┘

Owns: the :class:`~shared.FlagArray` (the only writer of control words), the
worker processes (forks, signals through pidfds, reaps), the queue, and the
record of every live execution until its single ENDED frame is sent.

Loop: block in ``selector.select`` with the next timer deadline as timeout
(never sleep-polling), handle the ready channels, run due timers, hand queued
executions to idle workers, flush output. Deadlines come from
``time.monotonic()``.

Dispatch: a worker gets one execution at a time, plus, only while every
worker is busy and recent executions ran for under ``PREFETCH_BELOW_NS`` on
average, one more queued behind it, so short tasks do not each wait for a
round trip through this loop. A prefetched execution stays QUEUED to the user
until it starts; if it is cancelled first, the worker sees its flag before
starting it and ends it at stage ``queued``; if its worker dies first, it goes
back to the head of the queue. Workloads of long-running agents never
prefetch, and nothing is queued behind an execution that has already run for
more than twice the average: at worst, in a mix of short and long executions,
one execution waits behind a long one that had only just started.

Reaping: the supervisor is a child subreaper, so tools an agent started with
``setsid`` are re-parented to it when their worker dies. On SIGCHLD it peeks
at the exited child with ``waitid(WNOWAIT)``; for a worker it first kills
what is left of the worker's process group (the zombie still pins the pgid,
so the kill cannot hit a reused id), then reaps it; for an adopted orphan it
reaps it and kills whatever was re-parented to us with it.
"""

from __future__ import annotations

import gc
import heapq
import os
import selectors
import signal
import socket
import time
import traceback
from collections import deque
from pathlib import Path

import psutil

from shared import ExecutionStatus, FlagArray, InterruptMode, InterruptReason, InterruptSource, Stage
from shared._checkpoint import CheckpointError, CheckpointStore, read_file
from shared._wire import Channel, Msg

from ._proc import direct_children, kill_tree, killpg, set_child_subreaper, set_name
from ._worker import worker_main

__all__ = ("supervisor_main",)

_LIVE = (ExecutionStatus.RUNNING, ExecutionStatus.CANCELLING)
PREFETCH_BELOW_NS = 5_000_000  # prefetch only while executions average under 5 ms


class _Timer:
    __slots__ = ("deadline", "fn", "args", "cancelled")

    def __init__(self, deadline: float, fn, args):
        self.deadline, self.fn, self.args, self.cancelled = deadline, fn, args, False

    def __lt__(self, other: "_Timer") -> bool:
        return self.deadline < other.deadline


class _Exec:
    """The supervisor's record of one execution, from SUBMIT to ENDED."""

    __slots__ = (
        "id", "module", "qualname", "payload", "timeout", "grace", "term_grace",
        "status", "worker", "slot", "armed", "started_ns", "wall_started_ns",
        "mode", "reason", "source", "message", "requested_ns", "observed_ns",
        "sigterm_ns", "sigterm_deadline_ns", "sigkill_ns", "sigkill_deadline_ns", "timers",
        "resume", "hook", "announced", "reported",
    )  # fmt: skip

    def __init__(self, id, module, qualname, payload, timeout, grace, term_grace, resume=False, hook=None):
        self.id, self.module, self.qualname, self.payload = id, module, qualname, payload
        self.resume, self.hook = resume, hook
        self.announced: list[list] = []  # checkpoint files the worker was about to commit, newest last
        self.reported = False  # the user was told it started (STARTED frame)
        self.timeout, self.grace, self.term_grace = timeout, grace, term_grace
        self.status = ExecutionStatus.QUEUED
        self.worker: _Worker | None = None
        self.slot = self.armed = None
        self.started_ns = self.wall_started_ns = None
        self.mode = 0  # strongest InterruptMode code requested so far; 0: none
        self.reason = self.source = 0
        self.message = None
        self.requested_ns = self.observed_ns = None
        self.sigterm_ns = self.sigterm_deadline_ns = self.sigkill_ns = self.sigkill_deadline_ns = None
        self.timers: list[_Timer] = []


class _Worker:
    """One forked worker process."""

    __slots__ = ("id", "pid", "pidfd", "chan", "state", "inflight", "retained", "create_time", "kill_timer", "killed")

    def __init__(self, id, pid, pidfd, chan, create_time):
        self.id, self.pid, self.pidfd, self.chan, self.create_time = id, pid, pidfd, chan, create_time
        self.state = "starting"  # starting | idle | busy | stopping
        self.inflight: deque[_Exec] = deque()  # sent to it, in order: the running one first
        self.retained: list[int] = []  # slots of signalled executions, freed only once it is reaped
        self.kill_timer: _Timer | None = None
        self.killed = False

    @property
    def exec(self) -> "_Exec | None":
        """The execution it runs (or is about to run) now."""
        return self.inflight[0] if self.inflight else None


class Supervisor:
    def __init__(self, client: socket.socket, workers: int, capacity: int, grace: float, term_grace: float,
                 checkpoint_dir: str | None = None, keep_checkpoints: int = 3):  # fmt: skip
        self.pid = os.getpid()
        self.checkpoint_dir, self.keep_checkpoints = checkpoint_dir, keep_checkpoints
        self.target_workers = workers
        self.grace, self.term_grace = grace, term_grace
        self.flags = FlagArray(capacity)
        self.free_slots = list(range(capacity - 1, -1, -1))
        self.sel = selectors.DefaultSelector()
        client.setblocking(False)
        self.client = Channel(client)
        self.sel.register(client, selectors.EVENT_READ, self._on_client)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_wake)
        self.execs: dict[str, _Exec] = {}  # every execution not yet ENDED
        self.queue: deque[_Exec] = deque()  # QUEUED ones in order; ended ones are skipped lazily
        self.workers: dict[int, _Worker] = {}
        self.by_pid: dict[int, _Worker] = {}
        self.idle: list[_Worker] = []
        self.timers: list[_Timer] = []
        self.dirty: set[Channel] = set()
        self.next_worker_id = 0
        self.run_ema_ns = 1e9  # average run time; starts high: no prefetch until tasks prove short
        self.stopping = False  # no replacement workers; exit once everything ended
        self.client_gone = False

    # -- plumbing ----------------------------------------------------------

    def _send_client(self, msg: list) -> None:
        if not self.client_gone:
            self.client.queue(msg)
            self.dirty.add(self.client)

    def _event(self, kind: str, ex: "_Exec | None", w: "_Worker | None", mono_ns: int | None = None, **data) -> None:
        self._send_client([Msg.EVENT, kind, ex.id if ex else None, w.id if w else None,
                           mono_ns or time.monotonic_ns(), data or None])  # fmt: skip

    def _send_worker(self, w: _Worker, msg: list, now: bool = False) -> None:
        w.chan.queue(msg)
        if now:
            w.chan.flush()
        if w.chan.pending:
            self.dirty.add(w.chan)

    def _flush(self) -> None:
        if not self.dirty:
            return
        for chan in self.dirty:
            done = chan.flush()
            if chan.closed:
                continue
            want = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
            try:
                key = self.sel.get_key(chan.sock)
            except KeyError:
                continue
            if key.events != want:
                self.sel.modify(chan.sock, want, key.data)
        self.dirty = {c for c in self.dirty if c.pending and not c.closed}

    def _at(self, delay: float, fn, *args) -> _Timer:
        t = _Timer(time.monotonic() + delay, fn, args)
        heapq.heappush(self.timers, t)
        return t

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0].deadline <= now:
            t = heapq.heappop(self.timers)
            if not t.cancelled:
                t.fn(*t.args)

    # -- main loop ---------------------------------------------------------

    def run(self) -> None:
        for _ in range(self.target_workers):
            self._spawn()
        self._flush()
        while not (self.stopping and not self.workers and not self.execs):
            timeout = None
            while self.timers and self.timers[0].cancelled:
                heapq.heappop(self.timers)
            if self.timers:
                timeout = max(0.0, self.timers[0].deadline - time.monotonic())
            for key, mask in self.sel.select(timeout):
                key.data(key, mask)
            self._run_timers()
            self._dispatch()
            self._maybe_retire_idle()
            self._flush()
        self._send_client([Msg.GONE])
        self._flush()

    def _on_wake(self, key, mask) -> None:
        try:
            data = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        if signal.SIGCHLD in data:
            self._reap()
        if signal.SIGTERM in data or signal.SIGHUP in data:
            self._begin_shutdown(InterruptMode.GRACEFUL.code, InterruptSource.SIGNAL)

    # -- client ------------------------------------------------------------

    def _on_client(self, key, mask) -> None:
        if mask & selectors.EVENT_WRITE:
            self.dirty.add(self.client)
        if not mask & selectors.EVENT_READ:
            return
        msgs = self.client.feed_from_socket()
        if msgs is None:  # the user process is gone: stop everything, bounded by the escalation policy
            self.client_gone = True
            self.sel.unregister(self.client.sock)
            self.client.close()
            self._begin_shutdown(InterruptMode.GRACEFUL.code, InterruptSource.SYSTEM)
            return
        for msg in msgs:
            self._handle_client(msg)

    def _handle_client(self, msg: list) -> None:
        kind = msg[0]
        if kind == Msg.SUBMIT:
            for id, module, qualname, payload, timeout, grace, term_grace, resume, hook in msg[1]:
                ex = _Exec(id, module, qualname, payload, timeout,
                           self.grace if grace is None else grace,
                           self.term_grace if term_grace is None else term_grace, resume, hook)  # fmt: skip
                self.execs[id] = ex
                self.queue.append(ex)
        elif kind == Msg.CANCEL:
            _, req, id, mode, reason, source, message = msg
            ex = self.execs.get(id)
            ok = ex is not None and self._escalate(ex, mode, reason, source, message)
            self._send_client([Msg.REPLY, req, ok])
        elif kind == Msg.CANCEL_WORKER:
            _, req, wid, mode, reason, source, message = msg
            w = self.workers.get(wid)
            ok = bool(w and w.exec and self._escalate(w.exec, mode, reason, source, message))
            self._send_client([Msg.REPLY, req, ok])
        elif kind == Msg.QUERY:
            self._send_client([Msg.REPLY, msg[1], self._query(msg[2])])
        elif kind == Msg.SHUTDOWN:
            _, mode, reason, source = msg
            self._begin_shutdown(mode or None, InterruptSource.from_code(source), InterruptReason.from_code(reason))
        elif kind == Msg.CANCEL_ALL:
            _, mode, reason, source, message = msg
            for ex in list(self.execs.values()):
                self._escalate(ex, mode, reason, source, message)

    def _query(self, what: str):
        if what == "workers":
            return [[w.id, w.pid, w.state, w.exec.id if w.exec else None] for w in self.workers.values()]
        if what == "executions":
            now = time.monotonic_ns()
            return [
                [ex.id, ex.status.code, ex.worker.id if ex.worker else None,
                 (now - ex.started_ns) / 1e9 if ex.started_ns else None, self._live_stage(ex)]
                for ex in self.execs.values()
            ]  # fmt: skip
        return None

    @staticmethod
    def _live_stage(ex: _Exec) -> str | None:
        """The furthest stop stage reached so far by a live execution."""
        if ex.sigkill_ns:
            return "sigkill"
        if ex.sigterm_ns:
            return "sigterm"
        return "flag" if ex.mode else None

    def _begin_shutdown(self, cancel_mode: int | None, source: InterruptSource,  # cancel_mode: a wire code
                        reason: InterruptReason = InterruptReason.SHUTDOWN) -> None:  # fmt: skip
        self.stopping = True
        if cancel_mode:
            for ex in list(self.execs.values()):
                self._escalate(ex, int(cancel_mode), reason.code, source.code, "the pool is shutting down")

    def _maybe_retire_idle(self) -> None:
        if self.stopping and not self.execs:
            for w in self.idle:
                w.state = "stopping"
                self._send_worker(w, [Msg.EXIT])
            self.idle.clear()

    # -- workers -----------------------------------------------------------

    def _spawn(self) -> None:
        wid = self.next_worker_id
        self.next_worker_id += 1
        ours, theirs = socket.socketpair()
        gc.freeze()  # keep the supervisor's objects out of the child's copy-on-write path
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                signal.set_wakeup_fd(-1)
                for fd in self._fds():
                    os.close(fd)
                ours.close()
                worker_main(Channel(theirs), self.flags.words, wid, self.pid, self.checkpoint_dir, self.keep_checkpoints)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        try:
            os.setpgid(pid, pid)  # also done by the child; whichever runs first wins
        except (PermissionError, ProcessLookupError):
            pass  # the child already set it (EACCES) or already died: reaping will tell
        pidfd = os.pidfd_open(pid)
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            create_time = 0.0  # died at once; SIGCHLD will reap it
        ours.setblocking(False)
        w = _Worker(wid, pid, pidfd, Channel(ours), create_time)
        self.workers[wid] = w
        self.by_pid[pid] = w
        self.sel.register(ours, selectors.EVENT_READ, lambda key, mask, w=w: self._on_worker(w, mask))
        self._send_client([Msg.WORKER, wid, pid, create_time])
        self._event("worker_started", None, w, pid=pid)

    def _fds(self) -> list[int]:
        """Descriptors a freshly forked worker must close: holding the client
        socket would hide the user's death from us, and so on."""
        fds = [self.sel.fileno(), self.wake_r, self.wake_w]
        if not self.client_gone:
            fds.append(self.client.fileno())
        for w in self.workers.values():
            fds.append(w.pidfd)
            if not w.chan.closed:
                fds.append(w.chan.fileno())
        return fds

    def _on_worker(self, w: _Worker, mask: int) -> None:
        if w.chan.closed:
            return  # reaped earlier in this same batch of ready events
        if mask & selectors.EVENT_WRITE:
            self.dirty.add(w.chan)
        if mask & selectors.EVENT_READ:
            msgs = w.chan.feed_from_socket()
            if msgs is None:  # EOF: the worker is exiting; SIGCHLD does the rest
                self.sel.unregister(w.chan.sock)
                return
            for msg in msgs:
                self._handle_worker(w, msg)

    def _handle_worker(self, w: _Worker, msg: list) -> None:
        kind = msg[0]
        if kind == Msg.READY:
            if w.state == "starting":
                w.state = "idle"
                self.idle.append(w)
        elif kind == Msg.OBSERVED:
            ex = w.exec
            if ex is not None and ex.id == msg[1] and not ex.observed_ns:
                ex.observed_ns = msg[2]
                self._event("observed", ex, w, msg[2])
        elif kind == Msg.CKPT:
            ex = w.exec
            if ex is not None and ex.id == msg[1]:
                ex.announced = ex.announced[-1:] + [msg[2:]]
        elif kind == Msg.RESULT:
            _, id, status, value, error, stage, observed_ns, newest, resumed = msg
            ex = w.exec
            if ex is None or ex.id != id:
                return
            w.inflight.popleft()
            if observed_ns and not ex.observed_ns:
                ex.observed_ns = observed_ns
                self._event("observed", ex, w, observed_ns)
            stage = Stage.from_code(stage) if stage is not None else None
            if stage is Stage.QUEUED and ex.reported:
                stage = Stage.FLAG  # seen at the flag before its first line ran, but the user saw it start
            if ex.started_ns:
                self.run_ema_ns += 0.2 * ((time.monotonic_ns() - ex.started_ns) - self.run_ema_ns)
            if w.state == "stopping" or stage is Stage.SIGTERM:
                w.state = "stopping"  # it was signalled: it exits, and keeps the slot until reaped
                w.retained.append(ex.slot)
                self._send_worker(w, [Msg.EXIT])
            else:
                self.free_slots.append(ex.slot)
                if w.inflight:
                    self._start(w.inflight[0])
                else:
                    w.state = "idle"
                    self.idle.append(w)
            self._end(ex, ExecutionStatus.from_code(status), value=value, error=error, stage=stage,
                      checkpoint=newest, resumed_from=resumed)  # fmt: skip

    def _settled_checkpoint(self, ex: _Exec, w: _Worker) -> list | None:
        """After a kill or crash: the newest checkpoint file that is really complete.
        The worker announced each one before making it visible, so the newest
        announced file is valid exactly when the kill came after its commit.
        Temp files the dead worker left half-written are removed."""
        if ex.announced:
            for tmp in Path(ex.announced[-1][1]).parent.glob(f".tmp-*-{w.pid}"):
                tmp.unlink(missing_ok=True)
        for seq, path, size, wall in reversed(ex.announced):
            try:
                read_file(Path(path))
                return [seq, path, size, wall]
            except CheckpointError:
                continue  # killed before (or while) this one was committed
        if ex.resume and self.checkpoint_dir:  # it may have died before saving anything new
            found = CheckpointStore(self.checkpoint_dir, ex.id).newest()
            if found:
                return found[0].to_wire()
        return None

    def _pick_worker(self) -> _Worker | None:
        """An idle worker; else, while executions are short, the busy one with nothing
        queued behind it that started first, unless it has already run for longer than
        twice the average (then it is probably a long one: nothing waits behind it)."""
        if self.idle:
            return self.idle.pop()
        if self.run_ema_ns >= PREFETCH_BELOW_NS:
            return None
        oldest = time.monotonic_ns() - max(2 * self.run_ema_ns, 1_000_000)
        best = None
        for w in self.workers.values():
            if w.state == "busy" and len(w.inflight) == 1:
                started = w.inflight[0].started_ns
                if started > oldest and (best is None or started < best.inflight[0].started_ns):
                    best = w
        return best

    def _dispatch(self) -> None:
        while self.queue and self.free_slots:
            ex = self.queue[0]
            if ex.status is not ExecutionStatus.QUEUED:
                self.queue.popleft()  # cancelled while queued
                continue
            w = self._pick_worker()
            if w is None:
                return
            self.queue.popleft()
            slot = self.free_slots.pop()
            ex.slot, ex.armed = slot, self.flags.arm(slot)  # arm before the task leaves: no stale flag
            ex.worker = w
            w.inflight.append(ex)
            self._send_worker(w, [Msg.TASK, ex.id, self.flags.base(slot), ex.armed, ex.module, ex.qualname, ex.payload,
                                  ex.resume, ex.hook])  # fmt: skip
            if len(w.inflight) == 1:
                w.state = "busy"
                self._start(ex)

    def _start(self, ex: _Exec) -> None:
        """``ex`` is now what its worker runs: the clocks (timeout, a stop requested while
        it was prefetched) start now."""
        ex.started_ns, ex.wall_started_ns = time.monotonic_ns(), time.time_ns()
        ex.payload = None  # it can no longer be requeued
        w = ex.worker
        if ex.mode:
            # Stopped while prefetched: its worker will see the flag and not start it, so
            # the user keeps seeing it as cancelled-while-queued. The clock runs anyway,
            # in case the worker had already begun it.
            ex.status = ExecutionStatus.CANCELLING
        else:
            ex.status = ExecutionStatus.RUNNING
            ex.reported = True
            self._send_client([Msg.STARTED, ex.id, w.id, w.pid, ex.wall_started_ns])
        if ex.timeout:
            ex.timers.append(self._at(ex.timeout, self._on_timeout, ex))
        if ex.mode:
            self._arm_escalation(ex, ex.mode, ex.started_ns)

    def _on_timeout(self, ex: _Exec) -> None:
        self._escalate(ex, InterruptMode.GRACEFUL.code, InterruptReason.TIMEOUT.code, InterruptSource.TIMEOUT.code,
                       f"timed out after {ex.timeout:g} s")  # fmt: skip

    # -- stopping ----------------------------------------------------------

    def _escalate(self, ex: _Exec, mode: int, reason: int, source: int, message: str | None) -> bool:
        """Request (or harden) a stop. True if the execution was live. Requests
        are idempotent and only move forward."""
        now = time.monotonic_ns()
        if ex.status is ExecutionStatus.QUEUED and ex.worker is None:  # still in our queue
            ex.mode, ex.reason, ex.source, ex.message, ex.requested_ns = mode, reason, source, message, now
            self._event("requested", ex, None, now, mode=mode, reason=reason, message=message)
            self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.QUEUED)
            return True
        if ex.status not in _LIVE and ex.status is not ExecutionStatus.QUEUED:
            return False
        if mode <= ex.mode:
            return True
        w = ex.worker
        if ex.mode == 0:
            ex.reason, ex.source, ex.message, ex.requested_ns = reason, source, message, now
            ex.status = ExecutionStatus.CANCELLING
            self._send_client([Msg.CANCELLING, ex.id])
            self._event("requested", ex, w, now, mode=mode, reason=reason, message=message)
        else:
            self._event("escalated", ex, w, now, mode=mode)
        ex.mode = mode
        if mode == InterruptMode.KILL.code and ex.started_ns:
            self._arm_escalation(ex, mode, now)  # SIGKILL now; a flag first would only race it
            return True
        # Details (and the doorbell for ctx.sleep) go out before the flag, so an
        # agent that sees the flag finds them already in its socket.
        self._send_worker(w, [Msg.INTERRUPT, ex.id, ex.armed, mode, ex.reason, ex.source, ex.message, ex.requested_ns], now=True)
        self.flags.request(ex.slot, ex.armed, mode, ex.reason, ex.source, ex.requested_ns)
        if ex.started_ns:  # a prefetched one is skipped by its worker; its clock starts if it starts
            self._arm_escalation(ex, mode, now)
        return True

    def _arm_escalation(self, ex: _Exec, mode: int, now: int) -> None:
        if mode == InterruptMode.GRACEFUL.code:
            ex.sigterm_deadline_ns = now + int(ex.grace * 1e9)
            ex.timers.append(self._at(ex.grace, self._sigterm, ex))
        elif mode == InterruptMode.IMMEDIATE.code:
            ex.sigterm_deadline_ns = now
            self._sigterm(ex)
        else:
            ex.sigkill_deadline_ns = now
            self._sigkill(ex.worker)

    def _sigterm(self, ex: _Exec) -> None:
        w = ex.worker
        if ex.status not in _LIVE or ex.sigterm_ns or w.killed or w.exec is not ex:
            return
        try:
            signal.pidfd_send_signal(w.pidfd, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it exited on its own just now; reaping settles the execution
        ex.sigterm_ns = time.monotonic_ns()
        self._event("sigterm", ex, w, ex.sigterm_ns, late_ms=(ex.sigterm_ns - ex.sigterm_deadline_ns) / 1e6)
        w.state = "stopping"
        ex.sigkill_deadline_ns = ex.sigterm_ns + int(ex.term_grace * 1e9)
        w.kill_timer = self._at(ex.term_grace, self._sigkill, w)  # bound to the worker: fires even if it answers

    def _sigkill(self, w: _Worker) -> None:
        if w.killed or w.pid not in self.by_pid:
            return
        now = time.monotonic_ns()
        killpg(w.pid)  # the worker is unreaped, so its pid (= pgid) cannot have been reused
        # Descendants that left the group (setsid) re-parent to us, the subreaper, as
        # their parents die; _sweep_orphans kills them when we reap.
        w.killed = True
        w.state = "stopping"
        ex = w.exec if w.exec is not None and w.exec.status in _LIVE else None
        if ex is not None:
            ex.sigkill_ns = now
        late = (now - ex.sigkill_deadline_ns) / 1e6 if ex is not None and ex.sigkill_deadline_ns else None
        self._event("sigkill", ex, w, now, pid=w.pid, late_ms=late)

    # -- reaping -----------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            w = self.by_pid.get(info.si_pid)
            if w is None:
                try:
                    os.waitpid(info.si_pid, 0)  # an adopted orphan
                except ChildProcessError:
                    pass
                self._sweep_orphans()  # its own children have just been re-parented to us
                continue
            self._worker_exited(w, info)

    def _worker_exited(self, w: _Worker, info) -> None:
        # Frames it wrote before dying (its RESULT) come first.
        try:
            self.sel.unregister(w.chan.sock)
        except KeyError:
            pass  # already unregistered at EOF
        while not w.chan.closed:
            msgs = w.chan.feed_from_socket()
            if not msgs:
                break
            for msg in msgs:
                self._handle_worker(w, msg)
        killpg(w.pid)  # tools it left in its group; its zombie still pins the pgid
        os.waitpid(w.pid, 0)
        w.chan.close()
        os.close(w.pidfd)
        del self.by_pid[w.pid]
        del self.workers[w.id]
        if w in self.idle:
            self.idle.remove(w)
        if w.kill_timer:
            w.kill_timer.cancelled = True
        self.free_slots.extend(w.retained)
        exit_code = info.si_status if info.si_code == os.CLD_EXITED else None
        signo = info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else None
        self._event("worker_exited", None, w, pid=w.pid,
                    message=f"exit code {exit_code}" if signo is None else f"signal {signal.Signals(signo).name}")  # fmt: skip
        ex = w.inflight.popleft() if w.inflight and w.inflight[0].started_ns else None
        self._requeue(w)
        if ex is not None and ex.status in _LIVE:
            self.free_slots.append(ex.slot)
            ckpt = self._settled_checkpoint(ex, w)
            if w.killed:
                self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.SIGKILL, exit_code=exit_code, signo=signo,
                          checkpoint=ckpt)  # fmt: skip
            elif ex.sigterm_ns and signo == signal.SIGTERM:
                self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.SIGTERM, exit_code=exit_code, signo=signo,
                          checkpoint=ckpt)  # fmt: skip
            else:
                how = f"exit code {exit_code}" if signo is None else f"signal {signal.Signals(signo).name} ({signo})"
                error = ["WorkerCrashed", f"worker {w.id} (pid {w.pid}) running execution {ex.id!r} died with {how}", None]
                self._end(ex, ExecutionStatus.CRASHED, error=error, exit_code=exit_code, signo=signo, checkpoint=ckpt)
        self._flush()  # the user hears of the end now, not after the fork below
        if not self.stopping or self.execs:  # queued work still needs hands while draining
            self._spawn()
        self._sweep_orphans()

    def _requeue(self, w: _Worker) -> None:
        """Executions prefetched to a dead worker never started: back to the head of the
        queue, in order; or, if a stop was requested meanwhile, ended at stage queued."""
        pending = list(w.inflight)
        w.inflight.clear()
        for ex in reversed(pending):
            self.free_slots.append(ex.slot)
            ex.slot = ex.armed = None
            if ex.mode:
                self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.QUEUED)
            else:
                ex.worker = None
                self.queue.appendleft(ex)

    def _sweep_orphans(self) -> None:
        """Kill adopted descendants of dead workers (they re-parent to us as subreaper)."""
        strays = []
        for pid in direct_children(self.pid):
            if pid not in self.by_pid:
                try:
                    strays.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass  # exited (and will be reaped) since we listed it
        if strays:
            kill_tree(strays)

    # -- ending ------------------------------------------------------------

    def _end(self, ex: _Exec, status: ExecutionStatus, *, value=None, error=None, stage=None,
             exit_code=None, signo=None, checkpoint=None, resumed_from=None) -> None:  # fmt: skip
        """Send the one ENDED frame of ``ex`` and forget it."""
        now = time.monotonic_ns()
        for t in ex.timers:
            t.cancelled = True
        ex.status = status
        w = None if stage is Stage.QUEUED else ex.worker  # it never ran on one
        d = {
            "id": ex.id,
            "status": status.code,
            "error": error,
            "worker_id": w.id if w else None,
            "pid": w.pid if w else None,
            "exit_code": exit_code,
            "signal": signo,
            "started_ns": ex.wall_started_ns,
            "ended_wall_ns": time.time_ns(),
            "checkpoint": checkpoint,
            "resume": ex.resume,
            "resumed_from": resumed_from,
        }
        if ex.mode or stage is not None:
            if not ex.mode:  # a SIGTERM we did not send
                ex.mode, ex.reason, ex.source = InterruptMode.IMMEDIATE.code, InterruptReason.CUSTOM.code, InterruptSource.SIGNAL.code
                ex.message = "the worker received SIGTERM from outside the pool"
            d["interrupt"] = {
                "mode": ex.mode, "reason": ex.reason, "source": ex.source, "message": ex.message,
                "stage": stage.code if stage is not None and status is ExecutionStatus.INTERRUPTED else None,
                "requested_ns": ex.requested_ns, "observed_ns": ex.observed_ns,
                "sigterm_ns": ex.sigterm_ns, "sigterm_deadline_ns": ex.sigterm_deadline_ns if ex.sigterm_ns else None,
                "sigkill_ns": ex.sigkill_ns, "sigkill_deadline_ns": ex.sigkill_deadline_ns if ex.sigkill_ns else None,
                "ended_ns": now,
            }  # fmt: skip
        self._send_client([Msg.ENDED, ex.id, d, value])
        del self.execs[ex.id]


def _noop(signum, frame) -> None:
    pass  # the wake-up fd carries the signal number to the loop


def supervisor_main(client: socket.socket, workers: int, capacity: int, grace: float, term_grace: float,
                    checkpoint_dir: str | None = None, keep_checkpoints: int = 3) -> None:  # fmt: skip
    """Entry point in the freshly forked supervisor process; returns when it is done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C belongs to the user process
    # Forked from whatever thread created the Pool, we inherit its signal mask: unblock
    # what the loop depends on (a blocked SIGCHLD would leave dead workers unreaped).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP})
    set_child_subreaper()
    set_name("pool-supervisor")
    sup = Supervisor(client, workers, capacity, grace, term_grace, checkpoint_dir, keep_checkpoints)
    signal.set_wakeup_fd(sup.wake_w, warn_on_full_buffer=False)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _noop)
    try:
        sup.run()
    finally:
        # Whatever happens, no worker or tool of theirs outlives us.
        try:
            kids = psutil.Process().children()
        except psutil.Error:
            kids = []
        kill_tree(kids)
        for p in kids:
            try:
                os.waitpid(p.pid, 0)
            except ChildProcessError:
                pass
        if sup.client_gone is False:
            try:
                sup.client.sock.setblocking(True)
                sup.client.flush()
            except OSError:
                pass
