"""Ecosystem: interrupt-pool's batch calls against the standard library's and the peers' own,
measured side by side in the same run, 2 workers each, trivial tasks.

(a) ``map`` with a chunk size: µs per item over N items, for ``Pool.map(chunksize=C)``,
    ``Pool.map`` without one, ``interrupt_pool.Executor.map(chunksize=C)``, and
    ProcessPoolExecutor, multiprocessing.Pool, pebble, loky and billiard maps. C = 64: large
    enough that the per-message cost is spread thin (at 64 every pool here is within a small
    factor of its floor), small enough that 2 workers still get many chunks each from a few
    thousand items.
(b) ``Executor.submit`` throughput: N ``submit(fn, x)`` calls, then every result; ours
    (``interrupt_pool.Executor``) against ProcessPoolExecutor, loky and pebble's ``schedule``.
(c) A sanity check, not a timing: cancelling one item of a queued chunk ends that item alone
    (interrupted at stage queued); the rest of its chunk still returns its values.

Every pool is started once and warmed up (a few hundred items: every worker started, the
task's module imported); then each repeat measures every row once, in the same order, so a
load drift on the machine hits every pool alike; the figure is the median over the repeats.
The pools are shut down at the end, off the clock (billiard's takes up to a second: its
supervisor thread sleeps 0.8 s between rounds).

While ``Pool.map(chunksize=...)`` or ``interrupt_pool.Executor`` is missing from the
checkout (they were being written when this section was), our rows say so instead of
failing the section; so does a row whose call raised.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import inspect
import multiprocessing as mp
import statistics
import threading
import time

from . import peer_agents as pa
from ._optional import peer, skipped_note
from ._stats import summary, table

C = 64  # the chunk size of the chunked rows
WARMUP = 256  # items run before the clock: every worker started and has imported the task's module

OURS_MAP = f"interrupt-pool Pool.map(chunksize={C})"
OURS_MAP_1 = "interrupt-pool Pool.map (no chunksize)"
OURS_EXEC_MAP = f"interrupt_pool.Executor.map(chunksize={C})"
OURS_SUBMIT = "interrupt_pool.Executor.submit"
PPE_SUBMIT = "ProcessPoolExecutor.submit"


def ours_api() -> dict[str, str | None]:
    """What this checkout has: for 'map' and 'executor', None if usable, else why not."""
    out: dict[str, str | None] = {"map": None, "executor": None}
    try:
        from interrupt_pool import Pool

        if "chunksize" not in inspect.signature(Pool.map).parameters:
            out["map"] = "Pool.map has no chunksize parameter in this checkout"
    except (ImportError, AttributeError) as exc:
        out["map"] = f"interrupt_pool.Pool not importable ({type(exc).__name__}: {exc})"
    try:
        from interrupt_pool import Executor

        if not issubclass(Executor, cf.Executor):
            out["executor"] = "interrupt_pool.Executor is not a concurrent.futures.Executor in this checkout"
    except (ImportError, AttributeError) as exc:
        out["executor"] = f"interrupt_pool.Executor is not available in this checkout ({type(exc).__name__})"
    return out


class _Runs:
    """µs per item of each (part, row), over the repeats; rows that could not run say why."""

    def __init__(self):
        self.us: dict[str, dict[str, list[float]]] = {"map": {}, "submit": {}}
        self.why: dict[str, dict[str, str]] = {"map": {}, "submit": {}}

    def timed(self, part: str, name: str, n: int, call, expect: list) -> None:
        t = time.perf_counter()
        out = list(call())
        dt = time.perf_counter() - t
        if out != expect:
            raise AssertionError(f"{name} returned wrong results")
        self.us[part].setdefault(name, []).append(dt / n * 1e6)

    def ours(self, part: str, name: str, n: int, call, expect: list) -> None:
        """Our rows: an API being built may raise; the row says so and the section goes on."""
        try:
            self.timed(part, name, n, call, expect)
        except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
            self.why[part][name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"

    def unavailable(self, part: str, name: str, why: str | None) -> bool:
        if why is not None:
            self.why[part][name] = why
        return why is not None


def _submit_all(submit, data: list):
    futures = [submit(x) for x in data]
    return [f.result() for f in futures]


def _open(stack: contextlib.ExitStack, runs: _Runs, api: dict, mods: dict) -> dict:
    """Every pool of the section, started and warmed up; closed by ``stack`` (off the clock)."""
    warm = list(range(WARMUP))
    h: dict = {}
    from interrupt_pool import Pool

    h["pool"] = stack.enter_context(Pool(workers=2, checkpoint_dir=None))
    h["pool"].map(pa.triv_agent, warm)
    if api["executor"] is None:
        try:
            from interrupt_pool import Executor

            h["executor"] = stack.enter_context(Executor(workers=2, checkpoint_dir=None))
            list(h["executor"].map(pa.triv, warm))
        except Exception as exc:  # noqa: BLE001 - an Executor being built failed: say so in its rows
            h.pop("executor", None)
            api = dict(api, executor=f"failed: {type(exc).__name__}: {str(exc)[:200]}")
    runs.unavailable("map", OURS_EXEC_MAP, api["executor"])
    runs.unavailable("submit", OURS_SUBMIT, api["executor"])
    runs.unavailable("map", OURS_MAP, api["map"])
    h["ppe"] = stack.enter_context(cf.ProcessPoolExecutor(2))
    list(h["ppe"].map(pa.triv, warm))
    h["mp"] = stack.enter_context(mp.Pool(2))
    h["mp"].map(pa.triv, warm)
    if mods["pebble"] is not None:
        h["pebble"] = stack.enter_context(mods["pebble"].ProcessPool(max_workers=2))
        h["pebble"].map(pa.triv, warm).result()
    if mods["loky"] is not None:
        h["loky"] = mods["loky"].get_reusable_executor(max_workers=2)
        stack.callback(h["loky"].shutdown, wait=True)
        list(h["loky"].map(pa.triv, warm))
    if mods["billiard"] is not None:
        h["billiard"] = bp = mods["billiard"].Pool(2)
        stack.callback(bp.join)
        stack.callback(bp.terminate)  # callbacks run last in, first out: terminate, then join
        bp.map(pa.triv, warm)
    return h


def _one_repeat(runs: _Runs, h: dict, n_map: int, n_submit: int) -> None:
    """One measurement of every row, in a fixed order."""
    data, sdata = list(range(n_map)), list(range(n_submit))

    p = h["pool"]
    if OURS_MAP not in runs.why["map"]:
        runs.ours("map", OURS_MAP, n_map, lambda: p.map(pa.triv_agent, data, chunksize=C), data)
    runs.ours("map", OURS_MAP_1, n_map, lambda: p.map(pa.triv_agent, data), data)
    if "executor" in h:
        ex = h["executor"]
        runs.ours("map", OURS_EXEC_MAP, n_map, lambda: ex.map(pa.triv, data, chunksize=C), data)
        runs.ours("submit", OURS_SUBMIT, n_submit, lambda: _submit_all(lambda x: ex.submit(pa.triv, x), sdata), sdata)

    ppe = h["ppe"]
    runs.timed("map", "ProcessPoolExecutor.map(chunksize=1)", n_map, lambda: ppe.map(pa.triv, data), data)
    runs.timed("map", f"ProcessPoolExecutor.map(chunksize={C})", n_map, lambda: ppe.map(pa.triv, data, chunksize=C),
               data)  # fmt: skip
    runs.timed("submit", PPE_SUBMIT, n_submit, lambda: _submit_all(lambda x: ppe.submit(pa.triv, x), sdata), sdata)

    mpp = h["mp"]
    runs.timed("map", "multiprocessing.Pool.map(chunksize=1)", n_map, lambda: mpp.map(pa.triv, data, chunksize=1),
               data)  # fmt: skip
    runs.timed("map", f"multiprocessing.Pool.map(chunksize={C})", n_map, lambda: mpp.map(pa.triv, data, chunksize=C),
               data)  # fmt: skip

    if "pebble" in h:
        pp = h["pebble"]
        for cs in (1, C):
            runs.timed("map", f"pebble ProcessPool.map(chunksize={cs})", n_map,
                       lambda cs=cs: pp.map(pa.triv, data, chunksize=cs).result(), data)  # fmt: skip
        runs.timed("submit", "pebble ProcessPool.schedule", n_submit,
                   lambda: _submit_all(lambda x: pp.schedule(pa.triv, (x,)), sdata), sdata)  # fmt: skip
    if "loky" in h:
        lx = h["loky"]
        runs.timed("map", f"loky get_reusable_executor().map(chunksize={C})", n_map,
                   lambda: lx.map(pa.triv, data, chunksize=C), data)  # fmt: skip
        runs.timed("submit", "loky get_reusable_executor().submit", n_submit,
                   lambda: _submit_all(lambda x: lx.submit(pa.triv, x), sdata), sdata)  # fmt: skip
    if "billiard" in h:
        bp = h["billiard"]
        runs.timed("map", f"billiard Pool.map(chunksize={C})", n_map, lambda: bp.map(pa.triv, data, chunksize=C),
                   data)  # fmt: skip


def cancel_in_chunk(api: dict) -> dict:
    """(c) Both workers held by blockers; a map of 2 chunks queued behind them; the last item
    (of the second chunk) cancelled while queued. Only that item may end: interrupted, at
    stage queued, while the rest of its chunk is still queued; once the blockers go, the map
    returns the other 2C - 1 values in order and raises for the cancelled one."""
    if api["map"] is not None:
        return {"ok": None, "line": f"not checked: {api['map']}"}
    from interrupt_pool import ExecutionStatus, Pool

    n = 2 * C
    res: dict = {"ok": False, "items": n, "chunksize": C}
    with Pool(workers=2, checkpoint_dir=None) as pool:
        blockers = [pool.submit(pa.sleeps, 3600) for _ in range(2)]
        for b in blockers:
            b.wait_started(timeout=30)
        before = {e.id for e in pool.executions()}
        values: list = []
        raised: list[BaseException] = []

        def consume() -> None:
            try:
                for v in pool.imap(pa.triv_agent, range(n), window=n, chunksize=C):
                    values.append(v)
            except Exception as exc:  # noqa: BLE001 - the cancelled item's error is what we expect
                raised.append(exc)

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        try:
            deadline = time.monotonic() + 30
            while True:
                items = [e for e in pool.executions() if e.id not in before]
                if len(items) >= n or raised or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            if len(items) != n:
                why = f"{type(raised[0]).__name__}: {raised[0]}" if raised else f"{len(items)} of {n} items seen"
                res["line"] = f"FAILED: the chunked map's items were not all queued ({why})"
                return res
            chunk = items[C:]  # registered in input order: the second chunk
            target = chunk[-1]
            res["target_status_before"] = target.status.value
            pool.cancel(target.id)
            o = pool.outcome(target.id, timeout=10)
            rest = {e.id: e.status.value for e in pool.executions() if e.id in {c.id for c in chunk[:-1]}}
            res.update(status=o.status.value, stage=o.interrupt.stage.value if o.interrupt and o.interrupt.stage
                       else None, rest_of_chunk=sorted(set(rest.values())))  # fmt: skip
        finally:
            for b in blockers:
                pool.cancel(b.id)
            t.join(30)
    res["values_returned"] = len(values)
    res["raised"] = type(raised[0]).__name__ if raised else None
    ok_item = res["status"] == ExecutionStatus.INTERRUPTED.value and res["stage"] == "queued"
    ok_rest = res["rest_of_chunk"] == ["queued"] and values == list(range(n - 1)) and res["raised"] is not None
    res["ok"] = ok_item and ok_rest
    res["line"] = (
        f"{'ok' if res['ok'] else 'FAILED'}: the cancelled item ended {res['status']} at stage {res['stage']} while "
        f"the other {C - 1} items of its chunk were {'/'.join(res['rest_of_chunk']) or 'gone'}; then the map returned "
        f"{len(values)} of the other {n - 1} values in order and raised {res['raised']} for the cancelled one"
    )
    return res


def _md_rows(us: dict[str, list[float]], why: dict[str, str], order: list[str], ref: str) -> list[list]:
    ref_med = statistics.median(us[ref]) if ref in us else None
    rows = []
    for name in order:
        if name in us:
            med = statistics.median(us[name])
            rows.append([name, f"{med:.2f}", f"{min(us[name]):.2f}", f"{max(us[name]):.2f}",
                         f"{med / ref_med:.2f}×" if ref_med else "-"])  # fmt: skip
        elif name in why:
            rows.append([name, why[name], "", "", ""])
    return rows


def ecosystem(quick: bool) -> dict:
    n_map, n_submit, repeats = (1000, 500, 2) if quick else (10_000, 10_000, 5)
    api = ours_api()
    mods = {name: peer(name) for name in ("pebble", "loky", "billiard")}
    skipped = [name for name, mod in mods.items() if mod is None]
    runs = _Runs()
    with contextlib.ExitStack() as stack:
        handles = _open(stack, runs, api, mods)
        for _ in range(repeats):  # every row once per repeat, in the same order
            _one_repeat(runs, handles, n_map, n_submit)
    check = cancel_in_chunk(api)

    order_map = [OURS_MAP, OURS_MAP_1, OURS_EXEC_MAP, "ProcessPoolExecutor.map(chunksize=1)",
                 f"ProcessPoolExecutor.map(chunksize={C})", "multiprocessing.Pool.map(chunksize=1)",
                 f"multiprocessing.Pool.map(chunksize={C})", "pebble ProcessPool.map(chunksize=1)",
                 f"pebble ProcessPool.map(chunksize={C})", f"loky get_reusable_executor().map(chunksize={C})",
                 f"billiard Pool.map(chunksize={C})"]  # fmt: skip
    order_submit = [OURS_SUBMIT, PPE_SUBMIT, "loky get_reusable_executor().submit", "pebble ProcessPool.schedule"]
    res: dict = {"chunksize": C, "items_map": n_map, "tasks_submit": n_submit, "repeats": repeats, "workers": 2,
                 "ours_api": api, "skipped": skipped,
                 "map_us_per_item": {k: summary(v) for k, v in runs.us["map"].items()},
                 "submit_us_per_task": {k: summary(v) for k, v in runs.us["submit"].items()},
                 "raw": runs.us, "not_measured": runs.why, "cancel_in_chunk": check}  # fmt: skip

    sub = runs.us["submit"]
    if OURS_SUBMIT in sub and PPE_SUBMIT in sub:
        ratio = statistics.median(sub[PPE_SUBMIT]) / statistics.median(sub[OURS_SUBMIT])
        res["ppe_over_ours_submit"] = ratio
        res["target_submit_ge_3x_ppe"] = ratio >= 3
        verdict = (f"ProcessPoolExecutor.submit / ours = {ratio:.2f} (target ≥ 3: "
                   f"{'met' if ratio >= 3 else 'NOT met'}).")  # fmt: skip
    else:
        res["ppe_over_ours_submit"] = None
        verdict = "Ours not measured: " + runs.why["submit"].get(OURS_SUBMIT, "no figure") + "."
    mp_ = runs.us["map"]
    if OURS_MAP in mp_ and OURS_MAP_1 in mp_:
        res["ours_map_unchunked_over_chunked"] = statistics.median(mp_[OURS_MAP_1]) / statistics.median(mp_[OURS_MAP])

    res["markdown"] = (
        f"### Ecosystem: map with chunksize {C} (µs per item, {n_map:,} items, 2 workers, median of {repeats})\n\n"
        f"Trivial tasks (`x → x`). Every pool is started and warmed up ({WARMUP} items) once, before the clock; "
        "each repeat runs every row once, in this order. 'vs ours' divides by interrupt-pool's "
        f"`Pool.map(chunksize={C})` measured in the same run.\n\n"
        + table(["pool and call", "median", "min", "max", f"vs ours (chunksize {C})"],
                _md_rows(mp_, runs.why["map"], order_map, OURS_MAP))  # fmt: skip
        + f"\n\n### Ecosystem: Executor.submit throughput (µs per task: {n_submit:,} submits, then every result; "
        f"2 workers, median of {repeats})\n\n"
        + table(["executor and call", "median", "min", "max", "vs ours"],
                _md_rows(sub, runs.why["submit"], order_submit, OURS_SUBMIT))  # fmt: skip
        + f"\n\n{verdict}\n\nPer-item cancel inside a chunk (chunksize {C}, the last of {2 * C} items cancelled while "
        f"its chunk was queued behind 2 busy workers): {check['line']}."
        + skipped_note(skipped)
    )
    return res
