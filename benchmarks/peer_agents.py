"""Module-level task functions for the peer pools and for ours (found by name in workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def triv(x):
    return x


def triv_agent(ctx, x):
    return x


def stuck(pidfile):
    """A stuck tool call: starts a grandchild process, then blocks in C (time.sleep)."""
    child = subprocess.Popen(["sleep", "1000"])
    Path(pidfile).write_text(f"{child.pid} {os.getpid()}")
    time.sleep(1000)


def stuck_agent(ctx, pidfile):
    stuck(pidfile)


def check_loop(ctx, marker):
    Path(marker).write_text("x")
    while True:
        ctx.check()


def never_checks(ctx, marker):
    Path(marker).write_text("x")
    while True:
        pass


def ignores_sigterm(ctx, marker):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(marker).write_text("x")
    time.sleep(1000)


def sleeps(ctx, seconds):
    ctx.sleep(seconds)
