"""The ``pool`` command line (also ``python -m interrupt_pool``).

Owns: argument parsing, exit codes and terminal output. Every command is a
thin layer over the public API and the control socket. Data (result lines,
``--json``) goes to stdout; progress, events and tables go to stderr, so
``pool run ... > results.jsonl`` works. Errors are one line, exit code 2,
with a traceback only under ``--debug`` (before or after the command).
Output that is not a terminal is never hard-wrapped. JSON output is strict
JSON: NaN and +/-Infinity, which JSON lacks, are written as null.

Exit codes: 0 every execution completed; 1 some failed, crashed or were
interrupted (or ``wait`` of one that did not complete); 2 bad input or no
such pool/execution; 124 ``wait --timeout`` expired first; 130 after Ctrl+C;
141 the reader of ``pool run``'s results went away (``pool run ... | head``);
143 ``pool run`` drained after SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import queue
import re
import select
import shlex
import signal
import stat
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import _naming
from ._events import Event, EventKind
from ._exceptions import PoolError
from ._models import Escalation, ExecutionResult
from ._pool import Execution, Pool
from .shared import ExecutionStatus, InterruptMode, InterruptReason

__all__ = ("main",)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
EXIT_TIMEOUT = 124  # 'pool wait --timeout' expired (as timeout(1) exits)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a tool killed by it: the reader of our stdout went away

_CHECKPOINT_DIR = ".pool/checkpoints"  # Pool's default checkpoint_dir

_STATUS_STYLE = {
    "queued": "dim", "running": "cyan", "cancelling": "yellow", "completed": "green",
    "failed": "red", "interrupted": "magenta", "crashed": "bold red",
}  # fmt: skip


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _key_error_text(exc: KeyError) -> str:
    """A KeyError's message as written: str(KeyError) would wrap it in another pair of quotes."""
    return exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)


def _finite(obj):
    """``obj`` with every NaN and +/-Infinity replaced by None, in containers too (dict keys that
    are such floats become their text): JSON has no such numbers, and a strict parser refuses the
    ``NaN`` / ``Infinity`` tokens ``json.dumps`` would write. Tuples come back as lists, as JSON has them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {(repr(k) if isinstance(k, float) and not math.isfinite(k) else k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(type(obj), "model_dump") and not isinstance(obj, type):  # a pydantic model (LangChain's
        try:                                                           # messages are): its JSON form
            return _finite(obj.model_dump(mode="json"))
        except Exception:
            return obj  # (the caller's repr fallback)
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON text of ``obj`` (non-finite floats as null); what every JSON output of the CLI uses."""
    return json.dumps(_finite(obj), allow_nan=False, **kw)


def result_line(out) -> dict:
    """An ExecutionResult as one JSON-ready dict (pydantic models in the value become their JSON
    form; a value JSON still cannot carry becomes its repr; NaN and +/-Infinity become null)."""
    d = _finite(out.model_dump(mode="json", exclude={"value"}))
    try:
        value = _finite(out.value)
        json.dumps(value, allow_nan=False)
        d["value"] = value
    except (TypeError, ValueError, RecursionError):
        d["value"] = repr(out.value)
    return d


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """``n`` and the word that goes with it: 1 worker, 2 workers (``plural_form`` when not just +s)."""
    return f"{n} {singular if n == 1 else plural_form or singular + 's'}"


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
                   f"({', '.join(p.name or '?' for p in having)}); choose one with --name")  # fmt: skip


_SOCK_SUFFIX = ".sock"  # a pool's socket is <socket dir>/<name>.sock (see _naming.claim)


def _name_room() -> int:
    """How many bytes a pool name may have here: the socket path must fit a Unix socket address."""
    used = len(os.fsencode(_naming.socket_dir())) + 1 + len(_SOCK_SUFFIX)
    return min(64, _naming.MAX_SOCKET_PATH - used)  # 64: _naming.check_name's limit


def _socket_dir_too_long(room: int) -> CliError:
    d = _naming.socket_dir()
    return CliError(f"the socket directory {str(d)!r} is {len(os.fsencode(d))} bytes long, which leaves "
                    f"{plural(max(room, 0), 'byte')} for a pool name in a Unix socket path (at most "
                    f"{_naming.MAX_SOCKET_PATH} bytes); set POOL_SOCKET_DIR to a shorter directory, e.g. "
                    "POOL_SOCKET_DIR=/tmp/pool-$(id -u)")  # fmt: skip


