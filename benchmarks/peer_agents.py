"""Module-level task functions for the peer pools and for ours (found by name in workers).

Importing it costs next to nothing (``os`` and ``time`` only; the rest is
imported by the functions that need it): spawn, forkserver and loky workers and
ours import it before their first task, and the startup and memory sections
measure that task.
"""

from __future__ import annotations

import os
import time


def triv(x):
    return x


def triv_agent(ctx, x):
    return x


def pid_agent(ctx, x):
    """Which worker ran it: its pid."""
    return os.getpid()


def stuck(pidfile):
    """A stuck tool call: starts a grandchild process, then blocks in C (time.sleep)."""
    import subprocess

    child = subprocess.Popen(["sleep", "1000"])
    with open(pidfile, "w") as f:
        f.write(f"{child.pid} {os.getpid()}")
    time.sleep(1000)


def stuck_agent(ctx, pidfile):
    stuck(pidfile)


def _mark(path):
    with open(path, "w") as f:
        f.write("x")


def check_loop(ctx, marker):
    _mark(marker)
    while True:
        ctx.check()


def never_checks(ctx, marker):
    _mark(marker)
    while True:
        pass


def ignores_sigterm(ctx, marker):
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _mark(marker)
    time.sleep(1000)


def sleeps(ctx, seconds):
    ctx.sleep(seconds)
