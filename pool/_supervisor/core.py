"""The supervisor's loop and tables: executions, workers, clients, timers, history.

Owns: the :class:`~interrupt_pool.shared.FlagArray` (the only writer of
control words), the worker processes (forks, signals through pidfds, reaps),
the queue, the record of every live execution until its single Ended frame,
and a bounded history of ended ones (for ``status`` and ``wait``).

Loop: block in ``selector.select`` with the next timer deadline as timeout
(never sleep-polling), handle the ready sockets, run due timers, hand queued
executions to idle workers (the one idle longest first), flush output.
Deadlines come from ``time.monotonic()``.

Dispatch and prefetch: a worker gets one execution at a time, plus, only
while every worker is busy and recent executions ran for under
``PREFETCH_BELOW_NS`` on average, up to ``_PREFETCH_DEPTH - 1`` more queued
behind it (the least loaded worker first; fewer frames and wake-ups per
execution: per-task throughput measured 1.4× better at depth 4 than at 2). A
chunk (``map`` with a chunksize) is one execution here whose items end one by
one (see the chunks section). A prefetched
execution stays queued to its client until it starts; if it is cancelled
first, the worker sees its flag and ends it at stage ``queued``; if its
worker dies first, it goes back to the head of the queue.

Reaping: the supervisor is a child subreaper, so tools an agent started with
``setsid`` are re-parented to it when their worker dies. On SIGCHLD it peeks
at the exited child with ``waitid(WNOWAIT)``; for a worker it first kills
what is left of the worker's process group (the zombie still pins the pgid),
then reaps it; for an adopted orphan it reaps it and kills whatever was
re-parented to us with it.

Robustness: a malformed or hostile client frame closes that client with a
logged reason; an error while handling one execution ends that execution
with the error; neither stops the loop.
"""

from __future__ import annotations

import gc
import heapq
import importlib
import math
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable

from ..shared import ExecutionStatus, FlagArray, InterruptMode, InterruptReason, InterruptSource, Stage
from ..shared import _protocol as P
from ..shared._checkpoint import CheckpointError, CheckpointStore, check_envelope, id_to_dirname
from .. import _naming
from .._worker import AgentCache, worker_main  # imported here, before any fork: workers share its pages
from .._proc import (
    cgroup_create,
    cgroup_kill,
    cgroup_populated,
    cgroup_remove,
    descendants,
    direct_children,
    kill_descendants,
    kill_pids,
    killpg,
    rss_bytes,
    set_child_subreaper,
    set_name,
    start_ticks,
)
from ..shared._protocol import OUTPUT_END, Channel
from .clients import MAX_CLIENTS, MAX_OUTPUT, Client, Listener, log
from .output import OutputLog, log_path
from .runqueue import RunQueue
from .sources import SOURCES, Source

_MARK_HEAD = OUTPUT_END[:1]


def _partial_mark(data: bytes) -> int:
    """How many bytes at the end of ``data`` could be the start of OUTPUT_END (0 if none)."""
    for n in range(min(len(OUTPUT_END) - 1, len(data)), 0, -1):
        if data.endswith(OUTPUT_END[:n]):
            return n
    return 0

__all__ = ("run_supervisor",)

_LIVE = (ExecutionStatus.RUNNING, ExecutionStatus.CANCELLING)
# Prefetch only while executions average under 5 ms (the tests raise it through the environment).
PREFETCH_BELOW_NS = int(os.environ.get("_INTERRUPT_POOL_PREFETCH_BELOW_NS", 5_000_000))
OWNER_GONE_TERM_GRACE = 1.0  # when the creator died: SIGTERM at once, SIGKILL at most this much later
_MAX_ID = 256
_MAX_CHUNK = 10_000  # items in one chunk
_MAX_RETRIES = 100
_MERGE_BELOW_NS = 1_000_000  # executions this short on average may be merged into chunks at dispatch
_MERGE_MAX = 64  # executions in one merged chunk
_MERGE_AFTER = 16  # an agent's executions are merged once this many of them ran alone and used only checks and sleeps
_CGROUP_KILL_DELAY_S = 0.02  # after a worker's reaping: what is still in its cgroup is killed then
_SPARE_DELAY_S = 0.1
_WARM_AGENTS = 8  # agents a new spare imports ahead (the most recently dispatched)  # a new spare is forked this long after the last one took a worker's place
# Executions a busy worker holds while executions are short, the running one included (1: no prefetch).
_PREFETCH_DEPTH = int(os.environ.get("_INTERRUPT_POOL_PREFETCH_DEPTH", 4))  # as Celery's default prefetch
_RETRIED_REASONS = (InterruptReason.TIMEOUT.code, InterruptReason.STALLED.code)  # "interrupted" retries only these
_BEGUN_LOOK_S = 0.002  # how soon to look again whether a worker has taken an execution a signal waits for
_FORK_HELD = {signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD}
_MEMORY_TICK_S = 0.05  # how often the RSS of executions with a memory limit is read
_UNUSED_AGENTS = 64  # by-value agents kept after their last execution ended
_HELLO_WITHIN_S = 10.0  # a connection that has not said Hello by then is closed
_HELLO_MAX_FRAME = 64 << 10  # the largest frame before Hello: a silent or lying peer holds little
_MAX_GRACE_S = 7 * 86400.0  # as Escalation allows: a deadline in nanoseconds must stay an int
_MAX_WAIT_S = 3600.0  # longest single wait in select(); longer deadlines are reached in several
VETO_WAIT_S = 10.0  # how long a stop waits for the owner's before_interrupt; then it goes ahead
_VETOABLE_SOURCES = (InterruptSource.USER.code, InterruptSource.PROGRAMMATIC.code)
_UNVETOABLE_REASONS = {r.code for r in (InterruptReason.TIMEOUT, InterruptReason.BUDGET_EXCEEDED,
                                        InterruptReason.SHUTDOWN, InterruptReason.STALLED,
                                        InterruptReason.PRIORITY_OVERRIDE)}  # fmt: skip


class _Timer:
    __slots__ = ("deadline", "fn", "args", "cancelled")

    def __init__(self, deadline: float, fn, args):
        self.deadline, self.fn, self.args, self.cancelled = deadline, fn, args, False

    def __lt__(self, other: "_Timer") -> bool:
        return self.deadline < other.deadline


class _Exec:
    """The supervisor's record of one execution, from Submit to Ended."""

    __slots__ = (
        "id", "agent", "payload", "timeout", "grace", "term_grace", "resume", "hook", "client",
        "status", "worker", "slot", "armed", "started_ns", "wall_started_ns",
        "mode", "reason", "source", "message", "requested_ns", "observed_ns",
        "sigterm_ns", "sigterm_deadline_ns", "sigkill_ns", "sigkill_deadline_ns", "timers",
        "announced", "reported", "waiters", "pending_signal", "out", "memory_limit", "memory_used",
        "resumed_from", "budget", "stall_timeout", "group", "priority", "preemptible", "parent", "children",
        "child_ids", "cost", "run_spent", "tree_cost", "progress_ns", "preemptions", "preempting", "shield_ns",
        "limited", "rank", "saved", "plain", "child_seq", "call", "items", "first", "skip", "item_stops", "whole", "index",
        "next_item", "retries", "retry_on", "backoff", "attempts", "inputs",
    )  # fmt: skip

    # The fields __init__ sets to None, typed (each is set as the execution gets that far):
    # Its flag slot and the slot's generation tag: read only while a worker has it (from its Run until it
    # ends or is requeued), None otherwise (where None is assigned, the type checker is told so).
    slot: int
    armed: int
    started_ns: int | None
    wall_started_ns: int | None
    message: str | None
    requested_ns: int | None
    observed_ns: int | None
    sigterm_ns: int | None
    sigterm_deadline_ns: int | None
    sigkill_ns: int | None
    sigkill_deadline_ns: int | None

    def __init__(self, task: P.Task, grace: float, term_grace: float, client: Client | None, parent=None):
        self.id, self.agent, self.payload = task.id, task.agent, task.input
        self.timeout, self.resume, self.hook = task.timeout, task.resume, task.hook
        self.grace, self.term_grace = grace, term_grace
        self.client = client
        self.announced: list[list] = []  # checkpoint files the worker was about to commit, newest last
        self.reported = False  # its client was told it started
        self.status = ExecutionStatus.QUEUED
        self.worker: _Worker | None = None
        self.slot = self.armed = None  # type: ignore[assignment]  # (no slot yet)
        self.started_ns = self.wall_started_ns = None
        self.mode = 0  # strongest InterruptMode code requested so far; 0: none
        self.reason = self.source = 0
        self.message = None
        self.requested_ns = self.observed_ns = None
        self.sigterm_ns = self.sigterm_deadline_ns = self.sigkill_ns = self.sigkill_deadline_ns = None
        self.timers: list[_Timer] = []
        self.waiters: list[tuple[Client, int]] = []
        self.pending_signal = None  # _sigterm or _kill_execution, due before its worker had begun it
        self.out: OutputLog | None = None  # its log, once it printed something
        self.memory_limit = task.memory_limit  # bytes of RSS (its worker and its tools), or None
        self.memory_used = 0  # the RSS that broke the limit, once it did
        self.resumed_from: list | None = None  # the checkpoint it restored, as its worker told us
        # interrupt sources (see sources/): each field written by the source named
        self.budget, self.group = task.budget, task.group  # budget
        self.cost = self.run_spent = self.tree_cost = 0.0  # budget: own spend, this run's, with descendants'
        self.limited = False  # budget: it or something above it has a budget
        self.stall_timeout = task.stall_timeout  # stall
        self.progress_ns = 0  # stall: progress the supervisor saw itself (start, a child's end)
        self.priority = task.priority if parent is None else max(task.priority, parent.priority)  # priority
        self.rank = 2 * self.priority + (parent is not None)  # its place in the run queue (see runqueue.py)
        self.preemptible = task.preemptible
        self.preemptions: list[dict] | None = None
        self.preempting = False
        self.parent = parent  # tree
        self.children: dict[str, _Exec] | None = None  # tree: live children (made with the first)
        self.child_ids: list[str] | None = None  # tree: every child it started
        self.child_seq = 0  # tree: children it asked for, in every run (refused ones too): the next run numbers on
        # No source has anything to do with it (the common case): the core skips their hooks. A
        # source that takes an interest later (a spend, a first child) clears it.
        self.plain = (task.budget is None and task.stall_timeout is None and task.group is None and not task.priority
                      and not task.preemptible and parent is None)  # fmt: skip
        self.shield_ns = 0  # how long a shield held its stop back
        self.saved: list | None = None  # the checkpoint an earlier run left (it was preempted), as on the wire
        self.call = task.call
        # A chunk (Task.items): several items run in turn in one slot, each ending on its own (see _chunk_*).
        self.items = task.items  # their ids, in order; None: an ordinary execution
        self.first = 0  # index in the pickled input list of items[0]
        self.skip: set[int] | None = None  # indexes of items ended before the chunk was sent: not run
        self.item_stops: dict[int, tuple] | None = None  # index -> (mode, reason, source, message, requested_ns)
        # A stop of the chunk itself (shutdown, cancel_all, ...): (mode, reason, source, message, requested_ns);
        # every item not done ends with it.
        self.whole: tuple | None = None
        self.index: dict[str, int] | None = None  # item id -> its index, made at the first stop of one item
        self.next_item = 0  # items before this index have been reported (or skipped)
        self.inputs: list[bytes] | None = None  # a merged chunk: its items' own pickled inputs (see _merge)
        self.retries, self.retry_on, self.backoff = task.retries, task.retry_on, task.backoff  # runs left, on what
        self.attempts: list[dict] | None = None  # the runs before this one (retried)


class _ItemOut:
    """Where the output of one item of a chunk goes (its worker marks each item's end)."""

    __slots__ = ("id", "out")

    def __init__(self, id: str):
        self.id = id
        self.out: OutputLog | None = None


class _Worker:
    """One forked worker process."""

    __slots__ = ("id", "pid", "pidfd", "chan", "state", "inflight", "retained", "ticks", "kill_timer", "killed",
                 "known_agents", "cgroup", "out_r", "idle_out", "out_execs", "out_tail", "lent", "runs",
                 "init_failed")  # fmt: skip

    def __init__(self, id, pid, pidfd, chan, ticks, cgroup):
        self.id, self.pid, self.pidfd, self.chan, self.ticks, self.cgroup = id, pid, pidfd, chan, ticks, cgroup
        self.state = "starting"  # starting | idle | busy | stopping
        self.inflight: deque[_Exec] = deque()  # sent to it, in order: the running one first
        # Slots of executions it was sent SIGTERM for: kept (not re-armed) until its next Result or its
        # reaping, so that a late SIGTERM is still recognised by the worker as meant for a finished one.
        self.retained: list[int] = []
        self.kill_timer: _Timer | None = None
        self.killed = False
        self.known_agents = AgentCache()  # by-value agents it has, as the worker's own cache has them
        self.out_r = -1  # read end of its output pipe (fds 1 and 2 of it and its tools), -1 if not captured
        self.idle_out: OutputLog | None = None  # what it prints while it runs no execution
        # executions (a chunk's items) sent to it whose end-of-output mark is still to come
        self.out_execs: deque[_Exec | _ItemOut] = deque()
        self.out_tail = b""  # bytes that may be the start of an end-of-output mark
        self.lent = False  # its execution waits on children: a stand-in may run in its place
        self.runs = 0  # executions it has ended (max_tasks_per_child)
        self.init_failed = False  # the pool's initializer raised in it: it exits, replaced after a backoff

    @property
    def exec(self) -> "_Exec | None":
        return self.inflight[0] if self.inflight else None


def _positive_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)


def _grace_ok(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= _MAX_GRACE_S)