def _check_name_fits(name: str) -> str:
    """``--name`` NAME, checked before anything starts: a valid name whose socket path fits."""
    _naming.check_name(name)
    room = _name_room()
    if len(name) > room:
        if room < 8:
            raise _socket_dir_too_long(room)
        sock = _naming.socket_dir() / f"{name}{_SOCK_SUFFIX}"
        raise CliError(f"pool name {name!r} makes the socket path {str(sock)!r} {len(os.fsencode(sock))} bytes long, "
                       f"more than the {_naming.MAX_SOCKET_PATH} a Unix socket allows: give a --name of at most "
                       f"{plural(room, 'character')}, or set POOL_SOCKET_DIR to a shorter directory")  # fmt: skip
    return name


def _fit(text: str, room: int) -> str:
    """``text`` if it has at most ``room`` characters, else a prefix and a short hash of the whole."""
    if len(text) <= room:
        return text
    if room < 8:  # no room for a hash
        return text[: max(room, 1)]
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    return f"{text[: room - 7].rstrip('._-')}-{digest}"


def _default_name(agent: str) -> str:
    """The pool name 'pool run' uses when none is given: the function's name made valid (other
    characters become '-'; it starts with a letter or digit) and short enough for the socket
    path (a prefix and a short hash of the whole), with the pid appended if a pool of that name
    is already running."""
    func = agent.partition(":")[2].replace(".", "-")
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", func).lstrip("._-") or "run"
    room = _name_room()
    if room < 8:  # not even a short name fits: the directory is the problem
        raise _socket_dir_too_long(room)
    name = _fit(base, room)
    if any(p.name == name for p in _naming.list_pools()):
        name = _fit(f"{base}-{os.getpid()}", room)
    return _naming.check_name(name)


# Wide enough that nothing is folded: a pipe or a file gets each line whole, as printed.
_UNWRAPPED_WIDTH = 1 << 15


def _console(stderr: bool = False) -> Console:
    """A rich Console that hard-wraps only on a terminal (or at an explicit $COLUMNS): piped or
    redirected output keeps every line, table row and error whole."""
    console = Console(stderr=stderr, highlight=False)
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(stderr=stderr, highlight=False, width=_UNWRAPPED_WIDTH, soft_wrap=True)


def _err_console() -> Console:
    return _console(stderr=True)


# -- shared pieces -------------------------------------------------------------------


def resolve_agent(spec: str) -> str:
    """Check that MODULE:FUNC names an importable function; return it unchanged."""
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise CliError(f"agent {spec!r} must be MODULE:FUNC, e.g. mypkg.agents:research")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if isinstance(exc, ModuleNotFoundError) and missing and not (module + ".").startswith(missing + "."):
            raise CliError(f"module {module!r} cannot be imported: it needs {missing!r}, which is not installed "
                           f"({exc})") from exc  # fmt: skip
        raise CliError(f"cannot import module {module!r} ({exc}); run from the directory that contains it "
                       "or install it") from exc  # fmt: skip
    except SyntaxError as exc:
        raise CliError(f"module {module!r} has a syntax error: {exc.msg} ({exc.filename!r}, line {exc.lineno}); "
                       "fix it and retry") from exc  # fmt: skip
    except (Exception, SystemExit) as exc:  # the module's own code failed as it ran
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename!r} line {frames[-1].lineno}" if frames else ""
        raise CliError(f"importing module {module!r} raised {type(exc).__name__}: {exc}{where}; fix the module "
                       "(--debug shows the traceback)") from exc  # fmt: skip
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
        ident = _input_id(obj["id"], name, n) if isinstance(obj, dict) and "id" in obj else str(n)
        if ident in seen:
            raise CliError(f"{name} line {n}: id {ident!r} is used twice; ids must be unique")
        seen.add(ident)
        items.append((ident, obj))
    if not items:
        raise CliError(f"{name} has no inputs")
    return items


def _input_id(value, where: str, n: int) -> str:
    """The execution id an input line's "id" field gives: a string, or a number as its text."""
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value)):  # fmt: skip
        return str(value)
    raise CliError(f"{where} line {n}: the id {json.dumps(value)[:60]} is not a string or a number; give each "
                   'input an "id" that is a string (or a number), or none to use the line number')  # fmt: skip


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
        status = ev.status.value if ev.status is not None else "-"  # (an ended event has one)
        what = {
            EventKind.REQUESTED: lambda: f"[yellow]requested[/] ({ev.reason.value if ev.reason else '-'}, {ev.mode.value if ev.mode else '-'})",
            EventKind.ESCALATED: lambda: f"[yellow]escalated[/] to {ev.mode.value if ev.mode else '-'}{rel}",
            EventKind.OBSERVED: lambda: f"[cyan]observed[/]{rel}",
            EventKind.SIGTERM: lambda: f"[red]SIGTERM[/]{rel} ({ev.late_ms:.1f} ms after its deadline)",
            EventKind.SIGKILL: lambda: f"[bold red]SIGKILL[/] process group{rel}"
            + (f" ({ev.late_ms:.1f} ms after its deadline)" if ev.late_ms is not None else ""),
            EventKind.ENDED: lambda: f"[{_STATUS_STYLE.get(status, 'bold')}]ended {status}[/]{rel}"
            + (f" at stage {ev.stage.value}" if ev.stage else ""),
            EventKind.STARTED: lambda: "[cyan]started[/]",
            EventKind.SUBMITTED: lambda: "submitted",
            EventKind.WORKER_STARTED: lambda: f"worker {ev.worker_id} started (pid {ev.pid})",
            EventKind.WORKER_EXITED: lambda: f"worker {ev.worker_id} exited (pid {ev.pid}, {ev.message})",
        }[k]()
        when = f"{(ev.mono_ns - self.t0) / 1e9:7.3f}s"
        if ev.execution_id is None and k in (EventKind.WORKER_STARTED, EventKind.WORKER_EXITED):
            self.console.print(f"{when}  {what}")  # the text names the worker: "worker 3 started (pid 12345)"
        else:
            who = ev.execution_id or f"worker {ev.worker_id}"
            self.console.print(f"{when}  {who:<16} {what}")
        if k is EventKind.ENDED and ev.execution_id is not None:
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


