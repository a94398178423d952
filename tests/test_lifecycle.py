"""Process lifecycle across the user process, the supervisor and the leak guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import interrupt_pool
from tests.conftest import find_leaks, kill_leaks, snapshot

ROOT = Path(__file__).resolve().parent.parent

USER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from interrupt_pool import Pool, Escalation
    from tests import agents
    p = Pool(workers=2, escalation=Escalation(grace=0.2, term_grace=0.2))
    ex = p.submit(agents.check_forever, None)
    ex2 = p.submit(agents.ignore_term_sleep, None)
    while len([w for w in p.workers() if w.state == "busy"]) < 2:
        time.sleep(0.01)
    print(json.dumps({"supervisor": p.supervisor_pid, "workers": [w.pid for w in p.workers()]}), flush=True)
    time.sleep(1000)
    """
)


def test_user_process_killed_supervisor_stops_its_workers_and_exits():
    user = subprocess.Popen([sys.executable, "-c", USER_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(user.stdout.readline())
        procs = [psutil.Process(info["supervisor"])] + [psutil.Process(p) for p in info["workers"]]
        user.kill()
        user.wait(timeout=10)
        # grace + term_grace = 0.4 s for the SIGTERM-ignoring agent; generous bound for CI load
        gone, alive = psutil.wait_procs(procs, timeout=5)
        assert alive == [], f"still running after the user process died: {alive}"
    finally:
        user.kill()
        user.wait()
        user.stdout.close()


def test_leak_guard_reports_an_escaped_process_and_a_shm_segment():
    baseline = snapshot()
    stray = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    shm = Path("/dev/shm") / f"pooltest-{os.getpid()}"
    shm.write_bytes(b"x")
    try:
        leaks = find_leaks(baseline, wait=0.2)
        assert any(f"process {stray.pid}" in leak for leak in leaks)
        assert any(str(shm) in leak for leak in leaks)
    finally:
        shm.unlink()
        kill_leaks(baseline)
        stray.wait()
    assert find_leaks(baseline, wait=0.2) == []


def test_public_names_match_all():
    """__all__ lists exactly the public names, and each one resolves (they load lazily)."""
    for name in interrupt_pool.__all__:
        assert getattr(interrupt_pool, name) is not None
    exported = {n for n in dir(interrupt_pool) if not n.startswith("_")}
    modules = {n for n in exported if isinstance(getattr(interrupt_pool, n), type(os))}
    assert set(interrupt_pool.__all__) == exported - modules
    for name in ("Pool", "Escalation", "InterruptMode", "InterruptReason", "ExecutionStatus", "Interrupted"):
        assert name in interrupt_pool.__all__
    assert issubclass(interrupt_pool.Interrupted, BaseException) and not issubclass(interrupt_pool.Interrupted, Exception)
    assert issubclass(interrupt_pool.ExecutionInterrupted, interrupt_pool.PoolError)
    assert issubclass(interrupt_pool.ExecutionFailed, interrupt_pool.PoolError)
    assert issubclass(interrupt_pool.WorkerCrashed, interrupt_pool.PoolError)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        interrupt_pool.Nope  # noqa: B018
    # Every public name the private modules define is exported (none forgotten in the lazy table).
    import interrupt_pool._children as children
    import interrupt_pool._events as events
    import interrupt_pool._executor as executor
    import interrupt_pool._exceptions as exceptions
    import interrupt_pool._models as models
    import interrupt_pool._pool as pool_module
    from interrupt_pool import shared

    internal = {"FlagArray", "CheckpointInfo"}  # shared's own plumbing, not the user's
    defined = set(events.__all__) | set(exceptions.__all__) | set(models.__all__) | set(pool_module.__all__)
    defined |= set(executor.__all__)
    defined |= {"ChildExecution"} & set(children.__all__)  # the handle ctx.submit returns (Tree is the worker's)
    defined |= set(shared.__all__) - internal
    assert defined == set(interrupt_pool.__all__)


def test_sigterm_to_the_supervisor_stops_everything_gracefully_and_reports_each_execution():
    from interrupt_pool import Escalation, ExecutionStatus, InterruptReason, InterruptSource, Pool, Stage
    from tests import agents

    p = Pool(workers=2, escalation=Escalation(grace=0.2, term_grace=0.2))
    running = p.submit(agents.check_forever, None)
    p.submit(agents.check_forever, None).wait_started(timeout=10)
    running.wait_started(timeout=10)
    queued = [p.submit(agents.identity, i) for i in range(3)]  # both workers are busy
    assert psutil.Process(p.supervisor_pid).name() == "pool-supervisor"
    os.kill(p.supervisor_pid, signal.SIGTERM)
    out = running.outcome(timeout=10)
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.FLAG
    assert (out.interrupt.reason, out.interrupt.source) == (InterruptReason.SHUTDOWN, InterruptSource.SIGNAL)
    for ex in queued:
        assert ex.outcome(timeout=10).interrupt.stage is Stage.QUEUED
    p.shutdown(wait=True)  # the supervisor has exited cleanly: nothing is broken
    assert p._broken is None


def test_a_pool_created_with_signals_blocked_still_reaps_and_replaces_workers(tmp_path):
    # The supervisor is forked from the caller's thread and inherits its signal mask;
    # it must unblock SIGCHLD itself or dead workers would never be noticed.
    from interrupt_pool import ExecutionStatus, Pool
    from tests import agents
    from tests.test_core import wait_for_file

    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
    try:
        with Pool(workers=1) as p:
            ex = p.submit(agents.write_pid_and_sleep, str(tmp_path / "pid"))
            os.kill(int(wait_for_file(tmp_path / "pid")), signal.SIGKILL)
            assert ex.outcome(timeout=10).status is ExecutionStatus.CRASHED
            assert p.submit(agents.identity, 3).result(timeout=10) == 3
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_what_agents_print_is_captured_per_execution_or_reaches_the_users_stdout_when_asked():
    """By default each execution's output goes to its own log (ex.logs()), never to the host's
    stdout; with log_dir=None it reaches the host's stdout (flushed even when that is a pipe)."""
    script = textwrap.dedent(
        """
        import sys, tempfile
        from interrupt_pool import Pool
        from tests import agents
        with Pool(workers=1, log_dir=tempfile.mkdtemp()) as p:
            ex = p.submit(agents.prints, "captured line")
            ex.result()
            sys.stderr.write("LOG:" + ex.logs())
        with Pool(workers=1, log_dir=None) as p:
            p.submit(agents.prints, "hello from an agent").result()
        """
    )
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # a pipe is block-buffered: the worker must flush before it exits
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("hello from an agent") == 1 and "captured line" not in out.stdout
    assert "LOG:captured line" in out.stderr


def test_the_readme_quick_start_runs_as_written(tmp_path):
    import re

    code = re.search(r"Save as `quickstart.py`.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "quickstart.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "True" and lines[1].startswith("interrupted flag ") and lines[2] == "False"
    assert lines[3] == "[45, 190, 435]"
    assert not (tmp_path / ".pool").exists(), "nothing checkpointed, so no checkpoint directory"
