"""interrupt_pool.Executor against what CPython's own executor tests check
(Lib/test/test_concurrent_futures/), and the differences from ProcessPoolExecutor we advertise:
``future.cancel()`` stops a *running* call (its tools with it), a call that crashes its worker
fails only its own future, and ``interrupt_pool.current()`` gives a plain function its context.

Escalation graces are short (0.2 s, then 0.5 s) so stops through SIGTERM stay fast. Timing
bounds are generous (seconds where the work takes tenths) because CI runs on a loaded 2-core
machine: they tell "stopped by the pool" from "ran to its end" (30 s or 1000 s), nothing finer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import os
import queue
import signal
import threading
import time
import warnings
from pathlib import Path

import pytest

import interrupt_pool
from interrupt_pool import Context, Escalation, ExecutionInterrupted, ExecutionStatus, Executor, InterruptMode, Pool
from interrupt_pool import Stage, WorkerCrashed
from tests import exec_agents as A
from tests.procs import alive, gone, wait_until

FAST = Escalation(grace=0.2, term_grace=0.5)


@pytest.fixture
def executor():
    ex = Executor(workers=2, escalation=FAST)
    yield ex
    ex.pool.shutdown(wait=True, cancel=InterruptMode.KILL)  # whatever a failed test left running


def _pids(path: Path, timeout: float = 10.0) -> list[int]:
    """The pids an agent wrote to ``path`` (its 'I started' signal)."""
    return [int(p) for p in wait_until(lambda: path.exists() and path.read_text(), timeout, f"{path}").split()]


def _unstick(pool: Pool) -> None:
    """Rescue for a known bug (a reader thread blocked on a reply only it could read): answer
    every request still waiting, so the pool can read frames again and shut down."""
    with pool._lock:
        stuck = [pool._replies.pop(req) for req in list(pool._replies)]
    for fut in stuck:
        if not fut.done():
            fut.set_result(False)


# -- the concurrent.futures contract -----------------------------------------------------


def test_it_is_a_concurrent_futures_executor_whose_submit_returns_the_value(executor):
    """Executor is a concurrent.futures.Executor; submit returns a concurrent.futures.Future with fn's value."""
    assert isinstance(executor, cf.Executor)
    fut = executor.submit(pow, 2, 8)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=10) == 256
    assert fut.done() and not fut.cancelled() and fut.exception() is None


def test_submit_passes_positional_and_keyword_arguments(executor):
    """submit(fn, *args, **kwargs) calls fn(*args, **kwargs), even with keywords named self and fn."""
    assert executor.submit(A.mul, 2, y=8).result(timeout=10) == 16
    assert executor.submit(A.capture, 1, self=2, fn=3).result(timeout=10) == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=A.capture, arg=1)  # fn is positional-only, as in CPython
    with pytest.raises(TypeError):
        executor.submit(arg=1)


def test_map_returns_values_in_order_over_several_iterables(executor):
    """map(fn, *iterables) yields fn(*args) in input order and stops at the shortest, with or without chunksize."""
    expected = [pow(i, i) for i in range(10)]
    assert list(executor.map(pow, range(10), range(10))) == expected
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == expected  # 10 is no multiple of 3
    assert list(executor.map(pow, range(10), range(10), chunksize=64)) == expected
    assert list(executor.map(A.mul, [1, 2, 3], [10, 20])) == [10, 40]
    assert list(executor.map(A.mul, [], [])) == []
    assert list(executor.map(A.mul, [], [], chunksize=4)) == []


