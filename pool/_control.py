"""The control socket: other processes (``pool status``, ``pool cancel``, ...) see and steer a named pool.

Owns: the per-user socket directory, the listening socket of one named
pool, and the client side (discovery and requests).

Where: ``$POOL_SOCKET_DIR``, else ``$XDG_RUNTIME_DIR/interrupt-pool``, else
``/tmp/interrupt-pool-<uid>``. One socket per pool: ``<name>.<pid>.sock``.

Security: the directory must be ours with mode 0700 (checked on every use,
never silently fixed), the socket is created 0600, and the peer of every
connection is checked with SO_PEERCRED: a process of another user is
refused even if the permissions were loosened by hand.

The server runs in the user process that owns the :class:`~pool.Pool` (an
accept thread, one short-lived thread per request) and answers through the
public API, so every answer is what that pool's own user would see.
Protocol: one msgpack request and one msgpack reply per connection.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared._wire import Channel

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ("ControlError", "ControlServer", "PoolAddress", "check_name", "find_pool", "list_pools", "request",
           "socket_dir", "result_line")  # fmt: skip

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SOCK = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)\.sock$")


class ControlError(Exception):
    """A control-socket problem, phrased for the person at the terminal."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"pool name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def socket_dir() -> Path:
    if os.environ.get("POOL_SOCKET_DIR"):
        return Path(os.environ["POOL_SOCKET_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "interrupt-pool"
    return Path(f"/tmp/interrupt-pool-{os.getuid()}")


def ensure_dir(create: bool) -> Path | None:
    """The socket directory, verified: ours, a real directory, mode 0700."""
    d = socket_dir()
    if create:
        try:
            d.mkdir(mode=0o700, parents=False)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise ControlError(f"cannot create the socket directory {d}: its parent does not exist; "
                               "set POOL_SOCKET_DIR to a directory you own") from None  # fmt: skip
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"socket directory {d} is not a directory (a symlink or file?); remove it and retry")
    if st.st_uid != os.getuid():
        raise ControlError(f"socket directory {d} is owned by uid {st.st_uid}, not you (uid {os.getuid()}); "
                           "remove it or set POOL_SOCKET_DIR to a directory you own")  # fmt: skip
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ControlError(f"socket directory {d} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 "
                           f"so other users cannot reach your pools: run chmod 700 {d}")  # fmt: skip
    return d


def result_line(out) -> dict:
    """An ExecutionResult as one JSON-ready dict (a value JSON cannot carry becomes its repr)."""
    import json

    d = out.model_dump(mode="json", exclude={"value"})
    try:
        json.dumps(out.value)
        d["value"] = out.value
    except (TypeError, ValueError):
        d["value"] = repr(out.value)
    return d


# -- server ----------------------------------------------------------------------


class ControlServer:
    """Listens for one named pool; closed by the pool when it shuts down."""

    def __init__(self, pool: "Pool", name: str):
        self.pool = pool
        self.name = check_name(name)
        d = ensure_dir(create=True)
        self.path = d / f"{name}.{os.getpid()}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.unlink()  # a stale socket of a dead process that had our pid
        except FileNotFoundError:
            pass
        old = os.umask(0o177)  # created 0600: no window in which it is wider
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        self.sock.listen(64)
        self._closed = False
        self._handlers: set[threading.Thread] = set()  # requests in flight; close() lets them answer
        self._thread = threading.Thread(target=self._accept_loop, name=f"pool-control-{name}", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, then give requests in flight (a 'wait' whose execution has
        just ended) up to ``timeout`` seconds to send their answers."""
        if self._closed:
            return
        self._closed = True
        self.sock.setblocking(False)
        while True:  # answer connections already queued in the backlog rather than reset them
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            conn.setblocking(True)
            self._admit(conn)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        for t in list(self._handlers):
            if t is not threading.current_thread():
                t.join(timeout)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self._admit(conn)

    def _admit(self, conn: socket.socket) -> None:
        """Check the peer's uid, then answer its request on a thread of its own."""
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            try:
                Channel(conn).send({"error": f"refused: process {pid} of uid {uid} may not control a pool of "
                                             f"uid {os.getuid()}"})  # fmt: skip
            except OSError:
                pass  # it hung up first
            conn.close()
            return
        t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
        self._handlers.add(t)
        t.start()

    def _handle(self, conn: socket.socket) -> None:
        chan = Channel(conn)
        try:
            req = chan.recv()
            try:
                reply = self._dispatch(req) if isinstance(req, dict) else {"error": "malformed request"}
            except (ValueError, TypeError, KeyError, TimeoutError) as exc:
                reply = {"error": str(exc).strip("'\"")}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            chan.send(reply)
        except OSError:
            pass  # the client went away
        finally:
            conn.close()
            self._handlers.discard(threading.current_thread())

    def _dispatch(self, req: dict) -> dict:
        pool, op = self.pool, req.get("op")
        if op == "status":
            return {"ok": True, "status": status(pool, self.name)}
        if op == "has":
            return {"ok": True, "has": req["id"] in pool._execs}
        if op == "cancel":
            ex = pool._execs.get(req["id"])
            if ex is None:
                raise KeyError(f"pool {self.name} has no execution {req['id']!r}")
            return {"ok": True, "live": pool.cancel(req["id"], req.get("mode", "graceful"), req.get("reason", "user_cancelled"),
                                                     req.get("message"), source="user")}  # fmt: skip
        if op == "cancel_worker":
            ids = {w.id for w in pool.workers()}
            if req["worker"] not in ids:
                raise KeyError(f"pool {self.name} has no worker {req['worker']}; its workers are {sorted(ids)}")
            return {"ok": True, "live": pool.cancel_worker(req["worker"], req.get("mode", "graceful"),
                                                            req.get("reason", "user_cancelled"), req.get("message"),
                                                            source="user")}  # fmt: skip
        if op == "submit":
            ex = pool.submit(req["agent"], req.get("input"), id=req.get("id"), timeout=req.get("timeout"))
            return {"ok": True, "id": ex.id}
        if op == "wait":
            ex = pool._execs.get(req["id"])
            if ex is None:
                raise KeyError(f"pool {self.name} has no execution {req['id']!r}")
            return {"ok": True, "result": result_line(ex.outcome(req.get("timeout")))}
        raise ValueError(f"unknown request {op!r}")


def status(pool: "Pool", name: str) -> dict:
    """What ``pool status`` shows: the pool, its workers and its executions."""
    import time

    live = {}
    workers = []
    if not pool._broken and not pool._reader_done:
        try:
            workers = [w.model_dump() for w in pool.workers()]
            rows = pool._live_rows()
            live = {r[0]: {"elapsed": r[3], "stage": r[4]} for r in rows}
        except Exception:
            pass  # shutting down between the check and the call: report what the client knows
    executions = []
    now = time.time()
    for ex in list(pool._execs.values()):
        row = {"id": ex.id, "status": ex._status.value, "worker": ex._worker_id, "elapsed": None, "stage": None}
        if ex.id in live:
            row.update(live[ex.id])
        elif ex.done():
            out = ex.outcome()
            if out.started_at and out.ended_at:
                row["elapsed"] = (out.ended_at - out.started_at).total_seconds()
            row["stage"] = out.interrupt.stage.value if out.interrupt and out.interrupt.stage else None
        executions.append(row)
    counts: dict[str, int] = {}
    for row in executions:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {
        "name": name,
        "pid": os.getpid(),
        "supervisor_pid": pool.supervisor_pid,
        "escalation": pool.escalation.model_dump(),
        "workers": workers,
        "executions": executions,
        "counts": counts,
        "at": now,
    }


# -- client ----------------------------------------------------------------------


class PoolAddress:
    __slots__ = ("name", "pid", "path")

    def __init__(self, name: str, pid: int, path: Path):
        self.name, self.pid, self.path = name, pid, path

    def __repr__(self) -> str:
        return f"{self.name}@{self.pid}"


def list_pools() -> list[PoolAddress]:
    """Running named pools of this user; sockets of dead processes are removed."""
    d = ensure_dir(create=False)
    if d is None:
        return []
    found = []
    for p in sorted(d.iterdir()):
        m = _SOCK.match(p.name)
        if not m:
            continue
        pid = int(m["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                p.unlink()  # its process is gone: the socket is stale
            except FileNotFoundError:
                pass
            continue
        except PermissionError:
            continue  # not ours (cannot happen in a 0700 directory we own)
        found.append(PoolAddress(m["name"], pid, p))
    return found


def _running_pools() -> list[PoolAddress]:
    pools = list_pools()
    if not pools:
        raise ControlError(f"no pool is running (looked in {socket_dir()}); start one with 'pool run' or 'pool serve'")
    return pools


def find_pool(name: str | None) -> PoolAddress:
    """The one pool ``name`` (or ``name@pid``) designates; the only pool if ``name`` is None."""
    pools = _running_pools()
    if name is None:
        if len(pools) > 1:
            raise ControlError(f"{len(pools)} pools are running ({', '.join(map(repr, pools))}); choose one with --name")
        return pools[0]
    want, _, pid = name.partition("@")
    matches = [p for p in pools if p.name == want and (not pid or str(p.pid) == pid)]
    return _the_one(matches, none=f"no running pool named {name!r}; running: {', '.join(map(repr, pools))}",
                    many=lambda n, ps: f"pool name {name!r} is ambiguous: {n} pools have it ({ps}); pass --name NAME@PID")


def _the_one(found: list[PoolAddress], *, none: str, many) -> PoolAddress:
    """The single pool in ``found``, or a ControlError: ``none``, or ``many(n, pools)``."""
    if not found:
        raise ControlError(none)
    if len(found) > 1:
        raise ControlError(many(len(found), ", ".join(map(repr, found))))
    return found[0]


def request(addr: PoolAddress, req: dict, timeout: float | None = 10.0, on_connected=None) -> Any:
    """Send one request and return the reply; ``on_connected()`` runs once the pool has the connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(addr.path))
        if on_connected is not None:
            on_connected()
        chan = Channel(sock)
        try:
            chan.send(req)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before reading our request: its answer is still there to read
        reply = chan.recv()
    except (ConnectionRefusedError, FileNotFoundError):
        raise ControlError(f"pool {addr!r} is not answering (it may just have exited)") from None
    except socket.timeout:
        raise ControlError(f"pool {addr!r} did not answer within {timeout} s") from None
    finally:
        sock.close()
    if reply is None:
        raise ControlError(f"pool {addr!r} closed the connection without answering")
    if "error" in reply:
        raise ControlError(reply["error"])
    return reply


def find_execution(exec_id: str, name: str | None) -> PoolAddress:
    """The pool that has execution ``exec_id`` (among those matching ``name``)."""
    if name is not None:
        return find_pool(name)
    having = []
    for p in _running_pools():
        try:
            if request(p, {"op": "has", "id": exec_id})["has"]:
                having.append(p)
        except ControlError:
            continue  # exited while we asked
    return _the_one(having, none=f"no running pool has an execution {exec_id!r}; 'pool status' lists them",
                    many=lambda n, ps: f"execution id {exec_id!r} exists in {n} pools ({ps}); choose one with --name")
