"""Issue 10, parts 5-8: before/after_interrupt hooks, handle_signals, external interrupt
sources (checkers) and priority with preemption, with a real supervisor, real workers,
real signals and real subprocesses (the CLI, a program using handle_signals).

Agents (tests/hook_agents.py) signal "I run" by writing a file and wait for the test by
polling a "go" file, so what each test asserts does not depend on how fast CI is; the
few timed waits are upper bounds or "nothing happens within" windows, each explained.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from interrupt_pool import (
    Escalation,
    EventKind,
    ExecutionStatus,
    InterruptMode,
    InterruptReason,
    InterruptSource,
    Pool,
    Stage,
    StopRequest,
)
from tests import hook_agents
from tests.procs import wait_until
from tests.test_core import wait_for_file

ROOT = Path(__file__).resolve().parent.parent

# Short graces keep stops that go through every stage fast.
FAST = Escalation(grace=0.3, term_grace=0.5)
# Long graces: a stop that reaches SIGTERM or SIGKILL within a test got there by a
# later, stronger request (or kill mode), never by a grace running out.
SLOW = Escalation(grace=30.0, term_grace=30.0)
# How long we wait for something that should take milliseconds: CI has 2 noisy cores.
WAIT = 10.0


def make_pool(tmp_path: Path, **kw) -> Pool:
    """A pool whose checkpoints and logs stay under the test's tmp_path."""
    kw.setdefault("workers", 2)
    kw.setdefault("escalation", FAST)
    return Pool(checkpoint_dir=tmp_path / "ckpt", log_dir=tmp_path / "logs", **kw)


def job(tmp_path: Path, **p) -> dict:
    """An agent input: started markers go to tmp_path/started, 'go' is tmp_path/go unless given."""
    d = tmp_path / "started"
    d.mkdir(exist_ok=True)
    p.setdefault("dir", str(d))
    p.setdefault("go", str(tmp_path / "go"))
    return p


def started(tmp_path: Path, id: str) -> int:
    """Wait for execution ``id`` to say it runs; its worker's pid."""
    return int(wait_for_file(tmp_path / "started" / id, timeout=WAIT))


class Events:
    """Everything an on_event listener receives, searchable with a deadline."""

    def __init__(self):
        self.items: list = []
        self._cond = threading.Condition()

    def __call__(self, ev) -> None:
        with self._cond:
            self.items.append(ev)
            self._cond.notify_all()

    def of(self, kind, id=None) -> list:
        with self._cond:
            return [e for e in self.items if e.kind is kind and (id is None or e.execution_id == id)]

    def wait(self, kind, id=None, timeout: float = WAIT):
        with self._cond:
            if not self._cond.wait_for(lambda: self.of(kind, id), timeout):
                raise AssertionError(f"no {kind} event for {id!r} within {timeout} s; got "
                                     f"{[(e.kind.value, e.execution_id) for e in self.items]}")  # fmt: skip
            return self.of(kind, id)[0]


def drain_in_background(pool: Pool) -> Events:
    """Iterate over pool.events() on a thread (it ends when the pool shuts down)."""
    got = Events()
    it = pool.events()
    threading.Thread(target=lambda: [got(e) for e in it], daemon=True).start()
    return got


@pytest.fixture
def sock_env(tmp_path, monkeypatch):
    """Named pools of this test live in a socket directory of their own; the env for the CLI."""
    monkeypatch.setenv("POOL_SOCKET_DIR", str(tmp_path / "sockets"))
    env = dict(os.environ, POOL_SOCKET_DIR=str(tmp_path / "sockets"), PYTHONPATH=str(ROOT))
    env.pop("XDG_RUNTIME_DIR", None)
    return env


# == 5. hooks ==============================================================================================


def test_before_interrupt_returning_false_vetoes_the_cancel_and_the_execution_completes(tmp_path):
    """before_interrupt returning False: cancel() is False, the execution completes, a vetoed event arrives."""
    asked: list[StopRequest] = []

    def before(request):
        asked.append(request)
        return False

    listener = Events()
    with make_pool(tmp_path, before_interrupt=before, on_event=listener) as pool:
        stream = drain_in_background(pool)
        ex = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="v1")
        started(tmp_path, "v1")
        assert pool.cancel("v1", message="please stop") is False
        assert ex.cancel(InterruptMode.IMMEDIATE) is False  # immediate may be vetoed too
        listener.wait(EventKind.VETOED, "v1")
        stream.wait(EventKind.VETOED, "v1")  # also through pool.events()
        assert ex.status is ExecutionStatus.RUNNING and not ex.done()
        (tmp_path / "go").touch()
        out = ex.outcome(timeout=WAIT)
    assert out.status is ExecutionStatus.COMPLETED and out.value == "done" and out.interrupt is None
    assert [(r.execution_id, r.mode, r.reason, r.source, r.message) for r in asked] == [
        ("v1", InterruptMode.GRACEFUL, InterruptReason.USER_CANCELLED, InterruptSource.USER, "please stop"),
        ("v1", InterruptMode.IMMEDIATE, InterruptReason.USER_CANCELLED, InterruptSource.USER, None),
    ]
    assert all(isinstance(r, StopRequest) for r in asked)
    vetoed = listener.of(EventKind.VETOED, "v1")
    assert len(vetoed) == 2 and vetoed[0].message == "please stop"
    assert not listener.of(EventKind.REQUESTED, "v1")  # no stop was ever made


def test_before_interrupt_returning_true_or_none_lets_the_stop_go_ahead(tmp_path):
    """before_interrupt returning True or None (no opinion) allows the stop: cancel() is True, it is interrupted."""
    answers = {"yes": True, "none": None}
    asked = []

    def before(request):
        asked.append(request.execution_id)
        return answers[request.execution_id]

    listener = Events()
    with make_pool(tmp_path, before_interrupt=before, on_event=listener) as pool:
        runs = [pool.submit(hook_agents.wait_for_go, job(tmp_path), id=i) for i in answers]
        for i in answers:
            started(tmp_path, i)
        assert pool.cancel("yes") is True
        assert pool.cancel("none", InterruptMode.IMMEDIATE) is True
        outs = [r.outcome(timeout=WAIT) for r in runs]
    assert sorted(asked) == ["none", "yes"]
    for out in outs:
        assert out.status is ExecutionStatus.INTERRUPTED
        assert out.interrupt.reason is InterruptReason.USER_CANCELLED and out.interrupt.source is InterruptSource.USER
    assert outs[1].interrupt.mode is InterruptMode.IMMEDIATE
    assert not listener.of(EventKind.VETOED)


