"""The typed wire protocol: every message any two of our processes exchange.

Owns: the message definitions (one ``NamedTuple`` per message, with a kind
tag), the codec and the :class:`Channel` that frames them on a stream socket.
Producer and consumer use the same class, so adding a field is one edit here
(new fields go last, with a default, so an older peer's shorter frame still
decodes).

Frame: a 4-byte little-endian length, then one msgpack array
``[kind, field, ...]``. A frame longer than the channel's ``max_frame`` is a
protocol error, never a buffer that grows. Decoding checks the kind, the
arity and the type of every field (nested messages included) before a handler
sees it: a malformed or hostile frame raises :class:`ProtocolError`, which
the supervisor turns into closing that one client. Nothing here unpickles:
agent inputs and results travel as opaque ``bytes`` fields.

Directions: ``C→S`` client to supervisor (any client: the Pool that created
the supervisor, ``Pool.connect``, the CLI, later the HTTP gateway and Ray
actors), ``S→C`` supervisor to client, ``S→W`` and ``W→S`` supervisor and
worker.
"""

import socket
import struct
import types
import typing
from collections import deque
from typing import Any, NamedTuple

import msgpack

__all__ = (
    "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME", "ProtocolError", "Channel", "encode", "decode",
    "Start", "Hello", "Welcome", "Refused", "Task", "DefineAgent", "Submit", "Cancel", "CancelWorker", "CancelAll",
    "Query", "Wait", "Subscribe", "Shutdown", "Started", "Cancelling", "Ended", "Reply", "Event",
    "Gone", "Run", "Interrupt", "Exit", "WorkerReady", "Result", "Observed", "CheckpointAnnounce", "Resumed",
    "DefineGroup", "CancelGroup", "VetoAsk", "VetoAnswer", "Requeued", "Spend", "SubmitChild", "Waiting",
    "CancelChild", "ChildEnded", "Allowance", "ItemsDone", "InitFailed", "Warm", "CancelMany",
)  # fmt: skip

PROTOCOL_VERSION = 3
# Written by a worker into its output pipe between one execution's output and the next one's.
OUTPUT_END = b"\x00\x1einterrupt-pool: end of execution output\x1e\x00\n"
DEFAULT_MAX_FRAME = 64 << 20  # 64 MiB: an input or result larger than this is refused with a clear error
_LEN = struct.Struct("<I")
_COALESCE = 256 << 10  # queued output up to this size is joined into one send


class ProtocolError(Exception):
    """A frame that is not a valid message of this protocol version."""


_BY_KIND: dict[int, Any] = {}  # kind -> message class (a NamedTuple: _fields, _make)
_CHECKS: dict[type, tuple] = {}
_NESTED: dict[type, tuple] = {}  # message -> ((field index, nested message), ...): built even when not validated


def _types_of(hint) -> tuple:
    """isinstance() targets for a field annotation (a nested message is checked separately)."""
    if hint is Any:
        return (object,)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        out: tuple = ()
        for arg in typing.get_args(hint):
            out += _types_of(arg)
        return out
    if hint is type(None):
        return (type(None),)
    if hint is float:
        return (int, float)
    if origin is not None:
        return (origin,)
    if hint is bool:
        return (bool,)
    if hint is int:
        return (int,)  # bool is an int too; harmless here
    return (hint,)


def message(kind: int):
    """Register a NamedTuple class as the message with wire tag ``kind``."""

    def register(cls):
        if kind in _BY_KIND:
            raise RuntimeError(f"message kind {kind} is used by {_BY_KIND[kind].__name__} and {cls.__name__}")
        cls.KIND = kind
        _BY_KIND[kind] = cls
        hints = cls.__annotations__  # real objects: this module has no `from __future__ import annotations`
        checks = []
        for name in cls._fields:
            hint = hints[name]
            nested = None
            if typing.get_origin(hint) is list and typing.get_args(hint) and typing.get_args(hint)[0] in _CHECKS:
                nested = typing.get_args(hint)[0]
            elif hint in _CHECKS:  # one message nested in this one: an array on the wire
                checks.append((name, (list, hint), hint))
                continue
            checks.append((name, _types_of(hint), nested))
        _CHECKS[cls] = tuple(checks)
        nested_at = tuple((i, n) for i, (_, _, n) in enumerate(checks) if n is not None)
        if nested_at:
            _NESTED[cls] = nested_at
        return cls

    return register


