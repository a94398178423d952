"""Start one pool and run one trivial task: the pools the startup section compares.

Each starter imports what it needs *before* its clock starts (imports are not
construction), constructs the pool, waits for the first trivial task's result,
and returns ``(seconds, close)``; ``close()`` shuts the pool down, off the clock.

``python -m benchmarks._starters NAME`` runs one starter in a fresh process and
prints its milliseconds: the cold start (first pool of a process). Only
``time`` and ``sys`` are imported at module level, because spawn and
forkserver children re-import the main module.
"""

import sys
import time


def ours():
    from interrupt_pool import Pool

    from . import peer_agents as pa

    t0 = time.perf_counter()
    p = Pool(workers=2, checkpoint_dir=None)
    p.submit(pa.triv_agent, 0).result()
    return time.perf_counter() - t0, p.shutdown


def _ppe(method: str):
    def run():
        import concurrent.futures as cf
        import multiprocessing as mp

        from . import peer_agents as pa

        ctx = mp.get_context(method)
        t0 = time.perf_counter()
        ex = cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx)
        ex.submit(pa.triv, 0).result()
        return time.perf_counter() - t0, ex.shutdown

    return run


def mp_pool():
    import multiprocessing as mp

    from . import peer_agents as pa

    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    p = ctx.Pool(2)
    p.apply(pa.triv, (0,))
    dt = time.perf_counter() - t0

    def close():
        p.close()
        p.join()

    return dt, close


def pebble_pool():
    import pebble

    from . import peer_agents as pa

    t0 = time.perf_counter()
    p = pebble.ProcessPool(max_workers=2)
    p.schedule(pa.triv, (0,)).result()
    dt = time.perf_counter() - t0

    def close():
        p.close()
        p.join()

    return dt, close


def loky_pool():
    import loky

    from . import peer_agents as pa

    # A fresh executor each time: get_reusable_executor() would hand back the last one.
    t0 = time.perf_counter()
    ex = loky.ProcessPoolExecutor(max_workers=2)
    ex.submit(pa.triv, 0).result()
    return time.perf_counter() - t0, ex.shutdown


def billiard_pool():
    import billiard

    from . import peer_agents as pa

    t0 = time.perf_counter()
    p = billiard.Pool(2)
    p.apply(pa.triv, (0,))
    dt = time.perf_counter() - t0

    def close():
        p.close()
        p.join()

    return dt, close


OURS = "interrupt_pool.Pool(workers=2)"
PPE_FORKSERVER = "ProcessPoolExecutor(2), forkserver"
PPE_SPAWN = "ProcessPoolExecutor(2), spawn"

# label -> (starter, the optional peer it needs or None)
STARTERS = {
    OURS: (ours, None),
    "ProcessPoolExecutor(2), fork": (_ppe("fork"), None),
    PPE_FORKSERVER: (_ppe("forkserver"), None),
    PPE_SPAWN: (_ppe("spawn"), None),
    "multiprocessing.Pool(2), fork": (mp_pool, None),
    "pebble.ProcessPool(max_workers=2)": (pebble_pool, "pebble"),
    "loky.ProcessPoolExecutor(max_workers=2)": (loky_pool, "loky"),
    "billiard.Pool(2)": (billiard_pool, "billiard"),
}


if __name__ == "__main__":
    dt, close = STARTERS[sys.argv[1]][0]()
    close()
    print(f"{dt * 1e3:.4f}")
