"""Helpers the tests share: race-tolerant process checks (a process may exit while a test looks
at it) and a bounded wait for a condition."""

from __future__ import annotations

import time

import psutil


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not); a process that exits while we look is gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive (not zombies) after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        time.sleep(0.02)
    return left


def wait_until(pred, timeout: float = 10.0, what: str = "condition"):
    """Poll ``pred()`` until it returns something truthy (returned); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"{what} not reached within {timeout} s")