def test_before_interrupt_is_asked_for_a_connected_clients_cancel_and_the_clis(tmp_path, sock_env):
    """The owner's before_interrupt decides stops asked by a Pool.connect client and by `pool cancel` (nonzero exit on a veto)."""
    allow = {"now": False}
    asked = []

    def before(request):
        asked.append((request.execution_id, request.mode, request.reason, request.source, request.message))
        return allow["now"]

    listener = Events()
    with make_pool(tmp_path, name="hooked", before_interrupt=before, on_event=listener) as owner:
        a = owner.submit(hook_agents.wait_for_go, job(tmp_path), id="a")
        b = owner.submit(hook_agents.wait_for_go, job(tmp_path), id="b")
        started(tmp_path, "a"), started(tmp_path, "b")
        with Pool.connect("hooked") as client:
            assert client.cancel("a") is False  # vetoed in the owner process
            cli = subprocess.run([sys.executable, "-m", "interrupt_pool", "cancel", "b", "--name", "hooked",
                                  "--reason", "from the terminal"], cwd=ROOT, env=sock_env, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
            assert cli.returncode != 0, (cli.stdout, cli.stderr)
            assert a.status is ExecutionStatus.RUNNING and b.status is ExecutionStatus.RUNNING
            assert len(listener.of(EventKind.VETOED)) == 2
            allow["now"] = True
            cli = subprocess.run([sys.executable, "-m", "interrupt_pool", "cancel", "b", "--name", "hooked"], cwd=ROOT,
                                 env=sock_env, capture_output=True, text=True, timeout=60)  # fmt: skip
            assert cli.returncode == 0, (cli.stdout, cli.stderr)
            assert client.cancel("a") is True
            client.shutdown()
        outs = a.outcome(timeout=WAIT), b.outcome(timeout=WAIT)
    assert [o.status for o in outs] == [ExecutionStatus.INTERRUPTED] * 2
    assert asked == [
        ("a", InterruptMode.GRACEFUL, InterruptReason.USER_CANCELLED, InterruptSource.USER, None),
        ("b", InterruptMode.GRACEFUL, InterruptReason.CUSTOM, InterruptSource.USER, "from the terminal"),
        ("b", InterruptMode.GRACEFUL, InterruptReason.USER_CANCELLED, InterruptSource.USER, None),
        ("a", InterruptMode.GRACEFUL, InterruptReason.USER_CANCELLED, InterruptSource.USER, None),
    ]


def test_before_interrupt_is_never_asked_for_kill_timeout_budget_or_shutdown(tmp_path):
    """Kill-mode cancels, timeouts, budget stops and shutdown stops go ahead without asking before_interrupt (which vetoes all)."""
    asked = []

    def before(request):
        asked.append(request)
        return False  # were it asked, none of these stops would happen

    with make_pool(tmp_path, before_interrupt=before, escalation=Escalation(grace=0.3, term_grace=0.3)) as pool:
        killed = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="killed")
        started(tmp_path, "killed")
        assert pool.cancel("killed", InterruptMode.KILL) is True
        out = killed.outcome(timeout=WAIT)
        assert out.interrupt.mode is InterruptMode.KILL and out.interrupt.stage is Stage.SIGKILL

        out = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="timed", timeout=0.5).outcome(timeout=WAIT)
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.reason is InterruptReason.TIMEOUT

        # A group budget used up by one member: the supervisor stops the other member.
        pool.group("g", budget=1.0)
        bystander = pool.submit(hook_agents.spend_then_wait, job(tmp_path, amount=0), id="bystander", group="g")
        started(tmp_path, "bystander")
        spender = pool.submit(hook_agents.spend_then_wait, job(tmp_path, amount=1.5), id="spender", group="g")
        for out in (bystander.outcome(timeout=WAIT), spender.outcome(timeout=WAIT)):
            assert out.status is ExecutionStatus.INTERRUPTED, out
            assert out.interrupt.reason is InterruptReason.BUDGET_EXCEEDED

        last = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="last")
        started(tmp_path, "last")
        pool.shutdown(cancel=True)
        out = last.outcome(timeout=WAIT)
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.reason is InterruptReason.SHUTDOWN
    assert asked == []


def test_a_slow_before_interrupt_runs_off_the_reader_thread_and_blocks_nothing_else(tmp_path):
    """A before_interrupt that takes its time runs on a pool-veto thread; meanwhile results arrive and kills go through."""
    entered, release = threading.Event(), threading.Event()
    where = []

    def before(request):
        where.append(threading.current_thread())
        entered.set()
        release.wait(8.0)  # under the supervisor's 10 s veto wait, so the veto counts
        return False

    with make_pool(tmp_path, before_interrupt=before, workers=2) as pool:
        slow = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="slow")
        started(tmp_path, "slow")
        answer = []
        asker = threading.Thread(target=lambda: answer.append(pool.cancel("slow")))
        asker.start()
        assert entered.wait(WAIT)
        # While the hook holds: other executions start and their results come back...
        for i in range(3):
            assert pool.submit(hook_agents.record_start, job(tmp_path, go=None), id=f"q{i}").result(timeout=5) == f"q{i}"
        # ... and a kill (never asked about) ends an execution at once.
        other = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="other")
        started(tmp_path, "other")
        assert pool.cancel("other", InterruptMode.KILL) is True
        assert other.outcome(timeout=5).interrupt.stage is Stage.SIGKILL
        assert answer == [] and asker.is_alive()  # the vetoable cancel still waits for the hook
        release.set()
        asker.join(WAIT)
        assert answer == [False]
        (tmp_path / "go").touch()
        assert slow.result(timeout=WAIT) == "done"
    thread = where[0]
    assert thread is not threading.main_thread() and thread is not asker
    assert thread.name.startswith("pool-veto") and not thread.name.startswith("pool-reader")


def test_a_before_interrupt_that_raises_lets_the_stop_proceed_and_reports_a_source_error(tmp_path):
    """A before_interrupt that raises: the stop goes ahead (cancel True, interrupted) and a source_error event names it."""

    def before(request):
        raise KeyError("redis is down")

    listener = Events()
    with make_pool(tmp_path, before_interrupt=before, on_event=listener) as pool:
        ex = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="x")
        started(tmp_path, "x")
        assert pool.cancel("x") is True
        out = ex.outcome(timeout=WAIT)
        err = listener.wait(EventKind.SOURCE_ERROR, "x")
        assert pool.submit(hook_agents.record_start, job(tmp_path, go=None), id="after").result(timeout=WAIT) == "after"
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.reason is InterruptReason.USER_CANCELLED
    assert "before_interrupt" in err.message and "redis is down" in err.message
    assert not listener.of(EventKind.VETOED)