def _build(cls, fields: list, validate: bool):
    n = len(cls._fields)
    if len(fields) > n:
        fields = fields[:n]  # a newer peer's extra fields
    elif len(fields) < n:
        defaults = cls._field_defaults
        missing = cls._fields[len(fields) :]
        if any(f not in defaults for f in missing):
            required = n - len(defaults)
            raise ProtocolError(f"{cls.__name__} needs at least {required} fields, got {len(fields)}")
        fields = list(fields) + [defaults[f] for f in missing]
    if not validate:
        return _trusted(cls, fields)
    for value, (name, allowed, nested) in zip(fields, _CHECKS[cls]):
        if not isinstance(value, allowed):
            raise ProtocolError(f"{cls.__name__}.{name} must be {'/'.join(t.__name__ for t in allowed)}, "
                                f"got {type(value).__name__}")  # fmt: skip
        if isinstance(value, (list, dict, msgpack.Timestamp)) and nested is None:
            _plain(value, f"{cls.__name__}.{name}")
        if nested is not None and not isinstance(value, list):
            continue  # a nested message built by our own side
        if nested is not None and cls.__annotations__[name] is nested:
            fields = list(fields)
            fields[cls._fields.index(name)] = _build(nested, value, True)
            continue
        if nested is not None:
            idx = cls._fields.index(name)
            items = []
            for item in value:
                if not isinstance(item, list):
                    raise ProtocolError(f"{cls.__name__}.{name} items must be {nested.__name__} arrays")
                items.append(_build(nested, item, True))
            fields = list(fields)
            fields[idx] = items
    return cls._make(fields)


def _trusted(cls, fields: list):
    """A message from a trusted peer: no type checks, but nested messages built all the same."""
    nested_at = _NESTED.get(cls)
    if nested_at is None:
        return cls._make(fields)
    fields = list(fields)
    for i, nested in nested_at:
        value = fields[i]
        if type(value) is not list:
            continue
        if cls.__annotations__[cls._fields[i]] is nested:
            fields[i] = _build(nested, value, False)
        else:
            make, n = nested._make, len(nested._fields)
            fields[i] = [(make(item) if len(item) == n else _build(nested, item, False)) if type(item) is list
                         else item for item in value]  # fmt: skip
    return cls._make(fields)