@pytest.mark.parametrize("chunksize", [1, 2])
def test_map_raises_the_functions_exception_at_its_position(executor, chunksize):
    """map yields the values before a failing call, then raises that call's own exception."""
    it = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5], chunksize=chunksize)
    assert next(it) == (0, 1)
    assert next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_timeout_raises_timeout_error_and_stops_the_slow_call():
    """map(..., timeout=) raises concurrent.futures.TimeoutError after the values that came in time;
    the slow call is stopped, so shutting down does not wait for it."""
    with Executor(workers=2, escalation=FAST) as ex:
        results = []
        t0 = time.monotonic()
        with pytest.raises(cf.TimeoutError):
            for value in ex.map(A.sleep_then, [0, 0, 30], timeout=1.5):
                results.append(value)
        assert results == [None, None]
        # Raised at the deadline (1.5 s), not at the slow call's end (30 s); +5 s for a loaded machine.
        assert time.monotonic() - t0 < 1.5 + 5
    # __exit__ waited for every call: the 30 s one was stopped (grace 0.2 s + SIGTERM), not awaited.
    assert time.monotonic() - t0 < 1.5 + 10


def test_a_functions_exception_comes_back_as_itself_with_the_remote_traceback_as_cause(executor):
    """The future raises the function's own exception type and message; its __cause__ carries the
    remote traceback text."""
    fut = executor.submit(A.raise_value_error, "bad tool output")
    with pytest.raises(ValueError, match="^bad tool output$") as info:
        fut.result(timeout=10)
    assert type(info.value) is ValueError
    assert isinstance(fut.exception(), ValueError)
    cause = info.value.__cause__
    assert cause is not None and "ValueError: bad tool output" in str(cause)
    assert fut._execution.outcome().status is ExecutionStatus.FAILED


def test_the_remote_traceback_names_the_frames_the_exception_came_through(executor):
    """The __cause__'s remote traceback text names the functions the exception passed through."""
    with pytest.raises(ValueError) as info:
        executor.submit(A.raise_value_error, "deep").result(timeout=10)
    text = str(info.value.__cause__)
    assert "Traceback (most recent call last)" in text
    assert "raise_value_error" in text and "_deeper" in text and "exec_agents.py" in text


def test_shutdown_wait_waits_for_running_calls():
    """shutdown(wait=True) returns only after every submitted call has ended, with its value."""
    ex = Executor(max_workers=2)
    futs = [ex.submit(A.sleep_then, 0.3, i) for i in range(3)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futs)
    assert [f.result(timeout=0) for f in futs] == [0, 1, 2]
    assert gone([ex.pool.supervisor_pid], timeout=5) == []  # an executor that made its pool ends it


def test_shutdown_cancel_futures_cancels_queued_calls_while_running_ones_finish(tmp_path):
    """shutdown(cancel_futures=True): the running call completes; the queued futures are cancelled()
    and their calls never run (their executions end at stage queued)."""
    ex = Executor(workers=1, escalation=FAST)
    try:
        running = ex.submit(A.write_then_sleep, str(tmp_path / "running"), 0.5)
        queued = [ex.submit(A.write_then_sleep, str(tmp_path / f"queued{i}"), 0) for i in range(3)]
        wait_until(lambda: (tmp_path / "running").exists(), what="the first call's start")
        ex.shutdown(wait=True, cancel_futures=True)
        assert running.result(timeout=0) == 0.5
        assert [f.cancelled() for f in queued] == [True, True, True]
        for fut in queued:
            with pytest.raises(cf.CancelledError):
                fut.result(timeout=0)
            out = fut._execution.outcome(timeout=10)
            assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.QUEUED
        assert not any((tmp_path / f"queued{i}").exists() for i in range(3)), "a cancelled queued call ran"
    finally:
        ex.pool.shutdown(wait=True, cancel=InterruptMode.KILL)


def test_cancelling_a_pending_future_returns_true_and_it_never_runs(executor, tmp_path):
    """cancel() of a future still queued behind busy workers returns True; it is cancelled and never runs."""
    busy = [executor.submit(A.write_then_sleep, str(tmp_path / f"busy{i}"), 1000) for i in range(2)]
    for i in range(2):
        wait_until(lambda: (tmp_path / f"busy{i}").exists(), what="both workers busy")
    pending = executor.submit(A.write_then_sleep, str(tmp_path / "pending"), 0)
    try:
        assert pending.cancel() is True
        assert pending.cancelled() and pending.done()
        with pytest.raises(cf.CancelledError):
            pending.result(timeout=0)
        assert pending._execution.outcome(timeout=10).interrupt.stage is Stage.QUEUED
    finally:
        for fut in busy:
            fut.cancel()
    assert not (tmp_path / "pending").exists()


