"""The ``pool`` command line (also ``python -m interrupt_pool``).

Owns: argument parsing, exit codes and terminal output. Every command is a
thin layer over the public API and the control socket. Data (result lines,
``--json``) goes to stdout; progress, events and tables go to stderr, so
``pool run ... > results.jsonl`` works. Errors are one line, exit code 2,
with a traceback only under ``--debug``.

Exit codes: 0 every execution completed; 1 some failed, crashed or were
interrupted (or ``wait`` of one that did not complete); 2 bad input or no
such pool/execution; 130 after Ctrl+C.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import queue
import re
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import _naming
from ._events import Event, EventKind
from ._exceptions import PoolError
from ._models import Escalation
from ._pool import Pool
from .shared import ExecutionStatus, InterruptMode, InterruptReason

__all__ = ("main",)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

_STATUS_STYLE = {
    "queued": "dim", "running": "cyan", "cancelling": "yellow", "completed": "green",
    "failed": "red", "interrupted": "magenta", "crashed": "bold red",
}  # fmt: skip


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def result_line(out) -> dict:
    """An ExecutionResult as one JSON-ready dict (a value JSON cannot carry becomes its repr)."""
    d = out.model_dump(mode="json", exclude={"value"})
    try:
        json.dumps(out.value)
        d["value"] = out.value
    except (TypeError, ValueError):
        d["value"] = repr(out.value)
    return d


def _connect(name: str | None) -> Pool:
    try:
        return Pool.connect(name)
    except PoolError as exc:
        raise CliError(str(exc)) from None


def _pool_with(exec_id: str, name: str | None) -> Pool:
    """A client of the pool that has execution ``exec_id`` (among those matching ``name``)."""
    if name is not None:
        return _connect(name)
    having = []
    pools = _naming.list_pools()
    if not pools:
        raise CliError(f"no pool is running (looked in {_naming.socket_dir()}); start one with 'pool run' or 'pool serve'")
    for addr in pools:
        try:
            p = Pool.connect(addr.name)
        except PoolError:
            continue  # exited while we asked
        if p.has(exec_id):
            having.append(p)
        else:
            p.close()
    if len(having) == 1:
        return having[0]
    for p in having:
        p.close()
    if not having:
        raise CliError(f"no running pool has an execution {exec_id!r}; 'pool status' lists them")
    raise CliError(f"execution id {exec_id!r} exists in {len(having)} pools "
                   f"({', '.join(p.name for p in having)}); choose one with --name")  # fmt: skip


def _default_name(agent: str) -> str:
    """The pool name 'pool run' uses when none is given: the function's name made valid,
    with the pid appended if a pool of that name is already running."""
    func = agent.partition(":")[2].replace(".", "-")
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", func).lstrip("._-")[:40] or "run"
    if any(p.name == base for p in _naming.list_pools()):
        return f"{base}-{os.getpid()}"
    return base


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


# -- shared pieces -------------------------------------------------------------------


def resolve_agent(spec: str) -> str:
    """Check that MODULE:FUNC names an importable function; return it unchanged."""
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise CliError(f"agent {spec!r} must be MODULE:FUNC, e.g. mypkg.agents:research")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise CliError(f"cannot import module {module!r} ({exc}); run from the directory that contains it "
                       "or install it") from exc  # fmt: skip
    obj = mod
    for part in func.split("."):
        if not hasattr(obj, part):
            raise CliError(f"module {module!r} has no function {func!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CliError(f"{spec} is a {type(obj).__name__}, not a function")
    return spec


def read_inputs(path: str) -> list[tuple[str, object]]:
    """JSON Lines, one input per line; ids from an "id" field, else the line number."""
    if path == "-":
        lines, name = sys.stdin.read().splitlines(), "<stdin>"
    else:
        try:
            lines, name = Path(path).read_text().splitlines(), path
        except FileNotFoundError:
            raise CliError(f"inputs file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read inputs file {path}: {exc}") from None
    items, seen = [], set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{name} line {n} is not valid JSON ({exc.msg} at column {exc.colno}); "
                           "inputs must be JSON Lines: one JSON value per line") from None  # fmt: skip
        ident = str(obj["id"]) if isinstance(obj, dict) and "id" in obj else str(n)
        if ident in seen:
            raise CliError(f"{name} line {n}: id {ident!r} is used twice; ids must be unique")
        seen.add(ident)
        items.append((ident, obj))
    if not items:
        raise CliError(f"{name} has no inputs")
    return items


def _seconds(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds, got {text!r}") from None
        if value < 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number of seconds >= 0, got {text}")
        return value

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))]


def _fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def summary_table(outcomes: list) -> Table:
    """Counts by status, and the interrupt latencies of the interrupted executions."""
    counts: dict[str, int] = {}
    for out in outcomes:
        counts[out.status.value] = counts.get(out.status.value, 0) + 1
    t = Table(title="summary", title_justify="left")
    t.add_column("status")
    t.add_column("count", justify="right")
    for status in ExecutionStatus:
        if status.value in counts:
            t.add_row(f"[{_STATUS_STYLE[status.value]}]{status.value}[/]", str(counts[status.value]))
    stopped = [o.interrupt for o in outcomes if o.interrupt and o.interrupt.stage]
    if stopped:
        obs = [i.observe_latency for i in stopped if i.observe_latency is not None]
        end = [i.stop_latency for i in stopped if i.stop_latency is not None]
        stages: dict[str, int] = {}
        for i in stopped:
            stages[i.stage.value] = stages.get(i.stage.value, 0) + 1
        t.add_section()
        t.add_row("stages", ", ".join(f"{k} {v}" for k, v in stages.items()))
        t.add_row("observed p50 / p99", f"{_fmt_ms(_pct(obs, 50))} / {_fmt_ms(_pct(obs, 99))}")
        t.add_row("stopped p50 / p99", f"{_fmt_ms(_pct(end, 50))} / {_fmt_ms(_pct(end, 99))}")
    return t


class EventPrinter:
    """Prints events as coloured lines; stop timings relative to each request."""

    def __init__(self, console: Console, t0_ns: int, only_stops: bool = False, show_output: bool = False,
                 show_events: bool = True):  # fmt: skip
        self.console, self.t0, self.only_stops, self.show_output = console, t0_ns, only_stops, show_output
        self.show_events = show_events
        self.requested: dict[str, int] = {}

    def __call__(self, ev: Event) -> None:
        k = ev.kind
        if k is EventKind.OUTPUT:
            if self.show_output and ev.text is not None:
                who = ev.execution_id or f"worker {ev.worker_id}"
                for line in ev.text.split("\n"):
                    self.console.print(Text(f"{who} | ", style="dim") + Text(line), soft_wrap=True)
            return
        if not self.show_events:
            return
        if k is EventKind.REQUESTED and ev.execution_id:
            self.requested[ev.execution_id] = ev.mono_ns
        base = self.requested.get(ev.execution_id or "")
        if self.only_stops and base is None:
            return
        rel = f" +{(ev.mono_ns - base) / 1e6:.1f} ms" if base is not None and k is not EventKind.REQUESTED else ""
        what = {
            EventKind.REQUESTED: lambda: f"[yellow]requested[/] ({ev.reason.value if ev.reason else '-'}, {ev.mode.value if ev.mode else '-'})",
            EventKind.ESCALATED: lambda: f"[yellow]escalated[/] to {ev.mode.value if ev.mode else '-'}{rel}",
            EventKind.OBSERVED: lambda: f"[cyan]observed[/]{rel}",
            EventKind.SIGTERM: lambda: f"[red]SIGTERM[/]{rel} ({ev.late_ms:.1f} ms after its deadline)",
            EventKind.SIGKILL: lambda: f"[bold red]SIGKILL[/] process group{rel}"
            + (f" ({ev.late_ms:.1f} ms after its deadline)" if ev.late_ms is not None else ""),
            EventKind.ENDED: lambda: f"[{_STATUS_STYLE[ev.status.value]}]ended {ev.status.value}[/]{rel}"
            + (f" at stage {ev.stage.value}" if ev.stage else ""),
            EventKind.STARTED: lambda: "[cyan]started[/]",
            EventKind.SUBMITTED: lambda: "submitted",
            EventKind.WORKER_STARTED: lambda: f"worker {ev.worker_id} started (pid {ev.pid})",
            EventKind.WORKER_EXITED: lambda: f"worker {ev.worker_id} exited (pid {ev.pid}, {ev.message})",
        }[k]()
        who = ev.execution_id or f"worker {ev.worker_id}"
        self.console.print(f"{(ev.mono_ns - self.t0) / 1e9:7.3f}s  {who:<16} {what}")
        if k is EventKind.ENDED:
            self.requested.pop(ev.execution_id, None)


def _announcer(console: Console):
    """How ``pool run`` tells the user what a Ctrl+C (or SIGTERM) does: the library's ladder
    (``Pool.handle_signals``) calls it before each step."""

    def announce(name: str, mode: InterruptMode) -> None:
        what = "Ctrl+C" if name == "SIGINT" else name
        console.print(f"[yellow]{what}: stopping every execution ({mode.value}); "
                      f"{'press again to escalate' if mode is not InterruptMode.KILL else 'killing'}[/]")  # fmt: skip

    return announce


# -- commands --------------------------------------------------------------------------


def _completed_ids(out_path: str) -> set[str]:
    """Ids whose newest line in an earlier --out file says completed. A last line cut
    short by a crash is cut off the file (that execution simply runs again), so the lines
    this run appends start on a line of their own."""
    status: dict[str, str] = {}
    try:
        raw = Path(out_path).read_bytes()
    except FileNotFoundError:
        return set()
    if raw and not raw.endswith(b"\n"):  # a crash cut the last line in half: repair, do not append to it
        keep = raw.rfind(b"\n") + 1
        with open(out_path, "r+b") as f:
            f.truncate(keep)
        raw = raw[:keep]
    lines = raw.decode(errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            status[str(row["id"])] = row["status"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if n != len(lines):
                raise CliError(f"{out_path} line {n} is not a result line; --resume reads the --out file of an "
                               "earlier run") from None  # fmt: skip
    return {i for i, st in status.items() if st == "completed"}


def cmd_run(args) -> int:
    agent = resolve_agent(args.agent)
    items = read_inputs(args.inputs)
    skipped = 0
    if args.resume:
        if not args.out:
            raise CliError("--resume needs --out FILE: it skips the executions that file records as completed")
        done = _completed_ids(args.out)
        skipped = sum(1 for i, _ in items if i in done)
        items = [(i, x) for i, x in items if i not in done]
    escalation = Escalation(grace=args.grace, term_grace=args.term_grace)
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    console = _err_console()
    if args.resume:
        from .shared._checkpoint import CheckpointStore

        saved = sum(1 for i, _ in items if CheckpointStore(args.checkpoint_dir, i).sequence_numbers())
        console.print(f"resuming: {skipped} completed (skipped), {saved} resume from checkpoints, "
                      f"{len(items) - saved} start fresh")  # fmt: skip
        if not items:
            return EXIT_OK
    out_file = open(args.out, "a" if args.resume else "w") if args.out else None  # noqa: SIM115
    ladder = None
    t0 = time.monotonic_ns()
    name = args.name or _default_name(agent)
    printer = EventPrinter(console, t0, show_output=True, show_events=args.events)
    try:
        with Pool(workers=args.workers, escalation=escalation, name=name, on_event=printer,
                  checkpoint_dir=args.checkpoint_dir, log_dir=args.log_dir) as pool:  # fmt: skip
            # Kept until the pool has drained (after the with block): a Ctrl+C while draining escalates too.
            ladder = pool.handle_signals(announce=_announcer(console)).__enter__()
            done: queue.SimpleQueue = queue.SimpleQueue()
            execs = pool._submit_batch(agent, items, args.timeout, resume=args.resume)
            for ex in execs:
                ex.add_done_callback(done.put)
            outcomes = []
            progress = Progress(
                TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                console=console, transient=False, disable=args.no_progress,
            )  # fmt: skip
            with progress:
                task = progress.add_task("run", total=len(execs), counts="", rate="")
                while len(outcomes) < len(execs):
                    try:
                        ex = done.get(timeout=0.1)  # a UI refresh tick, not supervisor polling
                    except queue.Empty:
                        ex = None
                    while ex is not None:
                        out = ex.outcome()
                        outcomes.append(out)
                        # sys.stdout looked up each time: on a terminal the progress display redirects it
                        # above the bar, so a redraw never erases the start of a result line.
                        stream = out_file or sys.stdout
                        stream.write(json.dumps(result_line(out)) + "\n")
                        stream.flush()
                        try:
                            ex = done.get_nowait()
                        except queue.Empty:
                            ex = None
                    counts: dict[str, int] = {}
                    for e in execs:
                        counts[e.status.value] = counts.get(e.status.value, 0) + 1
                    elapsed = (time.monotonic_ns() - t0) / 1e9
                    progress.update(
                        task, completed=len(outcomes),
                        counts=" ".join(f"[{_STATUS_STYLE[k]}]{k} {v}[/]" for k, v in counts.items()),
                        rate=f"{len(outcomes) / elapsed:.1f}/s" if elapsed > 0 else "",
                    )  # fmt: skip
    finally:
        if ladder is not None:
            ladder.__exit__(None, None, None)
        if out_file is not None:
            out_file.close()
    console.print(summary_table(outcomes))
    if ladder.signals and ladder.signals[0] == signal.SIGTERM:
        return EXIT_TERMINATED
    if ladder.signals:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(o.status is ExecutionStatus.COMPLETED for o in outcomes) else EXIT_FAILED


def cmd_status(args) -> int:
    names = [args.name] if args.name else [p.name for p in _naming.list_pools()]
    statuses = []
    for name in names:
        try:
            with Pool.connect(name) as p:
                statuses.append(p.status())
        except PoolError as exc:
            if args.name:
                raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(statuses, indent=2))
        return EXIT_OK
    console = Console(highlight=False)
    if not statuses:
        console.print("no pool is running")
        return EXIT_OK
    for st in statuses:
        counts = ", ".join(f"{k} {v}" for k, v in st["counts"].items()) or "no executions"
        console.print(f"[bold]{st['name']}[/]  supervisor pid {st['supervisor_pid']}  owner pid {st['owner_pid']}  "
                      f"({counts})")  # fmt: skip
        wt = Table("worker", "pid", "state", "execution", title="workers", title_justify="left")
        for w in st["workers"]:
            wt.add_row(str(w["id"]), str(w["pid"]), w["state"], w["execution_id"] or "-")
        console.print(wt)
        rows = st["executions"]
        live = [r for r in rows if r["status"] in ("queued", "running", "cancelling")]
        shown = _as_tree(live + [r for r in rows if r not in live][-max(0, 20 - len(live)):])
        extra = [c for c in ("cost", "idle", "priority") if any(c in r for _, r in shown)]
        et = Table("execution", "status", "worker", "elapsed", "stage", *extra, title="executions",
                   title_justify="left")  # fmt: skip
        for depth, r in shown:
            label = ("  " * (depth - 1) + "└ " if depth else "") + r["id"] + (" (waiting on children)"
                                                                          if r.get("waiting") else "")  # fmt: skip
            cells = [label, f"[{_STATUS_STYLE[r['status']]}]{r['status']}[/]",
                     "-" if r["worker"] is None else str(r["worker"]),
                     "-" if r["elapsed"] is None else f"{r['elapsed']:.2f}s", r["stage"] or "-"]  # fmt: skip
            for c in extra:
                v = r.get(c)
                if c == "cost" and v is not None:
                    cells.append(f"{v:g}" + (f" / {r['budget']:g}" if r.get("budget") is not None else ""))
                elif c == "idle" and v is not None:
                    cells.append(f"{v:.1f}s")
                else:
                    cells.append("-" if v is None else str(v))
            et.add_row(*cells)
        console.print(et)
        groups = st.get("groups") or []
        if groups:
            gt = Table("group", "budget", "spent", "live", "submitted", title="groups", title_justify="left")
            for g in groups:
                gt.add_row(g["name"] + (" [red](used up)[/]" if g["exhausted"] else ""),
                           "-" if g["budget"] is None else f"{g['budget']:g}", f"{g['spent']:g}", str(g["live"]),
                           str(g["submitted"]))  # fmt: skip
            console.print(gt)
        if len(shown) < len(rows):
            console.print(f"({len(rows) - len(shown)} more ended executions; --json lists all)")
    return EXIT_OK


def _as_tree(rows: list[dict]) -> list[tuple[int, dict]]:
    """Rows in tree order (each child under its parent), with their depth; a row whose
    parent is not shown is a root."""
    by_id = {r["id"]: r for r in rows}
    kids: dict[str, list[dict]] = {}
    roots = []
    for r in rows:
        parent = r.get("parent")
        if parent in by_id and parent != r["id"]:
            kids.setdefault(parent, []).append(r)
        else:
            roots.append(r)
    out: list[tuple[int, dict]] = []
    stack = [(0, r) for r in reversed(roots)]
    seen = set()
    while stack:
        depth, r = stack.pop()
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        out.append((depth, r))
        stack.extend((depth + 1, k) for k in reversed(kids.get(r["id"], ())))
    return out


def _reason_fields(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        return {"reason": InterruptReason(text.lower()).value}
    except ValueError:
        return {"reason": InterruptReason.CUSTOM.value, "message": text}


def cmd_cancel(args) -> int:
    if sum(x is not None for x in (args.id, args.worker, args.group)) != 1:
        raise CliError("give one of: an execution ID, --worker W, --group NAME")
    fields = _reason_fields(args.reason)
    if args.group is not None:
        with _connect(args.name) as pool:
            try:
                n = pool.cancel_group(args.group, args.mode, **fields)
            except ValueError as exc:
                raise CliError(str(exc)) from None
        if n:
            print(f"stopping {n} execution{'s' if n != 1 else ''} of group {args.group!r} in {pool.name} ({args.mode})")
            return EXIT_OK
        print(f"group {args.group!r} of {pool.name} has nothing queued or running", file=sys.stderr)
        return EXIT_FAILED
    if args.worker is not None:
        pool = _connect(args.name)
        with pool:
            ids = sorted(w.id for w in pool.workers())
            if args.worker not in ids:
                raise CliError(f"pool {pool.name} has no worker {args.worker}; its workers are {ids}")
            live = pool.cancel_worker(args.worker, args.mode, **fields)
        what = f"worker {args.worker} of {pool.name}"
    else:
        pool = _pool_with(args.id, args.name)
        with pool:
            if not pool.has(args.id):
                raise CliError(f"pool {pool.name} has no execution {args.id!r}")
            live = pool.cancel(args.id, args.mode, **fields)
            vetoed = not live and any(row[0] == args.id for row in pool._live_rows())
        what = f"execution {args.id!r} in {pool.name}"
        if vetoed:
            print(f"{what} goes on: the pool's owner refused the stop (its before_interrupt hook vetoed it)",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
    if live:
        print(f"stopping {what} ({args.mode})")
        return EXIT_OK
    print(f"{what} was not running anything that could be stopped (already ended or idle)", file=sys.stderr)
    return EXIT_FAILED


def cmd_group(args) -> int:
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget >= 0):
        raise CliError(f"--budget must be a finite number >= 0, got {args.budget:g}")
    with _connect(args.name) as pool:
        try:
            g = pool.group(args.group) if args.budget is None else pool.group(args.group, args.budget)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    budget = "no budget" if g.budget is None else f"budget {g.budget:g}"
    state = ", used up: takes no new executions" if g.exhausted else ""
    print(f"group {g.name!r} in {pool.name}: {budget}, spent {g.spent:g}, {g.live} live of {g.submitted} submitted{state}")
    return EXIT_OK


def cmd_serve(args) -> int:
    console = _err_console()
    escalation = Escalation(grace=args.grace, term_grace=args.term_grace)
    printer = EventPrinter(console, time.monotonic_ns()) if args.events else None
    # Block SIGTERM/SIGINT before the pool starts its threads (they inherit the mask), then
    # wait for them here: a handler plus signal.pause() can miss a signal the kernel
    # delivers to another thread.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        pool = Pool(workers=args.workers, escalation=escalation, name=args.name, on_event=printer, log_dir=args.log_dir)
        console.print(f"serving pool {args.name!r} (supervisor pid {pool.supervisor_pid}, {args.workers} "
                      f"worker{'s' if args.workers != 1 else ''}) on {pool.socket_path}")  # fmt: skip
        signum = None
        try:
            signum = signal.sigwait(stop_signals)
        finally:
            why = signal.Signals(signum).name if signum else "exiting"
            console.print(f"{why}: draining (graceful stop of everything, bounded by grace {args.grace:g} s "
                          f"+ term grace {args.term_grace:g} s)")  # fmt: skip
            pool.cancel_all(InterruptMode.GRACEFUL, InterruptReason.SHUTDOWN, "pool serve is shutting down",
                            source="signal")  # fmt: skip
            pool.shutdown(wait=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return EXIT_OK  # a drain is the normal end of 'pool serve'


def cmd_submit(args) -> int:
    try:
        value = json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    with _connect(args.name) as pool:
        try:
            ex = pool.submit(args.agent, value, id=args.id, timeout=args.timeout, budget=args.budget,
                             stall_timeout=args.stall_timeout, group=args.group, priority=args.priority,
                             preemptible=args.preemptible)  # fmt: skip
        except (ValueError, TypeError, PoolError) as exc:
            raise CliError(str(exc)) from None
        print(ex.id)
        pool.shutdown(wait=False)  # the execution goes on in the pool
    return EXIT_OK


def cmd_wait(args) -> int:
    pool = _pool_with(args.id, args.name)
    with pool:
        print(f"waiting for execution {args.id!r} in pool {pool.name}", file=sys.stderr, flush=True)
        try:
            out = pool.outcome(args.id, args.timeout)
        except KeyError as exc:
            raise CliError(str(exc).strip("'\"")) from None
    print(json.dumps(result_line(out)))
    return EXIT_OK if out.status is ExecutionStatus.COMPLETED else EXIT_FAILED


def cmd_logs(args) -> int:
    """Print what an execution printed; --follow keeps printing until it ends."""
    pool = _pool_with(args.id, args.name)
    with pool:
        if pool.log_dir is None:
            raise CliError(f"pool {pool.name} does not capture output (it runs with log_dir=None)")
        events = pool.events() if args.follow else None  # subscribed before the log is read: no gap
        from ._supervisor.output import log_path, read_log

        sys.stdout.write(read_log(pool.log_dir, args.id))
        sys.stdout.flush()
        if events is None or not _is_live(pool, args.id):
            return EXIT_OK
        # Follow the file itself from where we are (each output event says there is more), so
        # nothing is printed twice or skipped, whatever was written while we subscribed.
        path = log_path(pool.log_dir, args.id)
        offset = os.path.getsize(path) if os.path.exists(path) else 0
        for ev in events:
            if ev.execution_id != args.id or ev.kind not in (EventKind.OUTPUT, EventKind.ENDED):
                continue
            try:
                size = os.path.getsize(path)
                if size < offset:  # rotated: the new file starts from its beginning
                    offset = 0
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            except FileNotFoundError:
                pass
            if ev.kind is EventKind.ENDED:
                break
    return EXIT_OK


def _is_live(pool: Pool, exec_id: str) -> bool:
    return any(r[0] == exec_id for r in pool._live_rows())


def cmd_checkpoints(args) -> int:
    from .shared._checkpoint import CheckpointError, CheckpointStore, list_ids, read_file

    root = Path(args.dir)
    if args.action == "list":
        ids = [args.id] if args.id else list_ids(root)
        rows = []
        for i in ids:
            for info in CheckpointStore(root, i).list():
                rows.append({"id": i, "seq": info.seq, "size": info.size, "time": info.time, "path": info.path})
                if not args.id:
                    break  # the newest of each id; 'list ID' shows all of one
        if args.id and not rows:
            raise CliError(f"execution {args.id!r} has no checkpoints in {root}")
        if args.json:
            print(json.dumps(rows, indent=2))
            return EXIT_OK
        if not rows:
            print(f"no checkpoints in {root}")
            return EXIT_OK
        t = Table("execution", "seq", "size", "saved", "path", title=f"checkpoints in {root}", title_justify="left")
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"]))
            t.add_row(r["id"], str(r["seq"]), f"{r['size']} B", when, r["path"])
        Console(highlight=False).print(t)
        return EXIT_OK
    store = CheckpointStore(root, args.id)
    seqs = store.sequence_numbers()
    if not seqs:
        raise CliError(f"execution {args.id!r} has no checkpoints in {root}")
    seq = args.seq if args.seq is not None else seqs[0]
    if seq not in seqs:
        raise CliError(f"execution {args.id!r} has no checkpoint {seq}; it has {', '.join(map(str, seqs))}")
    try:
        seq, exec_id, wall, state = read_file(store.path(seq))
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps({"id": exec_id, "seq": seq, "time": wall, "state": state}, indent=2, default=_json_default))
        return EXIT_OK
    from rich.pretty import Pretty

    c = Console(highlight=False)
    c.print(f"[bold]{exec_id}[/] checkpoint {seq}, saved {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(wall))}")
    c.print(Pretty(state))
    return EXIT_OK


def _json_default(obj):
    """Checkpoint types JSON lacks: bytes as text if they are, else hex; the rest as str."""
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        try:
            return obj.decode()
        except UnicodeDecodeError:
            return obj.hex()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return str(obj)


def cmd_bench(args) -> int:
    try:
        from benchmarks.__main__ import main as bench_main
    except ImportError:
        raise CliError("the benchmarks live in the interrupt-pool repository (benchmarks/): run 'pool bench' "
                       "from the root of a checkout") from None  # fmt: skip
    return bench_main((["--quick"] if args.quick else []) + (["--only", *args.only] if args.only else []))


def cmd_demo(args) -> int:
    from . import _demo

    console = _err_console()
    jobs = _demo.batch()
    console.print(f"[bold]pool demo[/]: {len(jobs)} simulated agents on {args.workers} workers "
                  f"(grace 0.5 s, term grace 0.5 s); stopping {', '.join(_demo.CANCELS)} while they run")  # fmt: skip
    t0 = time.monotonic_ns()
    printer = EventPrinter(console, t0, only_stops=True)
    with Pool(workers=args.workers, escalation=Escalation(grace=0.5, term_grace=0.5), on_event=printer) as pool:
        execs = [pool.submit(agent, inp, id=jid) for jid, agent, inp in jobs]
        for jid, at in sorted(_demo.CANCELS.items(), key=lambda kv: kv[1]):
            delay = at - (time.monotonic_ns() - t0) / 1e9
            if delay > 0:
                time.sleep(delay)
            pool.cancel(jid, message="cancelled by the demo")
        outcomes = [ex.outcome() for ex in execs]
    console.print(summary_table(outcomes))
    wrong = [o.id for o in outcomes if (o.status is ExecutionStatus.INTERRUPTED) != (o.id in _demo.CANCELS)]
    stages = {o.id: o.interrupt.stage.value for o in outcomes if o.interrupt and o.interrupt.stage}
    console.print(f"finished in {(time.monotonic_ns() - t0) / 1e9:.1f} s; stop stages: "
                  + ", ".join(f"{k} {v}" for k, v in stages.items()))  # fmt: skip
    if wrong:
        console.print(f"[red]unexpected outcome for {', '.join(wrong)}[/]")
    return EXIT_OK if not wrong else EXIT_FAILED


# -- parser ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """One-line usage errors, like every other error of the CLI."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pool", description="Run many AI agents at once and stop any one of them on demand.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    from . import __version__

    p.add_argument("--version", action="version", version=f"interrupt-pool {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def escalation_args(sp):
        sp.add_argument("--grace", type=_seconds("--grace"), default=5.0, help="seconds from flag to SIGTERM (5)")
        sp.add_argument("--term-grace", type=_seconds("--term-grace"), default=2.0,
                        help="seconds from SIGTERM to SIGKILL (2)")  # fmt: skip
        sp.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1, help="worker processes")

    run = sub.add_parser("run", help="run a batch: one execution per JSON line of --inputs")
    run.add_argument("agent", metavar="MODULE:FUNC")
    run.add_argument("--inputs", required=True, metavar="FILE", help="JSON Lines, one input per line; - for stdin")
    run.add_argument("--timeout", type=_seconds("--timeout"), default=None, help="seconds each execution may run")
    run.add_argument("--out", metavar="FILE", help="write result lines here (default: stdout)")
    run.add_argument("--name", help="pool name for 'pool status/cancel' (default: the function name)")
    run.add_argument("--events", action="store_true", help="print every event as it happens")
    run.add_argument("--no-progress", action="store_true", help="no live progress bar")
    run.add_argument("--resume", action="store_true",
                     help="skip what --out records as completed; resume the rest from their checkpoints")  # fmt: skip
    run.add_argument("--checkpoint-dir", default=".pool/checkpoints", help="where checkpoints live (.pool/checkpoints)")
    run.add_argument("--log-dir", default=".pool/logs", help="where each execution's output is logged (.pool/logs)")
    escalation_args(run)
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="show running pools, their workers and executions")
    st.add_argument("--name", help="only this pool")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    ca = sub.add_parser("cancel", help="stop one execution (or what a worker runs)")
    ca.add_argument("id", nargs="?", metavar="ID")
    ca.add_argument("--worker", type=int, metavar="W", help="stop whatever worker W runs")
    ca.add_argument("--group", metavar="NAME", help="stop every queued and running execution of group NAME")
    ca.add_argument("--mode", choices=[m.value for m in InterruptMode], default="graceful")
    ca.add_argument("--reason", metavar="TEXT", help="a reason name (e.g. budget_exceeded) or free text")
    ca.add_argument("--name", help="the pool; needed only when ambiguous")
    ca.set_defaults(func=cmd_cancel)

    gr = sub.add_parser("group", help="create or show a group of executions in a running pool (--budget sets it)")
    gr.add_argument("group", metavar="GROUP")
    gr.add_argument("--budget", type=float, default=None, help="what the group's executions may spend together")
    gr.add_argument("--name", help="the pool; needed only when several run")
    gr.set_defaults(func=cmd_group)

    se = sub.add_parser("serve", help="a long-lived pool that takes work from 'pool submit'")
    se.add_argument("--name", required=True)
    se.add_argument("--events", action="store_true", help="print every event as it happens")
    se.add_argument("--log-dir", default=".pool/logs", help="where each execution's output is logged (.pool/logs)")
    escalation_args(se)
    se.set_defaults(func=cmd_serve)

    su = sub.add_parser("submit", help="submit one execution to a 'pool serve' pool; prints its id")
    su.add_argument("name", metavar="NAME")
    su.add_argument("agent", metavar="MODULE:FUNC")
    su.add_argument("--input", required=True, metavar="JSON")
    su.add_argument("--id")
    su.add_argument("--timeout", type=_seconds("--timeout"), default=None)
    su.add_argument("--budget", type=float, default=None, help="what it (and its children) may spend")
    su.add_argument("--stall-timeout", type=_seconds("--stall-timeout"), default=None,
                    help="seconds without progress before it is stopped as stalled")  # fmt: skip
    su.add_argument("--group", help="a group made with 'pool group'")
    su.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    su.add_argument("--preemptible", action="store_true", help="higher-priority work may preempt it (it resumes)")
    su.set_defaults(func=cmd_submit)

    wa = sub.add_parser("wait", help="block until an execution ends; print its result line")
    wa.add_argument("id", metavar="ID")
    wa.add_argument("--name", help="the pool; needed only when ambiguous")
    wa.add_argument("--timeout", type=_seconds("--timeout"), default=None)
    wa.set_defaults(func=cmd_wait)

    lg = sub.add_parser("logs", help="what an execution printed (stdout and stderr, its tools' included)")
    lg.add_argument("id", metavar="ID")
    lg.add_argument("--name", help="the pool; needed only when ambiguous")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the execution ends")
    lg.set_defaults(func=cmd_logs)

    ck = sub.add_parser("checkpoints", help="list or show saved checkpoints")
    ck_sub = ck.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    ck_list = ck_sub.add_parser("list", help="every execution with checkpoints (or every checkpoint of ID)")
    ck_list.add_argument("id", nargs="?", metavar="ID")
    ck_show = ck_sub.add_parser("show", help="the saved state of ID's newest checkpoint (or --seq N)")
    ck_show.add_argument("id", metavar="ID")
    ck_show.add_argument("--seq", type=int)
    for sp in (ck_list, ck_show):
        sp.add_argument("--dir", default=".pool/checkpoints", help="the checkpoint directory (.pool/checkpoints)")
        sp.add_argument("--json", action="store_true")
    ck.set_defaults(func=cmd_checkpoints)

    be = sub.add_parser("bench", help="run the benchmark suite (from a checkout); same as python -m benchmarks")
    be.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    be.add_argument("--only", nargs="*", metavar="SECTION",
                    help="check latency stages stuck throughput resources checkpoint")  # fmt: skip
    be.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="the built-in batch of simulated agents, stopped through every stage")
    demo.add_argument("--workers", type=_positive_int, default=6)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like 'python -m': agents in the current directory import
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, _naming.NameError_, PoolError, ValueError, TypeError) as exc:
        if args.debug:
            raise
        print(f"pool: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
