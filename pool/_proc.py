"""Process-control helpers: prctl flags, process trees through /proc, cgroup v2 groups,
and race-tolerant killing.

Owns nothing; stateless functions used by the supervisor, the workers and the client.
Every walk of a process tree reads /proc/PID/task/TID/children of that tree only, so
its cost depends on the size of the tree, never on how many processes the machine has.
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ("direct_children", "descendants", "kill_descendants", "set_pdeathsig", "set_child_subreaper", "set_name",
           "kill_pids", "killpg", "pids_with_env", "rss_bytes", "start_ticks", "cgroup_create", "cgroup_kill",
    "cgroup_populated", "cgroup_remove", "cgroup_join")

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
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []  # it has exited
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if os.path.exists(f"/proc/{pid}/task/{pid}/children") or not os.path.exists(f"/proc/{pid}"):
                continue  # that thread exited while we listed them (its children are its process's anyway)
            import psutil  # a kernel without CONFIG_PROC_CHILDREN: the slow scan of every process

            try:
                return [p.pid for p in psutil.Process(pid).children()]
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


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children first), read from /proc: O(size of the tree)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in direct_children(stack.pop()):
            out.append(child)
            stack.append(child)
    return out


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pids_with_env(entry: str) -> list[int]:
    """Live processes of this user (other than this one) whose environment has ``entry``
    (``NAME=value``). Scans all of /proc: for rare, last-resort paths only."""
    needle = entry.encode()
    me, uid = os.getpid(), os.getuid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not readable: not one of ours
        if needle in env:
            found.append(int(name))
    return found


def kill_pids(pids, sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # exited since we listed it (or the pid went to another user's process): nothing of ours


def kill_descendants(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal every descendant of ``pid``; the pids signalled."""
    found = descendants(pid)
    kill_pids(found, sig)
    return found


# -- cgroup v2 ------------------------------------------------------------------------------------


def _cgroup2_root() -> str | None:
    """Where this process's own cgroup v2 directory is mounted, or None (no cgroup v2 here)."""
    try:
        with open("/proc/self/cgroup") as f:
            own = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
        with open("/proc/self/mountinfo") as f:
            mount = next((line.split()[4] for line in f if " - cgroup2 " in line), None)
    except OSError:
        return None
    if own is None or mount is None:
        return None
    return os.path.join(mount, own.lstrip("/"))


def cgroup_create(name: str) -> str | None:
    """A new cgroup v2 directory ``name`` under our own cgroup, or None where the host
    does not allow one (no cgroup v2, no write permission, no cgroup.kill)."""
    root = _cgroup2_root()
    if root is None:
        return None
    path = os.path.join(root, name)
    try:
        os.mkdir(path)
    except OSError:
        return None
    if not os.path.exists(os.path.join(path, "cgroup.kill")):  # kernels before 5.14: not worth it
        cgroup_remove(path)
        return None
    return path


def cgroup_join(path: str) -> bool:
    """Move the calling process into cgroup ``path`` (its future children follow)."""
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write("0")
        return True
    except OSError:
        return False


def cgroup_kill(path: str) -> None:
    """SIGKILL every process in cgroup ``path`` and the cgroups below it, at once."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass  # removed already, or never created: nothing to kill


def cgroup_populated(path: str) -> bool:
    """True while a live process is in cgroup ``path`` or below it (a cheap read; writing
    ``cgroup.kill`` waits for the kernel's cgroup lock, about an RCU grace period)."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            return "populated 1" in f.read()
    except OSError:
        return False  # removed: nothing is in it


def cgroup_remove(path: str) -> bool:
    """Remove cgroup ``path`` and the empty cgroups below it; False while processes remain."""
    try:
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                cgroup_remove(entry.path)
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False  # EBUSY: killed processes not reaped yet