def _check_out(path: str) -> None:
    """--out FILE names a file we can create: refused before anything starts, not after the batch ran."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"--out {path!r} is a directory; give a file in it, e.g. --out "
                       f"{os.path.join(path, 'results.jsonl')!r}")  # fmt: skip
    parent = p.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise CliError(f"--out {path!r}: the directory {str(parent)!r} {what}; create it first (mkdir -p) "
                       "or write elsewhere")  # fmt: skip


def _open_out(path: str, mode: str):
    try:
        return open(path, mode)  # noqa: SIM115 - closed by cmd_run's finally
    except OSError as exc:
        raise CliError(f"cannot write --out {path!r}: {exc.strerror}") from None


def _pipe_watch(stream):
    """A poll object that reports when the reader of ``stream`` (a pipe or socket) goes away
    (POLLERR/POLLHUP), or None for a terminal, a file or a stream without a descriptor."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    watch = select.poll()
    watch.register(fd, 0)  # no events asked: POLLERR and POLLHUP are always reported
    return watch


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's final flush must not
    print 'BrokenPipeError' at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # no real stdout to replace: nothing will be flushed to a broken pipe either


def cmd_run(args) -> int:
    agent = resolve_agent(args.agent)
    items = read_inputs(args.inputs)
    name = _check_name_fits(args.name) if args.name else _default_name(agent)
    if args.out:
        _check_out(args.out)
    skipped = 0
    if args.resume:
        if not args.out:
            raise CliError("--resume needs --out FILE: it skips the executions that file records as completed")
        completed = _completed_ids(args.out)
        skipped = sum(1 for i, _ in items if i in completed)
        items = [(i, x) for i, x in items if i not in completed]
    escalation = Escalation(grace=args.grace, term_grace=args.term_grace)
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    console = _err_console()
    if args.resume:
        from .shared._checkpoint import CheckpointStore

        saved = sum(1 for i, _ in items if CheckpointStore(args.checkpoint_dir, i).sequence_numbers())
        fresh = len(items) - saved
        console.print(f"resuming: {skipped} completed (skipped), {plural(saved, 'resumes', 'resume')} from "
                      f"{'a checkpoint' if saved == 1 else 'checkpoints'}, "
                      f"{plural(fresh, 'starts', 'start')} fresh")  # fmt: skip
        if not items:
            return EXIT_OK
    out_file = _open_out(args.out, "a" if args.resume else "w") if args.out else None
    # Results on stdout: notice at once when its reader goes away ('pool run ... | head -1'),
    # not only at the next write, which may be a long execution away.
    watch = _pipe_watch(sys.stdout) if out_file is None else None
    reader_gone = False
    ladder = None
    t0 = time.monotonic_ns()
    printer = EventPrinter(console, t0, show_output=True, show_events=args.events)
    try:
        with Pool(workers=args.workers, escalation=escalation, name=name, on_event=printer,
                  checkpoint_dir=args.checkpoint_dir, log_dir=args.log_dir, preload=_preload(args)) as pool:  # fmt: skip
            # Kept until the pool has drained (after the with block): a Ctrl+C while draining escalates too.
            ladder = pool.handle_signals(announce=_announcer(console)).__enter__()
            done: queue.SimpleQueue = queue.SimpleQueue()
            execs = pool._submit_batch(agent, items, args.timeout, resume=args.resume)
            for ex in execs:
                ex.add_done_callback(done.put)
            outcomes: list[ExecutionResult] = []
            progress = Progress(
                TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                console=console, transient=False, disable=args.no_progress,
            )  # fmt: skip
            try:
                with progress:
                    task = progress.add_task("run", total=len(execs), counts="", rate="")
                    while len(outcomes) < len(execs):
                        ended: Execution | None
                        try:
                            ended = done.get(timeout=0.1)  # a UI refresh tick, not supervisor polling
                        except queue.Empty:
                            ended = None
                        while ended is not None:
                            out = ended.outcome()
                            outcomes.append(out)
                            # sys.stdout looked up each time: on a terminal the progress display redirects it
                            # above the bar, so a redraw never erases the start of a result line.
                            stream = out_file or sys.stdout
                            stream.write(dumps(result_line(out)) + "\n")
                            stream.flush()
                            try:
                                ended = done.get_nowait()
                            except queue.Empty:
                                ended = None
                        if watch is not None and watch.poll(0):
                            raise BrokenPipeError("the reader of the result lines went away")
                        counts: dict[str, int] = {}
                        for e in execs:
                            counts[e.status.value] = counts.get(e.status.value, 0) + 1
                        elapsed = (time.monotonic_ns() - t0) / 1e9
                        progress.update(
                            task, completed=len(outcomes),
                            counts=" ".join(f"[{_STATUS_STYLE[k]}]{k} {v}[/]" for k, v in counts.items()),
                            rate=f"{len(outcomes) / elapsed:.1f}/s" if elapsed > 0 else "",
                        )  # fmt: skip
            except BrokenPipeError:
                # Nobody reads the results any more: stop the rest now (their SIGTERM stage lets them
                # checkpoint) instead of running the whole batch for nothing, and leave quietly.
                reader_gone = True
                _quiet_stdout()
                pool.cancel_all(InterruptMode.IMMEDIATE, InterruptReason.SHUTDOWN,
                                "the reader of pool run's results went away (broken pipe)",
                                source="system")  # fmt: skip
    finally:
        if ladder is not None:
            ladder.__exit__(None, None, None)
        if out_file is not None:
            out_file.close()
    if reader_gone:
        return EXIT_BROKEN_PIPE
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
        print(dumps(statuses, indent=2))
        return EXIT_OK
    console = _console()
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
            console.print(f"({plural(len(rows) - len(shown), 'more ended execution')}; --json lists all)")
    return EXIT_OK