class Supervisor:
    def __init__(self, owner_sock: socket.socket, cfg: P.Start, lock=None):
        self.pid = os.getpid()
        self.cfg = cfg
        self.grace, self.term_grace = cfg.grace, cfg.term_grace
        self.flags = FlagArray(cfg.capacity)
        self.free_slots = list(range(cfg.capacity - 1, -1, -1))
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_wake)
        self.clients: dict[int, Client] = {}
        self.subscribers: set[Client] = set()  # clients that asked for events
        self.next_client_id = 1
        owner_sock.setblocking(False)
        # The creator's frames are not type-checked (our own library in the process that started us, as
        # the workers' are); every other client's are.
        self.owner: Client | None = Client(0, Channel(owner_sock, cfg.max_frame, validate=False), True,
                                           cfg.creator_pid)  # fmt: skip
        self.clients[0] = self.owner
        self.sel.register(owner_sock, selectors.EVENT_READ, (self._on_client, self.owner))
        self.creator_fd = None
        try:
            self.creator_fd = os.pidfd_open(cfg.creator_pid)
            self.sel.register(self.creator_fd, selectors.EVENT_READ, self._on_creator_exit)
        except ProcessLookupError:
            self.creator_fd = None  # already dead: the channel's EOF tells us at once
        self.listener: Listener | None = None
        self.lock = lock  # (fd, socket path) of our name, or None
        if lock is not None:
            self.listener = Listener(lock[1])
            self.sel.register(self.listener.sock, selectors.EVENT_READ, self._on_accept)
        self.execs: dict[str, _Exec] = {}  # every execution not yet ended
        self.item_chunk: dict[str, _Exec] = {}  # every item of a chunk not yet ended -> its chunk
        self.item_waiters: dict[str, list[tuple[Client, int]]] = {}  # Wait requests for live items
        self.queue = RunQueue()  # QUEUED ones by priority, in order; ended ones are skipped lazily
        self.workers: dict[int, _Worker] = {}
        self.by_pid: dict[int, _Worker] = {}
        self.idle: deque[_Worker] = deque()  # the one idle longest first: fair, and no worker starves
        self.timers: list[_Timer] = []
        self.cancelled_timers = 0
        self.dirty: set[Channel] = set()
        self.unsent_started: dict[str, _Exec] = {}  # started in this loop turn; Started goes out at the flush
        self.next_worker_id = 0
        self.run_ema_ns = 1e9  # average run time; starts high: no prefetch until tasks prove short
        self.stopping = False  # no replacement workers; exit once everything ended
        self.cgroup = cgroup_create(f"interrupt-pool-{self.pid}")  # None where the host allows none
        self.dead_cgroups: list[str] = []  # of reaped workers, until the last of their killed tools is gone
        # Empty cgroups of reaped workers, given to new ones: creating and removing a cgroup each wait on
        # the kernel's cgroup lock (about 10 ms here) just when a replacement is due. Removed at exit.
        self.free_cgroups: list[str] = []
        self.cgroup_kills: set[str] = set()  # dead workers' cgroups with a cgroup.kill still to come
        self.fork_failures = 0
        self.init_failures = 0  # initializer failures in a row (reset by a worker that got through it)
        self.init_error: list | None = None  # the last one's [type, message, traceback]
        self.merges = 0  # chunks merged at dispatch so far (their ids: merged:<n>)
        # Per agent: its executions that ran alone and sent nothing but their Result (-1: one sent a
        # checkpoint, a child, a spend... and its executions are never merged: an item has none of those).
        self.plain_runs: dict[str, int] = {}
        self.spare: _Worker | None = None  # forked and ready, runs nothing: takes a stopped worker's place
        self.want_spare = cfg.spare  # fork a (new) spare once this loop turn's messages are out
        self.spare_made = False  # the first spare is forked with the workers; later ones after _SPARE_DELAY_S
        self.spare_warm: set[str] = set()  # agents the spare has been told to import
        self.recent_agents: OrderedDict[str, None] = OrderedDict()  # the last few agents dispatched
        self.memory_watch = False  # the memory-limit timer is armed
        self.agents: dict[str, bytes] = {}  # by-value agents: digest -> cloudpickle bytes (opaque here)
        self.agent_uses: dict[str, int] = {}  # digest -> live executions naming it
        self.unused_agents: dict[str, None] = {}  # digests no live execution names, oldest first
        self.n_queued = 0  # executions waiting in the queue (the deque also holds cancelled ones)
        self.good_specs: set[str] = set()  # 'module:function' names already checked
        self.history: OrderedDict[str, tuple[dict, bytes | None]] = OrderedDict()
        self.history_bytes = 0
        self.lent = 0  # workers whose execution waits on its children (tree)
        self.standins = False  # stand-in workers were started for them: retire the idle extras
        # VetoAsk req -> (execution id, request, then, timer)
        self.vetoes: dict[int, tuple[str, tuple[int, int, int, str | None], Any, _Timer]] = {}
        self.next_veto = 1
        budgets, stalls, tree, priority = SOURCES
        self.budgets, self.stalls, self.tree, self.priority = budgets(self), stalls(self), tree(self), priority(self)
        self.sources: list[Source] = [self.budgets, self.stalls, self.tree, self.priority]
        hooks = {}
        for name in ("check", "submitted", "started", "escalated", "blocked", "intercept", "ended", "settled", "row",
                     "status"):  # fmt: skip
            hooks[name] = [getattr(src, name) for src in self.sources if hasattr(src, name)]
        self.hooks = hooks
        self._worker_handlers: dict[type, Callable[[_Worker, Any], None]] = {}
        self._source_client_handlers: dict[type, Callable[[Client, Any], None]] = {}
        self._worker_handlers[P.ItemsDone] = self._on_items_done
        self._worker_handlers[P.InitFailed] = self._on_init_failed
        for src in self.sources:
            for kind, meth in src.worker_messages.items():
                self._worker_handlers[kind] = getattr(src, meth)
            for kind, meth in src.client_messages.items():
                self._source_client_handlers[kind] = getattr(src, meth)

    # -- plumbing ----------------------------------------------------------

    def _send(self, client: Client | None, msg) -> None:
        if client is None or client.chan.closed or client.chan.write_broken:
            return
        client.chan.queue(msg)
        self.dirty.add(client.chan)
        if not client.owner and client.chan.pending_bytes > max(MAX_OUTPUT, 2 * self.cfg.max_frame):
            self._drop(client, f"it does not read its messages ({client.chan.pending_bytes} bytes queued)")

    def _event(self, kind: str, ex: "_Exec | _ItemOut | None", w: "_Worker | None", mono_ns: int | None = None,
               **data) -> None:  # fmt: skip
        subs = self.subscribers
        if not subs:
            return  # the per-task started/ended events cost nothing while nobody listens
        msg = P.Event(kind, ex.id if ex else None, w.id if w else None, mono_ns or time.monotonic_ns(), data or None)
        for c in list(subs):
            self._send(c, msg)

    def _send_worker(self, w: _Worker, msg, now: bool = False) -> None:
        w.chan.queue(msg)
        if now:
            w.chan.flush()
        if w.chan.pending:
            self.dirty.add(w.chan)

    def _send_started(self, ex: _Exec) -> None:
        if self.unsent_started.pop(ex.id, None) is not None:
            w = ex.worker
            assert w is not None and ex.wall_started_ns is not None  # (it started on w)
            if ex.inputs is None:
                self._send(ex.client, P.Started(ex.id, w.id, w.pid, ex.wall_started_ns))
            else:  # merged: its client knows only the items
                for i in ex.items or ():
                    if self.item_chunk.get(i) is ex:
                        self._send(ex.client, P.Started(i, w.id, w.pid, ex.wall_started_ns))

    def _flush(self) -> None:
        if self.unsent_started:
            for ex in list(self.unsent_started.values()):
                self._send_started(ex)
        if not self.dirty:
            return
        hung_up = []
        for chan in self.dirty:
            done = chan.flush()
            if chan.closed or chan.write_broken:  # a worker's is read to its end all the same (SIGCHLD)
                hung_up.append(chan)
                continue
            want = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
            try:
                key = self.sel.get_key(chan.sock)
            except (KeyError, ValueError):
                continue
            if key.events != want:
                self.sel.modify(chan.sock, want, key.data)
        self.dirty = {c for c in self.dirty if c.pending and not c.closed and not c.write_broken}
        for chan in hung_up:  # a client that hung up before reading: forget it now (workers: SIGCHLD does)
            for c in list(self.clients.values()):
                if c.chan is chan:
                    self._on_client(c, 0)

    def _at(self, delay: float, fn, *args) -> _Timer:
        t = _Timer(time.monotonic() + delay, fn, args)
        heapq.heappush(self.timers, t)
        return t

    def _cancel(self, t: _Timer) -> None:
        if not t.cancelled:
            t.cancelled = True
            t.args = ()  # drop the reference to its execution now, not at its deadline
            self.cancelled_timers += 1
            if self.cancelled_timers > 64 and self.cancelled_timers * 2 > len(self.timers):
                self.timers = [x for x in self.timers if not x.cancelled]  # bounded memory for long timeouts
                heapq.heapify(self.timers)
                self.cancelled_timers = 0

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0].deadline <= now:
            t = heapq.heappop(self.timers)
            if t.cancelled:
                self.cancelled_timers -= 1
                continue
            t.cancelled = True  # fired: cancelling it later is a no-op
            try:
                t.fn(*t.args)
            except Exception:
                log(f"timer {t.fn.__name__} failed:\n{traceback.format_exc()}")

    # -- main loop ---------------------------------------------------------

    def run(self) -> None:
        for _ in range(self.cfg.workers):
            self._spawn()
        self._flush()
        while not (self.stopping and not self.workers and not self.execs):
            timeout = None
            while self.timers and self.timers[0].cancelled:
                heapq.heappop(self.timers)
                self.cancelled_timers -= 1
            if self.timers:  # capped: epoll takes at most INT_MAX ms; a far deadline is simply reached later
                timeout = min(max(0.0, self.timers[0].deadline - time.monotonic()), _MAX_WAIT_S)
            for key, mask in self.sel.select(timeout):
                data = key.data
                if isinstance(data, tuple):
                    data[0](data[1], mask)
                else:
                    data(key, mask)
            self._run_timers()
            self._dispatch()
            self._maybe_retire_idle()
            self._flush()
            if self.want_spare:
                self.want_spare = False
                # Not at once: a new worker joining its cgroup holds the kernel's cgroup lock for an RCU
                # grace period (about 10 ms here), which would stall this loop's own cgroup work (the
                # kill and reaping of the worker it replaces) just when the next execution is due.
                self._at(_SPARE_DELAY_S if self.spare_made else 0.0, self._spawn_spare)
        for c in list(self.clients.values()):
            self._send(c, P.Gone())
        self._flush()

    def _on_wake(self, key, mask) -> None:
        try:
            data = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        if signal.SIGCHLD in data:
            self._reap()
        if signal.SIGTERM in data or signal.SIGHUP in data:
            self._begin_shutdown(InterruptMode.GRACEFUL.code, InterruptSource.SIGNAL.code)

    def _on_creator_exit(self, key, mask) -> None:
        self.sel.unregister(key.fd)  # (the creator's pidfd)
        os.close(key.fd)
        self.creator_fd = None
        self._owner_gone("the process that created the pool exited")

    def _owner_gone(self, why: str) -> None:
        """The creator is gone: nobody can take results any more. Stop everything now,
        SIGKILL bounded by OWNER_GONE_TERM_GRACE, and exit."""
        if self.owner is not None:
            self._drop(self.owner, why, quiet=True)
        self.stopping = True
        for ex in list(self.execs.values()):
            ex.term_grace = min(ex.term_grace, OWNER_GONE_TERM_GRACE)
            self._escalate(ex, InterruptMode.IMMEDIATE.code, InterruptReason.SHUTDOWN.code,
                           InterruptSource.SYSTEM.code, why)  # fmt: skip
        latest = time.monotonic() + OWNER_GONE_TERM_GRACE
        for w in self.workers.values():  # stops already under way keep their own, shorter bound
            t = w.kill_timer
            if t is not None and not t.cancelled and t.deadline > latest:
                self._cancel(t)
                w.kill_timer = self._at(OWNER_GONE_TERM_GRACE, self._sigkill, w)

    # -- clients -------------------------------------------------------------

    def _on_accept(self, key, mask) -> None:
        if self.listener is None:
            return  # (registered only with a listener)
        for conn, pid, uid in self.listener.accept():
            if uid != os.getuid():
                self._refuse(conn, f"refused: process {pid} of uid {uid} may not control a pool of uid {os.getuid()}")
                continue
            if len(self.clients) >= MAX_CLIENTS:
                self._refuse(conn, f"refused: the pool already has {MAX_CLIENTS} clients; close some first")
                continue
            c = Client(self.next_client_id, Channel(conn, _HELLO_MAX_FRAME), False, pid)
            self.next_client_id += 1
            self.clients[c.id] = c
            self.sel.register(conn, selectors.EVENT_READ, (self._on_client, c))
            self._at(_HELLO_WITHIN_S, self._greeted_in_time, c)

    def _greeted_in_time(self, c: Client) -> None:
        if not c.greeted and c.id in self.clients:
            self._drop(c, f"no Hello within {_HELLO_WITHIN_S:g} s")

    def _refuse(self, conn: socket.socket, why: str) -> None:
        try:
            conn.send(P.encode(P.Refused(why)), socket.MSG_DONTWAIT)
        except OSError:
            pass  # it hung up first
        conn.close()

    def _drop(self, c: Client, why: str, quiet: bool = False) -> None:
        """Close one client; the pool goes on, unless it is the owner (then: _owner_gone)."""
        if c.chan.closed and c.id not in self.clients:
            return
        if c.owner and self.owner is c:
            self.owner = None
            log(f"closing {c}: {why}")
            self._drop(c, why, quiet=True)
            return self._owner_gone(why)
        if not quiet:
            log(f"closing {c}: {why}")
        self.clients.pop(c.id, None)
        self.subscribers.discard(c)
        try:
            self.sel.unregister(c.chan.sock)
        except (KeyError, ValueError):
            pass
        self.dirty.discard(c.chan)
        c.chan.close()
        if c.owner:
            self.owner = None
        for ex in self.execs.values():  # forget it as a waiter and as the one to tell
            if ex.client is c:
                ex.client = None
            if ex.waiters:
                ex.waiters = [(w, r) for w, r in ex.waiters if w is not c]

    def _on_client(self, c: Client, mask: int) -> None:
        if c.chan.closed or c.chan.write_broken:  # it hung up (EPIPE): forget it now, or its EOF keeps us busy
            if c.owner:
                self._owner_gone("the owner hung up")
            elif c.id in self.clients:
                self._drop(c, "hung up", quiet=True)
            return
        if mask & selectors.EVENT_WRITE:
            self.dirty.add(c.chan)
        if not mask & selectors.EVENT_READ:
            return
        try:
            msgs = c.chan.feed()
        except P.ProtocolError as exc:
            if c.owner:
                log(f"protocol error from the owner: {exc}")
                self._owner_gone(f"the owner's channel broke ({exc})")
            else:
                self._drop(c, f"protocol error: {exc}")
            return
        if msgs is None:
            if c.owner:
                self._owner_gone("the owner closed its channel")
            else:
                self._drop(c, "disconnected", quiet=True)
            return
        for msg in msgs:
            if c.chan.closed:
                return
            try:
                self._handle_client(c, msg)
            except Exception as exc:
                log(f"error handling {type(msg).__name__} from {c}:\n{traceback.format_exc()}")
                if getattr(msg, "req", 0):  # the caller must not wait for ever
                    self._reply(c, msg.req, error=f"the supervisor failed on this request: {type(exc).__name__}: {exc}")
                if not c.owner:
                    self._drop(c, f"its {type(msg).__name__} could not be handled ({type(exc).__name__}: {exc})")

    def _handle_client(self, c: Client, msg) -> None:
        if not c.greeted:
            if type(msg) is not P.Hello:
                return self._drop(c, f"the first message must be Hello, got {type(msg).__name__}")
            if msg.version != P.PROTOCOL_VERSION:
                self._send(c, P.Refused(f"protocol version {msg.version} is not supported; this supervisor speaks "
                                        f"version {P.PROTOCOL_VERSION}: use the same interrupt-pool version"))  # fmt: skip
                self._flush()
                return self._drop(c, f"protocol version {msg.version}", quiet=True)
            c.greeted = True
            c.chan.max_frame = self.cfg.max_frame
            self._send(c, self._welcome())
            return
        handler = self._client_handlers.get(type(msg))
        if handler is None:
            handler = self._source_client_handlers.get(type(msg))
            if handler is None:
                return self._drop(c, f"{type(msg).__name__} is not a client message")
            return handler(c, msg)
        handler(self, c, msg)

    def _welcome(self) -> P.Welcome:
        cfg = self.cfg
        return P.Welcome(P.PROTOCOL_VERSION, self.pid, cfg.name, cfg.workers,
                         str(self.lock[1]) if self.lock else None, cfg.grace, cfg.term_grace, cfg.max_frame,
                         cfg.checkpoint_dir, self.cgroup, cfg.log_dir)  # fmt: skip

    def _reply(self, c: Client, req: int, value=None, error: str | None = None) -> None:
        if req:
            self._send(c, P.Reply(req, error is None, value, error))

    def _task_error(self, t: P.Task) -> tuple[str, str] | None:
        """Why a submitted Task cannot be queued, as (exception type name, sentence), or None."""
        err = self._task_problem(t)
        if err is None or isinstance(err, tuple):
            return err
        return ("ValueError", err)

    def _task_problem(self, t: P.Task) -> tuple[str, str] | str | None:
        if not t.id or len(t.id) > _MAX_ID or "\x00" in t.id:
            return f"execution id {t.id!r} must be a non-empty string of at most {_MAX_ID} characters without NUL"
        if t.id in self.execs or t.id in self.item_chunk:
            return f"execution id {t.id!r} is already in use by a live execution; pick another id"
        if t.id.startswith("merged:"):
            return f"execution id {t.id!r}: ids starting with 'merged:' are the pool's own; pick another id"
        if t.call not in (0, 1):
            return f"call must be 0 (fn(ctx, input)) or 1 (fn(*args, **kwargs)), got {t.call!r}"
        if t.retries or t.retry_on is not None:
            if isinstance(t.retries, bool) or not isinstance(t.retries, int) or not 0 <= t.retries <= _MAX_RETRIES:
                return f"retries must be a whole number from 0 to {_MAX_RETRIES}, got {t.retries!r}"
            if t.retry_on is not None and (not t.retry_on or not set(t.retry_on) <= {"crashed", "failed", "interrupted"}):
                return f"retry_on must name statuses among crashed, failed and interrupted, got {t.retry_on!r}"
            if isinstance(t.backoff, bool) or not isinstance(t.backoff, (int, float)) or not 0 <= t.backoff <= 3600:
                return f"backoff must be a number of seconds from 0 to 3600, got {t.backoff!r}"
        if t.items is not None:
            problem = self._chunk_problem(t)
            if problem:
                return problem
        for what, spec in (("agent", t.agent), ("on_interrupt hook", t.hook)):
            if spec is None or spec in self.good_specs:
                continue
            if spec.startswith("blob:"):
                if spec[5:] not in self.agents:
                    return f"{what} {spec} was never defined on this connection (send DefineAgent first)"
            else:
                module, sep, qualname = spec.partition(":")
                if not sep or not module or not qualname:
                    return f"{what} {spec!r} must be written as 'module:function', e.g. 'mypkg.agents:research'"
                if len(self.good_specs) < 10_000:  # bounded: a client inventing names cannot grow it forever
                    self.good_specs.add(spec)
        if not _positive_or_none(t.timeout):
            return f"timeout must be a positive, finite number of seconds or None, got {t.timeout!r}"
        if t.memory_limit is not None and (isinstance(t.memory_limit, bool) or t.memory_limit < (1 << 20)):
            return f"memory_limit must be a number of bytes of at least 1 MiB, got {t.memory_limit!r}"
        if not _grace_ok(t.grace) or not _grace_ok(t.term_grace):
            return (f"grace and term_grace must be numbers of seconds from 0 to {_MAX_GRACE_S:g}, "
                    f"got {t.grace!r}, {t.term_grace!r}")  # fmt: skip
        if t.stall_timeout is not None and not _positive_or_none(t.stall_timeout):
            return f"stall_timeout must be a positive, finite number of seconds or None, got {t.stall_timeout!r}"
        if t.priority and (isinstance(t.priority, bool) or not -(1 << 31) < t.priority < (1 << 31)):
            return f"priority must be a whole number (higher runs first), got {t.priority!r}"
        if t.budget is not None or t.group is not None:
            for check in self.hooks["check"]:
                err = check(t)
                if err:
                    return err
        return None

    def _chunk_problem(self, t: P.Task) -> str | None:
        items = t.items
        if not items or len(items) > _MAX_CHUNK:
            return f"a chunk holds 1 to {_MAX_CHUNK} items, got {len(items or ())}"
        if t.budget is not None or t.stall_timeout is not None or t.group is not None or t.preemptible or t.resume \
                or t.hook is not None or t.memory_limit is not None or t.retries:  # fmt: skip
            return ("items of a map with a chunksize take no budget, stall_timeout, group, preemptible, resume, "
                    "on_interrupt, memory_limit or retries; submit such executions one by one (chunksize=1)")  # fmt: skip
        seen = set()
        for i in items:
            if not isinstance(i, str) or not i or len(i) > _MAX_ID or "\x00" in i:
                return f"execution id {i!r} must be a non-empty string of at most {_MAX_ID} characters without NUL"
            if i in self.execs or i in self.item_chunk or i in seen:
                return f"execution id {i!r} is already in use by a live execution; pick another id"
            seen.add(i)
        return None

    def _on_submit(self, c: Client, msg: P.Submit) -> None:
        if self.stopping:
            if msg.req:
                return self._reply(c, msg.req, error="the pool is shutting down; it takes no new work")
            for t in msg.tasks:
                self._end_unstarted(c, t, "PoolClosed", "the pool is shutting down; it takes no new work")
            return
        if msg.req:  # all or none, with a reason
            seen = set()
            for t in msg.tasks:
                err = self._task_error(t) or (("ValueError", f"execution id {t.id!r} appears twice")
                                              if t.id in seen else None)  # fmt: skip
                if err:
                    return self._reply(c, msg.req, value=err[0], error=err[1])
                seen.add(t.id)
            limit = self.cfg.max_queued
            if limit is not None and self.n_queued + len(msg.tasks) > limit:
                return self._reply(c, msg.req, error=f"the pool's queue is full ({self.n_queued} queued, "
                                                     f"max_queued={limit}); retry later")  # fmt: skip
        for t in msg.tasks:
            if not msg.req:
                err = self._task_error(t)
                if err:
                    self._end_unstarted(c, t, *err)
                    continue
            self._new_exec(t, c)
        self._reply(c, msg.req, [t.id for t in msg.tasks])

    def _new_exec(self, t: P.Task, c: Client | None, parent: _Exec | None = None) -> _Exec:
        """Record and queue a checked Task (from a client, or a parent agent's child)."""
        ex = _Exec(t, self.grace if t.grace is None else t.grace,
                   self.term_grace if t.term_grace is None else t.term_grace, c, parent)  # fmt: skip
        if ex.memory_limit is None:
            ex.memory_limit = self.cfg.memory_limit
        self.execs[ex.id] = ex
        if ex.items is not None:
            for i in ex.items:
                self.item_chunk[i] = ex
        self.queue.append(ex)
        self.n_queued += 1
        self._use_agent(ex, +1)
        if not ex.plain:
            for hook in self.hooks["submitted"]:
                hook(ex)
        return ex

    def _end_unstarted(self, c: Client, t: P.Task, etype: str, message: str) -> None:
        """An execution refused at submission still ends exactly once, as failed."""
        info = {"id": t.id, "status": ExecutionStatus.FAILED.code, "error": [etype, message, None],
                "ended_wall_ns": time.time_ns()}  # fmt: skip
        self._send(c, P.Ended(t.id, info, None))

    def _use_agent(self, ex: _Exec, delta: int) -> None:
        """Count the live executions that name each by-value agent; forget one nobody names."""
        for spec in (ex.agent, ex.hook):
            if spec is not None and spec.startswith("blob:"):
                digest = spec[5:]
                n = self.agent_uses.get(digest, 0) + delta
                if n > 0:
                    self.agent_uses[digest] = n
                    self.unused_agents.pop(digest, None)
                else:
                    # Unused now: kept a while (a DefineAgent may be just ahead of its Submit), at most
                    # _UNUSED_AGENTS of them; every Submit that names one brings it again anyway.
                    self.agent_uses.pop(digest, None)
                    self.unused_agents[digest] = None
                    while len(self.unused_agents) > _UNUSED_AGENTS:
                        old = next(iter(self.unused_agents))
                        del self.unused_agents[old]
                        self.agents.pop(old, None)

    def _on_define_agent(self, c: Client, msg: P.DefineAgent) -> None:
        known = self.agents.get(msg.digest)
        if known is not None and known == msg.blob:
            return  # sent again with a later Submit: nothing to check or store
        import hashlib

        if hashlib.sha256(msg.blob).hexdigest() != msg.digest:
            return self._drop(c, f"DefineAgent {msg.digest[:16]}…: the digest does not match the bytes")
        self._store_agent(msg.digest, msg.blob)

    def _store_agent(self, digest: str, blob: bytes) -> None:
        self.agents[digest] = blob
        if digest not in self.agent_uses:
            self.unused_agents[digest] = None  # counted as used once a Submit names it

    def _on_cancel(self, c: Client, msg: P.Cancel) -> None:
        ex = self.execs.get(msg.id)
        if not self._request_ok(c, msg):
            return
        if ex is None and msg.id not in self.item_chunk:
            return self._reply(c, msg.req, False)
        self._request_stop_id(msg.id, msg.mode, msg.reason, msg.source, msg.message,
                              lambda ok: self._reply(c, msg.req, ok))  # fmt: skip

    def _stop_id(self, id: str, mode: int, reason: int, source: int, message: str | None) -> bool:
        """Stop execution ``id``, whether it is an execution of its own or an item of a chunk."""
        ex = self.execs.get(id)
        if ex is not None:
            return self._escalate(ex, mode, reason, source, message)
        chunk = self.item_chunk.get(id)
        return chunk is not None and self._stop_item(chunk, id, mode, reason, source, message)

    def _request_stop(self, ex: _Exec, mode: int, reason: int, source: int, message: str | None, then=None) -> bool:
        return self._request_stop_id(ex.id, mode, reason, source, message, then)

    def _request_stop_id(self, id: str, mode: int, reason: int, source: int, message: str | None,
                         then=None) -> bool:  # fmt: skip
        """A stop a client asked for: through the owner's ``before_interrupt`` when it has one
        and the request is one it may veto (graceful or immediate, from a user or a program);
        ``then(ok)`` is called with the outcome. True if the execution is live."""
        if id not in self.execs and id not in self.item_chunk:
            if then:
                then(False)
            return False
        if not (self.cfg.veto and self.owner is not None and mode != InterruptMode.KILL.code
                and source in _VETOABLE_SOURCES and reason not in _UNVETOABLE_REASONS):  # fmt: skip
            ok = self._stop_id(id, mode, reason, source, message)
            if then:
                then(ok)
            return ok
        req = self.next_veto
        self.next_veto += 1
        timer = self._at(VETO_WAIT_S, self._veto_answered, req, True, "no answer from before_interrupt in time")
        self.vetoes[req] = (id, (mode, reason, source, message), then, timer)
        self._send(self.owner, P.VetoAsk(req, id, mode, reason, source, message))
        return True

    def _on_veto_answer(self, c: Client, msg: P.VetoAnswer) -> None:
        if not c.owner:
            return self._drop(c, "only the process that created the pool answers before_interrupt")
        self._veto_answered(msg.req, msg.allow)

    def _veto_answered(self, req: int, allow: bool, why: str | None = None) -> None:
        entry = self.vetoes.pop(req, None)
        if entry is None:
            return  # answered late, after the wait ran out
        id, (mode, reason, source, message), then, timer = entry
        self._cancel(timer)
        ok = False
        # Still live: an execution of its own, or an item of a chunk (it may have been merged into
        # one, or requeued as another, while the owner was asked). A later execution that reuses
        # the id after this one ended is a risk the id's owner takes, as with any cancel by id.
        if id in self.execs or id in self.item_chunk:
            if allow:
                if why:
                    log(f"the stop of execution {id!r} goes ahead: {why} ({VETO_WAIT_S:g} s)")
                ok = self._stop_id(id, mode, reason, source, message)
            else:
                ex = self.execs.get(id) or self.item_chunk[id]
                self._event("vetoed", _ItemOut(id), ex.worker, mode=mode, reason=reason, message=message)
        if then:
            then(ok)

    def _request_ok(self, c: Client, msg) -> bool:
        try:
            InterruptMode.from_code(msg.mode)
            InterruptReason.from_code(msg.reason)
            InterruptSource.from_code(msg.source)
        except KeyError:
            self._reply(c, msg.req, error=f"unknown mode, reason or source code ({msg.mode}, {msg.reason}, {msg.source})")
            return False
        return True

    def _on_cancel_worker(self, c: Client, msg: P.CancelWorker) -> None:
        if not self._request_ok(c, msg):
            return
        w = self.workers.get(msg.worker_id)
        if w is None or w.exec is None or w.exec.started_ns is None:
            return self._reply(c, msg.req, False)
        self._request_stop(w.exec, msg.mode, msg.reason, msg.source, msg.message,
                           lambda ok: self._reply(c, msg.req, ok))  # fmt: skip

    def _on_cancel_all(self, c: Client, msg: P.CancelAll) -> None:
        if not self._request_ok(c, msg):
            return
        execs = [ex for ex in self.execs.values() if not msg.mine_only or ex.client is c]
        self._stop_many(c, msg.req, execs, msg.mode, msg.reason, msg.source, msg.message)

    def _stop_many(self, c: Client, req: int, execs: list, mode: int, reason: int, source: int,
                   message: str | None) -> None:  # fmt: skip
        """Request the stop of each of ``execs``; reply with how many went ahead, once every
        veto (if the owner has a before_interrupt) has been answered."""
        tally = [len(execs) + 1, 0]  # answers still due (one for this call), stops that went ahead

        def one(ok: bool) -> None:
            tally[0] -= 1
            tally[1] += bool(ok)
            if tally[0] == 0:
                self._reply(c, req, tally[1])

        for ex in execs:
            if isinstance(ex, str):
                self._request_stop_id(ex, mode, reason, source, message, one)
            else:
                self._request_stop(ex, mode, reason, source, message, one)
        one(False)

    def _on_cancel_many(self, c: Client, msg: P.CancelMany) -> None:
        """Stop many ids at once (an abandoned map): a chunk whose every live item is named stops
        as a whole (one stop, no split into tails); the other ids one by one."""
        if not self._request_ok(c, msg):
            return
        if not isinstance(msg.ids, list) or not all(isinstance(i, str) for i in msg.ids):
            return self._reply(c, msg.req, error="ids must be a list of execution ids (strings)")
        wanted = set(msg.ids)
        targets: list = []
        whole: set[str] = set()
        for id in wanted:
            ex = self.execs.get(id)
            if ex is not None:
                targets.append(ex)
                continue
            chunk = self.item_chunk.get(id)
            if chunk is None or chunk.id in whole:
                continue
            live = [i for i in chunk.items or () if self.item_chunk.get(i) is chunk]
            if all(i in wanted for i in live):
                whole.add(chunk.id)
                targets.append(chunk)
            else:
                targets.append(id)
        self._stop_many(c, msg.req, targets, msg.mode, msg.reason, msg.source, msg.message)

    def _on_query(self, c: Client, msg: P.Query) -> None:
        what = msg.what
        value: Any
        if what == "workers":
            value = [[w.id, w.pid, w.state, self._shown(w.exec)] for w in self.workers.values() if w is not self.spare]
        elif what == "executions":
            value = self._live_rows()
        elif what == "status":
            value = self._status()
        elif what == "has":
            value = msg.arg in self.execs or msg.arg in self.history or msg.arg in self.item_chunk
        else:
            return self._reply(c, msg.req, error=f"unknown query {what!r}; ask for workers, executions, status or has")
        self._reply(c, msg.req, value)

    def _on_wait(self, c: Client, msg: P.Wait) -> None:
        ex = self.execs.get(msg.id)
        if ex is None and msg.id in self.item_chunk:
            waiters = self.item_waiters.setdefault(msg.id, [])
            waiters[:] = [(w, r) for w, r in waiters if w is not c]
            waiters.append((c, msg.req))
            return
        if ex is not None:
            ex.waiters = [(w, r) for w, r in ex.waiters if w is not c]  # a client's newest wait replaces its older
            ex.waiters.append((c, msg.req))
            return
        done = self.history.get(msg.id)
        if done is None:
            return self._reply(c, msg.req, error=f"the pool has no execution {msg.id!r} (it keeps the last "
                                                 f"{self.cfg.history} ended ones)")  # fmt: skip
        self._reply(c, msg.req, [done[0], done[1]])

    def _on_subscribe(self, c: Client, msg: P.Subscribe) -> None:
        c.subscribed = True
        self.subscribers.add(c)
        self._reply(c, msg.req, True)

    def _on_shutdown(self, c: Client, msg: P.Shutdown) -> None:
        if not c.owner:
            return self._drop(c, "only the process that created the pool may shut it down")
        self._begin_shutdown(msg.mode or None, msg.source, msg.reason)

    _client_handlers: dict[type, Callable[..., None]] = {
        P.Submit: _on_submit, P.DefineAgent: _on_define_agent, P.Cancel: _on_cancel,
        P.CancelWorker: _on_cancel_worker, P.CancelAll: _on_cancel_all, P.Query: _on_query, P.Wait: _on_wait,
        P.Subscribe: _on_subscribe, P.Shutdown: _on_shutdown, P.VetoAnswer: _on_veto_answer,
        P.CancelMany: _on_cancel_many,
    }  # fmt: skip

    def _live_rows(self) -> list[list]:
        """[id, status, worker, elapsed, stage] of every live execution; a chunk's live items each
        have a row (the chunk itself is the pool's business)."""
        now = time.monotonic_ns()
        rows = []
        for ex in self.execs.values():
            row = [ex.id, ex.status.code, ex.worker.id if ex.worker and ex.started_ns else None,
                   (now - ex.started_ns) / 1e9 if ex.started_ns else None, self._live_stage(ex)]  # fmt: skip
            if ex.items is None:
                rows.append(row)
                continue
            for i in ex.items:
                if self.item_chunk.get(i) is ex:
                    rows.append([i, *row[1:]])
        return rows

    def _shown(self, ex: _Exec | None) -> str | None:
        """The id a worker runs, as clients know it (a chunk: the item it is in)."""
        if ex is None or not ex.started_ns:
            return None
        if ex.items is None:
            return ex.id
        k = self.flags.item(ex.slot)[0] if self._begun(ex) else -1
        return ex.items[k] if 0 <= k < len(ex.items) else None

    def _status(self) -> dict:
        rows = self._live_rows()
        extra: dict[str, dict] = {}
        if self.hooks["row"]:
            for ex in self.execs.values():
                row: dict = {}
                for hook in self.hooks["row"]:
                    hook(ex, row)
                if row:
                    extra[ex.id] = row
        for info, _ in self.history.values():
            i = info.get("interrupt") or {}
            elapsed = None
            if info.get("started_ns") and info.get("ended_wall_ns"):
                elapsed = (info["ended_wall_ns"] - info["started_ns"]) / 1e9
            rows.append([info["id"], info["status"], info.get("worker_id"), elapsed,
                         Stage.from_code(i["stage"]).value if i.get("stage") is not None else None])  # fmt: skip
            ended = {k: info[k] for k in ("cost", "budget", "group", "parent", "children", "priority") if k in info}
            if info.get("preemptions"):
                ended["preemptions"] = len(info["preemptions"])
            if ended:
                extra.setdefault(info["id"], ended)
        counts: dict[str, int] = {}
        executions = []
        for id, st, wid, elapsed, stage in rows:
            name = ExecutionStatus.from_code(st).value
            counts[name] = counts.get(name, 0) + 1
            row = {"id": id, "status": name, "worker": wid, "elapsed": elapsed, "stage": stage}
            more = extra.get(id)
            if more:
                row.update(more)
            executions.append(row)
        doc = {
            "name": self.cfg.name, "supervisor_pid": self.pid, "owner_pid": self.cfg.creator_pid,
            "escalation": {"grace": self.grace, "term_grace": self.term_grace},
            "workers": [{"id": w.id, "pid": w.pid, "state": w.state, "execution_id": self._shown(w.exec)}
                        for w in self.workers.values() if w is not self.spare],
            "spare_pid": self.spare.pid if self.spare is not None else None,
            "executions": executions, "counts": counts, "queued": self.n_queued, "clients": len(self.clients),
            "history_limit": self.cfg.history, "at": time.time(),
            # what the supervisor holds: each bounded by live work, workers or configuration
            "held": {"executions": len(self.execs), "queue": self.n_queued, "timers": len(self.timers),
                     "history": len(self.history), "history_bytes": self.history_bytes,
                     "agents": len(self.agents), "workers": len(self.workers), "pids": len(self.by_pid),
                     "free_slots": len(self.free_slots), "capacity": self.cfg.capacity, "lent": self.lent},
        }  # fmt: skip
        for hook in self.hooks["status"]:
            hook(doc)
        return doc

    @staticmethod
    def _live_stage(ex: _Exec) -> str | None:
        """The furthest stop stage reached so far by a live execution."""
        if ex.sigkill_ns:
            return "sigkill"
        if ex.sigterm_ns:
            return "sigterm"
        return "flag" if ex.mode else None

    def _begin_shutdown(self, cancel_mode: int | None, source: int, reason: int = InterruptReason.SHUTDOWN.code) -> None:
        self.stopping = True
        if self.listener is not None:  # no new clients; the name is free again once we exit
            self.sel.unregister(self.listener.sock)
            self.listener.close()
            self.listener = None
        if cancel_mode:
            for ex in list(self.execs.values()):
                self._escalate(ex, int(cancel_mode), reason, source, "the pool is shutting down")

    def _maybe_retire_idle(self) -> None:
        if self.stopping and not self.execs:
            if self.spare is not None and self.spare.state == "spare":
                self.idle.append(self.spare)
                self.spare = None
            for w in list(self.workers.values()):
                if w.state == "starting" and not w.killed:  # still in its initializer: it may never finish
                    self._kill_worker(w)
            for w in self.idle:
                w.state = "stopping"
                self._send_worker(w, P.Exit())
            self.idle.clear()
        elif self.standins:  # stand-ins for waiting parents: the idle extras go as soon as they are not needed
            active = self._active_workers()
            want = self.cfg.workers + self.lent
            while self.idle and active > want:
                w = self.idle.pop()
                w.state = "stopping"
                self._send_worker(w, P.Exit())
                active -= 1
            if active <= self.cfg.workers and not self.lent:
                self.standins = False

    # -- workers -----------------------------------------------------------

    def _spawn(self) -> None:
        wid = self.next_worker_id
        self.next_worker_id += 1
        cgroup = None
        if self.cgroup:
            cgroup = self.free_cgroups.pop() if self.free_cgroups else cgroup_create(
                f"{os.path.basename(self.cgroup)}/w{wid}")  # fmt: skip
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        out_r = out_w = -1
        if self.cfg.log_dir:
            out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        if not self.cfg.preload:  # (with preload, the preloaded objects stay frozen for good; the child freezes)
            gc.freeze()  # the worker's collector never touches our objects: no copy-on-write of our heap per worker
        # Until the child has its own handlers it shares our wake-up pipe: a SIGTERM sent to it then
        # would read as one sent to us. Held back around the fork; the child takes it when it is ready.
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_HELD)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_HELD)
            if not self.cfg.preload:
                gc.unfreeze()
            ours.close()
            theirs.close()
            if out_r >= 0:
                os.close(out_r)
                os.close(out_w)
            if cgroup:
                cgroup_remove(cgroup)
            self._fork_failed(exc)
            return
        if pid == 0:  # the worker
            code = 70
            gc.freeze()  # (a no-op list move when the parent froze already)
            try:
                signal.set_wakeup_fd(-1)
                for sig in _FORK_HELD:
                    signal.signal(sig, signal.SIG_DFL)  # the worker installs its own; its clean slate unblocks
                if out_w >= 0:  # what it and its tools print goes to the supervisor, per execution
                    os.set_blocking(out_w, True)
                    os.dup2(out_w, 1)
                    os.dup2(out_w, 2)
                keep = theirs.fileno()
                os.closerange(3, keep)  # everything of ours: the selector, other workers, clients, the listener
                os.closerange(keep + 1, 1 << 20)
                sys.path[:] = [p for p in self.cfg.sys_path if isinstance(p, str)]  # agents import as the creator's
                worker_main(P.Channel(theirs, self.cfg.max_frame, validate=False), self.flags.words, wid, self.pid,
                            self.cfg.checkpoint_dir, self.cfg.keep_checkpoints, cgroup, self.cfg.keep_tools,
                            self.cfg.max_frame, out_w >= 0,
                            (self.cfg.initializer, self.cfg.initializer_blob, self.cfg.initargs)
                            if self.cfg.initializer else None)  # fmt: skip
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_HELD)
        if not self.cfg.preload:
            gc.unfreeze()  # ours again: cyclic garbage among them stays collectable
        theirs.close()
        if out_w >= 0:
            os.close(out_w)
        self.fork_failures = 0
        pidfd = os.pidfd_open(pid)
        ours.setblocking(False)
        w = _Worker(wid, pid, pidfd, P.Channel(ours, self.cfg.max_frame, validate=False), start_ticks(pid) or 0, cgroup)
        self.workers[wid] = w
        self.by_pid[pid] = w
        self.sel.register(ours, selectors.EVENT_READ, (self._on_worker, w))
        if out_r >= 0:
            w.out_r = out_r
            self.sel.register(out_r, selectors.EVENT_READ, (self._on_output, w))
        self._event("worker_started", None, w, pid=pid)

    def _fork_failed(self, exc: OSError) -> None:
        """No worker could be forked (EAGAIN, ENOMEM): try again later, backing off; if the
        pool has no worker at all for long, the queued executions end with the reason."""
        self.fork_failures += 1
        delay = min(5.0, 0.05 * 2**self.fork_failures)
        log(f"cannot fork a worker ({exc}); trying again in {delay:g} s")
        self._at(delay, self._replace_missing)
        if not self.workers and self.fork_failures >= 8:
            waiting = []
            while (ex := self.queue.waiting_head()) is not None:
                self.queue.drop_head()
                waiting.append(ex)
            for ex in waiting:
                self.n_queued -= 1
                self._end(ex, ExecutionStatus.CRASHED, error=["WorkerCrashed", f"no worker could be started for "
                          f"execution {ex.id!r}: {exc}", None], retry=False)  # fmt: skip

    def _on_init_failed(self, w: _Worker, msg: P.InitFailed) -> None:
        w.init_failed = True
        w.state = "stopping"
        self.init_failures += 1
        self.init_error = msg.error
        log(f"worker {w.id} (pid {w.pid}): {msg.error[1]}")
        self._event("worker_exited", None, w, pid=w.pid, message=msg.error[1])

    def _after_init_failure(self) -> None:
        """A worker's initializer raised and it exited. Replaced after a backoff (0.5 s, doubling
        to 30 s; never a tight loop); while no worker got through its initializer, the queued
        executions cannot run: they end as failed with the initializer's error."""
        if self.spare is not None and self.spare.state == "spare" and not self.stopping:
            self._replacement()  # the ready spare got through its initializer: it takes the place
        if not any(x.state != "stopping" for x in self.workers.values()):  # none left that may yet run them
            assert self.init_error is not None  # (set by the failure that called this)
            etype, text, tb = self.init_error
            for ex in list(self.execs.values()):
                if ex.status is ExecutionStatus.QUEUED and ex.worker is None:
                    self.n_queued -= 1
                    self._end(ex, ExecutionStatus.FAILED, error=["InitializerFailed", f"execution {ex.id!r} cannot run: "
                              f"{text} (in {self.init_failures} worker(s) in a row; fix the initializer, the pool "
                              "keeps trying with a backoff)", tb])  # fmt: skip
        if self.stopping:
            return
        delay = min(30.0, 0.5 * 2 ** (self.init_failures - 1))
        self._at(delay, self._replace_missing)

    def _replace_missing(self) -> None:
        if self.stopping and not self.execs:
            return
        while len(self.workers) - (self.spare is not None) < self.cfg.workers and self.fork_failures == 0 \
                or not self.workers:  # fmt: skip
            before = len(self.workers)
            self._spawn()
            if len(self.workers) == before:
                return  # failed again: _fork_failed scheduled the next try

    # -- memory limits ----------------------------------------------------

    def _check_memory(self) -> None:
        """Every _MEMORY_TICK_S while an execution with a memory limit runs: the RSS of its
        worker and every process it started; over the limit, the worker is killed (and
        replaced) and the execution ends as crashed, naming memory."""
        watched = False
        for w in list(self.workers.values()):
            ex = w.exec
            if ex is None or not ex.memory_limit or w.killed or ex.status not in _LIVE or not self._begun(ex):
                continue
            watched = True
            used = sum(rss_bytes(pid) for pid in [w.pid, *descendants(w.pid)])
            if used > ex.memory_limit:
                ex.memory_used = used
                log(f"execution {ex.id!r} uses {used >> 20} MiB, over its memory_limit of {ex.memory_limit >> 20} "
                    f"MiB: killing worker {w.id} (pid {w.pid})")  # fmt: skip
                self._kill_worker(w)
        self.memory_watch = watched
        if watched:
            self._at(_MEMORY_TICK_S, self._check_memory)

    # -- output -----------------------------------------------------------

    def _on_output(self, w: _Worker, mask: int) -> None:
        self._drain_output(w)

    def _drain_output(self, w: _Worker) -> None:
        """Read what the worker (and its tools) printed and log it for the execution it belongs
        to: the worker writes OUTPUT_END after each execution's output, so the stream is cut
        exactly there, however late we read it (a prefetched execution may already print)."""
        while w.out_r >= 0:
            try:
                data = os.read(w.out_r, 1 << 16)
            except BlockingIOError:
                return
            if not data:  # every writer is gone: the worker and its tools
                self.sel.unregister(w.out_r)
                os.close(w.out_r)
                w.out_r = -1
                data, w.out_tail = w.out_tail, b""
                if data:
                    self._route_output(w, data)
                return
            data, w.out_tail = w.out_tail + data, b""
            while True:
                cut = data.find(OUTPUT_END)
                if cut < 0:
                    break
                if cut:
                    self._route_output(w, data[:cut])
                data = data[cut + len(OUTPUT_END) :]
                if w.out_execs:
                    done = w.out_execs.popleft()
                    self._close_output(done, w)
            keep = _partial_mark(data)  # the start of a mark split across reads waits for the rest
            if keep:
                data, w.out_tail = data[:-keep], data[-keep:]
            if data:
                self._route_output(w, data)

    def _route_output(self, w: _Worker, data: bytes) -> None:
        ex = w.out_execs[0] if w.out_execs else None
        log_dir = self.cfg.log_dir
        assert log_dir is not None  # (workers' output is captured only with a log_dir)
        try:
            if ex is not None:
                if ex.out is None:
                    ex.out = OutputLog(log_path(log_dir, ex.id), self.cfg.max_log_bytes)
                lines = ex.out.write(data)
            else:
                if w.idle_out is None:  # a leading dot: no execution id maps to this name
                    w.idle_out = OutputLog(os.path.join(log_dir, f".worker-{w.id}.log"),
                                           self.cfg.max_log_bytes)  # fmt: skip
                lines = w.idle_out.write(data)
        except OSError as exc:
            log(f"cannot write the output of worker {w.id}: {exc}")
            return
        self._output_event(ex, w, lines)

    def _output_event(self, ex: _Exec | _ItemOut | None, w: _Worker, lines: list[str]) -> None:
        if lines:
            self._event("output", ex, w, text="\n".join(lines))

    def _close_output(self, ex: _Exec | _ItemOut, w: _Worker | None) -> None:
        if ex.out is not None:
            lines = ex.out.close()
            if w is not None:
                self._output_event(ex, w, lines)
            ex.out = None

    def _on_worker(self, w: _Worker, mask: int) -> None:
        if w.chan.closed:  # reaped earlier in this batch, or a write found it gone: SIGCHLD settles it
            try:
                self.sel.unregister(w.chan.sock)
            except (KeyError, ValueError):
                pass
            return
        if mask & selectors.EVENT_WRITE:
            self.dirty.add(w.chan)
        if mask & selectors.EVENT_READ:
            try:
                msgs = w.chan.feed()
            except P.ProtocolError as exc:  # our own worker: a bug or memory corruption; it is replaced
                log(f"worker {w.id} (pid {w.pid}) sent a bad frame ({exc}); killing it")
                self._kill_worker(w)
                return
            if msgs is None:  # EOF: the worker is exiting; SIGCHLD does the rest
                self.sel.unregister(w.chan.sock)
                return
            for msg in msgs:
                self._handle_worker_safely(w, msg)

    def _handle_worker_safely(self, w: _Worker, msg) -> None:
        try:
            self._handle_worker(w, msg)
        except Exception as exc:
            log(f"error handling {type(msg).__name__} from worker {w.id}:\n{traceback.format_exc()}")
            ex = w.exec
            if ex is not None and ex.id in self.execs and ex.status in _LIVE:
                # End that one execution; its worker may be in any state now, so it is replaced.
                w.inflight.popleft()
                w.retained.append(ex.slot)
                self._end(ex, ExecutionStatus.CRASHED, error=["SupervisorError", f"the supervisor could not handle "
                          f"execution {ex.id!r}: {type(exc).__name__}: {exc}", None])  # fmt: skip
            self._kill_worker(w)

    def _kill_worker(self, w: _Worker) -> None:
        """SIGKILL the worker and everything it started: its pidfd (it may have left its group)
        and its process group now; what escaped the group is re-parented to us as it dies and
        killed at its reaping, and whatever is still in its cgroup then is killed there."""
        try:
            signal.pidfd_send_signal(w.pidfd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass  # already dead (a zombie waiting to be reaped) or its pidfd closed at reaping
        killpg(w.pid)  # unreaped, so its pid (= its group's id) cannot have been reused
        w.killed = True
        w.state = "stopping"

    def _handle_worker(self, w: _Worker, msg) -> None:
        kind = type(msg)
        if kind is P.Result:
            ex = w.exec
            if ex is None or ex.id != msg.id:
                return
            self._drain_output(w)  # it wrote its end-of-output mark before it sent this
            w.inflight.popleft()
            if msg.shield_ns:
                ex.shield_ns = msg.shield_ns
            if w.lent:  # it no longer waits on children
                w.lent = False
                self.lent -= 1
            if msg.observed_ns and not ex.observed_ns:
                ex.observed_ns = msg.observed_ns
                self._event("observed", ex, w, msg.observed_ns)
            stage = Stage.from_code(msg.stage) if msg.stage is not None else None
            if stage is Stage.QUEUED and ex.reported:
                stage = Stage.FLAG  # seen at the flag before its first line ran, but its client saw it start
            if ex.started_ns:  # a chunk counts as its items' average
                took = (time.monotonic_ns() - ex.started_ns) / max(1, msg.items_done or 1)
                self.run_ema_ns += 0.2 * (took - self.run_ema_ns)
            if w.retained:
                self.free_slots.extend(w.retained)  # it has run Python since: any late SIGTERM was handled
                w.retained = []
            if stage is Stage.SIGTERM or w.killed:
                w.state = "stopping"  # it exits after a SIGTERM stop; it keeps the slot until reaped
                w.retained.append(ex.slot)
            elif ex.sigterm_ns:
                # It ended on its own as (or just before) SIGTERM was sent: the worker ignores that late
                # signal, so it stays; its slot is kept until its next Result shows the signal was handled.
                w.retained.append(ex.slot)
                if w.kill_timer:
                    self._cancel(w.kill_timer)
                    w.kill_timer = None
                w.state = "busy"
            else:
                self.free_slots.append(ex.slot)
            w.runs += 1
            if ex.items is None and msg.status == ExecutionStatus.COMPLETED.code:
                n = self.plain_runs.get(ex.agent, 0)
                if n >= 0:
                    self.plain_runs[ex.agent] = n + 1
            limit = self.cfg.max_tasks_per_child
            if limit and w.runs >= limit and not w.inflight and w.state != "stopping":
                w.state = "stopping"  # recycled (max_tasks_per_child): its replacement starts below
                self._send_worker(w, P.Exit())
            if w.state != "stopping":
                if w.inflight:
                    self._start(w.inflight[0])
                else:
                    w.state = "idle"
                    self.idle.append(w)
            self._end(ex, ExecutionStatus.from_code(msg.status), value=msg.value, error=msg.error, stage=stage,
                      checkpoint=msg.checkpoint, resumed_from=msg.resumed_from, own=msg.own_interrupt,
                      items_done=msg.items_done)  # fmt: skip
            if w.state == "stopping":  # it exits next (SIGTERM stop, recycled): its replacement starts now
                self._flush()  # its client hears of the end first
                self._replace_early()
        elif kind is P.Observed:
            ex = w.exec
            if ex is not None and ex.id == msg.id and not ex.observed_ns:
                ex.observed_ns = msg.observed_ns
                self._event("observed", ex, w, msg.observed_ns)
        elif kind is P.Resumed:
            ex = w.exec
            if ex is not None and ex.id == msg.id:
                ex.resumed_from = msg.checkpoint
        elif kind is P.CheckpointAnnounce:
            ex = w.exec
            self._uses_features(w)
            if ex is not None and ex.id == msg.id:
                ex.announced = ex.announced[-1:] + [[msg.seq, msg.path, msg.size, msg.time]]
        elif kind is P.WorkerReady:
            self.init_failures = 0
            if w is self.spare and w.state == "starting":
                w.state = "spare"
            elif w.state == "starting":
                w.state = "idle"
                self.idle.append(w)
        else:
            handler = self._worker_handlers.get(kind)
            if handler is not None:
                if kind is not P.ItemsDone and kind is not P.InitFailed:
                    self._uses_features(w)  # a spend, a child, waiting on one: never merged again
                handler(w, msg)

    def _settled_checkpoint(self, ex: _Exec, w: _Worker) -> list | None:
        """After a kill or crash: the newest checkpoint file whose envelope is complete.
        The worker announced each one before making it visible, so the newest announced
        file is valid exactly when the kill came after its commit. Only envelopes are
        checked (header, length, CRC): the supervisor never decodes agent state.
        Temp files the dead worker left half-written are removed."""
        try:
            if self.cfg.checkpoint_dir:  # announced or not: a write the kill cut short
                ck_dir = Path(self.cfg.checkpoint_dir) / id_to_dirname(ex.id)
                for tmp in ck_dir.glob(f".tmp-*-{w.pid}"):
                    tmp.unlink(missing_ok=True)
            for seq, path, size, wall in reversed(ex.announced):
                try:
                    check_envelope(Path(path))
                    return [seq, path, size, wall]
                except CheckpointError:
                    continue  # killed before (or while) this one was committed
            if ex.resume and self.cfg.checkpoint_dir:  # it may have died before saving anything new
                found = CheckpointStore(self.cfg.checkpoint_dir, ex.id).newest_complete()
                if found:
                    return found.to_wire()
        except OSError as exc:
            log(f"cannot check the checkpoints of execution {ex.id!r}: {exc}")
        return None

    def _pick_worker(self, ex: _Exec) -> _Worker | None:
        """The worker idle longest; else, while executions are short, the busy one with
        nothing queued behind it that started first, unless it has already run for longer
        than twice the average (then it is probably a long one: nothing waits behind it).
        Never a child execution (the one it would wait behind may be its ancestor, about to
        wait on it: only parents wait, only on children, so prefetching no child makes such a
        cycle impossible), never behind a parent waiting on children, nor behind
        lower-priority work (that may be preempted for it instead)."""
        if self.standins and self._running_unlent() >= self.cfg.workers:
            return None  # stand-ins only ever replace waiting parents: at most `workers` run agent code
        if self.idle:
            return self.idle.popleft()
        if self.run_ema_ns >= PREFETCH_BELOW_NS or ex.parent is not None:
            return None
        oldest = time.monotonic_ns() - max(2 * self.run_ema_ns, 1_000_000)
        best, best_key = None, (0, 0)
        for w in self.workers.values():
            if w.state == "busy" and len(w.inflight) < _PREFETCH_DEPTH and not w.lent and not (
                    self.cfg.max_tasks_per_child and w.runs + len(w.inflight) >= self.cfg.max_tasks_per_child):  # fmt: skip
                running = w.inflight[0]
                started = running.started_ns or 0  # (0: it has not started: no candidate)
                if (started > oldest and running.priority >= ex.priority
                        and (best is None or (len(w.inflight), started) < best_key)):  # fmt: skip
                    best, best_key = w, (len(w.inflight), started)
        return best

    def _dispatch(self) -> None:
        queue = self.queue
        while self.free_slots:
            ex = queue.waiting_head()
            if ex is None:
                return
            w = self._pick_worker(ex)
            if w is None:
                for hook in self.hooks["blocked"]:
                    hook(ex)
                return
            queue.drop_head()
            self.n_queued -= 1
            if self.run_ema_ns < _MERGE_BELOW_NS and self.n_queued >= 4 * self.cfg.workers and self._mergeable(ex):
                ex = self._merge(ex)
            slot = self.free_slots.pop()
            ex.slot, ex.armed = slot, self.flags.arm(slot)  # arm before the task leaves: no stale flag
            ex.worker = w
            w.inflight.append(ex)
            if w.out_r >= 0:
                if ex.items is None:
                    w.out_execs.append(ex)
                else:  # its worker marks the end of each item's output, run or not
                    w.out_execs.extend(_ItemOut(i) for i in ex.items)
            self._send_worker(w, P.Run(ex.id, self.flags.base(slot), ex.armed, ex.agent, self._blob_for(w, ex.agent),
                                       ex.payload, ex.resume, ex.hook, self._blob_for(w, ex.hook), ex.term_grace,
                                       self.budgets.allowance(ex) if ex.limited else None,
                                       ex.child_seq, ex.call, ex.items, sorted(ex.skip) if ex.skip else None,
                                       ex.first, ex.inputs))  # fmt: skip
            if len(w.inflight) == 1:
                w.state = "busy"
                self._start(ex)
            if ex.agent not in self.spare_warm and self.spare is not None:
                self._warm_spare([ex.agent])

    def _uses_features(self, w: _Worker) -> None:
        ex = w.exec
        if ex is not None:
            self.plain_runs[ex.agent] = -1
            if len(self.plain_runs) > 10_000:  # bounded: a client inventing agents cannot grow it forever
                self.plain_runs.clear()

    def _mergeable(self, ex: _Exec) -> bool:
        """Whether ``ex`` may run in a chunk with its neighbours: a plain, short execution that
        needs nothing of its own from the supervisor (no hook, resume, memory limit, retries)."""
        return (ex.plain and ex.items is None and ex.hook is None and not ex.resume and ex.memory_limit is None
                and not ex.retries and not ex.mode and not ex.attempts and not self.cfg.veto
                and self.plain_runs.get(ex.agent, 0) >= _MERGE_AFTER)  # fmt: skip

    def _merge(self, head: _Exec) -> _Exec:
        """Many short executions queued (``map`` without a chunksize, ``Executor.submit`` in a
        loop): ``head`` and the like executions right behind it leave as one chunk, so they
        share one Run, one slot and one Result (measured: per-task cost about halved). Each
        stays its own execution: its own Started and Ended, result and cancel (see the chunks
        section). A batch is at most a 1/(2·workers) share of the queue, so every worker gets some."""
        limit = min(_MERGE_MAX, self.n_queued // (2 * self.cfg.workers) + 1)
        members = [head]
        queue = self.queue
        key = (head.agent, head.call, head.client, head.timeout, head.grace, head.term_grace, head.rank)
        while len(members) < limit:
            nxt = queue.waiting_head()
            if nxt is None:
                break
            if (nxt.agent, nxt.call, nxt.client, nxt.timeout, nxt.grace, nxt.term_grace, nxt.rank) != key \
                    or not self._mergeable(nxt):  # fmt: skip
                break
            queue.drop_head()
            self.n_queued -= 1
            members.append(nxt)
        if len(members) == 1:
            return head
        self.merges += 1
        task = P.Task(f"merged:{self.merges}", head.agent, b"", head.timeout, head.grace, head.term_grace,
                      priority=head.priority, call=head.call, items=[m.id for m in members])  # fmt: skip
        chunk = _Exec(task, head.grace, head.term_grace, head.client)
        chunk.inputs = [m.payload for m in members]
        self.execs[chunk.id] = chunk
        self._use_agent(chunk, +1)
        for m in members:
            del self.execs[m.id]
            self._use_agent(m, -1)
            self.item_chunk[m.id] = chunk
            if m.waiters:
                self.item_waiters[m.id] = m.waiters
            m.payload = b""  # released
        return chunk

    def _blob_for(self, w: _Worker, spec: str | None) -> bytes | None:
        """The by-value agent's bytes unless this worker still has them. Both sides keep the same
        bounded, least-recently-used set (AgentCache), updated in the same order, so they agree."""
        if spec is None or not spec.startswith("blob:"):
            return None
        return None if w.known_agents.touch(spec) else self.agents[spec[5:]]

    def _start(self, ex: _Exec) -> None:
        """``ex`` is now what its worker runs: the clocks (timeout, a stop requested while
        it was prefetched) start now."""
        ex.started_ns, ex.wall_started_ns = time.monotonic_ns(), time.time_ns()
        w = ex.worker
        assert w is not None  # (it was sent to w)
        if ex.mode:
            # Stopped while prefetched: its worker will see the flag and not start it, so
            # its client keeps seeing it as cancelled-while-queued. The clock runs anyway.
            ex.status = ExecutionStatus.CANCELLING
        else:
            ex.status = ExecutionStatus.RUNNING
            ex.reported = True
            if ex.client is not None:  # sent at the next flush, unless it has ended by then (Ended says it all)
                self.unsent_started[ex.id] = ex
            if ex.items is None:
                self._event("started", ex, w, ex.started_ns, pid=w.pid)
            elif self.subscribers:  # events name the items, as their clients know them
                for i in ex.items:
                    if self.item_chunk.get(i) is ex:
                        self._event("started", _ItemOut(i), w, ex.started_ns, pid=w.pid)
        if ex.timeout:
            ex.timers.append(self._at(ex.timeout, self._on_timeout if ex.items is None else self._on_item_timeout, ex))
        if ex.memory_limit and not self.memory_watch:
            self.memory_watch = True
            self._at(_MEMORY_TICK_S, self._check_memory)
        if not ex.plain:
            for hook in self.hooks["started"]:
                hook(ex)
        if ex.mode:
            self._arm_escalation(ex, ex.mode, ex.started_ns)  # its signals wait for the acknowledgement

    def _on_timeout(self, ex: _Exec) -> None:
        self._escalate(ex, InterruptMode.GRACEFUL.code, InterruptReason.TIMEOUT.code, InterruptSource.TIMEOUT.code,
                       f"timed out after {ex.timeout:g} s")  # fmt: skip

    # -- stopping ----------------------------------------------------------

    def _escalate(self, ex: _Exec, mode: int, reason: int, source: int, message: str | None,
                  now: int | None = None, item: bool = False) -> bool:  # fmt: skip
        """Request (or harden) a stop: the one escalator every source feeds. True if the
        execution was live. Requests are idempotent and only move forward. ``now`` is when
        the stop became due, if that was earlier (a budget crossed, a stall deadline)."""
        now = now or time.monotonic_ns()
        if ex.items is not None and not item:  # a stop of the chunk itself, not of one of its items
            if ex.whole is None or mode > ex.whole[0]:
                first = ex.whole or (mode, reason, source, message, now)  # the first one's reason, the strongest mode
                ex.whole = (mode, *first[1:])
        if ex.status is ExecutionStatus.QUEUED and ex.worker is None:  # still in our queue
            self.n_queued -= 1  # it stays in the deque until it reaches the head; it no longer counts
            ex.mode, ex.reason, ex.source, ex.message, ex.requested_ns = mode, reason, source, message, now
            self._event("requested", ex, None, now, mode=mode, reason=reason, message=message)
            self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.QUEUED)
            return True
        if ex.status not in _LIVE and ex.status is not ExecutionStatus.QUEUED:
            return False
        if ex.preempting and reason != InterruptReason.PRIORITY_OVERRIDE.code:
            # Being preempted, and now stopped for a reason of its own: it ends for real, for that reason.
            ex.reason, ex.source, ex.message = reason, source, message
            self._send(ex.client, P.Cancelling(ex.id))
        if mode <= ex.mode:
            return True
        w = ex.worker
        if ex.mode == 0:
            ex.reason, ex.source, ex.message, ex.requested_ns = reason, source, message, now
            ex.status = ExecutionStatus.CANCELLING
            self._send_started(ex)  # in order: its client hears it started before it hears it is cancelling
            if not ex.preempting and not item:  # a preempted one is requeued; an item's stop said so itself
                self._send(ex.client, P.Cancelling(ex.id))
            self._event("requested", ex, w, now, mode=mode, reason=reason, message=message)
        else:
            self._event("escalated", ex, w, now, mode=mode)
        ex.mode = mode
        if not ex.plain:
            for hook in self.hooks["escalated"]:
                hook(ex, mode, source)
        if mode == InterruptMode.KILL.code and ex.started_ns:
            if not self._begun(ex):  # not taken yet: the flag makes its worker skip it (it never runs)
                self.flags.request(ex.slot, ex.armed, mode, ex.reason, ex.source, ex.requested_ns)
            self._arm_escalation(ex, mode, now)  # SIGKILL now (once acknowledged); a flag would only race it
            return True
        # Details (and the doorbell for ctx.sleep) go out before the flag, so an
        # agent that sees the flag finds them already in its socket.
        assert w is not None and ex.requested_ns is not None  # (not queued: sent to w; requested above)
        doorbell = ex.id if ex.items is None else self._shown(ex) or ex.id  # a chunk: the item it is in
        self._send_worker(w, P.Interrupt(doorbell, ex.armed, mode, ex.reason, ex.source, ex.message, ex.requested_ns),
                          now=True)  # fmt: skip
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
            self._kill_execution(ex)

    def _begun(self, ex: _Exec) -> bool:
        """Its worker has taken exactly this execution and runs it (the slot's begun word)."""
        return ex.slot is not None and self.flags.begun(ex.slot, ex.armed)

    def _not_begun_yet(self, ex: _Exec, signal_fn) -> bool:
        """True (and the signal kept for later) while its worker has not taken ``ex``: a signal
        now could hit the previous execution. For graceful and immediate stops the flag is
        already set, so a worker that takes it from now on skips it; one that took it just now
        is seen at the next look (a kill waits for the worker to take it, then kills it)."""
        if self._begun(ex):
            return False
        if ex.pending_signal is None or signal_fn == self._kill_execution:  # a kill outranks a SIGTERM
            first = ex.pending_signal is None
            ex.pending_signal = signal_fn
            if first:
                wait = OWNER_GONE_TERM_GRACE if self.owner is None else max(ex.term_grace, 0.05)
                self._at(_BEGUN_LOOK_S, self._look_again, ex, time.monotonic() + wait)
        return True

    def _look_again(self, ex: _Exec, give_up: float) -> None:
        if ex.status not in _LIVE or ex.pending_signal is None:
            return
        w = ex.worker
        if self._begun(ex):
            fn, ex.pending_signal = ex.pending_signal, None
            fn(ex)
        elif time.monotonic() >= give_up and w is not None and w.exec is ex:
            # Its worker has not taken it within the bound (stuck between executions): its previous
            # Result was handled (ex is its current execution), so the kill can hit nothing else.
            ex.pending_signal = None
            log(f"worker {w.id} (pid {w.pid}) did not take execution {ex.id!r} in time to be stopped: killing it")
            self._sigkill(w)
        else:
            self._at(_BEGUN_LOOK_S, self._look_again, ex, give_up)  # until it begins, or skips it and ends

    def _kill_execution(self, ex: _Exec) -> None:
        """SIGKILL the worker running ``ex`` once it has acknowledged exactly that execution."""
        w = ex.worker
        if ex.status not in _LIVE or w is None or w.exec is not ex or self._not_begun_yet(ex, self._kill_execution):
            return
        self._sigkill(w)

    def _sigterm(self, ex: _Exec) -> None:
        w = ex.worker
        if ex.status not in _LIVE or ex.sigterm_ns or w is None or w.killed or w.exec is not ex:
            return
        if self._not_begun_yet(ex, self._sigterm):
            return
        ex.sigterm_ns = now = time.monotonic_ns()  # stamped before the call: the timeline stays monotonic
        self.flags.mark_signalled(ex.slot, ex.armed)  # before the signal: the worker checks it
        try:
            signal.pidfd_send_signal(w.pidfd, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it exited on its own just now; reaping settles the execution
        self._event("sigterm", ex, w, now, late_ms=(now - (ex.sigterm_deadline_ns or now)) / 1e6)
        w.state = "stopping"
        ex.sigkill_deadline_ns = now + int(ex.term_grace * 1e9)
        w.kill_timer = self._at(ex.term_grace, self._sigkill, w)  # bound to the worker: fires even if it answers

    def _sigkill(self, w: _Worker) -> None:
        if w.killed or w.pid not in self.by_pid:
            return
        now = time.monotonic_ns()
        ex = w.exec if w.exec is not None and w.exec.status in _LIVE else None
        if ex is not None:
            ex.sigkill_ns = now
            shielded = self.flags.shield_ns(ex.slot) if self._begun(ex) else 0
            if shielded:  # killed inside a shield: it held the stop back until now
                ex.shield_ns = now - max(shielded, ex.requested_ns or 0)
        self._kill_worker(w)  # its descendants re-parent to us as it dies; _sweep_orphans kills them
        late = (now - ex.sigkill_deadline_ns) / 1e6 if ex is not None and ex.sigkill_deadline_ns else None
        self._event("sigkill", ex, w, now, pid=w.pid, late_ms=late)
        self._flush()
        self._replace_early()

    def _spawn_spare(self) -> None:
        if self.spare is None and not self.stopping and not self.fork_failures:
            self._spawn()
            self.spare = self.workers.get(self.next_worker_id - 1)  # None if the fork failed
            self.spare_made = True
            self.spare_warm = set()
            if self.spare is not None and self.recent_agents:
                self._warm_spare(list(self.recent_agents))

    def _warm_spare(self, specs: list[str]) -> None:
        """Have the spare import these agents while it waits (a by-value one with its bytes)."""
        recent = self.recent_agents
        for spec in specs:
            self.spare_warm.add(spec)
            recent[spec] = None
            recent.move_to_end(spec)
            if len(recent) > _WARM_AGENTS:
                recent.popitem(last=False)
        spare = self.spare
        assert spare is not None  # (both callers checked: there is a spare)
        self._send_worker(spare, P.Warm([[spec, self._blob_for(spare, spec)] for spec in specs]))

    def _replace_early(self) -> None:
        """Replace a worker on its way out now, not once it has been reaped: the pool is ready
        again while the old one dies (its reaping then starts no other)."""
        if not self.stopping and not self.fork_failures and self._active_workers() < self.cfg.workers + self.lent:
            self._replacement()

    def _replacement(self) -> None:
        """The ready spare takes the place at once (a new spare is forked after this turn's
        messages are out); without one, a new worker is forked now."""
        spare = self.spare
        if spare is not None and spare.state == "spare":
            self.spare = None
            spare.state = "idle"
            self.idle.append(spare)
            self.want_spare = True
        else:
            self._spawn()

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
            try:
                self._worker_exited(w, info)
            except Exception:
                log(f"error while reaping worker {w.id} (pid {w.pid}):\n{traceback.format_exc()}")
                self._forget_worker(w)

    def _forget_worker(self, w: _Worker) -> None:
        """Drop every reference to a reaped worker (idempotent)."""
        try:
            self.sel.unregister(w.chan.sock)
        except (KeyError, ValueError):
            pass
        try:
            os.waitpid(w.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not w.chan.closed:
            w.chan.close()
        self.dirty.discard(w.chan)
        if w.pidfd >= 0:
            os.close(w.pidfd)
            w.pidfd = -1
        if w.out_r >= 0:
            self.sel.unregister(w.out_r)
            os.close(w.out_r)
            w.out_r = -1
        if w.idle_out is not None:
            w.idle_out.close()
            w.idle_out = None
        self.by_pid.pop(w.pid, None)
        self.workers.pop(w.id, None)
        if w in self.idle:
            self.idle.remove(w)
        if w.kill_timer:
            self._cancel(w.kill_timer)
            w.kill_timer = None
        self.free_slots.extend(w.retained)
        w.retained = []
        if w.lent:
            w.lent = False
            self.lent -= 1

    def _worker_exited(self, w: _Worker, info) -> None:
        # Frames it wrote before dying (its Result) come first.
        try:
            self.sel.unregister(w.chan.sock)
        except (KeyError, ValueError):
            pass  # already unregistered at EOF
        while not w.chan.closed:  # to EOF, or to EAGAIN if a tool it forked still holds its socket
            try:
                msgs = w.chan.feed()
            except P.ProtocolError:
                break
            if msgs is None or (not msgs and not w.chan.readable_now()):
                break
            for msg in msgs:
                self._handle_worker_safely(w, msg)
        self._drain_output(w)
        for ex_out in w.out_execs:  # a worker that died wrote no mark: what it printed was theirs
            self._close_output(ex_out, w)
        w.out_execs.clear()
        killpg(w.pid)  # tools it left in its group; its zombie still pins the pgid
        if w.cgroup:
            # Every other process it started, wherever it moved: cgroup.kill costs this loop a wait
            # on the kernel's cgroup lock (about 10 ms), so only if something is left, and a moment
            # later (what killpg just hit is gone by then; orphans re-parented to us die below).
            if cgroup_populated(w.cgroup):
                self.cgroup_kills.add(w.cgroup)  # not given to a new worker before this kill has run
                self._at(_CGROUP_KILL_DELAY_S, self._kill_cgroup, w.cgroup)
            self.dead_cgroups.append(w.cgroup)
        os.waitpid(w.pid, 0)
        exit_code = info.si_status if info.si_code == os.CLD_EXITED else None
        signo = info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else None
        self._event("worker_exited", None, w, pid=w.pid,
                    message=f"exit code {exit_code}" if signo is None else f"signal {signal.Signals(signo).name}")  # fmt: skip
        # The execution it had acknowledged ended with it; one it had not taken yet goes back to the queue.
        ex = w.inflight.popleft() if w.inflight and self._begun(w.inflight[0]) else None
        self._requeue(w)
        self._forget_worker(w)
        if ex is not None and ex.status in _LIVE:
            self.free_slots.append(ex.slot)
            ckpt = self._settled_checkpoint(ex, w)
            if ex.memory_used:
                limit = ex.memory_limit or 0  # (set: it is what was exceeded)
                error = ["MemoryLimitExceeded", f"execution {ex.id!r} used {ex.memory_used / 2**20:.1f} MiB of memory "
                         f"(its worker and the processes it started), over its memory_limit of "
                         f"{limit / 2**20:.1f} MiB; its worker (pid {w.pid}) was killed and replaced", None]
                self._end(ex, ExecutionStatus.CRASHED, error=error, exit_code=exit_code, signo=signo, checkpoint=ckpt)
            elif w.killed:
                self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.SIGKILL, exit_code=exit_code, signo=signo,
                          checkpoint=ckpt)  # fmt: skip
            elif ex.sigterm_ns and signo == signal.SIGTERM:
                self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.SIGTERM, exit_code=exit_code, signo=signo,
                          checkpoint=ckpt)  # fmt: skip
            else:
                how = f"exit code {exit_code}" if signo is None else f"signal {signal.Signals(signo).name} ({signo})"
                error = ["WorkerCrashed", f"worker {w.id} (pid {w.pid}) running execution {ex.id!r} died with {how}", None]
                self._end(ex, ExecutionStatus.CRASHED, error=error, exit_code=exit_code, signo=signo, checkpoint=ckpt)
        self._flush()  # its client hears of the end now, not after the fork below
        if w is self.spare:  # the spare itself died: another, unless its initializer is what fails
            self.spare = None
            self.want_spare = self.cfg.spare and not w.init_failed
            if w.init_failed:
                self._after_init_failure()
        elif w.init_failed:
            self._after_init_failure()
        elif (not self.stopping or self.queue.waiting_head() is not None) \
                and self._active_workers() < self.cfg.workers + self.lent:  # fmt: skip
            self._replacement()  # (while draining, only for queued work); a retired stand-in has none
        self._sweep_orphans()

    def _kill_cgroup(self, path: str) -> None:
        self.cgroup_kills.discard(path)
        if path in self.dead_cgroups and cgroup_populated(path):
            cgroup_kill(path)

    def _running_unlent(self) -> int:
        """Workers running an execution that is not waiting on its children."""
        return sum(1 for w in self.workers.values() if w.inflight and not w.lent and w.state != "starting")

    def _active_workers(self) -> int:
        """Workers that run, or will run, executions (not those on their way out, nor the spare)."""
        return sum(1 for w in self.workers.values() if w.state != "stopping" and w is not self.spare)

    def _requeue(self, w: _Worker) -> None:
        """Executions prefetched to a dead worker never started: back to the head of the
        queue, in order; or, if a stop was requested meanwhile, ended at stage queued."""
        pending = list(w.inflight)
        w.inflight.clear()
        for ex in reversed(pending):
            self.free_slots.append(ex.slot)
            ex.slot = ex.armed = None  # type: ignore[assignment]  # (no slot now)
            ex.worker = None
            ex.started_ns = ex.wall_started_ns = None
            ex.pending_signal = None
            for t in ex.timers:  # its clocks start again when it really starts
                self._cancel(t)
            ex.timers = []
            self.unsent_started.pop(ex.id, None)
            if ex.item_stops:  # items stopped while it was prefetched never began: they end now
                for k in sorted(ex.item_stops):
                    self._stop_unsent_item(ex, k, *ex.item_stops[k])
                ex.item_stops = None
                assert ex.skip is not None and ex.items is not None  # (a chunk: its stopped items are skipped)
                if len(ex.skip) == len(ex.items) and not ex.mode:
                    self._drop_chunk(ex)
                    continue
            if not ex.mode:
                ex.status = ExecutionStatus.QUEUED  # it never began: it waits for a worker again
            if ex.mode:
                self._end(ex, ExecutionStatus.INTERRUPTED, stage=Stage.QUEUED)
            else:
                self.queue.appendleft(ex)
                self.n_queued += 1

    def _sweep_orphans(self) -> None:
        """Kill what re-parented to us: the processes of a worker that died (its workers are
        subreapers of their own tools, so nothing else ever lands here). Then remove the
        cgroups of dead workers that have emptied."""
        for pid in direct_children(self.pid):
            if pid not in self.by_pid:
                kill_descendants(pid)
                kill_pids((pid,))
        if self.dead_cgroups:
            for cg in self.dead_cgroups:
                if cg not in self.cgroup_kills and not cgroup_populated(cg):
                    self.free_cgroups.append(cg)
            self.dead_cgroups = [cg for cg in self.dead_cgroups if cg not in self.free_cgroups]
            while len(self.free_cgroups) > self.cfg.workers + 2:  # more than replacements need: let go
                cgroup_remove(self.free_cgroups.pop(0))

    # -- ending ------------------------------------------------------------

    def _end(self, ex: _Exec, status: ExecutionStatus, *, value=None, error=None, stage=None,
             exit_code=None, signo=None, checkpoint=None, resumed_from=None, own=None,
             items_done: int | None = None, retry: bool = True) -> None:  # fmt: skip
        """Send the one Ended frame of ``ex``, keep it in the bounded history, forget it (unless a
        source takes it back: a preempted execution goes back to the queue)."""
        if ex.items is not None:
            return self._chunk_ended(ex, status, stage, items_done, error, exit_code, signo)
        if retry and ex.retries and self._retryable(ex, status):
            return self._retry(ex, status, error, exit_code, signo)
        if not ex.plain:
            for hook in self.hooks["intercept"]:
                if hook(ex, status, stage, checkpoint):
                    return
        resumed_from = resumed_from or ex.resumed_from  # a killed worker sends no Result: it said so earlier
        checkpoint = checkpoint or ex.saved  # stopped while requeued after a preemption: what that one saved
        now = time.monotonic_ns()
        for t in ex.timers:
            self._cancel(t)
        ex.timers = []
        ex.status = status
        w = None if stage is Stage.QUEUED else ex.worker  # it never ran on one
        info = {
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
        if own is not None and not ex.mode:  # the agent raised Interrupted itself
            ex.mode, ex.reason, ex.source = InterruptMode.GRACEFUL.code, InterruptReason.CUSTOM.code, InterruptSource.AGENT.code
            ex.message = own
        if ex.mode or stage is not None:
            if not ex.mode:  # a SIGTERM we did not send
                ex.mode, ex.reason, ex.source = InterruptMode.IMMEDIATE.code, InterruptReason.CUSTOM.code, InterruptSource.SIGNAL.code
                ex.message = "the worker received SIGTERM from outside the pool"
            info["interrupt"] = {
                "mode": ex.mode, "reason": ex.reason, "source": ex.source, "message": ex.message,
                "stage": stage.code if stage is not None and status is ExecutionStatus.INTERRUPTED else None,
                "requested_ns": ex.requested_ns, "observed_ns": ex.observed_ns,
                "sigterm_ns": ex.sigterm_ns, "sigterm_deadline_ns": ex.sigterm_deadline_ns if ex.sigterm_ns else None,
                "sigkill_ns": ex.sigkill_ns, "sigkill_deadline_ns": ex.sigkill_deadline_ns if ex.sigkill_ns else None,
                "ended_ns": now,
            }  # fmt: skip
            if ex.shield_ns:
                info["interrupt"]["shield_ns"] = ex.shield_ns
        if ex.attempts:
            info["attempts"] = ex.attempts
        if not ex.plain:
            for hook in self.hooks["ended"]:
                hook(ex, info, value)
            for hook in self.hooks["settled"]:
                hook(ex, info, value)
        if ex.out is not None:
            self._close_output(ex, ex.worker)
        i = info.get("interrupt") or {}
        if self.subscribers:
            self._event("ended", ex, w, now, status=status.code, stage=i.get("stage"), mode=i.get("mode"),
                        reason=i.get("reason"), pid=info["pid"], message=error[1] if error else None)  # fmt: skip
        self.unsent_started.pop(ex.id, None)  # Ended carries the worker: a Started not yet sent is moot
        self._send(ex.client, P.Ended(ex.id, info, value))
        for c, req in ex.waiters:
            self._reply(c, req, [info, value])
        del self.execs[ex.id]
        self._use_agent(ex, -1)
        ex.worker = ex.client = None
        ex.waiters = []
        ex.payload = b""  # released: a cancelled one may wait in the deque until it reaches the head
        self._remember(ex.id, info, value)

    # -- chunks: several items of a map in one slot, each with its own id and end -------------

    def _stop_item(self, ex: _Exec, item_id: str, mode: int, reason: int, source: int, message: str | None) -> bool:
        """Stop one item of chunk ``ex``, never its neighbours. Not sent yet: it ends now at stage
        queued. Sent: the worker is told not to start it (the slot's limit); if it runs now, its
        flag is set too, with the chunk's escalation. Either way only the worker's report ends
        it (it may have finished first); the items after it are requeued as a new chunk."""
        assert ex.items is not None  # (a chunk)
        if ex.index is None:
            ex.index = {i: n for n, i in enumerate(ex.items)}
        k = ex.index[item_id]
        now = time.monotonic_ns()
        if ex.status is ExecutionStatus.QUEUED and ex.worker is None:
            self._stop_unsent_item(ex, k, mode, reason, source, message, now)
            if len(ex.skip or ()) == len(ex.items):
                self.n_queued -= 1
                self._drop_chunk(ex)
            return True
        if (ex.status not in _LIVE and ex.status is not ExecutionStatus.QUEUED) or k < ex.next_item:
            return False  # (QUEUED with a worker: prefetched behind a busy one, sent but not begun)
        current = self.flags.item(ex.slot)[0] if self._begun(ex) else -1
        if k < current:
            return True  # it has ended in the worker; its report is on its way (the stop came too late)
        stops = ex.item_stops if ex.item_stops is not None else {}
        ex.item_stops = stops
        if k in stops and stops[k][0] >= mode:
            return True
        stops[k] = (mode, reason, source, message, stops[k][4] if k in stops else now)
        self._send(ex.client, P.Cancelling(item_id))
        self._event("requested", _ItemOut(item_id), ex.worker, now, mode=mode, reason=reason, message=message)
        if k > current:
            self.flags.limit(ex.slot, k)  # not begun: the worker stops before it...
            # ...unless it moved into it between our read and that write (it writes the item, then reads
            # the limit): read again, and if so it is the running one.
            current = self.flags.item(ex.slot)[0] if self._begun(ex) else -1
            if k > current:
                return True
        self.flags.limit(ex.slot, k + 1)
        self._escalate(ex, mode, reason, source, message, now, item=True)
        return True

    def _stop_unsent_item(self, ex: _Exec, k: int, mode: int, reason: int, source: int, message: str | None,
                          requested_ns: int) -> None:  # fmt: skip
        if ex.skip is None:
            ex.skip = set()
        if k in ex.skip:
            return
        ex.skip.add(k)
        stop = (mode, reason, source, message, requested_ns)
        self._end_item(ex, k, ExecutionStatus.INTERRUPTED.code, None, None, Stage.QUEUED.code, 0, None, stop)

    def _drop_chunk(self, ex: _Exec) -> None:
        """Forget a chunk whose items have all ended (it has no Ended of its own: its items had theirs)."""
        assert ex.items is not None  # (a chunk)
        for t in ex.timers:
            self._cancel(t)
        ex.timers = []
        ex.status = ExecutionStatus.INTERRUPTED
        self.unsent_started.pop(ex.id, None)
        if ex.out is not None:
            self._close_output(ex, ex.worker)
        if self.execs.get(ex.id) is ex:
            del self.execs[ex.id]
            self._use_agent(ex, -1)
        for i in ex.items:
            if self.item_chunk.get(i) is ex:  # an item reported twice is impossible; a requeued tail owns its own
                del self.item_chunk[i]
        ex.worker = ex.client = None
        ex.payload = b""  # released

    def _on_item_timeout(self, ex: _Exec) -> None:
        """``timeout`` counts for each item of a chunk from the moment it began (the slot's item_ns)."""
        if ex.status not in _LIVE:
            return
        assert ex.items is not None and ex.timeout is not None  # (a chunk with a timeout set this timer)
        k, began = self.flags.item(ex.slot) if self._begun(ex) else (-1, 0)
        due = began + int(ex.timeout * 1e9)
        now = time.monotonic_ns()
        if k < 0 or now < due or k < ex.next_item:
            ex.timers.append(self._at(ex.timeout if k < 0 else max(0.0, (due - now) / 1e9) + 0.0005,
                                      self._on_item_timeout, ex))  # fmt: skip
            return
        self._stop_item(ex, ex.items[k], InterruptMode.GRACEFUL.code, InterruptReason.TIMEOUT.code,
                        InterruptSource.TIMEOUT.code, f"timed out after {ex.timeout:g} s")  # fmt: skip

    def _on_items_done(self, w: _Worker, msg: P.ItemsDone) -> None:
        ex = w.exec
        if ex is None or ex.id != msg.id or ex.items is None:
            return
        for j, r in enumerate(msg.results):
            k = msg.first + j
            if r is None or k < ex.next_item:
                continue  # skipped (it ended before the chunk was sent)
            ex.next_item = k + 1
            status, value, error, stage, observed_ns, own = r
            stop = ex.item_stops.get(k) if ex.item_stops else None
            if status == ExecutionStatus.INTERRUPTED.code and own is None and stop is None:
                if ex.whole is None:  # hit by a stop meant for the item before it (it had just finished): run it again
                    self._requeue_items(ex, [k])
                    continue
                stop = ex.whole
            elif own is not None:
                stop = (InterruptMode.GRACEFUL.code, InterruptReason.CUSTOM.code, InterruptSource.AGENT.code, own, None)
            self._end_item(ex, k, status, value, error, stage, observed_ns, w, stop)
        if ex.item_stops and ex.mode and ex.whole is None and not any(
                k >= ex.next_item and k in ex.item_stops for k in ex.item_stops):  # fmt: skip
            # the item its flag was for has ended: no SIGTERM for the next one (it stops at the boundary)
            for t in ex.timers:
                self._cancel(t)
            ex.timers = []

    def _end_item(self, ex: _Exec, k: int, status: int, value, error, stage, observed_ns: int, w,
                  stop: tuple | None, exit_code: int | None = None, signo: int | None = None) -> None:  # fmt: skip
        assert ex.items is not None  # (a chunk)
        item_id = ex.items[k]
        info = {"id": item_id, "status": status, "error": error, "worker_id": w.id if w else None,
                "pid": w.pid if w else None, "started_ns": ex.wall_started_ns if w else None,
                "ended_wall_ns": time.time_ns(), "chunk": ex.id, "exit_code": exit_code, "signal": signo}  # fmt: skip
        if status == ExecutionStatus.INTERRUPTED.code and stop is not None:
            mode, reason, source, message, requested_ns = stop
            info["interrupt"] = {"mode": mode, "reason": reason, "source": source, "message": message,
                                 "stage": stage, "requested_ns": requested_ns, "observed_ns": observed_ns or None,
                                 "ended_ns": time.monotonic_ns()}  # fmt: skip
            if stage == Stage.SIGTERM.code:
                info["interrupt"].update(sigterm_ns=ex.sigterm_ns, sigterm_deadline_ns=ex.sigterm_deadline_ns)
            elif stage == Stage.SIGKILL.code:
                info["interrupt"].update(sigterm_ns=ex.sigterm_ns, sigkill_ns=ex.sigkill_ns,
                                         sigkill_deadline_ns=ex.sigkill_deadline_ns)  # fmt: skip
        if self.item_chunk.get(item_id) is ex:
            del self.item_chunk[item_id]
        if self.subscribers:
            i = info.get("interrupt") or {}
            self._event("ended", _ItemOut(item_id), w, None, status=status, stage=i.get("stage"), mode=i.get("mode"),
                        reason=i.get("reason"), message=error[1] if error else None)  # fmt: skip
        self._send(ex.client, P.Ended(item_id, info, value))
        for c, req in self.item_waiters.pop(item_id, ()):
            self._reply(c, req, [info, value])
        self._remember(item_id, info, value)

    def _chunk_ended(self, ex: _Exec, status: ExecutionStatus, stage, items_done: int | None, error, exit_code,
                     signo) -> None:  # fmt: skip
        """The chunk's Result, its worker's death (``items_done`` None) or its stop while queued:
        end or requeue every item it did not report. The item its worker was in when it ended
        unreported (killed, or stuck unwinding after SIGTERM) ends with the chunk's status if
        a stop was meant for it, else runs again; items after it never began: they are
        requeued, or end at stage queued if a stop was meant for them (or for the chunk)."""
        assert ex.items is not None  # (a chunk)
        w = ex.worker
        begun = self.flags.item(ex.slot)[0] if w is not None and ex.slot is not None and self._begun(ex) else -1
        cut = None  # the item it was in, unreported
        if w is not None and items_done is None and begun >= ex.next_item:
            cut = begun
        elif w is not None and items_done is not None and begun == items_done and stage is not None:
            cut = begun  # its Result came from the watchdog: that item was still unwinding
        whole = ex.whole
        redo = []
        for k in range(ex.next_item, len(ex.items)):
            if ex.skip and k in ex.skip:
                continue
            stop = (ex.item_stops.get(k) if ex.item_stops else None) or whole
            if w is None and status is not ExecutionStatus.INTERRUPTED:  # refused before it ran (no worker)
                self._end_item(ex, k, status.code, None, error, None, 0, None, None)
            elif cut is not None and k < cut and w is not None:  # it ran, and its report died with the worker
                self._end_item(ex, k, ExecutionStatus.CRASHED.code, None, [
                    "WorkerCrashed", f"execution {ex.items[k]!r} ran in a chunk whose worker (pid {w.pid}) died "
                    "before it could report this item's result", None], None, 0, w, None)  # fmt: skip
            elif k == cut and status is ExecutionStatus.CRASHED:
                if error and error[0] == "WorkerCrashed":  # its own words, not the chunk's id
                    error = [error[0], error[1].replace(f"execution {ex.id!r}", f"execution {ex.items[k]!r}"), error[2]]
                self._end_item(ex, k, status.code, None, error, None, 0, w, None, exit_code, signo)
            elif k == cut and stop is not None:
                self._end_item(ex, k, ExecutionStatus.INTERRUPTED.code, None, None, stage.code if stage else None, 0,
                               w, stop, exit_code, signo)  # fmt: skip
            elif k != cut and stop is not None:  # never begun, and a stop was meant for it
                self._end_item(ex, k, ExecutionStatus.INTERRUPTED.code, None, None, Stage.QUEUED.code, 0, None, stop)
            else:  # never begun, or stopped for the item before it: it runs (again) in a new chunk
                redo.append(k)
        if redo:
            self._requeue_items(ex, redo)
        self._drop_chunk(ex)

    def _requeue_items(self, ex: _Exec, ks: list[int]) -> None:
        """Items of ``ex`` that never began (or must run again), as a new chunk at the head of the
        queue: the same input bytes, the items from the first of them on, the others skipped."""
        assert ex.items is not None  # (a chunk)
        lo = min(ks)
        keep = set(ks)
        items = ex.items[lo:]
        tail = f"{ex.id}#{lo}"
        while tail in self.execs or tail in self.item_chunk:  # a client's own id may look like one
            tail += "#"
        task = P.Task(tail, ex.agent, ex.payload or b"", ex.timeout, ex.grace, ex.term_grace,
                      priority=ex.priority, call=ex.call, items=items)  # fmt: skip
        nx = _Exec(task, ex.grace, ex.term_grace, ex.client)
        nx.inputs, nx.memory_limit = ex.inputs, ex.memory_limit
        nx.first = ex.first + lo
        nx.skip = {j for j in range(len(items)) if lo + j not in keep}
        for k in ks:
            self.item_chunk[ex.items[k]] = nx
        self.execs[nx.id] = nx
        self._use_agent(nx, +1)
        self.queue.appendleft(nx)
        self.n_queued += 1

    # -- retries ---------------------------------------------------------------

    def _retryable(self, ex: _Exec, status: ExecutionStatus) -> bool:
        if self.stopping or ex.mode and ex.reason not in _RETRIED_REASONS:
            return False  # a stop someone asked for (or the pool's end) is never undone by a retry
        if ex.child_ids or ex.preempting:
            return False  # its children and a preemption under way end with this run: no retry
        on = ex.retry_on or ("crashed",)
        return status.value in on

    def _retry(self, ex: _Exec, status: ExecutionStatus, error, exit_code, signo) -> None:
        """Record this run as an attempt and run the execution again after its backoff (doubling
        each time). It counts as queued meanwhile; a stop ends it at stage queued."""
        w = ex.worker
        attempt = {"status": status.code, "error": error, "worker_id": w.id if w else None,
                   "pid": w.pid if w else None, "exit_code": exit_code, "signal": signo,
                   "started_ns": ex.wall_started_ns, "ended_wall_ns": time.time_ns()}  # fmt: skip
        ex.attempts = (ex.attempts or []) + [attempt]
        delay = ex.backoff * 2 ** (len(ex.attempts) - 1)
        ex.retries -= 1
        self._requeue_preempted(ex, None, delay)
        self._event("requeued", ex, None, message=f"{status.value}; attempt {len(ex.attempts) + 1} in {delay:g} s")

    def _requeue_preempted(self, ex: _Exec, checkpoint: list | None, delay: float | None = None) -> None:
        """A preempted execution (its worker and slot already let go) waits again at the head
        of its priority, to resume from the checkpoint its stop saved (``resume``; without
        one it starts over, as it would have: never from an older execution's checkpoint)."""
        for t in ex.timers:
            self._cancel(t)
        ex.timers = []
        if ex.out is not None:
            self._close_output(ex, ex.worker)
        self.unsent_started.pop(ex.id, None)
        ex.status = ExecutionStatus.QUEUED
        ex.worker = ex.slot = ex.armed = None  # type: ignore[assignment]  # (no slot now)
        ex.started_ns = ex.wall_started_ns = None
        ex.mode, ex.reason, ex.source, ex.message = 0, 0, 0, None
        ex.requested_ns = ex.observed_ns = None
        ex.sigterm_ns = ex.sigterm_deadline_ns = ex.sigkill_ns = ex.sigkill_deadline_ns = None
        ex.pending_signal = None
        ex.announced = []
        ex.reported = False
        ex.run_spent = 0.0
        ex.shield_ns = 0
        ex.resumed_from = None
        ex.resume = ex.resume or checkpoint is not None
        ex.saved = checkpoint or ex.saved
        self.n_queued += 1
        if delay is not None:  # a retry: queued during its backoff (a stop ends it at stage queued), then in the queue
            self._send(ex.client, P.Requeued(ex.id, 0))
            if delay:
                ex.timers.append(self._at(delay, self._back_in_queue, ex))
            else:
                self.queue.append(ex)
            return
        self.queue.appendleft(ex)
        preempted = len(ex.preemptions or ())
        self._send(ex.client, P.Requeued(ex.id, preempted))
        self._event("requeued", ex, None, message=f"preempted {preempted} time(s); waiting to resume")

    def _back_in_queue(self, ex: _Exec) -> None:
        if self.execs.get(ex.id) is ex and ex.status is ExecutionStatus.QUEUED and ex.worker is None:
            ex.timers = []
            self.queue.append(ex)

    def _remember(self, id: str, info: dict, value: bytes | None) -> None:
        """Keep the newest ``history`` ended executions (values over the byte budget are dropped)."""
        history = self.history
        limit = self.cfg.history
        if limit <= 0:
            return
        if value is not None:
            if len(value) > _HISTORY_VALUE_BYTES // limit:
                value = None  # too large to keep for everyone: the submitting client already has it
                info["value_dropped"] = True
            else:
                self.history_bytes += len(value)
        old = history.pop(id, None)
        if old is not None and old[1] is not None:
            self.history_bytes -= len(old[1])
        history[id] = (info, value)
        while len(history) > limit or self.history_bytes > _HISTORY_VALUE_BYTES:
            _, (_, v) = history.popitem(last=False)
            if v is not None:
                self.history_bytes -= len(v)


_HISTORY_VALUE_BYTES = 64 << 20  # result bytes the history may hold in all


def _noop(signum, frame) -> None:
    pass  # the wake-up fd carries the signal number to the loop


def _read_start(sock: socket.socket) -> P.Start:
    chan = P.Channel(sock)
    sock.settimeout(30)
    msg = chan.recv()
    sock.settimeout(None)
    if type(msg) is not P.Start:
        raise P.ProtocolError(f"expected the Start frame, got {type(msg).__name__}")
    return msg


def _preload(cfg: P.Start) -> str | None:
    """Import the modules the pool preloads, before the first fork (warm workers): every worker
    starts with them imported. Returns why not, if one fails to import or starts a thread (a
    forking process must stay single-threaded). Their objects are then frozen (``gc.freeze``):
    our collector never walks them again (a full collection over a framework's ~100k objects
    would stall the loop for tens of ms) and forked workers share their pages."""
    sys.path[:] = [p for p in cfg.sys_path if isinstance(p, str)]  # as the creator (and the workers) import
    # What a module prints as it is imported goes to stderr: our stdout is the creator's, and
    # 'pool run' writes its JSON result lines there (fd level: C extensions print too).
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        for name in cfg.preload or ():
            try:
                importlib.import_module(name)
            except BaseException as exc:  # anything a module's import raises, SystemExit included
                return (f"preload: importing {name!r} in the supervisor failed ({type(exc).__name__}: {exc}); "
                        "check the name, and that it imports from this process's sys.path and current directory")
            if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
                return (f"preload: importing {name!r} started a thread, and the supervisor forks its workers, so "
                        "it must stay single-threaded; import it in initializer= instead (it runs in each worker, "
                        "after the fork), or preload only the modules it imports that start no thread")
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass  # (a module may have replaced or closed sys.stdout; fd 1 is restored all the same)
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    gc.collect()
    gc.freeze()
    return None


def run_supervisor(sock: socket.socket) -> int:
    """Run a supervisor on the creator's socket; returns the process exit code."""
    # Our own session (the launcher asked for it): no terminal signals reach us or our workers;
    # the creator relays Ctrl+C as requests. SIGINT is ignored in case we were started by hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP})
    set_child_subreaper()
    set_name("pool-supervisor")
    try:
        cfg = _read_start(sock)
    except (OSError, P.ProtocolError) as exc:
        log(f"no valid Start frame from the creator ({exc}); exiting")
        return 2
    lock = None
    refused = None
    try:
        if cfg.name is not None:
            lock = _naming.claim(cfg.name)
        refused = _preload(cfg) if cfg.preload else None
        if refused:
            raise ValueError(refused)
    except (_naming.NameError_, ValueError, OSError) as exc:
        try:
            sock.sendall(P.encode(P.Refused(str(exc))))
        except OSError:
            pass
        if lock is not None:
            assert cfg.name is not None
            _naming.release(cfg.name, lock[1], lock[0])
        if refused:
            # A refused module may have left threads behind (the one it started, or one from an import
            # that then failed): a normal exit would wait for any non-daemon one, and the creator for us.
            sys.stderr.flush()
            os._exit(2)
        return 2
    sup = Supervisor(sock, cfg, lock)
    signal.set_wakeup_fd(sup.wake_w, warn_on_full_buffer=False)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _noop)
    sup._send(sup.owner, sup._welcome())
    try:
        sup.run()
    finally:
        # Whatever happens, no worker or tool of theirs outlives us.
        for w in list(sup.workers.values()):
            sup._kill_worker(w)
        if sup.cgroup:
            cgroup_kill(sup.cgroup)
        sup._sweep_orphans()
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            sup._sweep_orphans()  # what re-parented to us as they died
        if sup.cgroup:
            cgroup_remove(sup.cgroup)
        if lock is not None:
            if sup.listener is not None:
                sup.listener.close()
            assert cfg.name is not None  # (the lock is the name's)
            _naming.release(cfg.name, lock[1], lock[0])
        # The owner reads everything it is sent; other clients may not: they get a second.
        if sup.owner is not None:
            _flush_before_exit([sup.owner], deadline=time.monotonic() + 30.0)
        _flush_before_exit([c for c in sup.clients.values() if not c.owner], deadline=time.monotonic() + 1.0)
    return 0


def _flush_before_exit(clients: list[Client], deadline: float) -> None:
    """Deliver what is queued (Gone, last replies) to every client, all within one shared
    deadline: a client that does not read cannot hold our exit, nor can many of them."""
    pending = [c for c in clients if not c.chan.closed and not c.chan.write_broken and not c.chan.flush()]
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        sel = selectors.DefaultSelector()
        try:
            for c in pending:
                sel.register(c.chan.sock, selectors.EVENT_WRITE, c)
            ready = [key.data for key, _ in sel.select(left)]
        finally:
            sel.close()
        for c in ready:
            c.chan.flush()
        pending = [c for c in pending if c.chan.pending and not c.chan.closed and not c.chan.write_broken]

