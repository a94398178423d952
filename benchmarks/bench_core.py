"""Section 1 and the cooperative part of section 2: check overhead and stop latency.

Every figure is measured inside a real worker of a real pool: the ``ctx`` an
agent gets, the slot it reads, the supervisor that writes it.
"""

from __future__ import annotations

import time

from interrupt_pool import Escalation, Pool

from . import agents
from ._stats import summary, table


def check_overhead(quick: bool) -> dict:
    params = {"n": 200_000 if quick else 2_000_000, "repeats": 5 if quick else 15}
    with Pool(workers=1) as pool:
        raw = pool.submit(agents.measure_check, params).result()
        steps = pool.submit(agents.agent_step, {"steps": 20_000 if quick else 200_000, "repeats": 5 if quick else 11}).result()
    # Net of the loop: each repeat's figure minus the same repeat's empty loop, then the median.
    empty = raw.pop("empty loop")
    net = {name: summary([v - e for v, e in zip(vals, empty, strict=True)]) for name, vals in raw.items()}
    check = net["ctx.check()"]["median"]
    mp = net["multiprocessing.Event.is_set()"]["median"]
    call = net["any method call (floor)"]["median"]
    slow = [w / wo for w, wo in zip(steps["with"], steps["without"], strict=True)]
    result = {
        "loop_ns": summary(empty),
        "net_ns": net,
        "check_vs_mp_event": mp / check if check > 0 else float("inf"),
        "check_over_method_call": check / call if call > 0 else float("inf"),
        "agent_step_ns": {"without": summary(steps["without"]), "with_check": summary(steps["with"])},
        "agent_step_slowdown": summary(slow),
    }
    rows = [[name, f"{s['median']:.1f}", f"{s['min']:.1f}", f"{s['max']:.1f}", f"{s['median'] / check:.2f}×"]
            for name, s in net.items()]  # fmt: skip
    result["targets"] = {"check_over_method_call_le_2.5": result["check_over_method_call"] <= 2.5,
                         "check_vs_mp_event_ge_10": result["check_vs_mp_event"] >= 10}  # fmt: skip
    met = {True: "met", False: "NOT met"}
    result["markdown"] = (
        "### Check overhead (ns per call, net of the loop; median of repeats)\n\n"
        + table(["operation", "median", "min", "max", "vs ctx.check()"], rows)
        + f"\n\nctx.check() costs {result['check_over_method_call']:.2f}× a bare Python method call "
        + f"(target ≤ 2.5×: {met[result['targets']['check_over_method_call_le_2.5']]}) and is "
        + f"{result['check_vs_mp_event']:.1f}× cheaper than multiprocessing.Event.is_set() "
        + f"(target ≥ 10×: {met[result['targets']['check_vs_mp_event_ge_10']]}). "
        + f"A realistic agent step ({summary(steps['without'])['median'] / 1000:.1f} µs of Python work) with one check "
        + f"per step runs {100 * (summary(slow)['median'] - 1):.1f} % slower (median of {len(slow)} repeats)."
    )
    return result


def cooperative_latency(quick: bool) -> dict:
    """cancel() → observed, for an agent that checks in a tight loop."""
    n = 50 if quick else 300
    req_to_obs, ret_to_obs, cancel_call, req_to_end = [], [], [], []
    with Pool(workers=2, escalation=Escalation(grace=5, term_grace=1)) as pool:
        for _ in range(n):
            ex = pool.submit(agents.check_loop, None)
            ex.wait_started()
            time.sleep(0.002)  # let the task reach its loop: we measure the stop, not the start
            t0 = time.monotonic_ns()
            pool.cancel(ex.id)
            t1 = time.monotonic_ns()
            i = ex.outcome().interrupt
            req_to_obs.append((i.observed_ns - i.requested_ns) / 1e3)
            ret_to_obs.append(max(0, i.observed_ns - t1) / 1e3)
            cancel_call.append((t1 - t0) / 1e3)
            req_to_end.append((i.ended_ns - i.requested_ns) / 1e3)
    res = {
        "n": n,
        "requested_to_observed_us": summary(req_to_obs),
        "cancel_return_to_observed_us": summary(ret_to_obs),
        "cancel_call_us": summary(cancel_call),
        "requested_to_ended_us": summary(req_to_end),
    }
    rows = [[name, f"{s['median']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}"] for name, s in (
        ("flag written → observed by the agent", res["requested_to_observed_us"]),
        ("cancel() returned → observed", res["cancel_return_to_observed_us"]),
        ("cancel() call (round trip to the supervisor)", res["cancel_call_us"]),
        ("flag written → execution ended (result at the supervisor)", res["requested_to_ended_us"]),
    )]  # fmt: skip
    res["markdown"] = (
        f"### Cooperative stop latency (µs, {n} stops of a checking agent)\n\n"
        + table(["interval", "p50", "p99", "max"], rows)
    )
    return res