def _as_tree(rows: list[dict]) -> list[tuple[int, dict]]:
    """Rows in tree order (each child under its parent), with their depth; a row whose
    parent is not shown is a root."""
    by_id = {r["id"]: r for r in rows}
    kids: dict[str, list[dict]] = {}
    roots = []
    for r in rows:
        parent = r.get("parent")
        if parent is not None and parent in by_id and parent != r["id"]:
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
        return {"reason": InterruptReason(text.strip().lower().replace("-", "_")).value}  # any case
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
            print(f"stopping {plural(n, 'execution')} of group {args.group!r} in {pool.name} ({args.mode})")
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


class _ServeSignals:
    """How 'pool serve' ends. SIGTERM and SIGHUP drain the pool: it takes no new work and exits
    once what is queued or running has finished. Each Ctrl+C (SIGINT) steps up the ladder of
    'pool run' (and of Pool.handle_signals): stop everything gracefully, then immediately, then
    kill; and drains too. The signals are blocked in every thread and taken here with sigwait,
    on a thread of their own: a Python handler could miss one the kernel hands to another
    thread, and the main thread is busy waiting for the drain."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    _LADDER = (InterruptMode.GRACEFUL, InterruptMode.IMMEDIATE, InterruptMode.KILL)

    def __init__(self, pool: Pool, console: Console):
        self.pool, self.console = pool, console
        self.drain = threading.Event()  # set by the first signal: the main thread then drains the pool
        self.interrupts = 0  # Ctrl+Cs so far; owned by the signal thread
        self._announce = _announcer(console)
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="pool-serve-signals", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """End the signal thread (a SIGHUP sent to it alone wakes its sigwait)."""
        if self._thread.ident is None:
            return  # never started
        self._closing = True
        try:
            signal.pthread_kill(self._thread.ident, signal.SIGHUP)
        except ProcessLookupError:
            pass  # it has already ended
        self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        while True:
            signum = signal.sigwait(self.SIGNALS)
            if self._closing:
                return
            try:
                self._on(signum)
            except Exception:  # noqa: S110 - e.g. stderr closed: the stop and the drain must still happen
                pass
            finally:
                self.drain.set()

    def _on(self, signum: int) -> None:
        if signum == signal.SIGINT:
            mode = self._LADDER[min(self.interrupts, len(self._LADDER) - 1)]
            self.interrupts += 1
            self._announce("SIGINT", mode)
            self.pool.cancel_all(mode, InterruptReason.SHUTDOWN, f"pool serve: Ctrl+C ({mode.value})", source="signal")
            self.pool.shutdown(wait=False)  # and no new work (the main thread waits for the end)
        elif not self.drain.is_set():
            self.pool.shutdown(wait=False)  # no new work from here on, before we say so
            self.console.print(f"{signal.Signals(signum).name}: draining: no new work; what is queued or running "
                               "finishes, then the pool exits (Ctrl+C stops it)")  # fmt: skip
        else:
            self.console.print(f"{signal.Signals(signum).name}: already draining; Ctrl+C stops what still runs")


def cmd_serve(args) -> int:
    _check_name_fits(args.name)
    console = _err_console()
    escalation = Escalation(grace=args.grace, term_grace=args.term_grace)
    printer = EventPrinter(console, time.monotonic_ns()) if args.events else None
    # Block the signals before the pool starts its threads (they inherit the mask): only the
    # signal thread of _ServeSignals takes them.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _ServeSignals.SIGNALS)
    try:
        pool = Pool(workers=args.workers, escalation=escalation, name=args.name, on_event=printer,
                    checkpoint_dir=args.checkpoint_dir, log_dir=args.log_dir, preload=_preload(args))  # fmt: skip
        signals = _ServeSignals(pool, console)
        try:
            console.print(f"serving pool {args.name!r} (supervisor pid {pool.supervisor_pid}, "
                          f"{plural(args.workers, 'worker')}) on {pool.socket_path}; SIGTERM or SIGHUP drains it, "
                          "Ctrl+C stops everything")  # fmt: skip
            signals.start()
            signals.drain.wait()
        finally:
            pool.shutdown(wait=True)  # (no new work, if no signal said so yet); returns once every execution ended
            signals.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    console.print(f"pool {args.name!r} drained; exiting")
    return EXIT_INTERRUPTED if signals.interrupts else EXIT_OK  # a drain is the normal end of 'pool serve'


def _preload(args) -> list[str]:
    """--preload's module names (repeated, or comma-separated)."""
    return [name.strip() for arg in args.preload for name in arg.split(",") if name.strip()]