def test_submit_and_map_after_shutdown_raise_runtime_error():
    """After shutdown, submit and map raise RuntimeError."""
    ex = Executor(workers=1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 2, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(pow, [1], [1])


def test_the_context_manager_waits_for_calls_and_shuts_its_pool_down():
    """Leaving `with Executor(...)` waits for the calls and ends the pool it made."""
    with Executor(workers=1) as ex:
        fut = ex.submit(A.sleep_then, 0.3, "done")
    assert fut.done() and fut.result(timeout=0) == "done"
    assert gone([ex.pool.supervisor_pid], timeout=5) == []
    with pytest.raises(RuntimeError):
        ex.submit(pow, 2, 2)


def test_wait_first_completed_returns_as_soon_as_one_is_done(executor):
    """concurrent.futures.wait(FIRST_COMPLETED) returns when the fast call ends, with the slow one not done."""
    slow = executor.submit(A.sleep_then, 30, "slow")
    fast = executor.submit(A.sleep_then, 0.1, "fast")
    t0 = time.monotonic()
    done, not_done = cf.wait([slow, fast], timeout=20, return_when=cf.FIRST_COMPLETED)
    # The fast call takes 0.1 s; 10 s leaves room for a loaded machine and is far from 30 s.
    assert time.monotonic() - t0 < 10
    assert done == {fast} and not_done == {slow}
    assert fast.result(timeout=0) == "fast"
    assert slow.cancel() is True


def test_as_completed_yields_every_future_and_raises_timeout_error_when_its_timeout_expires(executor):
    """as_completed yields each future once; with a timeout that expires it raises TimeoutError."""
    futs = [executor.submit(A.mul, i, 3) for i in range(6)]
    seen = list(cf.as_completed(futs, timeout=20))
    assert sorted(seen, key=id) == sorted(futs, key=id)
    assert sorted(f.result() for f in seen) == [0, 3, 6, 9, 12, 15]

    slow = executor.submit(A.sleep_then, 30)
    quick = executor.submit(A.mul, 2, 2)
    got = []
    t0 = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        for fut in cf.as_completed([slow, quick], timeout=1.0):
            got.append(fut)
    assert got == [quick]
    assert time.monotonic() - t0 < 1.0 + 5  # at the timeout, not at the slow call's end; +5 s for CI load
    assert slow.cancel() is True


def test_add_done_callback_runs_once_with_the_future(executor):
    """A done callback runs once with its future when the call ends; added after the end, it runs at once."""
    calls = queue.SimpleQueue()
    fut = executor.submit(A.sleep_then, 0.2, 7)
    fut.add_done_callback(calls.put)
    assert calls.get(timeout=10) is fut
    assert fut.result(timeout=0) == 7
    fut.add_done_callback(calls.put)  # already done: called right here
    assert calls.get_nowait() is fut
    time.sleep(0.1)  # a second (wrong) call of the first callback would land here
    assert calls.empty()


def test_a_done_callback_may_cancel_another_running_future():
    """A done callback that cancels another running future returns, and the other call is stopped."""
    ex = Executor(workers=2, escalation=FAST)
    try:
        slow = ex.submit(A.sleep_then, 1000)
        wait_until(slow.running, what="the slow call's start")
        answers = queue.SimpleQueue()
        fast = ex.submit(A.sleep_then, 0, "fast")
        fast.add_done_callback(lambda f: answers.put(slow.cancel()))
        assert answers.get(timeout=3) is True  # queue.Empty here: the callback is stuck (it takes ms when it works)
        assert slow.cancelled()
        out = slow._execution.outcome(timeout=10)
        assert out.status is ExecutionStatus.INTERRUPTED
    finally:
        _unstick(ex.pool)
        ex.pool.shutdown(wait=True, cancel=InterruptMode.KILL)


def test_asyncio_wrap_future_and_run_in_executor(executor):
    """asyncio.wrap_future(fut) and loop.run_in_executor(executor, fn, arg) await calls of the executor."""

    async def main():
        loop = asyncio.get_running_loop()
        wrapped = await asyncio.wrap_future(executor.submit(A.mul, 3, 4))
        ran = await loop.run_in_executor(executor, A.mul, 5, 6)
        both = await asyncio.gather(loop.run_in_executor(executor, A.sleep_then, 0.1, "a"),
                                    loop.run_in_executor(executor, A.sleep_then, 0.1, "b"))  # fmt: skip
        return wrapped, ran, both

    assert asyncio.run(main()) == (12, 30, ["a", "b"])


def test_max_workers_must_be_positive_and_is_a_synonym_of_workers():
    """max_workers 0 or negative raises ValueError (CPython's wording); max_workers= sets the worker count."""
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(max_workers=bad)
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(bad)
    with pytest.raises(TypeError):
        Executor(workers=1, max_workers=2)
    with Executor(max_workers=1) as ex:
        assert len(ex.pool.workers()) == 1
        assert ex.submit(A.mul, 2, 3).result(timeout=10) == 6


# -- what we advertise beyond ProcessPoolExecutor ------------------------------------------


def test_cancel_of_a_running_cooperative_call_stops_it_and_its_tools(executor, tmp_path):
    """future.cancel() on a RUNNING call that sleeps through current().sleep returns True, the future
    is cancelled, the call stops at the flag stage and the tool it started is killed."""
    path = tmp_path / "coop"
    fut = executor.submit(A.cooperative_wait, str(path))
    worker, tool = _pids(path)
    wait_until(fut.running, what="the future running")
    assert fut.cancel() is True
    assert fut.cancelled() and fut.done()
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=0)
    out = fut._execution.outcome(timeout=10)
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.FLAG
    assert wait_until(lambda: Path(f"{path}.finally").exists(), what="the function's finally")
    assert gone([tool], timeout=5) == [], "the call's sleep 1000 tool outlived the stop"
    assert alive(worker)  # a cooperative stop keeps the worker
    assert executor.submit(A.mul, 1, 1).result(timeout=10) == 1


