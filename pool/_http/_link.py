"""The gateway's one connection to the supervisor, and what it learns from the event stream.

Owns:

- ``_pool``: the connected :class:`~interrupt_pool.Pool` client (``Pool.connect(name)``), or
  None while the pool is unreachable. Written under ``_lock`` by :meth:`PoolLink.get` (which
  connects, on demand: a request, never a timer, is what reconnects) and by the event
  thread when the pool's event stream ends (the pool stopped, or dropped this client); no
  other code writes it. Request handlers that meet a broken pool answer 503 and leave it
  to the event thread, so "connected" and "disconnected" are announced in order.
- the event thread (one per connection): reads ``pool.events()`` and hands each event to
  the event loop with ``call_soon_threadsafe``.
- on the event loop only (no lock): the ring buffer of the last ``ring_size`` events with
  their SSE ids, the live SSE subscribers, the waiters for executions' ends, the per-
  execution stop timelines seen so far (bounded), and the stop-latency histogram.

Event ids increase for the life of the gateway and across its restarts: the first id is
the Unix time in microseconds when it started, so a client resuming with an id from an
earlier gateway process is told that the buffer does not reach back that far.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from typing import Any, Callable

from .. import Pool
from .._events import Event, EventKind
from .._exceptions import PoolError
from ._metrics import Histogram

__all__ = ("PoolLink", "PoolUnavailable", "Subscriber")

MAX_TIMELINES = 10_000  # executions whose stop steps are remembered (oldest forgotten first)
MAX_SUBSCRIBER_BACKLOG = 10_000  # events queued for one slow SSE client before it is cut off
_STEP_EVENTS = {EventKind.REQUESTED: "requested", EventKind.OBSERVED: "observed", EventKind.SIGTERM: "sigterm",
                EventKind.SIGKILL: "sigkill", EventKind.ENDED: "ended"}  # fmt: skip


class PoolUnavailable(Exception):
    """The pool cannot be reached now; the message says how to start it (HTTP 503)."""


class Subscriber:
    """One SSE client: its backlog of (id, data) and a wake-up; loop-only."""

    __slots__ = ("items", "wake", "overflow", "closed")

    def __init__(self) -> None:
        self.items: collections.deque[tuple[int, str]] = collections.deque()
        self.wake = asyncio.Event()
        self.overflow = False  # it fell more than MAX_SUBSCRIBER_BACKLOG events behind
        self.closed = False  # the pool went away: the stream ends after its backlog


class PoolLink:
    def __init__(self, name: str, ring_size: int = 4096):
        self.name = name
        self._lock = threading.Lock()
        self._pool: Pool | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.last_error: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # loop-only state
        self.ring: collections.deque[tuple[int, str]] = collections.deque(maxlen=ring_size)
        self.next_id = time.time_ns() // 1000
        self.first_id = self.next_id
        self.subscribers: set[Subscriber] = set()
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.timelines: collections.OrderedDict[str, dict[str, int]] = collections.OrderedDict()
        self.stop_latency = Histogram("interrupt_pool_stop_latency_seconds",
                                      "Seconds from a stop request to the end of the execution, by the stage that "
                                      "ended it (seen by this gateway).", "stage")  # fmt: skip
        self.events_seen = 0

    # -- the connection (any thread but the loop's: these block) ---------------------------

    def unavailable(self, why: str | None = None) -> PoolUnavailable:
        why = why or self.last_error or "it is not running"
        return PoolUnavailable(f"pool {self.name!r} is not reachable ({why}); start it with "
                               f"'pool serve --name {self.name}', and this gateway reconnects on the next request")

    def get(self) -> Pool:
        """The connected pool, connecting first if needed; PoolUnavailable if it cannot be reached."""
        with self._lock:
            if self._closed:
                raise PoolUnavailable("the gateway is shutting down")
            if self._pool is not None:
                return self._pool
            try:
                pool = Pool.connect(self.name, timeout=5.0)
            except PoolError as exc:
                self.last_error = str(exc).rstrip(".")
                raise self.unavailable() from None
            events = pool.events()  # subscribed from here on: nothing is missed after "connected"
            self._pool = pool
            self.last_error = None
            self._publish_soon(self._on_connected, pool.supervisor_pid)
            t = threading.Thread(target=self._pump, args=(pool, events), name=f"gateway-events-{pool.supervisor_pid}",
                                 daemon=True)  # fmt: skip
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()
            return pool

    def current(self) -> Pool | None:
        return self._pool

    def _pump(self, pool: Pool, events) -> None:
        for ev in events:
            self._publish_soon(self._on_event, ev)
        with self._lock:  # the stream ended: the pool stopped or this client was dropped
            if self._pool is pool:
                self._pool = None
            why = f"its supervisor (pid {pool.supervisor_pid}) went away"
            self.last_error = why
        self._publish_soon(self._on_lost, why)

    def close(self) -> None:
        """Disconnect (the pool goes on), and let the event thread end."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)  # a connected client: only disconnects; its executions go on
        for t in self._threads:
            t.join(timeout=5)

    def _publish_soon(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop has closed: the gateway is exiting and nobody listens

    # -- on the loop -------------------------------------------------------------------

    def _publish(self, payload: dict[str, Any]) -> None:
        eid = self.next_id
        self.next_id += 1
        payload["seq"] = eid
        data = json.dumps(payload, separators=(",", ":"), default=str)
        self.ring.append((eid, data))
        for sub in self.subscribers:
            if len(sub.items) >= MAX_SUBSCRIBER_BACKLOG:
                sub.overflow = True
            else:
                sub.items.append((eid, data))
            sub.wake.set()

    def _on_connected(self, supervisor_pid: int) -> None:
        self._publish({"kind": "pool_connected", "pool": self.name, "supervisor_pid": supervisor_pid,
                       "mono_ns": time.monotonic_ns()})  # fmt: skip

    def _on_lost(self, why: str) -> None:
        self._publish({"kind": "pool_unavailable", "pool": self.name, "mono_ns": time.monotonic_ns(),
                       "message": str(self.unavailable(why))})  # fmt: skip
        for sub in self.subscribers:
            sub.closed = True
            sub.wake.set()
        waiters, self.waiters = self.waiters, {}
        for futs in waiters.values():
            for f in futs:
                if not f.done():
                    f.set_exception(self.unavailable(why))

    def _on_event(self, ev: Event) -> None:
        self.events_seen += 1
        eid = ev.execution_id
        step = _STEP_EVENTS.get(ev.kind)
        if step is not None and eid is not None:
            tl = self.timelines.get(eid)
            if tl is None:
                tl = self.timelines[eid] = {}
                if len(self.timelines) > MAX_TIMELINES:
                    self.timelines.popitem(last=False)
            tl.setdefault(step, ev.mono_ns)
            if ev.kind is EventKind.ENDED:
                requested = tl.get("requested")
                if requested is not None and ev.stage is not None:
                    self.stop_latency.observe(ev.stage.value, max(0, ev.mono_ns - requested) / 1e9)
                for f in self.waiters.pop(eid, ()):
                    if not f.done():
                        f.set_result(None)
        payload = ev.model_dump(mode="json", exclude_none=True)
        payload["at"] = ev.at.isoformat()
        self._publish(payload)

    def subscribe(self, last_id: int | None) -> tuple[Subscriber, list[tuple[int, str]], dict[str, Any] | None]:
        """A new SSE subscriber, the buffered events after ``last_id`` to replay first, and a
        notice if the buffer no longer reaches back to ``last_id``. Atomic on the loop: no
        event falls between the replay and the live stream."""
        sub = Subscriber()
        self.subscribers.add(sub)
        if last_id is None:
            return sub, [], None
        replay = [(i, d) for i, d in self.ring if i > last_id]
        oldest = self.ring[0][0] if self.ring else self.next_id
        gap = None
        if last_id + 1 < oldest or last_id >= self.next_id:
            missed_from = last_id + 1 if last_id + 1 < oldest else None
            gap = {"kind": "gap", "pool": self.name, "mono_ns": time.monotonic_ns(),
                   "seq": oldest - 1, "missed_from": missed_from, "resumes_at": oldest,
                   "message": (f"this gateway keeps the last {self.ring.maxlen} events; the ones after "
                               f"{last_id} up to {oldest - 1} are gone (or were sent by an earlier gateway "
                               "process): read the current state with GET /v1/executions and "
                               "GET /v1/workers")}  # fmt: skip
            if last_id >= self.next_id:
                gap["message"] = (f"event {last_id} was not sent by this gateway (it started at "
                                  f"{self.first_id}); the events it has are replayed from the oldest")  # fmt: skip
                replay = list(self.ring)
        return sub, replay, gap

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def watch(self, execution_id: str) -> asyncio.Future:
        """A future set when an ``ended`` event for ``execution_id`` arrives (register it before
        asking whether it is still live, so the end cannot fall between)."""
        assert self.loop is not None
        fut = self.loop.create_future()
        self.waiters.setdefault(execution_id, []).append(fut)
        return fut

    def unwatch(self, execution_id: str, fut: asyncio.Future) -> None:
        futs = self.waiters.get(execution_id)
        if futs and fut in futs:
            futs.remove(fut)
            if not futs:
                del self.waiters[execution_id]