def _read_input(arg: str):
    """--input's value: inline JSON, @FILE (JSON read from FILE) or - (JSON read from stdin)."""
    if arg == "-":
        text, what = sys.stdin.read(), "--input - (stdin)"
    elif arg.startswith("@"):
        path = arg[1:]
        what = f"--input file {path!r}"
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise CliError(f"{what} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from None
    else:
        text, what = arg, "--input"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if what != "--input" else f"column {exc.colno}"
        raise CliError(f"{what} is not valid JSON ({exc.msg} at {where})") from None


def cmd_submit(args) -> int:
    value = _read_input(args.input)
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    with _connect(args.name) as pool:
        try:
            ex = pool.submit(args.agent, value, id=args.id, timeout=args.timeout, budget=args.budget,
                             stall_timeout=args.stall_timeout, group=args.group, priority=args.priority,
                             preemptible=args.preemptible, resume=args.resume)  # fmt: skip
        except (ValueError, TypeError, PoolError) as exc:
            raise CliError(str(exc)) from None
        print(ex.id)
        pool.shutdown(wait=False)  # the execution goes on in the pool
    return EXIT_OK


def cmd_wait(args) -> int:
    pool = _pool_with(args.id, args.name)
    with pool:
        if args.name is not None and not pool.has(args.id):  # (_pool_with checked it otherwise)
            raise CliError(f"pool {pool.name} has no execution {args.id!r}; 'pool status' lists them")
        print(f"waiting for execution {args.id!r} in pool {pool.name}", file=sys.stderr, flush=True)
        try:
            out = pool.outcome(args.id, args.timeout)
        except KeyError as exc:
            raise CliError(_key_error_text(exc)) from None
        except TimeoutError:
            print(f"execution {args.id!r} in pool {pool.name} has not ended after --timeout {args.timeout:g} s; "
                  f"it goes on (exit code {EXIT_TIMEOUT})", file=sys.stderr)  # fmt: skip
            return EXIT_TIMEOUT
    print(dumps(result_line(out)))
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


def _damage(path) -> str | None:
    """What is wrong with the checkpoint file at ``path`` (its envelope: header, length, CRC32),
    or None if it is complete. The payload is not decoded."""
    from .shared._checkpoint import CheckpointError, check_envelope

    try:
        check_envelope(Path(path))
    except CheckpointError as exc:
        return str(exc)
    return None


def cmd_checkpoints(args) -> int:
    from .shared._checkpoint import CheckpointError, CheckpointStore, list_ids, read_file

    root = Path(args.dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise CliError(f"checkpoint directory {str(root)!r} {what}; pass the --checkpoint-dir the pool used as "
                       "--dir (the default, .pool/checkpoints, is relative to where the pool ran)")  # fmt: skip
    if args.action == "list":
        ids = [args.id] if args.id else list_ids(root)
        rows: list[dict[str, Any]] = []
        for i in ids:
            infos = CheckpointStore(root, i).list()
            for info in infos:
                damage = _damage(info.path)
                row = {"id": i, "seq": info.seq, "size": info.size, "time": info.time, "path": info.path,
                       "damaged": damage}  # fmt: skip
                rows.append(row)
                if not args.id:  # the newest of each id ('list ID' shows all of one), and its newest good one
                    if damage:
                        good = next((x.seq for x in infos if x.seq < info.seq and not _damage(x.path)), None)
                        row["newest_good_seq"] = good
                    break
        if args.id and not rows:
            raise CliError(f"execution {args.id!r} has no checkpoints in {root}")
        if args.json:
            print(dumps(rows, indent=2))
            return EXIT_OK
        if not rows:
            print(f"no checkpoints in {root}")
            return EXIT_OK
        t = Table("execution", "seq", "size", "saved", "check", "path", title=f"checkpoints in {root}",
                  title_justify="left")  # fmt: skip
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"]))
            check = "ok"
            if r["damaged"]:
                check = "[red]DAMAGED[/]"
                if "newest_good_seq" in r:
                    good = r["newest_good_seq"]
                    check += f" (newest good: --seq {good})" if good is not None else " (none good)"
            t.add_row(r["id"], str(r["seq"]), f"{r['size']} B", when, check, r["path"])
        c = _console()
        c.print(t)
        for r in rows:
            if r["damaged"]:
                c.print(f"damaged: {r['damaged']}", markup=False)
        return EXIT_OK
    store = CheckpointStore(root, args.id)
    seqs = store.sequence_numbers()
    if not seqs:
        raise CliError(f"execution {args.id!r} has no checkpoints in {root}")
    seq = args.seq if args.seq is not None else seqs[0]
    if seq not in seqs:
        raise CliError(f"execution {args.id!r} has no checkpoint {seq}; it has {', '.join(map(str, seqs))}")
    damage = _damage(store.path(seq))
    if damage:
        good = next((s for s in seqs if s < seq and not _damage(store.path(s))), None)
        which = "the newest checkpoint" if args.seq is None else "checkpoint"
        again = f"pool checkpoints show {shlex.quote(args.id)} --seq {good}" + (
            f" --dir {shlex.quote(args.dir)}" if args.dir != _CHECKPOINT_DIR else "")  # fmt: skip
        hint = f"the previous good one is --seq {good}: {again}" if good is not None else "no older one is intact"
        raise CliError(f"{which} {seq} of execution {args.id!r} is damaged ({damage}); {hint}")
    try:
        seq, exec_id, wall, state = read_file(store.path(seq))
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(dumps({"id": exec_id, "seq": seq, "time": wall, "state": state}, indent=2, default=_json_default))
        return EXIT_OK
    from rich.pretty import Pretty

    c = _console()
    c.print(f"[bold]{exec_id}[/] checkpoint {seq}, saved {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(wall))}")
    c.print(Pretty(state), width=None if c.is_terminal else 80)  # laid out for 80 columns, as before, off a terminal
    return EXIT_OK


def _json_default(obj):
    """Checkpoint types JSON lacks: bytes as text if they are, else hex; the rest as str."""
    if isinstance(obj, (set, frozenset, tuple)):
        return _finite(list(obj))
    if isinstance(obj, (bytes, bytearray)):
        try:
            return obj.decode()
        except UnicodeDecodeError:
            return obj.hex()
    if hasattr(obj, "model_dump"):
        return _finite(obj.model_dump(mode="json"))
    return str(obj)


def cmd_demo(args) -> int:
    from . import _demo

    console = _err_console()
    jobs = _demo.batch()
    console.print(f"[bold]pool demo[/]: {plural(len(jobs), 'simulated agent')} on {plural(args.workers, 'worker')} "
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


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, for options that take a value and have one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


_EPILOG = (f"Exit codes: {EXIT_OK} every execution completed; {EXIT_FAILED} some failed, crashed or were interrupted "
           f"(wait: it did not complete); {EXIT_USAGE} bad input, or no such pool or execution (one line on stderr; "
           f"--debug, before or after the command, shows the traceback); {EXIT_TIMEOUT} wait --timeout expired; "
           f"{EXIT_INTERRUPTED} after Ctrl+C; {EXIT_BROKEN_PIPE} the reader of the results went away (pool run ... | "
           f"head); {EXIT_TERMINATED} pool run drained after SIGTERM. JSON output is strict: NaN and +/-Infinity are "
           "written as null.")  # fmt: skip


def _reason_names() -> str:
    return ", ".join(r.value for r in InterruptReason)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pool", description="Run many AI agents at once and stop any one of them on demand.",
                epilog=_EPILOG, formatter_class=_HelpFormatter)  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    from . import __version__

    p.add_argument("--version", action="version", version=f"interrupt-pool {__version__}",
                   help="print the version and exit")  # fmt: skip
    # --debug after the command too; SUPPRESS: absent there unless given, so 'pool --debug CMD' stays on.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
                           help="pool COMMAND --help shows its options")  # fmt: skip

    def command(parent, name: str, text: str, **kw) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=text, description=text, parents=[debug], formatter_class=_HelpFormatter,
                                 **kw)  # fmt: skip

    def escalation_args(sp):
        sp.add_argument("--grace", type=_seconds("--grace"), default=5.0, metavar="S",
                        help="seconds from the stop flag to SIGTERM")  # fmt: skip
        sp.add_argument("--term-grace", type=_seconds("--term-grace"), default=2.0, metavar="S",
                        help="seconds from SIGTERM to SIGKILL")  # fmt: skip
        sp.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes; the default is the number of CPUs here")  # fmt: skip
        sp.add_argument("--preload", action="append", default=[], metavar="MODULE",
                        help="import MODULE once, before the workers are forked, so no worker imports it again "
                             "(repeat it, or separate names with commas; e.g. interrupt_pool.langgraph)")  # fmt: skip

    agent_help = "the agent: function FUNC(ctx, input) of module MODULE (the current directory is on the path)"

    run = command(sub, "run", "run a batch: one execution per JSON line of --inputs")
    run.add_argument("agent", metavar="MODULE:FUNC", help=agent_help)
    run.add_argument("--inputs", required=True, metavar="FILE",
                     help='JSON Lines, one input per line, its execution id from an "id" field (a string or a '
                          "number), else the line number; - reads stdin")  # fmt: skip
    run.add_argument("--timeout", type=_seconds("--timeout"), default=None, metavar="S",
                     help="seconds each execution may run (default: no limit)")  # fmt: skip
    run.add_argument("--out", metavar="FILE", help="write result lines (JSON Lines) here (default: stdout)")
    run.add_argument("--name", help="pool name for 'pool status/cancel' (default: the function's name, made valid "
                                    "and short enough for the socket path)")  # fmt: skip
    run.add_argument("--events", action="store_true", help="print every event as it happens")
    run.add_argument("--no-progress", action="store_true", help="no live progress bar")
    run.add_argument("--resume", action="store_true",
                     help="skip what --out records as completed; resume the rest from their checkpoints")  # fmt: skip
    run.add_argument("--checkpoint-dir", default=_CHECKPOINT_DIR, metavar="DIR", help="where checkpoints live")
    run.add_argument("--log-dir", default=".pool/logs", metavar="DIR", help="where each execution's output is logged")
    escalation_args(run)
    run.set_defaults(func=cmd_run)

    st = command(sub, "status", "show running pools, their workers and executions")
    st.add_argument("--name", help="only this pool (default: every running pool)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    ca = command(sub, "cancel", "stop one execution (or what a worker runs, or a group)")
    ca.add_argument("id", nargs="?", metavar="ID", help="the execution to stop (with its descendants)")
    ca.add_argument("--worker", type=int, metavar="W", help="stop whatever worker W runs")
    ca.add_argument("--group", metavar="NAME", help="stop every queued and running execution of group NAME")
    ca.add_argument("--mode", type=str.lower, choices=[m.value for m in InterruptMode], default="graceful",
                    help="how hard to stop (any case)")  # fmt: skip
    ca.add_argument("--reason", metavar="TEXT",
                    help=f"a reason name ({_reason_names()}; any case) or free text "
                         "(default: user_cancelled)")  # fmt: skip
    ca.add_argument("--name", help="the pool; needed only when ambiguous")
    ca.set_defaults(func=cmd_cancel)

    gr = command(sub, "group", "create or show a group of executions in a running pool (--budget sets it)")
    gr.add_argument("group", metavar="GROUP", help="the group's name")
    gr.add_argument("--budget", type=float, default=None,
                    help="what the group's executions may spend together (default: leave it as it is)")  # fmt: skip
    gr.add_argument("--name", help="the pool; needed only when several run")
    gr.set_defaults(func=cmd_group)

    se = command(sub, "serve", "a long-lived pool that takes work from 'pool submit'; SIGTERM or SIGHUP drains it "
                               "(no new work, what runs finishes, exit 0), Ctrl+C stops everything (again: "
                               "immediately, a third time: kill; exit 130)")  # fmt: skip
    se.add_argument("--name", required=True, help="the pool's name, for submit, wait, status and cancel")
    se.add_argument("--events", action="store_true", help="print every event as it happens")
    se.add_argument("--checkpoint-dir", default=_CHECKPOINT_DIR, metavar="DIR", help="where checkpoints live")
    se.add_argument("--log-dir", default=".pool/logs", metavar="DIR", help="where each execution's output is logged")
    escalation_args(se)
    se.set_defaults(func=cmd_serve)

    su = command(sub, "submit", "submit one execution to a 'pool serve' pool; prints its id")
    su.add_argument("name", metavar="NAME", help="the pool")
    su.add_argument("agent", metavar="MODULE:FUNC", help=agent_help)
    su.add_argument("--input", required=True, metavar="JSON",
                    help="the input: JSON text, @FILE to read it from FILE, or - to read it from stdin")  # fmt: skip
    su.add_argument("--id", help="the execution id (default: a new unique one)")
    su.add_argument("--timeout", type=_seconds("--timeout"), default=None, metavar="S",
                    help="seconds it may run (default: no limit)")  # fmt: skip
    su.add_argument("--budget", type=float, default=None,
                    help="what it (and its children) may spend (default: no budget)")  # fmt: skip
    su.add_argument("--stall-timeout", type=_seconds("--stall-timeout"), default=None, metavar="S",
                    help="seconds without progress before it is stopped as stalled (default: never)")  # fmt: skip
    su.add_argument("--group", help="a group made with 'pool group' (default: none)")
    su.add_argument("--priority", type=int, default=0, help="higher runs first")
    su.add_argument("--preemptible", action="store_true", help="higher-priority work may preempt it (it resumes)")
    su.add_argument("--resume", action="store_true",
                    help="start from the newest checkpoint an execution of this --id saved "
                         "(ctx.restore() returns it)")  # fmt: skip
    su.set_defaults(func=cmd_submit)

    wa = command(sub, "wait", "block until an execution ends; print its result line")
    wa.add_argument("id", metavar="ID", help="the execution")
    wa.add_argument("--name", help="the pool; needed only when ambiguous")
    wa.add_argument("--timeout", type=_seconds("--timeout"), default=None, metavar="S",
                    help=f"give up after S seconds with exit code {EXIT_TIMEOUT} (the execution goes on) "
                         "(default: wait as long as it takes)")  # fmt: skip
    wa.set_defaults(func=cmd_wait)

    lg = command(sub, "logs", "what an execution printed (stdout and stderr, its tools' included)")
    lg.add_argument("id", metavar="ID", help="the execution")
    lg.add_argument("--name", help="the pool; needed only when ambiguous")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the execution ends")
    lg.set_defaults(func=cmd_logs)

    ck = command(sub, "checkpoints", "list or show saved checkpoints")
    ck_sub = ck.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser,
                               help="list or show")  # fmt: skip
    ck_list = command(ck_sub, "list", "every execution with checkpoints (or every checkpoint of ID); damaged files "
                                      "are marked")  # fmt: skip
    ck_list.add_argument("id", nargs="?", metavar="ID", help="list every checkpoint of this execution")
    ck_show = command(ck_sub, "show", "the saved state of ID's newest checkpoint (or --seq N)")
    ck_show.add_argument("id", metavar="ID", help="the execution")
    ck_show.add_argument("--seq", type=int, help="this checkpoint (default: the newest)")
    for sp in (ck_list, ck_show):
        sp.add_argument("--dir", default=_CHECKPOINT_DIR, help="the checkpoint directory")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
    ck.set_defaults(func=cmd_checkpoints)

    demo = command(sub, "demo", "the built-in batch of simulated agents, stopped through every stage")
    demo.add_argument("--workers", type=_positive_int, default=6, metavar="N", help="worker processes")
    demo.set_defaults(func=cmd_demo)
    return p


