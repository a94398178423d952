"""The pool features people bring from concurrent.futures, pebble and Celery: initializer,
max_tasks_per_child, retries, asyncio, and no replacement workers while draining."""

from __future__ import annotations

import asyncio
import time

import pytest

from interrupt_pool import (
    Escalation,
    EventKind,
    ExecutionFailed,
    ExecutionStatus,
    InterruptReason,
    Pool,
    Stage,
    current,
)

from . import feature_agents as fa
from .procs import wait_until


def _pool(**kw) -> Pool:
    kw.setdefault("log_dir", None)
    kw.setdefault("checkpoint_dir", None)
    return Pool(**kw)


# -- initializer ------------------------------------------------------------------------------


def test_the_initializer_runs_once_in_each_worker_before_its_executions(tmp_path):
    """Every execution sees what the initializer set up, and each worker ran it exactly once."""
    log = tmp_path / "init.log"
    with _pool(workers=2, initializer=fa.init_model, initargs=("gpt-test", str(log))) as pool:
        seen = pool.map(fa.model_and_pid, range(40))
    assert {name for name, _ in seen} == {"gpt-test"}
    runs = log.read_text().split()
    # at most once in each process, however many executions it ran (the workers, and the spare, that
    # got through their initializer before the pool shut down: a worker still starting then is killed)
    assert runs and len(runs) == len(set(runs)) <= 3
    assert {p for _, p in seen} <= {int(p) for p in runs}


def test_a_failing_initializer_fails_the_queued_work_clearly_and_is_not_retried_in_a_tight_loop(tmp_path):
    """The queued execution ends failed with InitializerFailed, naming the initializer's error;
    the pool tries again only after a backoff (0.5 s, doubling): few attempts in 2 s."""
    log = tmp_path / "init.log"
    with _pool(workers=1, initializer=fa.failing_init, initargs=(str(log),)) as pool:
        out = pool.submit(fa.pid, None).outcome(timeout=20)
        assert out.status is ExecutionStatus.FAILED
        assert out.error.type == "InitializerFailed"
        assert "ValueError: no API key for the model" in out.error.message
        assert "failing_init" in out.error.traceback
        time.sleep(2.0)
        attempts = log.read_text().splitlines()
    # A tight loop would have made hundreds in 2 s; the backoff allows the first try, then
    # 0.5 s, 1 s, 2 s later (3 or 4 here, with slack for a slow machine).
    assert 2 <= len(attempts) <= 4, attempts


def test_initializer_arguments_are_checked_at_the_call():
    """initargs without an initializer, or that cannot be pickled, are refused with a clear error."""
    with pytest.raises(TypeError, match="initargs were given without an initializer"):
        Pool(workers=1, initargs=(1,))
    with pytest.raises(TypeError, match="initargs cannot be pickled"):
        Pool(workers=1, initializer=fa.init_model, initargs=(lambda: 1,))
    with pytest.raises(ValueError, match="max_tasks_per_child must be a whole number"):
        Pool(workers=1, max_tasks_per_child=0)


# -- max_tasks_per_child ------------------------------------------------------------------------


def test_max_tasks_per_child_replaces_a_worker_after_that_many_executions():
    """With one worker and max_tasks_per_child=2, six executions run in three processes, two each."""
    with _pool(workers=1, max_tasks_per_child=2) as pool:
        pids = [pool.submit(fa.pid, i).result(timeout=20) for i in range(6)]
        assert len([w for w in pool.workers() if w.state != "stopping"]) == 1  # the recycled one may still be exiting
    counts = [pids.count(p) for p in dict.fromkeys(pids)]
    assert counts == [2, 2, 2], pids


def test_max_tasks_per_child_holds_with_prefetch_and_map():
    """A fast map never runs more than max_tasks_per_child executions in one worker process."""
    with _pool(workers=2, max_tasks_per_child=5) as pool:
        pids = pool.map(fa.pid, range(60))
    assert max(pids.count(p) for p in set(pids)) <= 5
    assert len(set(pids)) >= 12


# -- retries ----------------------------------------------------------------------------------


def test_a_crashed_execution_is_retried_after_its_backoff_with_every_attempt_in_the_outcome(tmp_path):
    """retries=2: two crashes, then it completes; both crashes are in outcome.attempts, the second
    retry waited about twice the first's backoff."""
    counter = tmp_path / "runs"
    with _pool(workers=1) as pool:
        out = pool.submit(fa.crash_until, (str(counter), 2), retries=2, backoff=0.2).outcome(timeout=30)
    assert out.status is ExecutionStatus.COMPLETED and out.value == "ok"
    assert [a.status for a in out.attempts] == [ExecutionStatus.CRASHED] * 2
    assert [a.exit_code for a in out.attempts] == [7, 7]
    assert all(a.error.type == "WorkerCrashed" for a in out.attempts)
    # backoff 0.2 s then 0.4 s: the third run starts at least 0.4 s after the second ended
    assert (out.started_at - out.attempts[1].ended_at).total_seconds() >= 0.35


