"""Process-control helpers: prctl flags and race-tolerant killing of process trees.

Owns nothing; stateless functions used by the supervisor and the client.
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ("direct_children", "set_pdeathsig", "set_child_subreaper", "set_name", "kill_tree", "killpg",
           "start_ticks")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg}) failed: {os.strerror(err)}")


def set_name(name: str) -> None:
    """Name this process (as ps, top and psutil's name() show it); at most 15 bytes."""
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies."""
    _prctl(_PR_SET_PDEATHSIG, int(sig))


def set_child_subreaper() -> None:
    """Adopt orphaned descendants (e.g. a tool an agent started with setsid)
    so they can be found and killed instead of escaping to init."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def killpg(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        # The group emptied between our decision and the call (or the pid was
        # reused by a process of another user): nothing of ours is left in it.
        return False


def direct_children(pid: int) -> list[int]:
    """Pids of ``pid``'s children: one read of /proc/PID/task/TID/children per thread
    (psutil's children() scans every process on the machine instead)."""
    pids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.extend(int(x) for x in f.read().split())
    except FileNotFoundError:
        import psutil

        try:
            return [p.pid for p in psutil.Process(pid).children()]  # kernel without CONFIG_PROC_CHILDREN
        except psutil.Error:
            return []
    return pids


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    with the pid, a unique name for one process (a reused pid has another start time)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


def kill_tree(procs: list, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to every process in ``procs`` (psutil.Process objects) and their descendants."""
    import psutil
    seen = {}
    for p in procs:
        seen[p.pid] = p
        try:
            for c in p.children(recursive=True):
                seen[c.pid] = c
        except psutil.Error:
            pass  # exited while we listed it: its children were reparented to us
    for p in seen.values():
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass  # exited (or reaped) since we listed it: nothing to kill
