"""The supervisor's clients: the creator's channel and the control socket.

Owns: the listening socket of a named pool and one :class:`Client` record per
connection (its channel, whether it is the creator, whether it receives
events). Every connection is checked with SO_PEERCRED: a process of another
user is refused even if the directory's permissions were loosened by hand.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from ..shared._protocol import Channel

__all__ = ("Client", "Listener", "log")

MAX_CLIENTS = 1024  # each costs one descriptor; more are refused with a reason
MAX_OUTPUT = 64 << 20  # bytes queued to a client that does not read before it is dropped


def log(text: str) -> None:
    """One line on the supervisor's stderr (the creator's stderr)."""
    try:
        sys.stderr.write(f"interrupt-pool supervisor (pid {os.getpid()}): {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # no stderr to write to: the line is lost, the supervisor goes on


class Client:
    """One connected client. ``owner``: the creator's channel (its end ends the pool)."""

    __slots__ = ("id", "chan", "owner", "subscribed", "pid", "greeted")

    def __init__(self, id: int, chan: Channel, owner: bool, pid: int | None) -> None:
        self.id, self.chan, self.owner, self.pid = id, chan, owner, pid
        self.subscribed = False
        self.greeted = owner  # the owner's handshake is the Start frame

    def __repr__(self) -> str:
        return f"client {self.id} (pid {self.pid})" if not self.owner else f"the owner (pid {self.pid})"


class Listener:
    """The control socket of a named pool: ``<dir>/<name>.sock``, mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # created 0600: no window in which it is wider
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        self.sock.listen(128)

    def accept(self) -> list[tuple[socket.socket, int, int]]:
        """Every pending connection with its peer's (pid, uid)."""
        out: list[tuple[socket.socket, int, int]] = []
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as exc:  # EMFILE and friends: try again on the next readiness
                log(f"accept failed: {exc}")
                return out
            pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            conn.setblocking(False)
            out.append((conn, pid, uid))

    def close(self) -> None:
        self.sock.close()