def test_retries_run_out_and_the_last_run_decides(tmp_path):
    """With fewer retries than crashes it ends crashed, with the earlier runs listed."""
    with _pool(workers=1) as pool:
        out = pool.submit(fa.crash_until, (str(tmp_path / "runs"), 5), retries=1, backoff=0).outcome(timeout=30)
    assert out.status is ExecutionStatus.CRASHED and len(out.attempts) == 1


def test_a_failed_execution_is_retried_only_when_asked(tmp_path):
    """An agent that raises is not retried by default; retry_on=('failed',) retries it."""
    with _pool(workers=1) as pool:
        plain = pool.submit(fa.fail_until, (str(tmp_path / "a"), 1), retries=3, backoff=0).outcome(timeout=30)
        asked = pool.submit(fa.fail_until, (str(tmp_path / "b"), 2), retries=3, backoff=0,
                            retry_on=("failed",)).outcome(timeout=30)  # fmt: skip
    assert plain.status is ExecutionStatus.FAILED and plain.attempts == []
    assert asked.status is ExecutionStatus.COMPLETED
    assert [a.status for a in asked.attempts] == [ExecutionStatus.FAILED] * 2
    assert "attempt 1 fails" in asked.attempts[0].error.message


def test_a_stop_someone_asked_for_is_never_retried_but_a_timeout_may_be(tmp_path):
    """retry_on=('interrupted',) retries an execution stopped by its own timeout, never one a
    user cancelled."""
    esc = Escalation(grace=0.2, term_grace=0.5)
    with _pool(workers=2, escalation=esc) as pool:
        timed = pool.submit(fa.count_and_sleep, (str(tmp_path / "t"), 30), timeout=0.3, retries=1, backoff=0,
                            retry_on="interrupted")  # fmt: skip
        user = pool.submit(fa.count_and_sleep, (str(tmp_path / "u"), 30), retries=3, backoff=0,
                           retry_on=["interrupted", "crashed"])  # fmt: skip
        wait_until(lambda: (tmp_path / "u").exists(), 20, "the execution to begin")
        user.cancel()
        user_out = user.outcome(timeout=20)
        timed_out = timed.outcome(timeout=30)
    assert user_out.status is ExecutionStatus.INTERRUPTED and user_out.attempts == []
    assert (tmp_path / "u").read_text() == "x"
    assert timed_out.status is ExecutionStatus.INTERRUPTED
    assert timed_out.interrupt.reason is InterruptReason.TIMEOUT
    assert [a.status for a in timed_out.attempts] == [ExecutionStatus.INTERRUPTED]
    assert (tmp_path / "t").read_text() == "xx"


def test_a_retry_waiting_for_its_backoff_can_be_cancelled(tmp_path):
    """Cancelled during its backoff, it ends interrupted at stage queued, with its crash listed."""
    with _pool(workers=1) as pool:
        ex = pool.submit(fa.crash_until, (str(tmp_path / "runs"), 5), retries=3, backoff=30)
        deadline = time.monotonic() + 20
        while (tmp_path / "runs").exists() is False or ex.status is not ExecutionStatus.QUEUED:
            assert time.monotonic() < deadline, "it never crashed and went back to wait"
            time.sleep(0.02)
        time.sleep(0.2)  # its Requeued frame has arrived: it waits out its 30 s backoff
        assert ex.cancel()
        out = ex.outcome(timeout=10)
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.QUEUED
    assert len(out.attempts) == 1


@pytest.mark.parametrize("kw, match", [({"retries": -1}, "retries must be"), ({"retries": 1.5}, "retries must be"),
                                       ({"retry_on": "bogus"}, "retry_on must name"),
                                       ({"backoff": -1}, "backoff must be")])  # fmt: skip
def test_bad_retry_arguments_are_refused_at_submit(kw, match):
    """Each bad retry argument is a ValueError that says what is allowed."""
    with _pool(workers=1) as pool:
        with pytest.raises(ValueError, match=match):
            pool.submit(fa.pid, None, **kw)


# -- asyncio ------------------------------------------------------------------------------------


def test_await_an_execution_gives_its_value_or_raises_its_error():
    """`await ex` returns the value, or raises ExecutionFailed like result()."""

    async def main(pool):
        assert await pool.submit(fa.sleeps, 0.05) == 0.05
        with pytest.raises(ExecutionFailed, match="KeyError"):
            await pool.submit(fa.fails, None)

    with _pool(workers=2) as pool:
        asyncio.run(main(pool))


def test_cancelling_the_awaiting_task_leaves_the_execution_running_unless_asked():
    """A cancelled awaiter does not stop the execution; with cancel_on_cancel=True it does."""

    async def main(pool):
        kept = pool.submit(fa.sleeps, 0.5)
        task = asyncio.create_task(kept.wait())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await kept.wait(timeout=20)).status is ExecutionStatus.COMPLETED
        stopped = pool.submit(fa.sleeps, 30)
        task = asyncio.create_task(stopped.wait(cancel_on_cancel=True))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        out = await stopped.wait(timeout=20)
        assert out.status is ExecutionStatus.INTERRUPTED
        assert out.interrupt.reason is InterruptReason.USER_CANCELLED

    with _pool(workers=2) as pool:
        asyncio.run(main(pool))


