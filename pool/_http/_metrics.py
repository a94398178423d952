"""``GET /metrics``: the Prometheus text exposition format (version 0.0.4), written by hand.

Why not ``prometheus_client``: the gateway exposes a handful of gauges read from one
``status`` query at scrape time (executions by status, queue depth, workers by state, spend
and budget by group) and one histogram (stop latency by stage) that it fills from the event
stream it already reads. That is about a hundred lines here; the library would add a
dependency, a process-global registry (awkward in tests and for a second gateway in one
process) and its own collector plumbing, and buy nothing we use.

Owns: :class:`Histogram` (cumulative buckets, sum, count per label value) and
:func:`render`. The histogram is written only on the gateway's event loop (see ``_link``),
and read there too, so it needs no lock.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

__all__ = ("Histogram", "render", "STOP_BUCKETS")

# Seconds. A cooperative stop takes well under a millisecond; SIGTERM and SIGKILL stops take
# the grace periods (seconds by default): the buckets span both.
STOP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


class Histogram:
    """One histogram family with one label (e.g. ``stage``)."""

    def __init__(self, name: str, help: str, label: str, buckets: Iterable[float] = STOP_BUCKETS):
        self.name, self.help, self.label = name, help, label
        self.buckets = tuple(sorted(buckets))
        self._series: dict[str, list[Any]] = {}  # label value -> [bucket counts..., sum, count]

    def observe(self, label_value: str, value: float) -> None:
        s = self._series.get(label_value)
        if s is None:
            s = self._series[label_value] = [0] * len(self.buckets) + [0.0, 0]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                s[i] += 1
        s[-2] += value
        s[-1] += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for lv, s in sorted(self._series.items()):
            lab = f'{self.label}="{_label(lv)}"'
            for bound, n in zip(self.buckets, s):
                out.append(f'{self.name}_bucket{{{lab},le="{_num(bound)}"}} {n}')
            out.append(f'{self.name}_bucket{{{lab},le="+Inf"}} {s[-1]}')
            out.append(f"{self.name}_sum{{{lab}}} {_num(s[-2])}")
            out.append(f"{self.name}_count{{{lab}}} {s[-1]}")
        return out


def _gauge(name: str, help: str, samples: list[tuple[dict[str, str], float]], kind: str = "gauge") -> list[str]:
    out = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")
    return out


def render(status: dict[str, Any], stop_latency: Histogram, gateway: dict[str, float]) -> str:
    """The exposition text from the supervisor's ``status`` document, the stop-latency
    histogram and the gateway's own counters."""
    from ..shared import ExecutionStatus

    counts = status.get("counts") or {}
    workers: dict[str, int] = {}
    for w in status.get("workers") or ():
        workers[w["state"]] = workers.get(w["state"], 0) + 1
    groups = status.get("groups") or []
    lines = _gauge("interrupt_pool_up", "1 if the gateway reaches the pool's supervisor.", [({}, 1)])
    lines += _gauge("interrupt_pool_executions",
                    "Executions the supervisor holds, by status: live ones and its bounded history of ended ones.",
                    [({"status": s.value}, counts.get(s.value, 0)) for s in ExecutionStatus])  # fmt: skip
    lines += _gauge("interrupt_pool_queue_depth", "Executions waiting for a worker.", [({}, status.get("queued", 0))])
    lines += _gauge("interrupt_pool_workers", "Worker processes by state (the spare worker is not counted).",
                    [({"state": s}, workers.get(s, 0)) for s in sorted({"idle", "busy", "starting", "stopping"}
                                                                       | set(workers))])  # fmt: skip
    lines += _gauge("interrupt_pool_group_spent", "What a group's executions spent (ctx.spend), in its unit.",
                    [({"group": g["name"]}, g.get("spent") or 0.0) for g in groups])  # fmt: skip
    lines += _gauge("interrupt_pool_group_budget", "A group's budget (groups without one are not listed).",
                    [({"group": g["name"]}, g["budget"]) for g in groups if g.get("budget") is not None])  # fmt: skip
    lines += stop_latency.lines()
    lines += _gauge("interrupt_pool_http_sse_clients", "Clients connected to GET /v1/events.",
                    [({}, gateway.get("sse_clients", 0))])  # fmt: skip
    lines += _gauge("interrupt_pool_http_events_total", "Events the gateway received from the supervisor.",
                    [({}, gateway.get("events", 0))], kind="counter")  # fmt: skip
    return "\n".join(lines) + "\n"