def test_before_interrupt_decides_cancel_worker_cancel_all_and_a_checkers_stops(tmp_path):
    """cancel_worker, cancel_all (user) and an interrupt source's stops (programmatic) are asked too; vetoed, all go on."""
    asked = []

    def before(request):
        asked.append((request.execution_id, request.source))
        return False

    listener = Events()
    with make_pool(tmp_path, before_interrupt=before, on_event=listener) as pool:
        runs = [pool.submit(hook_agents.wait_for_go, job(tmp_path), id=i) for i in ("p", "q")]
        started(tmp_path, "p"), started(tmp_path, "q")
        assert pool.cancel_worker(runs[0].worker_id) is False
        pool.cancel_all()
        wait_until(lambda: len(asked) >= 3, what="three questions")
        source = pool.add_interrupt_source(lambda: ["q"], interval=0.05)
        wait_until(lambda: ("q", InterruptSource.PROGRAMMATIC) in asked, what="the checker's stop asked about")
        source.remove()
        assert [r.status for r in runs] == [ExecutionStatus.RUNNING] * 2
        (tmp_path / "go").touch()
        assert [r.result(timeout=WAIT) for r in runs] == ["done", "done"]
    assert asked[0] == ("p", InterruptSource.USER)
    assert sorted(asked[1:3]) == [("p", InterruptSource.USER), ("q", InterruptSource.USER)]
    assert len(listener.of(EventKind.VETOED)) == len(asked) and not listener.of(EventKind.REQUESTED)


def test_cancel_group_does_not_count_executions_whose_stop_was_vetoed(tmp_path):
    """cancel_group returns how many executions it stops: with every stop vetoed, 0 (as cancel() returns False)."""
    with make_pool(tmp_path, workers=2, before_interrupt=lambda request: False) as pool:
        pool.group("g")
        runs = [pool.submit(hook_agents.wait_for_go, job(tmp_path), id=i, group="g") for i in ("g1", "g2")]
        started(tmp_path, "g1"), started(tmp_path, "g2")
        try:
            n = pool.cancel_group("g")
            assert [r.status for r in runs] == [ExecutionStatus.RUNNING] * 2  # vetoed: they go on
        finally:
            (tmp_path / "go").touch()
        assert [r.result(timeout=WAIT) for r in runs] == ["done", "done"]
    assert n == 0, f"cancel_group said it stops {n} executions; the hook vetoed every stop and both completed"


def test_a_before_interrupt_may_stop_another_execution_instead(tmp_path):
    """A before_interrupt that vetoes one stop and cancels another execution itself is answered at once (no 10 s stall)."""
    inner = []
    pool = None

    def before(request):
        if request.execution_id == "parent":
            inner.append(pool.cancel("tool"))  # stop the tool run instead of the parent
            return False
        return True

    with make_pool(tmp_path, before_interrupt=before) as pool:
        parent = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="parent")
        tool = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="tool")
        started(tmp_path, "parent"), started(tmp_path, "tool")
        answer = []
        asker = threading.Thread(target=lambda: answer.append(pool.cancel("parent")))
        t0 = time.monotonic()
        asker.start()
        try:
            asker.join(5.0)  # milliseconds when it works; 5 s is generous for CI, under the 10 s veto wait
            took = time.monotonic() - t0
            assert answer == [False] and inner == [True], f"after {took:.1f} s: cancel -> {answer}, inner cancel -> {inner}"
            assert tool.outcome(timeout=WAIT).status is ExecutionStatus.INTERRUPTED
            assert parent.status is ExecutionStatus.RUNNING
        finally:
            (tmp_path / "go").touch()
            asker.join(WAIT)
        assert parent.result(timeout=WAIT) == "done"


def test_after_interrupt_runs_once_per_interrupted_execution_with_its_checkpoint(tmp_path):
    """after_interrupt runs exactly once for each interrupted execution (cancel, queued cancel, timeout), never for completed ones; checkpoint set when it saved ctx.state."""
    seen = []
    with make_pool(tmp_path, after_interrupt=seen.append, workers=2) as pool:
        saver = pool.submit(hook_agents.wait_for_go, job(tmp_path, state={"step": 7}), id="saver")
        plain = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="plain")
        started(tmp_path, "saver"), started(tmp_path, "plain")
        pool.cancel("saver")
        pool.cancel("plain", InterruptMode.IMMEDIATE)
        saver.outcome(timeout=WAIT), plain.outcome(timeout=WAIT)
        blockers = [pool.submit(hook_agents.wait_for_go, job(tmp_path), id=f"b{i}") for i in range(2)]
        never = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="never")  # both workers busy: queued
        assert pool.cancel("never") is True
        assert never.outcome(timeout=WAIT).interrupt.stage is Stage.QUEUED
        (tmp_path / "go").touch()
        assert [b.result(timeout=WAIT) for b in blockers] == ["done", "done"]
        (tmp_path / "go").unlink()
        timed = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="timed", timeout=0.3)
        timed.outcome(timeout=WAIT)
        (tmp_path / "go").touch()
        assert pool.submit(hook_agents.wait_for_go, job(tmp_path), id="fine").result(timeout=WAIT) == "done"
    # The with-block's shutdown joins the callback thread: every after_interrupt call has run.
    assert sorted(o.id for o in seen) == ["never", "plain", "saver", "timed"]
    by_id = {o.id: o for o in seen}
    assert all(o.status is ExecutionStatus.INTERRUPTED for o in seen)
    assert by_id["timed"].interrupt.reason is InterruptReason.TIMEOUT
    assert by_id["saver"].checkpoint is not None and by_id["saver"].checkpoint.seq >= 1
    assert Path(by_id["saver"].checkpoint.path).exists()
    assert by_id["plain"].checkpoint is None


def test_an_after_interrupt_that_raises_is_a_source_error_and_the_pool_goes_on(tmp_path):
    """An after_interrupt that raises produces a source_error event; later executions and hooks still run."""
    calls = []

    def after(outcome):
        calls.append(outcome.id)
        raise RuntimeError(f"cannot log {outcome.id}")

    listener = Events()
    with make_pool(tmp_path, after_interrupt=after, on_event=listener) as pool:
        for i in ("one", "two"):
            ex = pool.submit(hook_agents.wait_for_go, job(tmp_path), id=i)
            started(tmp_path, i)
            pool.cancel(i)
            ex.outcome(timeout=WAIT)
            err = listener.wait(EventKind.SOURCE_ERROR, i)
            assert "after_interrupt" in err.message and f"cannot log {i}" in err.message
    assert calls == ["one", "two"]


