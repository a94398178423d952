"""Checkpoint cost: ctx.checkpoint() against the floor of encoding and writing durably by hand."""

from __future__ import annotations

import statistics
import tempfile

from interrupt_pool import Pool

from . import agents
from ._stats import summary, table


def checkpoint_cost(quick: bool) -> dict:
    n = 40 if quick else 300
    with tempfile.TemporaryDirectory(prefix="pool-bench-", dir=".") as d, Pool(workers=1, checkpoint_dir=d) as pool:
        raw = pool.submit(agents.measure_checkpoint, {"n": n, "dir": d}).result()
    size = raw.pop("bytes")
    res = {name: summary(v) for name, v in raw.items()}
    ratio = [c / f for c, f in zip(raw["checkpoint"], raw["floor"], strict=True)]
    ratio_nd = [c / f for c, f in zip(raw["checkpoint_nondurable"], raw["floor_nondurable"], strict=True)]
    res["ratio_durable"] = statistics.median(ratio)
    res["ratio_nondurable"] = statistics.median(ratio_nd)
    res["state_bytes"] = size
    rows = [[name, f"{res[key]['median']:.0f}", f"{res[key]['p99']:.0f}", f"{res[key]['min']:.0f}"] for name, key in (
        ("floor: msgpack + temp file + fsync + replace + dir fsync", "floor"),
        ("ctx.checkpoint(state)", "checkpoint"),
        ("floor without fsyncs", "floor_nondurable"),
        ("ctx.checkpoint(state, durable=False)", "checkpoint_nondurable"),
    )]  # fmt: skip
    res["markdown"] = (
        f"### Checkpoint cost (µs, {n} writes of a {size / 1000:.1f} KB agent state, interleaved in one worker)\n\n"
        + table(["write", "median", "p99", "min"], rows)
        + f"\n\nctx.checkpoint() costs {res['ratio_durable']:.2f}× the durable floor and "
        + f"{res['ratio_nondurable']:.2f}× the non-durable one (median of per-pair ratios)."
    )
    return res