def test_wait_with_a_timeout_raises_and_the_execution_goes_on():
    """ex.wait(timeout=) raises TimeoutError; the execution is still live and completes."""

    async def main(pool):
        ex = pool.submit(fa.sleeps, 0.6)
        with pytest.raises(TimeoutError):
            await ex.wait(timeout=0.05)
        assert not ex.done()
        assert await ex == 0.6

    with _pool(workers=1) as pool:
        asyncio.run(main(pool))


def test_as_completed_async_yields_in_order_of_ending_and_aevents_streams_events():
    """as_completed_async yields the shortest first; aevents delivers a started and an ended event."""

    async def main(pool):
        execs = [pool.submit(fa.sleeps, s) for s in (0.6, 0.05, 0.3)]
        order = [ex.id async for ex in pool.as_completed_async(execs, timeout=30)]
        assert order == [execs[1].id, execs[2].id, execs[0].id]
        kinds = []

        async def listen():
            async for ev in pool.aevents():
                kinds.append(ev.kind)
                if ev.kind is EventKind.ENDED:
                    return

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.1)  # subscribed before the submission
        await pool.submit(fa.sleeps, 0.01)
        await asyncio.wait_for(listener, 20)
        assert EventKind.STARTED in kinds and kinds[-1] is EventKind.ENDED

    # generous: three sleeps of 0.05–0.6 s on 3 workers keep their order on a loaded machine
    with _pool(workers=3) as pool:
        asyncio.run(main(pool))


def test_an_async_agent_awaits_its_child_executions():
    """`await child` inside an async agent gives each child's value."""
    with _pool(workers=2) as pool:
        assert pool.submit(fa.awaits_children, 3).result(timeout=30) == [0.0, 0.01, 0.02]


def test_current_is_an_error_outside_an_execution():
    """interrupt_pool.current() outside a worker raises RuntimeError that says where it works."""
    with pytest.raises(RuntimeError, match="only available inside an execution"):
        current()


# -- draining -----------------------------------------------------------------------------------


def test_no_replacement_worker_is_started_while_the_pool_shuts_down_with_a_stop():
    """shutdown(cancel=True) kills agents that ignore the flag; no worker is started after it began."""
    started = []

    def on_event(ev):
        if ev.kind is EventKind.WORKER_STARTED:
            started.append(ev)

    pool = _pool(workers=2, escalation=Escalation(grace=0.1, term_grace=0.2), on_event=on_event)
    execs = [pool.submit(fa.ignores_flag, 30) for _ in range(2)]
    for ex in execs:
        ex.wait_started(timeout=20)
    began = time.monotonic_ns()  # events carry the supervisor's stamp; they may reach us later
    pool.shutdown(wait=True, cancel=True)
    assert all(ex.status is ExecutionStatus.INTERRUPTED for ex in execs)
    assert [ev for ev in started if ev.mono_ns > began] == []


# -- the stop timeline --------------------------------------------------------------------------


def test_the_stop_timeline_is_monotonic_from_request_to_end(tmp_path):
    """An agent that ignores its flag and SIGTERM goes through every stage; the outcome's stamps
    and the events, in the order they arrive, read requested <= sigterm <= sigkill <= ended (each
    signal is stamped before it is sent, so its worker's exit can never read earlier)."""
    from . import agents

    events = []
    with _pool(workers=1, escalation=Escalation(grace=0.1, term_grace=0.1), on_event=events.append) as pool:
        marker = tmp_path / "pid"
        ex = pool.submit(agents.ignore_term_sleep, str(marker))
        wait_until(marker.exists, 20, "the agent to start")
        assert ex.cancel()
        out = ex.outcome(timeout=20)
        wait_until(lambda: any(e.kind is EventKind.ENDED and e.execution_id == ex.id for e in events), 20,
                   "the ended event")  # fmt: skip
    i = out.interrupt
    assert out.status is ExecutionStatus.INTERRUPTED and i.stage is Stage.SIGKILL
    assert i.requested_ns <= i.sigterm_ns <= i.sigkill_ns <= i.ended_ns
    wanted = (EventKind.REQUESTED, EventKind.SIGTERM, EventKind.SIGKILL, EventKind.WORKER_EXITED, EventKind.ENDED)
    timeline = [e for e in events if e.kind in wanted and (e.execution_id == ex.id or (
        e.kind is EventKind.WORKER_EXITED and e.worker_id == out.worker_id))]  # fmt: skip
    assert [e.kind for e in timeline] == list(wanted)
    stamps = [e.mono_ns for e in timeline]
    assert stamps == sorted(stamps), [(e.kind.value, e.mono_ns - stamps[0]) for e in timeline]
