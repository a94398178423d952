"""Agents for tests/test_preload.py. This module imports nothing it is asked about: each answer
says what was already imported when the agent ran (by the supervisor, before the fork)."""

import os
import sys


def where(ctx, modules):
    """(pid that imported preload_probe, this worker's pid, its parent's pid, which of modules were imported)."""
    seen = {m: m in sys.modules for m in modules}
    from tests import preload_probe

    return preload_probe.IMPORTED_IN, os.getpid(), os.getppid(), seen


def park(ctx, marker):
    """Write ``marker`` (it runs), then sleep, deaf to the flag, until killed."""
    import time

    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
