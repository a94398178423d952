"""msgpack framing for every channel: user ⇄ supervisor and supervisor ⇄ worker.

Owns: the message kinds and the :class:`Channel` that frames them. A frame is
one msgpack array whose first element is the kind; frames are concatenated on
a stream socket and split again by ``msgpack.Unpacker``, so no length prefix
is needed. Payloads the agent owns (inputs, results) travel as pickled bytes
inside a frame.
"""

from __future__ import annotations

import socket
from collections import deque

import msgpack

__all__ = ("Channel", "Msg", "packb")


class Msg:
    """Message kinds (first element of every frame)."""

    # user → supervisor
    SUBMIT = 1  # [SUBMIT, [[id, module, qualname, input, timeout, grace, term_grace], ...]]
    CANCEL = 2  # [CANCEL, req, id, mode, reason, source, message]
    CANCEL_WORKER = 3  # [CANCEL_WORKER, req, worker_id, mode, reason, source, message]
    QUERY = 4  # [QUERY, req, what]
    SHUTDOWN = 5  # [SHUTDOWN, cancel_mode_code or 0, reason, source]
    CANCEL_ALL = 6  # [CANCEL_ALL, mode, reason, source, message]
    # supervisor → user
    STARTED = 10  # [STARTED, id, worker_id, pid, started_wall_ns]
    ENDED = 11  # [ENDED, id, result dict, value bytes | None]
    REPLY = 12  # [REPLY, req, payload]
    WORKER = 13  # [WORKER, worker_id, pid, create_time]
    CANCELLING = 14  # [CANCELLING, id]
    GONE = 15  # [GONE]: clean exit, nothing more will come
    EVENT = 16  # [EVENT, kind, id, worker_id, mono_ns, data]
    # supervisor → worker
    TASK = 20  # [TASK, id, control_index, armed, module, qualname, input, resume, on_interrupt [module, qualname] | None]
    INTERRUPT = 21  # [INTERRUPT, id, armed, mode, reason, source, message, requested_ns]
    EXIT = 22  # [EXIT]
    # worker → supervisor
    READY = 30  # [READY, pid]
    RESULT = 31  # [RESULT, id, status, value, error, stage, observed_ns, checkpoint | None, resumed_from | None]
    OBSERVED = 32  # [OBSERVED, id, observed_ns]: first sight of a stop request
    CKPT = 33  # [CKPT, id, seq, path, size, time]: about to commit this checkpoint file


packb = msgpack.Packer(use_bin_type=True).pack


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, use_list=True, max_buffer_size=1 << 31)


class Channel:
    """One end of a stream socket carrying msgpack frames.

    Blocking mode (workers, the user-side reader thread) uses :meth:`recv`;
    the supervisor uses non-blocking mode with :meth:`feed_from_socket`,
    :meth:`queue` and :meth:`flush`.
    """

    __slots__ = ("sock", "_unpacker", "_out", "closed")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._unpacker = _unpacker()
        self._out: deque[bytes] = deque()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- blocking use ----------------------------------------------------

    def send(self, msg: list) -> None:
        self.sock.sendall(packb(msg))

    def recv(self):
        """Next frame, blocking; None at EOF."""
        up = self._unpacker
        while True:
            for msg in up:
                return msg
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            up.feed(data)

    def poll(self) -> list:
        """Every frame that has already arrived, without blocking."""
        try:
            while True:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                if not data:
                    break
                self._unpacker.feed(data)
        except (BlockingIOError, InterruptedError):
            pass
        return list(self._unpacker)

    # -- non-blocking use (supervisor) -----------------------------------

    def feed_from_socket(self) -> list | None:
        """Read what is available; return the complete frames, or None at EOF."""
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return []
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            return None
        self._unpacker.feed(data)
        return list(self._unpacker)

    def queue(self, msg: list) -> None:
        self._out.append(packb(msg))

    @property
    def pending(self) -> bool:
        return bool(self._out)

    def flush(self) -> bool:
        """Write as much queued output as the socket takes; True when all is out."""
        if self.closed:
            return True
        out = self._out
        while out:
            if len(out) > 1:
                data = b"".join(out)
                out.clear()
                out.append(data)
            try:
                n = self.sock.send(out[0])
            except (BlockingIOError, InterruptedError):
                return False
            except (BrokenPipeError, ConnectionError):
                out.clear()
                self.closed = True
                return True
            if n < len(out[0]):
                out[0] = out[0][n:]
                return False
            out.popleft()
        return True

    def close(self) -> None:
        self.closed = True
        self._out.clear()  # nothing can be delivered any more
        self.sock.close()
