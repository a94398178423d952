"""Agents for tests/test_preload.py. This module imports nothing it is asked about: each answer
says what was already imported when the agent ran (by the supervisor, before the fork)."""

import os
import sys


def where(ctx, modules):
    """(pid that imported preload_probe, this worker's pid, its parent's pid, which of modules were imported)."""
    seen = {m: m in sys.modules for m in modules}
    from tests import preload_probe

    return preload_probe.IMPORTED_IN, os.getpid(), os.getppid(), seen


def park(ctx, _):
    """Sleep, deaf to the flag, until killed."""
    import time

    time.sleep(60)