def _plain(value, where: str) -> None:
    """msgpack's own Timestamp extension bypasses ext_hook: refuse it anywhere in a container."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, msgpack.Timestamp):
            raise ProtocolError(f"{where} holds a msgpack timestamp extension, which is not part of the protocol")
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())


def encode(msg) -> bytes:
    """One frame: length prefix and ``[kind, *fields]``."""
    body = _packb((msg.KIND, *msg))
    return _LEN.pack(len(body)) + body


def decode(body: bytes | bytearray | memoryview, validate: bool = True) -> Any:
    """The message in one frame body; ProtocolError if it is not one."""
    try:
        raw = _unpackb(body)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, ...)
        raise ProtocolError(f"not a msgpack frame: {type(exc).__name__}: {exc}") from None
    if type(raw) is not list or not raw or type(raw[0]) is not int:
        raise ProtocolError("a frame must be an array that starts with a message kind")
    cls = _BY_KIND.get(raw[0])
    if cls is None:
        raise ProtocolError(f"unknown message kind {raw[0]}")
    if not validate and len(raw) == len(cls._fields) + 1:  # the hot path: our own peer, same version
        return cls._make(raw[1:]) if cls not in _NESTED else _trusted(cls, raw[1:])
    return _build(cls, raw[1:], validate)


def _no_ext(code, data):
    raise ProtocolError(f"msgpack extension type {code} is not part of the protocol")


_packb = msgpack.Packer(use_bin_type=True).pack


def _unpackb(body):
    return msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True, ext_hook=_no_ext)


# -- handshake ------------------------------------------------------------------------------


@message(1)
class Hello(NamedTuple):
    """C→S, the first frame on every connection."""

    version: int
    pid: int
    role: str = "client"  # "owner" (the creator's channel), "client"


@message(2)
class Welcome(NamedTuple):
    """S→C, the answer to Hello."""

    version: int
    supervisor_pid: int
    name: str | None
    workers: int
    socket_path: str | None
    grace: float
    term_grace: float
    max_frame: int
    checkpoint_dir: str | None = None
    cgroup: str | None = None  # the pool's cgroup v2 directory, if the host allows one
    log_dir: str | None = None  # where executions' output is logged; None: not captured


@message(3)
class Refused(NamedTuple):
    """S→C, instead of Welcome; the connection closes after it."""

    message: str


@message(4)
class Start(NamedTuple):
    """Creator→S, the first frame on the creator's channel: the pool's configuration."""

    creator_pid: int
    workers: int
    capacity: int
    grace: float
    term_grace: float
    checkpoint_dir: str | None
    keep_checkpoints: int
    name: str | None
    sys_path: list
    max_frame: int
    history: int
    max_queued: int | None
    keep_tools: bool = False
    log_dir: str | None = None
    max_log_bytes: int = 1 << 20
    memory_limit: int | None = None
    veto: bool = False  # the owner has a before_interrupt hook: ask it (VetoAsk) before user and program stops
    initializer: str | None = None  # run once in each worker before its first execution (an agent spec)
    initializer_blob: bytes | None = None  # its cloudpickle bytes when it travels by value
    initargs: bytes | None = None  # pickled tuple of its arguments
    max_tasks_per_child: int | None = None  # a worker is replaced after running this many executions
    spare: bool = False  # keep one extra worker forked and ready, to take a stopped worker's place at once
    preload: list | None = None  # module names the supervisor imports before its first fork (warm workers)


# -- client → supervisor -------------------------------------------------------------------


@message(10)
class Task(NamedTuple):
    """One execution as submitted. ``agent`` is ``module:qualname`` or ``blob:<sha256 hex>``
    (a function shipped by value through :class:`DefineAgent`); ``input`` is pickled."""

    id: str
    agent: str
    input: bytes
    timeout: float | None = None
    grace: float | None = None
    term_grace: float | None = None
    resume: bool = False
    hook: str | None = None
    memory_limit: int | None = None
    budget: float | None = None  # cost units this execution (and its descendants) may spend
    stall_timeout: float | None = None  # seconds without progress before it is stopped as stalled
    group: str | None = None  # a group defined with DefineGroup: shares its budget, cancelled together
    priority: int = 0  # higher runs first
    preemptible: bool = False  # may be stopped (checkpointed) and requeued for higher-priority work
    call: int = 0  # how the worker calls the agent: 0 fn(ctx, input); 1 fn(*args, **kwargs), input = (args, kwargs)
    items: list[str] | None = None  # a chunk: these item ids, one per element of the pickled input list
    retries: int = 0  # run again (after ``backoff`` s, doubling) when it ends with a status in ``retry_on``
    retry_on: list[str] | None = None  # statuses that are retried: "crashed" (default), "failed", "interrupted"
    backoff: float = 1.0


@message(11)
class DefineAgent(NamedTuple):
    """C→S: a function by value (cloudpickle bytes) under its digest, sent once per connection
    before the first Task that names it. The supervisor stores it opaque, never unpickles it."""

    digest: str
    blob: bytes


@message(12)
class Submit(NamedTuple):
    """C→S: executions to queue. ``req`` 0: no reply (the owner's fast path: a clash ends the
    execution as failed); otherwise a Reply with ``value`` = the accepted ids."""

    req: int
    tasks: list[Task]


@message(13)
class Cancel(NamedTuple):
    req: int
    id: str
    mode: int
    reason: int
    source: int
    message: str | None = None


@message(14)
class CancelWorker(NamedTuple):
    req: int
    worker_id: int
    mode: int
    reason: int
    source: int
    message: str | None = None


@message(15)
class CancelAll(NamedTuple):
    """C→S: stop every live execution (``mine_only``: only this client's)."""

    req: int
    mode: int
    reason: int
    source: int
    message: str | None = None
    mine_only: bool = False


@message(16)
class Query(NamedTuple):
    """C→S: ``what`` is workers, executions, status or has (``arg``: an id)."""

    req: int
    what: str
    arg: str | None = None


@message(17)
class Wait(NamedTuple):
    """C→S: reply (Reply.value = [info, value bytes]) once execution ``id`` has ended."""

    req: int
    id: str


@message(18)
class Subscribe(NamedTuple):
    """C→S: send this client every Event from now on."""

    req: int


@message(19)
class Shutdown(NamedTuple):
    """C→S (owner only): take no new work; ``mode`` 0 lets live executions finish."""

    mode: int
    reason: int
    source: int


# -- supervisor → client -------------------------------------------------------------------


@message(30)
class Started(NamedTuple):
    id: str
    worker_id: int
    pid: int
    wall_ns: int


@message(31)
class Cancelling(NamedTuple):
    id: str


@message(32)
class Ended(NamedTuple):
    """S→C: the one end of an execution. ``info`` is the outcome record built by the
    supervisor's ``outcome_info`` and read by ``ExecutionResult.from_wire``."""

    id: str
    info: dict
    value: bytes | None


@message(33)
class Reply(NamedTuple):
    req: int
    ok: bool
    value: Any = None
    error: str | None = None


@message(35)
class Event(NamedTuple):
    kind: str
    id: str | None
    worker_id: int | None
    mono_ns: int
    data: dict | None = None


@message(36)
class Gone(NamedTuple):
    """S→C: a clean exit; nothing more will come."""


@message(23)
class CancelMany(NamedTuple):
    """C→S: stop these executions (ids of executions or of items of chunks) with one request; a
    chunk whose every live item is named stops as a whole. Reply: how many were live."""

    req: int
    ids: list[str]
    mode: int
    reason: int
    source: int
    message: str | None = None


@message(20)
class DefineGroup(NamedTuple):
    """C→S: create group ``name`` (or change its budget); Reply value: the group's row."""

    req: int
    name: str
    budget: float | None = None
    keep_budget: bool = False  # an existing group's budget stays as it is (the call only reads it)


@message(21)
class CancelGroup(NamedTuple):
    """C→S: stop every queued and running execution of group ``name``; Reply value: how many."""

    req: int
    name: str
    mode: int
    reason: int
    source: int
    message: str | None = None


@message(22)
class VetoAnswer(NamedTuple):
    """Owner→S: the answer of ``before_interrupt`` to a VetoAsk."""

    req: int
    allow: bool


@message(37)
class VetoAsk(NamedTuple):
    """S→owner: may this graceful or immediate request from a user or a program go ahead?"""

    req: int
    id: str
    mode: int
    reason: int
    source: int
    message: str | None


@message(38)
class Requeued(NamedTuple):
    """S→C: execution ``id`` was preempted for higher-priority work; it waits to resume."""

    id: str
    preemptions: int


# -- supervisor ⇄ worker ---------------------------------------------------------------------


@message(50)
class Run(NamedTuple):
    """S→W: run one execution in flag slot word ``control_index`` armed with ``armed``."""

    id: str
    control_index: int
    armed: int
    agent: str
    agent_blob: bytes | None
    input: bytes
    resume: bool
    hook: str | None
    hook_blob: bytes | None
    term_grace: float = 2.0  # bounds how long the worker lets a SIGTERM-interrupted agent unwind
    allowance: float | None = None  # spend at which the agent stops itself (its budget, or one above it)
    children_before: int = 0  # children it started in earlier runs (preempted ones): new ids go on from there
    call: int = 0  # Task.call
    items: list[str] | None = None  # a chunk's item ids (Task.items), from ``first`` on
    skip: list[int] | None = None  # indexes into ``items`` cancelled before the chunk was sent: not run
    first: int = 0  # index in the pickled input list of items[0] (a requeued tail starts further in)
    inputs: list[bytes] | None = None  # a chunk the supervisor merged from separate executions: their inputs


@message(51)
class Interrupt(NamedTuple):
    """S→W: the details of a stop (sent before the flag is written; also the doorbell)."""

    id: str
    armed: int
    mode: int
    reason: int
    source: int
    message: str | None
    requested_ns: int


@message(52)
class Exit(NamedTuple):
    pass


@message(60)
class WorkerReady(NamedTuple):
    pid: int


@message(61)
class Result(NamedTuple):
    id: str
    status: int
    value: bytes | None
    error: list | None  # [type, message, traceback]
    stage: int | None
    observed_ns: int
    checkpoint: list | None  # CheckpointInfo.to_wire()
    resumed_from: list | None
    own_interrupt: str | None = None  # the message of an Interrupted the agent raised itself
    shield_ns: int = 0  # how long a shield held the stop back
    items_done: int | None = None  # a chunk: how many of its items (from Run.items[0]) it took; the rest never began


@message(55)
class Warm(NamedTuple):
    """S→W: import these agents now (``[spec, blob or None]`` pairs), while idle: sent to the
    spare worker, so that the execution it takes over first does not wait for imports."""

    agents: list


@message(71)
class InitFailed(NamedTuple):
    """W→S: the pool's initializer raised in this worker (``error`` = [type, message, traceback]);
    the worker exits next."""

    error: list


@message(70)
class ItemsDone(NamedTuple):
    """W→S: the ends of items ``first``, ``first + 1``, ... of chunk ``id`` (indexes into its
    Run's ``items``). Each result is ``[status, value, error, stage, observed_ns, own_interrupt]``,
    or None for an item the Run said to skip. Sent every few milliseconds and before the
    chunk's Result, so a killed worker loses at most the last few."""

    id: str
    first: int
    results: list


@message(62)
class Observed(NamedTuple):
    id: str
    observed_ns: int


@message(65)
class Resumed(NamedTuple):
    """W→S: execution ``id`` restored this checkpoint (CheckpointInfo.to_wire()); sent at once,
    so its outcome says so even if its worker is killed before its Result."""

    id: str
    checkpoint: list


@message(63)
class CheckpointAnnounce(NamedTuple):
    """W→S: about to make this checkpoint file visible (sent before ``os.replace``)."""

    id: str
    seq: int
    path: str
    size: int
    time: float


@message(66)
class Spend(NamedTuple):
    """W→S: execution ``id`` has spent ``total`` cost units so far (``note``: what for)."""

    id: str
    total: float
    note: str | None = None
    at: int = 0  # time.monotonic_ns() of the spend: a budget stop's request time
    crossed: bool = False  # the total reached the allowance its Run gave: it waits for the verdict


@message(54)
class Allowance(NamedTuple):
    """S→W: the verdict on a crossed Spend that did not stop execution ``id``: its new allowance
    (None: no budget applies any more), e.g. after its group's budget was raised."""

    id: str
    allowance: float | None


@message(67)
class SubmitChild(NamedTuple):
    """W→S: execution ``parent`` starts a child execution (its Task; id chosen by the worker)."""

    parent: str
    task: Task


@message(68)
class Waiting(NamedTuple):
    """W→S: execution ``id`` blocks on its children (``on``) or goes on working (not ``on``):
    while it waits, its worker lends its place to a stand-in worker."""

    id: str
    on: bool


@message(69)
class CancelChild(NamedTuple):
    """W→S: execution ``parent`` stops its child ``id``."""

    parent: str
    id: str
    mode: int
    message: str | None = None


@message(53)
class ChildEnded(NamedTuple):
    """S→W: child ``id`` of execution ``parent`` ended (the same info and value as Ended)."""

    parent: str
    id: str
    info: dict
    value: bytes | None


# -- channel -------------------------------------------------------------------------------------


class Channel:
    """One end of a stream socket carrying frames.

    Blocking use (workers, client reader threads): :meth:`send`, :meth:`recv`,
    :meth:`poll`. Non-blocking use (the supervisor): :meth:`feed` returns the
    complete messages read so far, :meth:`queue` and :meth:`flush` write.
    ``validate`` checks every received field's type: on in the supervisor for its clients
    (hostile input), off where the peer is our own supervisor or worker (the hot path).
    """

    __slots__ = ("sock", "max_frame", "validate", "_buf", "_inbox", "_out", "_out_bytes", "_offset", "closed",
                 "write_broken")  # fmt: skip

    def __init__(self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME, validate: bool = True):
        self.sock = sock
        self.max_frame = max_frame
        self.validate = validate
        self._buf = bytearray()
        self._inbox: deque = deque()
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._offset = 0  # bytes of _out[0] already sent
        self.closed = False  # nothing more can be read or written (EOF read, or closed here)
        # A write found the peer's end gone (EPIPE): nothing more can be delivered, but what the
        # peer wrote before it went may still be waiting to be read (a worker's last Result).
        self.write_broken = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def _frames(self) -> list:
        """Cut every complete frame off the input buffer and decode it."""
        buf, out, pos = self._buf, [], 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > self.max_frame:
                raise ProtocolError(f"frame of {size} bytes is larger than the limit of {self.max_frame}")
            if n - pos - 4 < size:
                break
            with memoryview(buf) as view:  # no copy of the body; released before the buffer is resized
                out.append(decode(view[pos + 4 : pos + 4 + size], self.validate))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out

    # -- blocking use -----------------------------------------------------

    def send(self, msg) -> None:
        self.sock.sendall(encode(msg))

    def send_many(self, msgs) -> None:
        self.sock.sendall(b"".join(map(encode, msgs)))

    def recv(self):
        """The next message, blocking; None at EOF."""
        inbox = self._inbox
        while True:
            if inbox:
                return inbox.popleft()
            frames = self._frames()
            if frames:
                inbox.extend(frames)
                continue
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self._buf += data

    def poll(self) -> list:
        """Every message that has already arrived, without blocking."""
        try:
            while True:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                if not data:
                    break
                self._buf += data
        except (BlockingIOError, InterruptedError):
            pass
        out = list(self._inbox) + self._frames()
        self._inbox.clear()
        return out

    # -- non-blocking use (supervisor) ------------------------------------

    def feed(self) -> list | None:
        """Read what is available; the complete messages, or None at EOF.
        Raises ProtocolError for a malformed or oversized frame."""
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return []
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            return None
        self._buf += data
        return self._frames()

    def readable_now(self) -> bool:
        """True if more bytes (or EOF) can be read without blocking."""
        import select

        return bool(select.select([self.sock], [], [], 0)[0])

    def queue(self, msg) -> None:
        data = encode(msg)
        self._out.append(data)
        self._out_bytes += len(data)

    @property
    def pending(self) -> bool:
        return bool(self._out)

    @property
    def pending_bytes(self) -> int:
        return self._out_bytes

    def flush(self) -> bool:
        """Write as much queued output as the socket takes; True when all is out. Small
        frames are coalesced into one send; a large one is sent from an offset (never
        copied again per partial send)."""
        if self.closed or self.write_broken:
            return True
        out = self._out
        while out:
            if len(out) > 1 and self._out_bytes <= _COALESCE:
                first = memoryview(out.popleft())[self._offset :]
                data = b"".join([first, *out])
                out.clear()
                out.append(data)
                self._offset = 0
            head = out[0]
            try:
                n = self.sock.send(memoryview(head)[self._offset :])
            except (BlockingIOError, InterruptedError):
                return False
            except (BrokenPipeError, ConnectionError):
                out.clear()
                self._out_bytes = self._offset = 0
                self.write_broken = True
                return True
            self._out_bytes -= n
            self._offset += n
            if self._offset < len(head):
                return False
            out.popleft()
            self._offset = 0
        return True

    def close(self) -> None:
        self.closed = True
        self._out.clear()  # nothing can be delivered any more
        self._out_bytes = self._offset = 0
        self.sock.close()
