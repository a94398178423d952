"""Test-wide guards: every test must leave no process and no shared-memory segment behind.

Every process a test starts inherits ``POOL_TEST_MARK`` from this one, so the
leak check finds not only our children and zombies but also tools that
escaped into another session and were re-parented to init.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest

MARK = "POOL_TEST_MARK"
os.environ.setdefault(MARK, uuid.uuid4().hex)

# Generous: a pool that was just killed has up to grace+term_grace (short in tests)
# plus reaping to finish its clean-up; on a loaded 2-core CI machine that can take a moment.
LEAK_WAIT_S = 5.0


def _marked_processes() -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(MARK) == os.environ[MARK]:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone, or not ours to read
    return found


# Names a segment of ours could have: our prefixes, and multiprocessing's SharedMemory.
_SHM_PREFIXES = ("pool", "ipool", "interrupt", "psm_")


def _shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.lower().startswith(_SHM_PREFIXES)}


def _fds() -> dict[int, str]:
    """This process's open descriptors (what they point at), sockets, pipes and anon inodes only."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed again
        if target.startswith(("socket:", "pipe:", "anon_inode:")):
            out[int(fd)] = target
    return out


def snapshot() -> tuple[set[int], set[str], dict[int, str]]:
    procs = {p.pid for p in _marked_processes()} | {p.pid for p in psutil.Process().children(recursive=True)}
    return procs, _shm(), _fds()


def find_leaks(baseline: tuple[set[int], set[str]], wait: float = LEAK_WAIT_S) -> list[str]:
    """Processes (children, zombies, escaped descendants) and /dev/shm entries that
    appeared since ``baseline`` and are still there after up to ``wait`` seconds."""
    procs_before, shm_before = baseline[0], baseline[1]

    def new_procs():
        seen = {}
        for p in psutil.Process().children(recursive=True) + _marked_processes():
            if p.pid not in procs_before:
                seen[p.pid] = p
        return list(seen.values())

    procs = new_procs()
    if procs:
        # wait_procs also reaps direct children that became zombies while we wait
        psutil.wait_procs(procs, timeout=wait)
        procs = new_procs()
    leaks = []
    for p in procs:
        try:
            leaks.append(f"process {p.pid} ({p.name()}, {p.status()}) cmdline={p.cmdline()[:4]}")
        except psutil.Error:
            continue  # exited just now: not a leak
    leaks += [f"/dev/shm/{name}" for name in sorted(_shm() - shm_before)]
    if len(baseline) > 2:
        deadline = time.monotonic() + wait
        extra = {}
        while True:  # a pool's reader thread closes its socket as it ends: give it the same time
            extra = {fd: t for fd, t in _fds().items() if baseline[2].get(fd) != t}
            if not extra or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        leaks += [f"descriptor {fd} -> {t}" for fd, t in sorted(extra.items())]
    return leaks


def kill_leaks(baseline) -> None:
    for p in psutil.Process().children(recursive=True) + _marked_processes():
        if p.pid not in baseline[0]:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass  # already gone
    psutil.wait_procs([p for p in psutil.Process().children()], timeout=2)


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail any test that leaves a child process, zombie, descriptor (socket, pipe, pidfd)
    or shared-memory segment of ours."""
    baseline = snapshot()
    yield
    leaks = find_leaks(baseline)
    if leaks:
        kill_leaks(baseline)  # so one leak does not fail every later test too
        pytest.fail(f"{request.node.nodeid} leaked:\n  " + "\n  ".join(leaks), pytrace=False)
