"""Where named pools live, and which names are taken.

Owns: the per-user socket directory and the files of one named pool in it:
``<name>.sock`` (the supervisor's control socket, mode 0600) and
``<name>.lock`` (holds the supervisor's pid; the supervisor keeps an
exclusive ``flock`` on it for its whole life, so a name is live exactly while
that lock is held, and a crashed supervisor frees its name by dying).

Where: ``$POOL_SOCKET_DIR``, else ``$XDG_RUNTIME_DIR/interrupt-pool``, else
``/tmp/interrupt-pool-<uid>``. The directory must be ours with mode 0700:
checked on every use, never silently fixed.

Imported by the supervisor and by clients; standard library only.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from pathlib import Path

__all__ = ("NameError_", "PoolAddress", "check_name", "claim", "ensure_dir", "list_pools", "socket_dir")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# sockaddr_un.sun_path holds 108 bytes, NUL included.
MAX_SOCKET_PATH = 107


class NameError_(Exception):  # noqa: N801 - not the builtin NameError
    """A pool name or socket-directory problem, phrased for the person who can fix it."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"pool name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")  # fmt: skip
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
            raise NameError_(f"cannot create the socket directory {d}: its parent does not exist; "
                             "set POOL_SOCKET_DIR to a directory you own") from None  # fmt: skip
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise NameError_(f"socket directory {d} is not a directory (a symlink or file?); remove it and retry")
    if st.st_uid != os.getuid():
        raise NameError_(f"socket directory {d} is owned by uid {st.st_uid}, not you (uid {os.getuid()}); "
                         "remove it or set POOL_SOCKET_DIR to a directory you own")  # fmt: skip
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise NameError_(f"socket directory {d} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 "
                         f"so other users cannot reach your pools: run chmod 700 {d}")  # fmt: skip
    return d


class PoolAddress:
    __slots__ = ("name", "pid", "path")

    def __init__(self, name: str, pid: int, path: Path):
        self.name, self.pid, self.path = name, pid, path

    def __repr__(self) -> str:
        return f"{self.name} (supervisor pid {self.pid})"


def _lock_holder(lock_path: Path) -> int | None:
    """The pid of the live supervisor holding ``lock_path``, or None if it is free (stale)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def claim(name: str) -> tuple[int, Path]:
    """Take ``name`` for this process: (the lock fd to keep open for life, the socket path
    to bind). Refuses a name a live pool holds, with its pid; removes a dead one's files."""
    check_name(name)
    d = ensure_dir(create=True)
    if d is None:  # removed by someone else between its creation and the check
        raise NameError_(f"the socket directory {socket_dir()} disappeared as it was created; retry")
    sock_path = d / f"{name}.sock"
    if len(os.fsencode(sock_path)) > MAX_SOCKET_PATH:
        raise NameError_(f"the socket path {sock_path} is {len(os.fsencode(sock_path))} bytes, more than the "
                         f"{MAX_SOCKET_PATH} a Unix socket allows; use a shorter name or a shorter "
                         "POOL_SOCKET_DIR")  # fmt: skip
    lock_path = d / f"{name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise NameError_(f"a pool named {name!r} is already running (supervisor pid {text or '?'}); "
                             f"pick another name, or attach to it with Pool.connect({name!r})") from None  # fmt: skip
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its previous holder removed the file as we locked it: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        sock_path.unlink()  # a dead supervisor's socket: its lock was free
    except FileNotFoundError:
        pass
    return fd, sock_path


def release(name: str, sock_path: Path, lock_fd: int) -> None:
    """Remove our socket and lock files (while we still hold the lock), then let go."""
    for p in (sock_path, sock_path.with_suffix(".lock")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    os.close(lock_fd)


def _remove_if_stale(lock_path: Path, sock_path: Path) -> None:
    """Remove a dead pool's files, holding its lock (so a pool claiming the name right now
    keeps them: it holds the lock, or it locked a newer file than the one we hold)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # it came alive
    try:
        if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
            for p in (sock_path, lock_path):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def list_pools() -> list[PoolAddress]:
    """Running named pools of this user; files of dead supervisors are removed."""
    d = ensure_dir(create=False)
    if d is None:
        return []
    found = []
    for p in sorted(d.glob("*.lock")):
        name = p.name[: -len(".lock")]
        pid = _lock_holder(p)
        sock = d / f"{name}.sock"
        if pid is None:
            _remove_if_stale(p, sock)
            continue
        if sock.exists():
            found.append(PoolAddress(name, pid, sock))
    return found


def find_pool(name: str | None) -> PoolAddress:
    """The pool called ``name``; the only running pool if ``name`` is None."""
    pools = list_pools()
    if not pools:
        raise NameError_(f"no pool is running (looked in {socket_dir()}); start one with 'pool run' or 'pool serve'")
    if name is None:
        if len(pools) > 1:
            raise NameError_(f"{len(pools)} pools are running ({', '.join(p.name for p in pools)}); "
                             "choose one with --name")  # fmt: skip
        return pools[0]
    for p in pools:
        if p.name == name:
            return p
    raise NameError_(f"no running pool named {name!r}; running: {', '.join(p.name for p in pools)}")
