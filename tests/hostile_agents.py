"""Agents that misbehave in the ordinary ways real agent code does: they start tools and
daemons, leave their process group, block or ignore signals, close descriptors, use
threads, read stdin. Module-level, so workers find them by name."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from interrupt_pool import Interrupted


def _write(path, text) -> None:
    Path(path).write_text(text)


def _double_forked_daemon() -> int:
    """A `sleep 1000` daemon the classic way (fork, setsid, fork, parent exits): an orphan."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the intermediate: forks the daemon and exits, so the daemon is an orphan
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.close(r)
            os.close(w)
            os.execvp("sleep", ["sleep", "1000"])
        os.write(w, str(daemon).encode())
        os._exit(0)
    os.close(w)
    daemon = int(os.read(r, 32))
    os.close(r)
    os.waitpid(pid, 0)
    return daemon


def leave_group_and_ignore_sigterm(ctx, marker):
    """Tries to move its worker into another process group, ignores SIGTERM, hangs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    other = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        os.setpgid(0, other.pid)
        moved = "moved"
    except OSError as exc:
        moved = f"refused: {exc.strerror}"
    _write(marker, f"{os.getpid()} {other.pid} {moved}")
    time.sleep(1000)


def tools_then_return(ctx, pidfile):
    """Starts a child, a setsid child and a double-forked daemon, then returns at once."""
    a = subprocess.Popen(["sleep", "1000"])
    b = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    daemon = _double_forked_daemon()
    _write(pidfile, f"{a.pid} {b.pid} {daemon}")
    return "done"


def daemon_then_wait(ctx, params):
    """Starts a double-forked daemon, records it, then runs (sleeping) until params['wait'] ends."""
    daemon = _double_forked_daemon()
    _write(params["pidfile"], str(daemon))
    ctx.sleep(params["wait"])
    return daemon


def many_setsid_tools(ctx, params):
    """Leaves params['n'] setsid tools behind, then hangs ignoring SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [subprocess.Popen(["sleep", "1000"], start_new_session=True).pid for _ in range(params["n"])]
    _write(params["pidfile"], " ".join(map(str, pids)))
    time.sleep(1000)


def block_sigterm(ctx, _):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return "blocked"


def ignore_sigchld(ctx, _):
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    return "ignored"


def false_exit_code(ctx, _):
    return subprocess.run(["false"]).returncode


def close_stdio(ctx, datafile):
    """Closes fds 0-2, then opens a data file (which takes the lowest free fd: 0)."""
    for fd in (0, 1, 2):
        os.close(fd)
    fd = os.open(datafile, os.O_WRONLY | os.O_CREAT, 0o600)
    return fd


def print_and_check_stdio(ctx, text):
    print(text, flush=True)
    print(text, file=sys.stderr, flush=True)
    return [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)]


def read_stdin(ctx, _):
    """A tool that reads stdin, and the agent's own sys.stdin: both get EOF at once."""
    out = subprocess.run(["cat"], capture_output=True, timeout=10)
    try:
        os.open("/dev/tty", os.O_RDONLY)
        tty = "has a terminal"
    except OSError as exc:
        tty = exc.strerror
    return {"cat": out.stdout.decode(), "readline": sys.stdin.readline(), "session_leader": os.getsid(0) == os.getpid(),
            "tty": tty}


def stoppable_with_finally(ctx, marker):
    """Never checks its flag; records that its finally ran."""
    try:
        _write(marker, "started")
        while True:
            time.sleep(0.01)
    finally:
        _write(marker, "finally ran")


def raise_own_interrupted(ctx, message):
    raise Interrupted(message)


def checkpoint_with_helper_thread(ctx, params):
    """A helper thread keeps the interpreter switching threads while the main thread writes
    checkpoints of about 1 MB as fast as it can."""
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            sum(range(1000))

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    blob = b"x" * params["size"]
    _write(params["marker"], "writing")
    i = 0
    while True:
        i += 1
        ctx.checkpoint({"i": i, "blob": blob})


def checkpoint_from_two_threads(ctx, n):
    """Two threads checkpoint n times each; returns the sequence numbers they got."""
    seqs: list[int] = []
    lock = threading.Lock()
    errors: list[str] = []

    def writer(tag):
        for i in range(n):
            try:
                info = ctx.checkpoint({"tag": tag, "i": i}, durable=False)
                with lock:
                    seqs.append(info.seq)
            except BaseException as exc:  # noqa: BLE001 - report everything to the test
                errors.append(repr(exc))

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seqs": seqs, "errors": errors}


def three_sleeping_threads(ctx, marker):
    """Three threads in ctx.sleep (a fan-out of tool calls); returns which saw the stop."""
    woke: list[str] = []

    def tool(name):
        try:
            ctx.sleep(60)
        except Interrupted:
            woke.append(name)

    threads = [threading.Thread(target=tool, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    _write(marker, "sleeping")
    for t in threads:
        t.join()
    ctx.check()
    return woke


def unwinding_blocks_on_a_thread(ctx, marker):
    """SIGTERM's Interrupted unwinds into a ThreadPoolExecutor's `with`, whose shutdown waits
    for a thread blocked for good: the worker must save ctx.state and report stage sigterm."""
    ctx.state = {"progress": 7}
    blocker = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(blocker.wait)
        _write(marker, "blocked")
        while True:
            time.sleep(0.01)


async def async_stopped_by_sigterm(ctx, marker):
    """Never checks its flag; awaits in a loop, with an executor call in flight."""
    loop = asyncio.get_running_loop()
    _write(marker, "running")
    while True:
        await loop.run_in_executor(None, time.sleep, 0.01)
        await asyncio.sleep(0.001)


def slow_import_agent(ctx, marker):
    from tests import import_probe  # its import sleeps for POOL_IMPORT_PROBE_DELAY

    return import_probe.agent(ctx, marker)


def hog_memory(ctx, mib):
    """Allocates mib MiB (touched, so it is resident), a little at a time."""
    chunks = []
    for _ in range(mib):
        chunks.append(bytearray(1 << 20))
        time.sleep(0.002)
    time.sleep(10)
    return len(chunks)


def leave_a_sleeping_thread(ctx, _):
    """Returns at once, leaving a daemon thread that keeps calling ctx.sleep."""

    def loop():
        try:
            while True:
                ctx.sleep(0.001)
        except BaseException:  # noqa: BLE001 - the thread just ends
            pass

    threading.Thread(target=loop, daemon=True).start()
    return "left"


def slow_hook_agent(ctx, marker):
    ctx.state = {"from": "state"}
    _write(marker, "running")
    while True:
        time.sleep(0.01)


def _slow_hook(ctx, state):
    time.sleep(1.5)  # longer than the unwinding bound: a hook has until SIGKILL
    ctx.checkpoint({"from": "hook"})


slow_hook_agent.on_interrupt = _slow_hook


def says_its_name(ctx, i):
    print(f"I am {i}")
    return i