def test_cancel_of_a_running_call_that_ignores_its_flag_escalates_to_sigterm(tmp_path):
    """future.cancel() on a RUNNING call looping on plain time.sleep stops it at SIGTERM after the grace;
    its worker and its tool are gone and the executor goes on."""
    with Executor(workers=1, escalation=FAST) as ex:
        path = tmp_path / "stubborn"
        fut = ex.submit(A.stubborn_wait, str(path))
        worker, tool = _pids(path)
        t0 = time.monotonic()
        assert fut.cancel() is True
        assert fut.cancelled()
        out = fut._execution.outcome(timeout=10)
        elapsed = time.monotonic() - t0
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.SIGTERM
        assert out.interrupt.sigterm_ns - out.interrupt.requested_ns >= 0.2e9 * 0.99  # not before the grace
        assert elapsed < 0.2 + 5  # grace 0.2 s; 5 s more for a loaded machine, far below the call's forever
        assert Path(f"{path}.finally").read_text() == "sigterm"  # SIGTERM unwound it: its finally ran
        assert gone([worker, tool], timeout=5) == []
        assert ex.submit(A.mul, 2, 2).result(timeout=10) == 4  # a replacement worker serves


def test_a_call_that_crashes_its_worker_fails_only_its_own_future(executor):
    """A call that os._exit()s or SIGKILLs its worker fails its own future with WorkerCrashed; the other
    futures complete and the executor serves on (ProcessPoolExecutor breaks every pending future)."""
    slow = executor.submit(A.sleep_then, 0.5, "slow")
    exited = executor.submit(A.exit_worker, 7)
    killed = executor.submit(A.kill_own_worker)
    others = [executor.submit(A.mul, i, 2) for i in range(6)]
    with pytest.raises(WorkerCrashed, match="exit code 7"):
        exited.result(timeout=10)
    with pytest.raises(WorkerCrashed, match="SIGKILL"):
        killed.result(timeout=10)
    assert exited._execution.outcome().exit_code == 7
    assert killed._execution.outcome().signal == signal.SIGKILL
    assert slow.result(timeout=10) == "slow"
    assert [f.result(timeout=10) for f in others] == [0, 2, 4, 6, 8, 10]
    assert list(executor.map(A.mul, range(4), range(4))) == [0, 1, 4, 9]

    # The contrast: the same crash breaks a ProcessPoolExecutor and the future queued behind it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a process with threads
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as ppe:
            crash = ppe.submit(A.exit_after, 0.3, 7)  # after the next submit (which a broken pool refuses)
            behind = ppe.submit(A.mul, 1, 1)
            with pytest.raises(cf.process.BrokenProcessPool):
                crash.result(timeout=20)
            with pytest.raises(cf.process.BrokenProcessPool):
                behind.result(timeout=20)