@pytest.mark.parametrize("hook", ["before_interrupt", "after_interrupt"])
@pytest.mark.parametrize("value", [True, "print", 42])
def test_a_hook_that_is_not_callable_is_a_type_error_at_pool(hook, value, tmp_path):
    """Pool(before_interrupt=..., after_interrupt=...) with something that is not a function raises TypeError naming it."""
    with pytest.raises(TypeError, match=hook):
        make_pool(tmp_path, **{hook: value})


# == 6. signals ===========================================================================================

SIGNAL_PROGRAM = textwrap.dedent('''
    """A library user's program: two executions under pool.handle_signals(); prints JSON lines."""
    import json
    import signal
    import sys
    import threading
    from pathlib import Path

    from interrupt_pool import Escalation, Pool
    from tests import hook_agents

    agent, tmp = getattr(hook_agents, sys.argv[1]), Path(sys.argv[2])
    lock = threading.Lock()


    def say(**doc):
        with lock:
            sys.stdout.write(json.dumps(doc) + "\\n")
            sys.stdout.flush()


    def on_event(ev):
        if ev.kind.value in ("requested", "escalated"):
            say(event=ev.kind.value, id=ev.execution_id, mode=ev.mode.value if ev.mode else None)


    watched = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in watched}
    (tmp / "started").mkdir()
    # Graces of 30 s: SIGTERM or SIGKILL within the test's time can only come from the ladder.
    with Pool(workers=2, escalation=Escalation(grace=30, term_grace=30), checkpoint_dir=tmp / "ckpt",
              log_dir=tmp / "logs", on_event=on_event) as pool:
        with pool.handle_signals():
            runs = [pool.submit(agent, {"dir": str(tmp / "started")}, id=f"r{i}") for i in range(2)]
            for r in runs:
                r.wait_started(timeout=20)
            while len(list((tmp / "started").iterdir())) < 2:
                threading.Event().wait(0.01)
            say(ready=True)
            outs = [r.outcome(timeout=50) for r in runs]
        restored = all(signal.getsignal(s) is before[s] for s in watched)
    say(outcomes=[{"id": o.id, "status": o.status.value, "mode": o.interrupt.mode.value,
                   "reason": o.interrupt.reason.value, "source": o.interrupt.source.value,
                   "stage": o.interrupt.stage.value} for o in outs], restored=restored)
''')


def run_signal_program(tmp_path, agent: str, signals: list[int], ladder: list[tuple[str, str]]) -> dict:
    """Run SIGNAL_PROGRAM with ``agent``; once both executions run, send ``signals`` one by one,
    waiting after each for its effect (the event ``ladder[k]`` for both executions) so no two
    signals are merged into one; return its final JSON line."""
    prog = tmp_path / "prog.py"
    prog.write_text(SIGNAL_PROGRAM)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    err = open(tmp_path / "stderr", "w")
    proc = subprocess.Popen([sys.executable, str(prog), agent, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=err, text=True)  # fmt: skip
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in proc.stdout], daemon=True)
    reader.start()
    seen: list[dict] = []

    def wait_for(pred, what):
        deadline = time.monotonic() + 20  # a Python start, a pool start and imports, on a loaded 2-core box
        while not any(pred(d) for d in seen):
            left = deadline - time.monotonic()
            try:
                seen.append(lines.get(timeout=max(0.01, left)))
            except queue.Empty:
                if left <= 0:
                    raise AssertionError(f"{what}: not seen in 20 s; stdout {seen}; stderr "
                                         f"{(tmp_path / 'stderr').read_text()}") from None  # fmt: skip
        return next(d for d in seen if pred(d))

    try:
        wait_for(lambda d: d.get("ready"), "ready")
        t0 = time.monotonic()
        for sig, (kind, mode) in zip(signals, ladder):
            os.kill(proc.pid, sig)
            for i in ("r0", "r1"):
                wait_for(lambda d: d.get("event") == kind and d.get("id") == i and d.get("mode") == mode, f"{kind} {mode} {i}")
        final = wait_for(lambda d: "outcomes" in d, "outcomes")
        final["elapsed"] = time.monotonic() - t0
        assert proc.wait(timeout=20) == 0, (tmp_path / "stderr").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        proc.stdout.close()
        err.close()
    return final


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_stops_every_execution_gracefully(tmp_path, sig):
    """The first SIGINT (or SIGTERM) under handle_signals stops every running execution gracefully, at its flag."""
    final = run_signal_program(tmp_path, "wait_for_go", [sig], [("requested", "graceful")])
    assert [o["id"] for o in final["outcomes"]] == ["r0", "r1"]
    for o in final["outcomes"]:
        assert (o["status"], o["mode"], o["reason"], o["source"], o["stage"]) == (
            "interrupted", "graceful", "user_cancelled", "signal", "flag")
    assert final["restored"] is True


def test_two_sigints_escalate_to_immediate(tmp_path):
    """A second SIGINT makes the stop immediate: agents that never check end at SIGTERM long before the 30 s grace."""
    final = run_signal_program(tmp_path, "never_checks", [signal.SIGINT] * 2,
                               [("requested", "graceful"), ("escalated", "immediate")])  # fmt: skip
    for o in final["outcomes"]:
        assert (o["status"], o["mode"], o["stage"], o["source"]) == ("interrupted", "immediate", "sigterm", "signal")
    assert final["elapsed"] < 25  # the 30 s grace never ran out (generous for CI)
    assert final["restored"] is True


def test_three_sigints_kill(tmp_path):
    """A third SIGINT kills: agents that ignore SIGTERM and never check end at SIGKILL long before term_grace."""
    final = run_signal_program(tmp_path, "ignores_term", [signal.SIGINT] * 3,
                               [("requested", "graceful"), ("escalated", "immediate"), ("escalated", "kill")])  # fmt: skip
    for o in final["outcomes"]:
        assert (o["status"], o["mode"], o["stage"], o["source"]) == ("interrupted", "kill", "sigkill", "signal")
    assert final["elapsed"] < 25  # neither 30 s grace ran out (generous for CI)
    assert final["restored"] is True


def test_handle_signals_restores_the_previous_handlers(tmp_path):
    """After the with-block the previous SIGINT/SIGTERM handlers are back: a SIGINT reaches ours and cancels nothing."""
    got = []

    def mine(signum, frame):
        got.append(signum)

    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, mine)
    try:
        with make_pool(tmp_path, workers=1) as pool:
            ex = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="keep")
            started(tmp_path, "keep")
            before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            with pool.handle_signals():
                assert signal.getsignal(signal.SIGINT) is not mine
                assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
            assert {s: signal.getsignal(s) for s in before} == before
            signal.raise_signal(signal.SIGINT)
            wait_until(lambda: got, what="our own handler ran")
            # The ladder would cancel at once; half a second without a stop (generous on CI) shows it is gone.
            time.sleep(0.5)
            assert ex.status is ExecutionStatus.RUNNING
            (tmp_path / "go").touch()
            assert ex.result(timeout=WAIT) == "done"
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    assert got == [signal.SIGINT]