def _one_line(exc: BaseException) -> str:
    """An error as one line: the message of the errors we raise on purpose; the type too for others."""
    if isinstance(exc, KeyError):
        text = _key_error_text(exc)
    elif isinstance(exc, (CliError, _naming.NameError_, PoolError, ValueError, TypeError)):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}" + (f": {exc.filename!r}" if exc.filename else "")
    else:
        text = f"{type(exc).__name__}: {exc} (--debug shows the traceback)"
    return re.sub(r"\s*\n\s*", "; ", text.strip()) or type(exc).__name__


_GONE = {"bench": "'pool bench' is gone: the benchmarks live in the interrupt-pool repository; run "
                  "'python -m benchmarks' from the root of a checkout"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like 'python -m': agents in the current directory import
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # pool's own options take no value
    if command in _GONE:
        print(f"pool: error: {_GONE[command]}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # our reader went away ('pool status | head -1'): leave quietly
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if args.debug:
            traceback.print_exc()  # the whole story, still exit code 2
            return EXIT_USAGE
        try:
            print(f"pool: error: {_one_line(exc)}", file=sys.stderr)
        except OSError:
            pass  # stderr is gone too: the exit code still says it
        return EXIT_USAGE


if __name__ == "__main__":  # python -m interrupt_pool._cli
    sys.exit(main())