def test_current_inside_a_call_is_its_execution_context_and_raises_outside(executor):
    """interrupt_pool.current() in a submitted plain function (and in its threads) is the context of the
    future's execution; outside an execution it raises RuntimeError."""
    fut = executor.submit(A.whoami)
    got = fut.result(timeout=10)
    assert got["execution_id"] == fut._execution.id
    assert got["pid"] != os.getpid()
    other = executor.submit(A.whoami)
    assert other.result(timeout=10)["execution_id"] == other._execution.id != fut._execution.id
    threaded = executor.submit(A.current_in_a_thread)
    assert threaded.result(timeout=10) == threaded._execution.id
    with pytest.raises(RuntimeError, match="only available inside an execution"):
        interrupt_pool.current()
    assert executor.submit(lambda: type(interrupt_pool.current())).result(timeout=10) is Context


def test_pool_executor_runs_calls_and_its_shutdown_leaves_the_pool_usable():
    """pool.executor() runs calls on an existing pool; its shutdown stops the executor, not the pool."""
    with Pool(workers=1, escalation=FAST) as pool:
        ex = pool.executor()
        assert isinstance(ex, cf.Executor) and ex.pool is pool
        fut = ex.submit(A.whoami)
        assert fut.result(timeout=10)["execution_id"] == fut._execution.id
        assert list(ex.map(A.mul, [1, 2], [3, 4])) == [3, 8]
        ex.shutdown(wait=True)
        with pytest.raises(RuntimeError):
            ex.submit(pow, 2, 2)
        assert pool.submit(lambda ctx, x: x + 1, 1).result(timeout=10) == 2
        assert pool.executor().submit(pow, 2, 5).result(timeout=10) == 32
        assert alive(pool.supervisor_pid)


def test_lambdas_and_functions_defined_in_a_test_travel_by_value(executor):
    """A lambda and a closure defined in the test (not importable) run in the workers."""
    offset = 100

    def add_offset(x, *, times=1):
        return (x + offset) * times

    assert executor.submit(lambda x: x * 3, 4).result(timeout=10) == 12
    assert executor.submit(add_offset, 1, times=2).result(timeout=10) == 202
    assert list(executor.map(lambda a, b: a - b, [5, 6], [1, 2])) == [4, 4]
    assert list(executor.map(add_offset, range(5), chunksize=2)) == [100, 101, 102, 103, 104]


def test_an_executor_timeout_stops_calls_that_run_too_long():
    """Executor(timeout=) stops a call that runs longer, its future raising ExecutionInterrupted (reason timeout)."""
    with Executor(workers=1, escalation=FAST, timeout=0.5) as ex:
        fut = ex.submit(A.sleep_then, 1000)
        with pytest.raises(ExecutionInterrupted, match="timeout"):
            fut.result(timeout=10)
        assert ex.submit(A.sleep_then, 0.01, "in time").result(timeout=10) == "in time"


def test_done_futures_settle_on_the_pools_thread_without_a_thread_per_call(executor):
    """Many calls settle their futures without the executor starting a thread per call."""
    before = threading.active_count()
    futs = [executor.submit(A.mul, i, i) for i in range(200)]
    assert [f.result(timeout=20) for f in futs] == [i * i for i in range(200)]
    assert threading.active_count() <= before + 2  # the pool's own threads at most, never one per call