def test_handle_signals_outside_the_main_thread_is_a_runtime_error(tmp_path):
    """Entering handle_signals in a thread other than the main one raises RuntimeError and changes no handler."""
    errors = []
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with make_pool(tmp_path, workers=1) as pool:

        def enter():
            try:
                with pool.handle_signals():
                    errors.append(None)
            except Exception as exc:
                errors.append(exc)

        t = threading.Thread(target=enter)
        t.start()
        t.join(WAIT)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])
    assert {s: signal.getsignal(s) for s in before} == before


# == 7. external checkers ===================================================================================


def test_a_checker_reading_ids_from_a_file_stops_those_executions(tmp_path):
    """add_interrupt_source: ids the checker returns (read from a file standing in for a Redis key) are stopped, source programmatic; others go on."""
    stop_file = tmp_path / "stop-these"

    def from_redis():
        return stop_file.read_text().split() if stop_file.exists() else None

    with make_pool(tmp_path, workers=3) as pool:
        handle = pool.add_interrupt_source(from_redis, interval=0.05)
        runs = {i: pool.submit(hook_agents.wait_for_go, job(tmp_path), id=i) for i in ("a", "b", "c")}
        for i in runs:
            started(tmp_path, i)
        stop_file.write_text("a\nc\n")
        a, c = runs["a"].outcome(timeout=WAIT), runs["c"].outcome(timeout=WAIT)
        assert runs["b"].status is ExecutionStatus.RUNNING
        (tmp_path / "go").touch()
        assert runs["b"].result(timeout=WAIT) == "done"
        assert handle.calls >= 1 and handle.errors == 0
    for out in (a, c):
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.FLAG
        assert out.interrupt.source is InterruptSource.PROGRAMMATIC
        assert out.interrupt.reason is InterruptReason.CUSTOM and out.interrupt.mode is InterruptMode.GRACEFUL


def test_a_checker_may_return_stop_requests_and_dicts_with_mode_reason_and_message(tmp_path):
    """StopRequest objects and dicts (execution_id or id, mode, reason, message) are honoured: kill ends at sigkill, reasons are recorded."""
    pending: list = []

    def checker():
        items, pending[:] = list(pending), []
        return items

    with make_pool(tmp_path, workers=3, escalation=SLOW) as pool:
        pool.add_interrupt_source(checker, interval=0.05)
        k = pool.submit(hook_agents.ignores_term, job(tmp_path), id="k")
        d = pool.submit(hook_agents.never_checks, job(tmp_path), id="d")
        e = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="e")
        for i in ("k", "d", "e"):
            started(tmp_path, i)
        pending[:] = [
            StopRequest(execution_id="k", mode=InterruptMode.KILL, message="over quota"),
            {"execution_id": "d", "mode": "immediate", "reason": "stalled", "message": "no heartbeat in redis"},
        ]
        kk, dd = k.outcome(timeout=WAIT), d.outcome(timeout=WAIT)
        pending[:] = [{"id": "e", "reason": "budget_exceeded"}]  # a single dict in a list, by "id"
        ee = e.outcome(timeout=WAIT)
    assert (kk.interrupt.mode, kk.interrupt.stage, kk.interrupt.reason, kk.interrupt.message) == (
        InterruptMode.KILL, Stage.SIGKILL, InterruptReason.CUSTOM, "over quota")
    # Immediate under a 30 s grace: SIGTERM at once.
    assert (dd.interrupt.mode, dd.interrupt.stage, dd.interrupt.reason, dd.interrupt.message) == (
        InterruptMode.IMMEDIATE, Stage.SIGTERM, InterruptReason.STALLED, "no heartbeat in redis")
    assert (ee.interrupt.mode, ee.interrupt.stage, ee.interrupt.reason) == (
        InterruptMode.GRACEFUL, Stage.FLAG, InterruptReason.BUDGET_EXCEEDED)
    assert {o.interrupt.source for o in (kk, dd, ee)} == {InterruptSource.PROGRAMMATIC}


def test_a_checker_that_raises_is_a_source_error_and_later_calls_still_work(tmp_path):
    """A checker that raises: source_error events, the pool goes on, and its later calls still stop executions."""
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) <= 3:
            raise ConnectionError(f"redis timeout #{len(calls)}")
        return ["victim"]

    listener = Events()
    with make_pool(tmp_path, on_event=listener) as pool:
        victim = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="victim")
        started(tmp_path, "victim")
        handle = pool.add_interrupt_source(flaky, interval=0.05)
        out = victim.outcome(timeout=WAIT)
        assert pool.submit(hook_agents.record_start, job(tmp_path, go=None), id="later").result(timeout=WAIT) == "later"
        errors = [e for e in listener.of(EventKind.SOURCE_ERROR)]
        assert handle.errors == 3 and handle.calls >= 4
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.source is InterruptSource.PROGRAMMATIC
    assert len(errors) == 3
    assert all("ConnectionError" in e.message and "redis timeout" in e.message for e in errors)


def test_a_generator_checker_that_raises_is_a_source_error_and_later_calls_still_work(tmp_path):
    """A checker written as a generator (for row in db: yield row) whose iteration raises: source_error events, and it keeps being called."""
    calls = []

    def rows_to_stop():
        calls.append(1)
        if len(calls) <= 2:
            raise ConnectionError(f"database gone #{len(calls)}")
        yield "victim"

    listener = Events()
    with make_pool(tmp_path, on_event=listener) as pool:
        victim = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="victim")
        started(tmp_path, "victim")
        handle = pool.add_interrupt_source(rows_to_stop, interval=0.05)
        try:
            wait_until(lambda: handle.calls >= 4 or not [t for t in threading.enumerate()
                                                          if t.name == "pool-source-rows_to_stop"], what="4 calls")  # fmt: skip
            assert handle.calls >= 4, f"the source thread died after {handle.calls} call(s)"
            out = victim.outcome(timeout=WAIT)
        finally:
            (tmp_path / "go").touch()
    errors = [e.message for e in listener.of(EventKind.SOURCE_ERROR)]
    assert len(errors) == 2 and all("database gone" in m for m in errors), errors
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.source is InterruptSource.PROGRAMMATIC


