"""The ``pool`` command line (also ``python -m pool``).

Owns: argument parsing, exit codes and terminal output. Every command is a
thin layer over the public API; errors are one line unless ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
import time

from ._models import Escalation
from ._pool import Pool

__all__ = ("main",)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _ms(ns: int | None, base: int | None) -> str:
    if not ns or not base:
        return "-"
    return f"+{(ns - base) / 1e6:.1f} ms"


def _timeline(out) -> str:
    i = out.interrupt
    parts = [f"requested ({i.reason.value}, {i.mode.value})"]
    if i.observed_ns:
        parts.append(f"observed {_ms(i.observed_ns, i.requested_ns)}")
    if i.sigterm_ns:
        parts.append(f"SIGTERM {_ms(i.sigterm_ns, i.requested_ns)}")
    if i.sigkill_ns:
        parts.append(f"SIGKILL {_ms(i.sigkill_ns, i.requested_ns)}")
    parts.append(f"ended {_ms(i.ended_ns, i.requested_ns)} at stage {i.stage.value if i.stage else '-'}")
    return " → ".join(parts)


def cmd_demo(args) -> int:
    from . import _demo

    t0 = time.monotonic()
    print(f"pool demo: {len(_demo.batch())} simulated agents on {args.workers} workers; "
          f"cancelling {', '.join(_demo.CANCELS)} while they run")  # fmt: skip
    with Pool(workers=args.workers, escalation=Escalation(grace=0.5, term_grace=0.5)) as pool:
        execs = {jid: pool.submit(agent, inp, id=jid) for jid, agent, inp in _demo.batch()}
        pending_cancels = sorted(_demo.CANCELS.items(), key=lambda kv: kv[1])
        outcomes = {}
        remaining = set(execs)
        while remaining:
            now = time.monotonic() - t0
            while pending_cancels and pending_cancels[0][1] <= now:
                jid, _ = pending_cancels.pop(0)
                pool.cancel(jid, message="cancelled by the demo")
            wait = pending_cancels[0][1] - now if pending_cancels else None
            try:
                for ex in pool.as_completed([execs[j] for j in remaining], timeout=wait):
                    out = outcomes[ex.id] = ex.outcome()
                    remaining.discard(ex.id)
                    line = f"{time.monotonic() - t0:6.2f}s  {ex.id:<14} {out.status.value:<11}"
                    if out.interrupt and out.interrupt.stage:
                        line += " " + _timeline(out)
                    print(line, flush=True)
                    if pending_cancels and pending_cancels[0][1] <= time.monotonic() - t0:
                        break
            except TimeoutError:
                pass
    counts: dict[str, int] = {}
    for out in outcomes.values():
        counts[out.status.value] = counts.get(out.status.value, 0) + 1
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" in {time.monotonic() - t0:.1f} s")
    expected_stopped = set(_demo.CANCELS)
    bad = [j for j, o in outcomes.items() if (o.status.value == "interrupted") != (j in expected_stopped)]
    return EXIT_OK if not bad else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pool", description="Run many AI agents at once and stop any one of them on demand.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a built-in batch of simulated agents and stop some of them")
    demo.add_argument("--workers", type=int, default=6)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ValueError, TypeError) as exc:
        if args.debug:
            raise
        print(f"pool: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
