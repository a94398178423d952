"""An agent module that records, at import, which process imported it and how slowly.

Used to prove that only workers import agent modules (never the supervisor), and
that a module being imported by another thread when a pool starts still loads in
its workers. Its import starts a thread, as many SDKs do.
"""

from __future__ import annotations

import os
import threading
import time

_marker = os.environ.get("POOL_IMPORT_PROBE")
if _marker:
    with open(_marker, "a") as f:
        f.write(f"{os.getpid()}\n")
time.sleep(float(os.environ.get("POOL_IMPORT_PROBE_DELAY", "0")))
threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="sdk-background").start()


def agent(ctx, x):
    return {"pid": os.getpid(), "x": x}