def test_garbage_from_a_checker_is_a_source_error_never_fatal(tmp_path):
    """An int, a list holding an int, a dict without an id or with a bad mode: source_error events; valid items next to garbage still count."""
    answers = [42, [7, "victim"], {"mode": "kill"}, {"id": "bystander", "mode": "explode"}, object()]

    def garbage():
        return answers.pop(0) if answers else None

    listener = Events()
    with make_pool(tmp_path, on_event=listener) as pool:
        victim = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="victim")
        bystander = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="bystander")
        started(tmp_path, "victim"), started(tmp_path, "bystander")
        handle = pool.add_interrupt_source(garbage, interval=0.05)
        wait_until(lambda: not answers and handle.calls >= 6, what="every answer consumed")
        out = victim.outcome(timeout=WAIT)
        wait_until(lambda: len(listener.of(EventKind.SOURCE_ERROR)) >= 5, what="five source_error events")
        assert bystander.status is ExecutionStatus.RUNNING  # its request named an unknown mode: not acted on
        assert pool.submit(hook_agents.record_start, job(tmp_path, go=None), id="ok").result(timeout=WAIT) == "ok"
        (tmp_path / "go").touch()
        assert bystander.result(timeout=WAIT) == "done"
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.source is InterruptSource.PROGRAMMATIC
    errors = [e.message for e in listener.of(EventKind.SOURCE_ERROR)]
    assert len(errors) == 5, errors
    assert "int 42" in errors[0] and "int 7" in errors[1]


def test_remove_stops_the_calls_and_shutdown_stops_the_thread(tmp_path):
    """handle.remove() stops the calls at once; shutdown stops every other source's thread (none left behind)."""
    with make_pool(tmp_path, workers=1) as pool:
        removed = pool.add_interrupt_source(lambda: None, interval=0.05)
        wait_until(lambda: removed.calls >= 3, what="three calls")

        def unique_checker_for_shutdown():
            return None

        kept = pool.add_interrupt_source(unique_checker_for_shutdown, interval=0.05)
        removed.remove()
        n = removed.calls
        wait_until(lambda: kept.calls >= 5, what="five calls of the kept source")
        # The kept source ran 5+ more times meanwhile (>= 0.25 s): the removed one would have too.
        assert removed.calls == n
    assert kept.calls >= 5
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith("pool-source")], names


def test_add_interrupt_source_refuses_a_non_callable_and_a_bad_interval(tmp_path):
    """A non-callable source is a TypeError; an interval that is not a positive finite number is a ValueError."""
    with make_pool(tmp_path, workers=1) as pool:
        with pytest.raises(TypeError, match="function"):
            pool.add_interrupt_source("redis://stop-key")
        with pytest.raises(TypeError):
            pool.add_interrupt_source(None)
        for bad in (0, -1, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="interval"):
                pool.add_interrupt_source(lambda: None, interval=bad)
        with pytest.raises((TypeError, ValueError), match="interval"):
            pool.add_interrupt_source(lambda: None, interval="0.1")
        assert not [t for t in threading.enumerate() if t.name.startswith("pool-source")]


def test_interval_none_is_refused_not_a_source_that_never_runs(tmp_path):
    """add_interrupt_source(fn, interval=None) raises instead of starting a source that would never be called."""
    with make_pool(tmp_path, workers=1) as pool:
        with pytest.raises((TypeError, ValueError), match="interval"):
            handle = pool.add_interrupt_source(lambda: None, interval=None)
            time.sleep(0.3)
            assert handle.calls > 0, "a source with interval=None was accepted and is never called"


# == 8. priority and preemption ============================================================================


def starts(log: Path) -> list[str]:
    return [line.split(maxsplit=1)[1] for line in log.read_text().splitlines()]


def test_a_high_priority_submit_preempts_one_preemptible_execution_which_resumes_from_its_checkpoint(tmp_path):
    """priority=5 preempts one of two busy preemptible executions (no hook asked); it goes back to queued, resumes from its checkpoint and ends once, completed."""
    log = tmp_path / "log"
    listener = Events()
    after, asked = [], []
    with make_pool(tmp_path, workers=2, escalation=Escalation(grace=5, term_grace=1), on_event=listener,
                   after_interrupt=after.append, before_interrupt=lambda r: asked.append(r) or False) as pool:  # fmt: skip
        lows = {i: pool.submit(hook_agents.counter, job(tmp_path, log=str(log), ready=5, n=10), id=i, preemptible=True)
                for i in ("low-a", "low-b")}  # fmt: skip
        for i in lows:
            started(tmp_path, i)  # each has counted to 5
        high = pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=str(tmp_path / "go-high")),
                           id="high", priority=5)  # fmt: skip
        victim_id = wait_until(lambda: next((i for i, ex in lows.items() if ex.status is ExecutionStatus.QUEUED), None),
                               what="a low-priority execution back in the queue")  # fmt: skip
        (other_id,) = set(lows) - {victim_id}
        assert high.wait_started(timeout=WAIT)
        # high and the other low hold both workers until we let them go: the victim waits, queued.
        time.sleep(0.3)
        assert lows[victim_id].status is ExecutionStatus.QUEUED
        assert lows[other_id].status is ExecutionStatus.RUNNING
        (tmp_path / "go-high").touch()
        assert high.result(timeout=WAIT) == "high"
        (tmp_path / "go").touch()
        victim, other = lows[victim_id].outcome(timeout=WAIT), lows[other_id].outcome(timeout=WAIT)
    assert victim.status is ExecutionStatus.COMPLETED and other.status is ExecutionStatus.COMPLETED
    assert victim.interrupt is None
    first, resumed_at = victim.value["starts"]  # started twice: from 0, then from its checkpoint
    assert first == 0 and resumed_at >= 5 and victim.value["i"] >= max(10, resumed_at)
    assert len(victim.preemptions) == 1 and victim.preemptions[0].checkpoint_seq is not None
    assert other.value["starts"] == [0] and other.preemptions == []
    order = starts(log)
    assert order.index("high") < order.index(f"{victim_id} {resumed_at}")  # the high one ran first
    assert order.count(f"{victim_id} 0") == 1 and len(order) == 4
    req = [e for e in listener.of(EventKind.REQUESTED, victim_id)]
    assert [e.reason for e in req] == [InterruptReason.PRIORITY_OVERRIDE]
    assert listener.of(EventKind.PREEMPTED, victim_id) and listener.of(EventKind.REQUEUED, victim_id)
    assert not listener.of(EventKind.PREEMPTED, other_id)
    assert len(listener.of(EventKind.ENDED, victim_id)) == 1  # it ends once
    assert after == []  # completed in the end: after_interrupt is not called
    assert asked == []  # a preemption is never put to before_interrupt (which would veto it)


def test_non_preemptible_work_is_never_preempted(tmp_path):
    """Without preemptible=True, busy low-priority executions keep their workers: the high one waits until one ends."""
    log = tmp_path / "log"
    listener = Events()
    with make_pool(tmp_path, workers=2, on_event=listener) as pool:
        lows = [pool.submit(hook_agents.counter, job(tmp_path, log=str(log), ready=5, n=10), id=i)
                for i in ("low-a", "low-b")]  # fmt: skip
        for ex in lows:
            started(tmp_path, ex.id)
        high = pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=None), id="high", priority=5)
        # A preemption takes milliseconds; a second without one (generous on a loaded CI box) shows there is none.
        time.sleep(1.0)
        assert high.status is ExecutionStatus.QUEUED
        assert [ex.status for ex in lows] == [ExecutionStatus.RUNNING] * 2
        (tmp_path / "go").touch()
        assert high.result(timeout=WAIT) == "high"
        outs = [ex.outcome(timeout=WAIT) for ex in lows]
    for out in outs:
        assert out.status is ExecutionStatus.COMPLETED and out.preemptions == [] and out.value["starts"] == [0]
    assert starts(log)[-1] == "high"
    assert not listener.of(EventKind.PREEMPTED) and not listener.of(EventKind.REQUEUED)


def test_two_high_priority_submits_preempt_two_executions_and_equal_priority_preempts_none(tmp_path):
    """Each higher-priority execution waiting preempts one lower one; a preemptible one of the same priority is not preempted."""
    log = tmp_path / "log"
    listener = Events()
    with make_pool(tmp_path, workers=2, escalation=Escalation(grace=5, term_grace=1), on_event=listener) as pool:
        lows = []
        for i, p in (("peer", 5), ("low", 0)):  # one by one: a queued "peer" would preempt a running "low"
            lows.append(pool.submit(hook_agents.counter, job(tmp_path, log=str(log), ready=3, n=5), id=i,
                                    preemptible=True, priority=p))  # fmt: skip
            started(tmp_path, i)
        lows.reverse()  # low, peer
        highs = [pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=str(tmp_path / "go-high")),
                             id=f"high{k}", priority=5) for k in range(2)]  # fmt: skip
        assert highs[0].wait_started(timeout=WAIT)
        # "peer" has priority 5 too: a second without its preemption (generous on CI; one takes ms) shows none comes.
        time.sleep(1.0)
        assert lows[0].status is ExecutionStatus.QUEUED and lows[1].status is ExecutionStatus.RUNNING
        assert highs[1].status is ExecutionStatus.QUEUED
        (tmp_path / "go-high").touch()  # high0 ends, high1 takes its worker, ends: then "low" resumes there
        assert [h.result(timeout=WAIT) for h in highs] == ["high0", "high1"]
        (tmp_path / "go").touch()
        low, peer = (ex.outcome(timeout=WAIT) for ex in lows)
    story = [(e.kind.value, e.execution_id, e.worker_id, e.message) for e in listener.items if e.kind is not EventKind.OUTPUT]
    assert len(low.preemptions) == 1, (low, starts(log), story)
    assert low.value["starts"][0] == 0 and low.value["starts"][1] >= 3
    assert peer.preemptions == [] and peer.value["starts"] == [0]
    assert [e.execution_id for e in listener.of(EventKind.PREEMPTED)] == ["low"]
    order = starts(log)
    assert order.index("high1") < order.index(f"low {low.value['starts'][1]}")


def test_two_busy_preemptible_executions_are_both_preempted_by_two_high_ones(tmp_path):
    """Two queued priority-5 executions preempt both running preemptible ones; both resume and complete."""
    log = tmp_path / "log"
    with make_pool(tmp_path, workers=2, escalation=Escalation(grace=5, term_grace=1)) as pool:
        lows = [pool.submit(hook_agents.counter, job(tmp_path, log=str(log), ready=3, n=5), id=i, preemptible=True)
                for i in ("la", "lb")]  # fmt: skip
        for ex in lows:
            started(tmp_path, ex.id)
        highs = [pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=str(tmp_path / "go-high")),
                             id=f"high{k}", priority=5) for k in range(2)]  # fmt: skip
        wait_until(lambda: all(ex.status is ExecutionStatus.QUEUED for ex in lows), what="both lows requeued")
        assert all(h.wait_started(timeout=WAIT) for h in highs)
        (tmp_path / "go-high").touch()
        (tmp_path / "go").touch()
        outs = [ex.outcome(timeout=WAIT) for ex in lows]
    for out in outs:
        assert out.status is ExecutionStatus.COMPLETED and len(out.preemptions) == 1
        assert out.value["starts"][0] == 0 and out.value["starts"][1] >= 3
    order = starts(log)
    assert {order[2], order[3]} == {"high0", "high1"} and len(order) == 6


def test_a_preempted_execution_that_saved_no_state_starts_over(tmp_path):
    """A preemptible execution with nothing in ctx.state is requeued and starts over (checkpoint_seq None), ending once, completed."""
    log = tmp_path / "log"
    with make_pool(tmp_path, workers=1, escalation=Escalation(grace=5, term_grace=1)) as pool:
        low = pool.submit(hook_agents.record_start, job(tmp_path, log=str(log)), id="low", preemptible=True)
        started(tmp_path, "low")
        high = pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=None), id="high", priority=1)
        assert high.result(timeout=WAIT) == "high"
        (tmp_path / "go").touch()
        out = low.outcome(timeout=WAIT)
    assert out.status is ExecutionStatus.COMPLETED and out.value == "low"
    assert len(out.preemptions) == 1 and out.preemptions[0].checkpoint_seq is None
    assert starts(log) == ["low", "high", "low"]


def test_a_preempted_execution_cancelled_while_requeued_keeps_its_preemption_and_checkpoint(tmp_path):
    """Cancelled while waiting to resume: interrupted at stage queued, once; its preemption listed; outcome.checkpoint and after_interrupt see its checkpoint."""
    log = tmp_path / "log"
    after = []
    with make_pool(tmp_path, workers=1, escalation=Escalation(grace=5, term_grace=1),
                   after_interrupt=after.append) as pool:  # fmt: skip
        low = pool.submit(hook_agents.counter, job(tmp_path, log=str(log), ready=3, n=5), id="low", preemptible=True)
        started(tmp_path, "low")
        high = pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=str(tmp_path / "go-high")),
                           id="high", priority=1)  # fmt: skip
        wait_until(lambda: low.status is ExecutionStatus.QUEUED, what="low requeued")
        assert high.wait_started(timeout=WAIT)
        assert pool.cancel("low") is True
        out = low.outcome(timeout=WAIT)
        (tmp_path / "go-high").touch()
        assert high.result(timeout=WAIT) == "high"
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.QUEUED
    assert out.interrupt.reason is InterruptReason.USER_CANCELLED
    assert len(out.preemptions) == 1 and out.preemptions[0].checkpoint_seq is not None
    assert [o.id for o in after] == ["low"]
    on_disk = sorted((tmp_path / "ckpt" / "low").iterdir())
    assert on_disk, "the preemption saved a checkpoint"
    assert out.checkpoint is not None, f"outcome.checkpoint is None though {on_disk[-1].name} is on disk"
    assert out.checkpoint.seq == out.preemptions[0].checkpoint_seq
    assert after[0].checkpoint is not None


def test_the_queue_serves_higher_priority_first_and_fifo_within_a_priority(tmp_path):
    """With the only worker busy, queued executions start highest priority first, in submission order within one."""
    log = tmp_path / "log"
    with make_pool(tmp_path, workers=1) as pool:
        blocker = pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=str(tmp_path / "go")), id="blocker")
        started(tmp_path, "blocker")
        queued = [pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=None), id=i, priority=p)
                  for i, p in (("low", 0), ("neg", -2), ("high", 3), ("low2", 0), ("mid", 1), ("high2", 3))]  # fmt: skip
        assert all(ex.status is ExecutionStatus.QUEUED for ex in queued)
        (tmp_path / "go").touch()
        assert [ex.result(timeout=WAIT) for ex in queued] == [ex.id for ex in queued]
        assert blocker.result(timeout=WAIT) == "blocker"
    assert starts(log) == ["blocker", "high", "high2", "mid", "low", "low2", "neg"]


def test_a_user_cancel_while_an_execution_is_being_preempted_ends_it_for_real(tmp_path):
    """A user cancel that comes while a preemption is under way ends the execution (interrupted, user_cancelled), with no requeue."""
    log = tmp_path / "log"
    listener = Events()
    # A 30 s grace: the preemption stays "under way" until the agent reads its flag (when we let it).
    with make_pool(tmp_path, workers=1, escalation=SLOW, on_event=listener) as pool:
        low = pool.submit(hook_agents.checks_only_after_go, job(tmp_path, log=str(log), n=10**9), id="low",
                          preemptible=True)  # fmt: skip
        started(tmp_path, "low")
        high = pool.submit(hook_agents.record_start, job(tmp_path, log=str(log), go=None), id="high", priority=5)
        listener.wait(EventKind.PREEMPTED, "low")
        assert pool.cancel("low") is True
        (tmp_path / "go").touch()  # now the agent reads its flag and stops
        out = low.outcome(timeout=WAIT)
        assert high.result(timeout=WAIT) == "high"
    assert out.status is ExecutionStatus.INTERRUPTED
    assert out.interrupt.reason is InterruptReason.USER_CANCELLED and out.interrupt.source is InterruptSource.USER
    assert out.interrupt.stage is Stage.FLAG and out.preemptions == []
    assert not listener.of(EventKind.REQUEUED, "low")
    assert len(listener.of(EventKind.ENDED, "low")) == 1
    assert starts(log) == ["low 0", "high"]  # it never started again


@pytest.mark.parametrize("bad", [1.5, True, "5", None, 2**40])
def test_a_priority_that_is_not_a_whole_number_is_a_value_error(tmp_path, bad):
    """submit(priority=...) with a float, bool, str, None or an int beyond 2**31 raises ValueError and submits nothing."""
    with make_pool(tmp_path, workers=1) as pool:
        with pytest.raises(ValueError, match="priority"):
            pool.submit(hook_agents.record_start, job(tmp_path, go=None), id="x", priority=bad)
        assert not pool.has("x")


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_preemptible_that_is_not_a_bool_is_a_type_error(tmp_path, bad):
    """submit(preemptible=...) with anything but True/False raises TypeError and submits nothing."""
    with make_pool(tmp_path, workers=1) as pool:
        with pytest.raises(TypeError, match="preemptible"):
            pool.submit(hook_agents.record_start, job(tmp_path, go=None), id="x", preemptible=bad)
        assert not pool.has("x")


# -- regressions from the review ---------------------------------------------------------------


def test_a_cancel_all_of_many_queued_executions_asks_the_hook_on_a_few_threads(tmp_path):
    """One before_interrupt question per execution, but at most a few threads ask them: 200 queued
    executions cancelled at once all end interrupted, and the process never runs dozens of threads."""
    peak = [0]

    def hook(request):
        peak[0] = max(peak[0], threading.active_count())
        time.sleep(0.01)
        return True

    with make_pool(tmp_path, workers=1, before_interrupt=hook) as pool:
        base = threading.active_count()
        runs = [pool.submit(hook_agents.wait_for_go, job(tmp_path)) for _ in range(200)]
        pool.cancel_all()
        outs = [r.outcome(timeout=60) for r in runs]
    assert {o.status for o in outs} == {ExecutionStatus.INTERRUPTED}
    assert peak[0] <= base + 6, f"{peak[0]} threads while asking (the pool had {base})"


def test_the_signal_ladder_does_not_wait_behind_a_slow_after_interrupt(tmp_path):
    """While after_interrupt sleeps on the callback thread, three signals still kill a stuck execution at once."""
    hook_done = []

    def slow_after(outcome):
        time.sleep(3.0)
        hook_done.append(time.monotonic())

    with make_pool(tmp_path, workers=2, escalation=SLOW, after_interrupt=slow_after) as pool:
        first = pool.submit(hook_agents.wait_for_go, job(tmp_path), id="first")
        stuck = pool.submit(hook_agents.ignores_term, job(tmp_path), id="stuck")
        started(tmp_path, "first")
        started(tmp_path, "stuck")
        pool.cancel("first")
        first.outcome(timeout=WAIT)  # its after_interrupt now sleeps on the callback thread
        with pool.handle_signals():
            for _ in range(3):
                signal.raise_signal(signal.SIGINT)
            out = stuck.outcome(timeout=WAIT)
            killed_at = time.monotonic()
    assert out.interrupt.stage is Stage.SIGKILL and out.interrupt.mode is InterruptMode.KILL
    # The kill landed while the 3 s after_interrupt was still sleeping (SLOW graces: no grace ran out).
    assert hook_done and killed_at < hook_done[0]


def test_removed_interrupt_sources_leave_nothing_behind(tmp_path):
    """add/remove many times: no source thread stays, and the pool keeps no record of removed ones."""
    with make_pool(tmp_path, workers=1) as pool:
        for _ in range(30):
            pool.add_interrupt_source(lambda: None, interval=0.01).remove()
        assert not [t for t in threading.enumerate() if t.name.startswith("pool-source")]
        assert pool._sources == []  # the pool's list of sources (a long-lived pool must not grow it)
