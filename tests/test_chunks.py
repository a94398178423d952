"""Chunked maps: ``Pool.map(fn, inputs, chunksize=N)`` sends N items in one Run and one slot,
and each item is still an execution of its own (its id, result, cancel, timeout, end).

Item handles come from ``pool._submit_batch(fn, [(None, x), ...], chunksize=N)``, what
``map``/``imap`` use underneath; the public API has no other way to hold an item's handle.
Agents append their execution id to a log, so a test sees which items ran and how often; every
test counts the Ended frames its client receives per id (a second one would be dropped silently
by the client) and checks that the supervisor holds nothing afterwards.

Escalation graces are short (0.2 s, then 0.5 s). Timing bounds are generous (seconds where the
work takes tenths) because CI runs on a loaded 2-core machine.
"""

from __future__ import annotations

import collections
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from interrupt_pool import Escalation, ExecutionFailed, ExecutionStatus, Executor, InterruptMode, InterruptReason
from interrupt_pool import Pool, Stage, WorkerCrashed
from tests import exec_agents as A
from tests.procs import gone, wait_until

FAST = Escalation(grace=0.2, term_grace=0.5)
COMPLETED, INTERRUPTED = ExecutionStatus.COMPLETED, ExecutionStatus.INTERRUPTED


def count_ends(pool: Pool) -> collections.Counter:
    """Count, per execution id, the Ended frames this client receives from now on. The reader
    thread looks ``_on_ended`` up on the instance for every frame, so this wrapper sees them all."""
    seen: collections.Counter = collections.Counter()
    original = pool._on_ended

    def counting(msg):
        seen[msg.id] += 1
        original(msg)

    pool._on_ended = counting
    return seen


@pytest.fixture
def pool():
    with Pool(workers=1, escalation=FAST) as p:
        p.ends = count_ends(p)
        yield p
        p.shutdown(cancel=InterruptMode.KILL)  # whatever a failed test left running


def settle(pool: Pool, handles) -> list:
    """Wait for every handle's end; check that each ended exactly once and that the supervisor
    holds nothing (no chunk, no requeued tail, nothing counted as queued). Returns the outcomes."""
    outs = [h.outcome(timeout=15) for h in handles]
    # No live execution left in the supervisor: its replies come after every frame it sent
    # before them, so from here on every Ended it will ever send for these ids has been read.
    wait_until(lambda: not pool._live_rows(), timeout=10, what="the supervisor holding no execution")
    assert pool.status()["queued"] == 0
    assert {h.id: pool.ends[h.id] for h in handles} == {h.id: 1 for h in handles}
    assert all(h.done() for h in handles)
    return outs


def ran(log: Path) -> collections.Counter:
    """How many times each execution id ran (the agents' log lines)."""
    if not log.exists():
        return collections.Counter()
    return collections.Counter(line.split()[0] for line in log.read_text().splitlines())


def started(path: Path) -> int:
    """Block until an item has written its pid to ``path``; return the pid."""
    return int(wait_until(lambda: path.exists() and path.read_text(), 10, f"{path} written"))


def batch(pool: Pool, specs, chunksize: int, **kw):
    return pool._submit_batch(A.job, [(None, s) for s in specs], chunksize=chunksize, **kw)


# -- values and identities ---------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3, 64, 1000])
def test_map_returns_values_in_input_order_for_every_chunksize(chunksize):
    """map and imap with chunksize N return every value in input order (100 inputs: no multiple of 3 or 64)."""
    with Pool(workers=2) as pool:
        assert pool.map(A.job, range(100), chunksize=chunksize) == list(range(100))
        assert list(pool.imap(A.job, range(7), chunksize=chunksize)) == list(range(7))
        assert pool.map(A.job, [], chunksize=chunksize) == []
        assert pool.map(lambda ctx, x: x * x, range(10), chunksize=chunksize) == [x * x for x in range(10)]


def test_each_item_is_its_own_execution_with_its_own_id_and_result(pool):
    """Items of chunks have distinct ids, each ran under its own id, each has its own result."""
    handles = pool._submit_batch(A.item_id, [(None, x) for x in range(10)], chunksize=4)
    assert len({h.id for h in handles}) == 10
    assert [h.result(timeout=10) for h in handles] == [(x, h.id) for x, h in zip(range(10), handles)]
    outs = settle(pool, handles)
    assert [o.id for o in outs] == [h.id for h in handles]
    assert all(o.status is COMPLETED for o in outs)


def test_an_item_that_raises_fails_only_itself(pool):
    """An item that raises ends FAILED with its error; the items around it in the chunk complete."""
    handles = batch(pool, [0, 1, {"fail": "bad item"}, 3, 4], chunksize=5)
    outs = settle(pool, handles)
    assert [o.status for o in outs] == [COMPLETED, COMPLETED, ExecutionStatus.FAILED, COMPLETED, COMPLETED]
    assert [o.value for o in outs] == [0, 1, None, 3, 4]
    err = outs[2].error
    assert err.type == "ValueError" and err.message == "bad item" and "raise ValueError" in err.traceback
    with pytest.raises(ExecutionFailed, match="bad item"):
        handles[2].result()
    with pytest.raises(ExecutionFailed, match="bad item"):
        pool.map(A.job, [0, {"fail": "bad item"}, 2], chunksize=3)


# -- cancelling items ----------------------------------------------------------------------


def test_cancelling_a_running_item_ends_it_at_flag_and_the_rest_of_its_chunk_completes(pool, tmp_path):
    """A RUNNING item that checks its flag, cancelled, ends INTERRUPTED at stage flag; the items before
    it completed and the ones after it are requeued and complete; every item ran exactly once."""
    log, marker = tmp_path / "log", tmp_path / "m"
    specs = [{"log": str(log), "value": 0}, {"log": str(log), "value": 1},
             {"log": str(log), "marker": str(marker), "check": True},
             {"log": str(log), "value": 3}, {"log": str(log), "value": 4}]  # fmt: skip
    handles = batch(pool, specs, chunksize=5)
    started(marker)
    assert handles[2].status is ExecutionStatus.RUNNING
    assert pool.cancel(handles[2].id) is True
    outs = settle(pool, handles)
    assert [o.status for o in outs] == [COMPLETED, COMPLETED, INTERRUPTED, COMPLETED, COMPLETED]
    assert [o.value for o in outs] == [0, 1, None, 3, 4]
    i = outs[2].interrupt
    assert i.stage is Stage.FLAG and i.reason is InterruptReason.USER_CANCELLED
    assert ran(log) == {h.id: 1 for h in handles}


def test_cancelling_items_of_a_chunk_queued_behind_a_busy_worker_ends_only_them_at_stage_queued(pool, tmp_path):
    """Items of a chunk that has not begun (queued behind a busy worker), cancelled, end at stage queued
    and never run; a chunk whose items are all cancelled never runs; every other item completes."""
    log, marker = tmp_path / "log", tmp_path / "blocker"
    blocker = pool.submit(A.job, {"marker": str(marker), "sleep": 1000})
    started(marker)
    handles = batch(pool, [{"log": str(log), "value": i} for i in range(6)], chunksize=3)
    assert all(h.status is ExecutionStatus.QUEUED for h in handles)
    cancelled = {1, 3, 4, 5}  # one in the first chunk, the whole second chunk
    for k in sorted(cancelled):
        assert pool.cancel(handles[k].id) is True
    pool.cancel(blocker.id)
    outs = settle(pool, handles + [blocker])[:-1]
    for k, out in enumerate(outs):
        if k in cancelled:
            assert (out.status, out.interrupt.stage, out.worker_id) == (INTERRUPTED, Stage.QUEUED, None), k
        else:
            assert (out.status, out.value) == (COMPLETED, k)
    assert ran(log) == {handles[k].id: 1 for k in (0, 2)}


def test_cancelling_a_later_item_of_a_running_chunk_ends_it_at_stage_queued(pool, tmp_path):
    """An item later in a running chunk (not begun yet), cancelled, ends at stage queued and never runs;
    the item running on and the items after it complete."""
    log, marker = tmp_path / "log", tmp_path / "m"
    specs = [{"log": str(log), "marker": str(marker), "sleep": 0.5, "value": 0}] + \
            [{"log": str(log), "value": i} for i in range(1, 5)]  # fmt: skip
    handles = batch(pool, specs, chunksize=5)
    started(marker)
    assert pool.cancel(handles[2].id) is True
    outs = settle(pool, handles)
    assert [o.status for o in outs] == [COMPLETED, COMPLETED, INTERRUPTED, COMPLETED, COMPLETED]
    assert [o.value for o in outs] == [0, 1, None, 3, 4]
    assert outs[2].interrupt.stage is Stage.QUEUED and outs[2].worker_id is None
    assert ran(log) == {h.id: 1 for k, h in enumerate(handles) if k != 2}


def test_cancelling_an_item_of_a_requeued_tail_ends_only_it(pool, tmp_path):
    """After a running item is cancelled, the items after it run as a requeued tail; cancelling one of
    those ends only it, at stage queued, and the others complete."""
    log, m1, m2 = tmp_path / "log", tmp_path / "m1", tmp_path / "m2"
    specs = [{"log": str(log), "value": 0}, {"log": str(log), "marker": str(m1), "check": True},
             {"log": str(log), "marker": str(m2), "sleep": 0.5, "value": 2},
             {"log": str(log), "value": 3}, {"log": str(log), "value": 4}]  # fmt: skip
    handles = batch(pool, specs, chunksize=5)
    started(m1)
    assert pool.cancel(handles[1].id) is True
    started(m2)  # item 2 runs again, as the head of the requeued tail
    assert pool.cancel(handles[4].id) is True
    outs = settle(pool, handles)
    assert [o.status for o in outs] == [COMPLETED, INTERRUPTED, COMPLETED, COMPLETED, INTERRUPTED]
    assert [o.value for o in outs] == [0, None, 2, 3, None]
    assert (outs[1].interrupt.stage, outs[4].interrupt.stage) == (Stage.FLAG, Stage.QUEUED)
    assert ran(log) == {h.id: 1 for k, h in enumerate(handles) if k != 4}


@pytest.fixture
def always_prefetch(monkeypatch):
    """The supervisor's private test knob (read at its start): prefetch whatever the average run time."""
    monkeypatch.setenv("_INTERRUPT_POOL_PREFETCH_BELOW_NS", str(10**15))


@pytest.mark.parametrize("blocker_ends", ["cancelled", "its worker killed"])
def test_cancelling_an_item_of_a_prefetched_chunk_ends_only_it(always_prefetch, tmp_path, blocker_ends):
    """An item of a chunk prefetched behind a running execution, cancelled, ends at stage queued and never
    runs, whether the execution ahead ends normally or its worker dies; the other items complete."""
    with Pool(workers=1, escalation=FAST) as pool:
        pool.ends = count_ends(pool)
        log, marker = tmp_path / "log", tmp_path / "blocker"
        blocker = pool.submit(A.job, {"marker": str(marker), "sleep": 1000})
        pid = started(marker)
        handles = batch(pool, [{"log": str(log), "value": i} for i in range(4)], chunksize=4)
        try:
            # Sent to the busy worker ahead of time: the supervisor no longer counts it as queued.
            wait_until(lambda: pool.status()["queued"] == 0, 10, "the chunk prefetched to the busy worker")
            assert pool.cancel(handles[1].id) is True
        finally:
            if blocker_ends == "cancelled":
                pool.cancel(blocker.id)
            else:
                os.kill(pid, signal.SIGKILL)
        outs = settle(pool, handles + [blocker])[:-1]
        assert [o.status for o in outs] == [COMPLETED, INTERRUPTED, COMPLETED, COMPLETED]
        assert outs[1].interrupt.stage is Stage.QUEUED
        assert ran(log) == {h.id: 1 for k, h in enumerate(handles) if k != 1}


def test_cancelling_a_finished_but_unreported_item_leaves_the_running_item_alone(pool, tmp_path):
    """Cancelling an item that has finished in the worker (its report not sent yet) does not interrupt
    or re-run the item running after it."""
    log, marker = tmp_path / "log", tmp_path / "m"
    # Item 0 takes microseconds: its result is sent with the next flush, after item 1 (see _run_chunk).
    specs = [{"log": str(log), "value": 0},
             {"log": str(log), "marker": str(marker), "sleep": 0.5, "value": 1},
             {"log": str(log), "value": 2}]  # fmt: skip
    handles = batch(pool, specs, chunksize=3)
    started(marker)
    pool.cancel(handles[0].id)  # True or False: it is over either way; what matters is item 1
    outs = settle(pool, handles)
    assert [(o.status, o.value) for o in outs] == [(COMPLETED, 0), (COMPLETED, 1), (COMPLETED, 2)]
    assert ran(log) == {h.id: 1 for h in handles}, "an item ran twice"


def test_another_client_sees_and_cancels_items_by_id(tmp_path):
    """A client attached with Pool.connect(name) finds items with has(), cancels one by id and reads
    outcomes with outcome(); only that item ends interrupted."""
    name = f"chunks-{uuid.uuid4().hex[:10]}"
    log, marker = tmp_path / "log", tmp_path / "m"
    with Pool(workers=1, name=name, escalation=FAST) as pool:
        pool.ends = count_ends(pool)
        specs = [{"log": str(log), "value": 0}, {"log": str(log), "marker": str(marker), "check": True},
                 {"log": str(log), "value": 2}, {"log": str(log), "value": 3}]  # fmt: skip
        handles = batch(pool, specs, chunksize=4)
        try:
            started(marker)
            other = Pool.connect(name)
            try:
                assert other.has(handles[1].id) and other.has(handles[3].id)
                assert not other.has(f"{handles[3].id}-no-such-item")
                assert other.cancel(handles[1].id) is True
                out = other.outcome(handles[1].id, timeout=10)
                assert out.status is INTERRUPTED and out.interrupt.stage is Stage.FLAG
                assert other.outcome(handles[3].id, timeout=10).value == 3
                assert other.outcome(handles[0].id, timeout=10).value == 0
                assert other.has(handles[0].id)  # ended: still in the supervisor's history
                assert other.cancel(handles[0].id) is False  # ended: nothing to stop
            finally:
                other.shutdown()
        finally:
            pool.cancel_all()
        outs = settle(pool, handles)
    assert [o.status for o in outs] == [COMPLETED, INTERRUPTED, COMPLETED, COMPLETED]
    assert ran(log) == {h.id: 1 for h in handles}


def test_timeout_counts_per_item(pool, tmp_path):
    """timeout= is per item, from its own start: an item that runs beyond it is stopped with reason
    timeout, its neighbours complete although the chunk as a whole runs longer than the timeout."""
    log = tmp_path / "log"
    specs = [{"log": str(log), "sleep": 0.3, "value": 0}, {"log": str(log), "sleep": 0.3, "value": 1},
             {"log": str(log), "check": True},
             {"log": str(log), "sleep": 0.3, "value": 3}, {"log": str(log), "sleep": 0.3, "value": 4}]  # fmt: skip
    t0 = time.monotonic()
    handles = batch(pool, specs, chunksize=5, timeout=0.8)
    outs = settle(pool, handles)
    elapsed = time.monotonic() - t0
    assert [o.status for o in outs] == [COMPLETED, COMPLETED, INTERRUPTED, COMPLETED, COMPLETED]
    assert [o.value for o in outs] == [0, 1, None, 3, 4]
    i = outs[2].interrupt
    assert i.reason is InterruptReason.TIMEOUT and i.stage is Stage.FLAG
    # 4 × 0.3 s + 0.8 s = 2 s: the chunk outlived the timeout (its items did not); 10 s for a loaded box.
    assert 2.0 * 0.99 <= elapsed < 2.0 + 10
    assert ran(log) == {h.id: 1 for h in handles}


def test_a_stopped_item_wakes_from_ctx_sleep_and_sees_its_stops_details(pool, tmp_path):
    """An item sleeping in ctx.sleep, cancelled with a message, wakes at the flag stage and reads that
    message from ctx.interrupt, as an ordinary execution does."""
    marker = tmp_path / "m"
    handles = batch(pool, [0, {"marker": str(marker), "report": True}, 2], chunksize=3)
    started(marker)
    time.sleep(0.05)  # into its ctx.sleep
    assert pool.cancel(handles[1].id, message="enough") is True
    outs = settle(pool, handles)
    assert outs[1].value == {"message": "enough", "stage": "flag"}
    assert [outs[0].value, outs[2].value] == [0, 2]


def test_an_item_ignoring_its_flag_is_stopped_at_sigterm_and_the_items_after_it_complete(pool, tmp_path):
    """A cancelled item that never reads its flag is stopped at SIGTERM after the grace; the items
    before it completed and the ones after it run on a replacement worker."""
    log, marker = tmp_path / "log", tmp_path / "m"
    specs = [{"log": str(log), "value": 0}, {"log": str(log), "marker": str(marker), "busy": 1000},
             {"log": str(log), "value": 2}]  # fmt: skip
    handles = batch(pool, specs, chunksize=3)
    pid = started(marker)
    assert pool.cancel(handles[1].id) is True
    outs = settle(pool, handles)
    assert [(o.status, o.value) for o in outs] == [(COMPLETED, 0), (INTERRUPTED, None), (COMPLETED, 2)]
    assert outs[1].interrupt.stage is Stage.SIGTERM
    assert outs[2].pid != pid
    assert gone([pid], timeout=5) == []
    assert ran(log) == {h.id: 1 for h in handles}


def test_an_item_that_kills_its_worker_crashes_alone_and_the_items_after_it_complete(pool, tmp_path):
    """An item that os._exit()s its worker ends CRASHED (WorkerCrashed); the items after it are requeued
    and complete on a replacement worker; every item ran once."""
    log = tmp_path / "log"
    specs = [{"log": str(log), "value": 0}, {"log": str(log), "exit": 5},
             {"log": str(log), "value": 2}, {"log": str(log), "value": 3}]  # fmt: skip
    handles = batch(pool, specs, chunksize=4)
    outs = settle(pool, handles)
    assert outs[1].status is ExecutionStatus.CRASHED
    with pytest.raises(WorkerCrashed, match="exit code 5"):
        handles[1].result()
    assert [(o.status, o.value) for o in outs[2:]] == [(COMPLETED, 2), (COMPLETED, 3)]
    assert outs[2].pid != outs[1].pid
    # Item 0 finished microseconds before the crash: its report may have died with the worker (a
    # chunk sends its results every 2 ms), then it is CRASHED, never run twice.
    assert outs[0].status in (COMPLETED, ExecutionStatus.CRASHED)
    assert ran(log) == {h.id: 1 for h in handles}
    assert pool.map(A.job, range(5), chunksize=2) == list(range(5))


def test_an_item_that_completed_long_before_a_crash_in_its_chunk_keeps_its_result(pool, tmp_path):
    """An item that completed 0.5 s before a later item of its chunk killed the worker ends COMPLETED
    with its value (a chunk reports its results at least every 2 ms)."""
    handles = batch(pool, [0, {"busy": 0.5, "exit": 5}, 2], chunksize=3)
    outs = settle(pool, handles)
    assert [o.status for o in outs] == [COMPLETED, ExecutionStatus.CRASHED, COMPLETED]
    assert [outs[0].value, outs[2].value] == [0, 2]


def test_a_crashed_items_outcome_names_it_and_carries_the_exit_code(pool):
    """An item that os._exit(5)s its worker has exit_code 5 in its outcome and its error names its own id."""
    handles = batch(pool, [0, {"exit": 5}, 2], chunksize=3)
    out = settle(pool, handles)[1]
    assert out.status is ExecutionStatus.CRASHED
    assert out.exit_code == 5
    assert repr(handles[1].id) in out.error.message and "chunk:" not in out.error.message


@pytest.mark.parametrize("how", ["cancel_all", "shutdown(cancel=True)"])
def test_stopping_everything_ends_every_item_of_running_and_queued_chunks_exactly_once(tmp_path, how):
    """cancel_all() and shutdown(cancel=True) end every item exactly once: the running one at the flag,
    the ones not begun at stage queued; no handle is left pending."""
    log, marker = tmp_path / "log", tmp_path / "m"
    with Pool(workers=1, escalation=FAST) as pool:
        pool.ends = count_ends(pool)
        specs = [{"log": str(log), "value": 0}, {"log": str(log), "marker": str(marker), "check": True},
                 {"log": str(log), "value": 2}, {"log": str(log), "value": 3}]  # fmt: skip
        running = batch(pool, specs, chunksize=4)
        queued = pool._submit_batch(A.job, [(None, i) for i in range(5)], chunksize=2)
        handles = running + queued
        started(marker)
        if how == "cancel_all":
            pool.cancel_all()
            outs = settle(pool, handles)
        else:
            pool.shutdown(wait=True, cancel=True)
            outs = [h.outcome(timeout=0) for h in handles]
            assert {h.id: pool.ends[h.id] for h in handles} == {h.id: 1 for h in handles}
    reason = InterruptReason.USER_CANCELLED if how == "cancel_all" else InterruptReason.SHUTDOWN
    assert all(h.done() for h in handles)
    assert outs[0].status is COMPLETED and outs[0].value == 0
    assert outs[1].status is INTERRUPTED and outs[1].interrupt.stage is Stage.FLAG
    for out in outs[2:]:
        assert out.status is INTERRUPTED and out.interrupt.stage is Stage.QUEUED, out
    assert {o.interrupt.reason for o in outs[1:]} == {reason}
    assert ran(log) == {h.id: 1 for h in running[:2]}


def test_an_item_that_catches_its_stop_and_returns_completes_and_the_items_after_it_still_run(pool, tmp_path):
    """A running item that catches its Interrupted and returns ends COMPLETED with its value; the
    chunk stops at that item boundary and the items after it run (requeued) and complete."""
    log, marker = tmp_path / "log", tmp_path / "m"
    specs = [{"log": str(log), "value": 0}, {"log": str(log), "marker": str(marker), "catch": True},
             {"log": str(log), "value": 2}, {"log": str(log), "value": 3}]  # fmt: skip
    handles = batch(pool, specs, chunksize=4)
    started(marker)
    t0 = time.monotonic()
    assert pool.cancel(handles[1].id) is True
    outs = settle(pool, handles)
    assert time.monotonic() - t0 < 5  # woken by the stop, not by its 1000 s sleep; 5 s for a loaded box
    assert [(o.status, o.value) for o in outs] == [(COMPLETED, 0), (COMPLETED, "caught"), (COMPLETED, 2),
                                                   (COMPLETED, 3)]  # fmt: skip
    assert ran(log) == {h.id: 1 for h in handles}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_an_invalid_chunksize_raises_value_error(pool, bad):
    """chunksize 0, -1, 1.5 or True raises ValueError from map, from imap's first step and from Executor.map."""
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(A.job, range(3), chunksize=bad)
    with pytest.raises(ValueError, match="chunksize"):
        next(pool.imap(A.job, range(3), chunksize=bad))
    with pytest.raises(ValueError, match="chunksize"):
        pool.executor().map(A.mul, [1], [1], chunksize=bad)
    assert pool.map(A.job, range(3), chunksize=2) == [0, 1, 2]  # nothing was submitted by the refusals
    assert pool.status()["queued"] == 0


def test_imap_rejects_an_invalid_chunksize_when_called(pool):
    """pool.imap(..., chunksize=0) raises ValueError at the call, before any iteration."""
    with pytest.raises(ValueError, match="chunksize"):
        pool.imap(A.job, range(3), chunksize=0)


def test_executor_map_with_chunksize_returns_values_in_order_and_raises_an_items_own_exception():
    """Executor.map(chunksize=N) returns values in order and raises a failing item's own exception at its place."""
    with Executor(workers=2, escalation=FAST) as ex:
        assert list(ex.map(A.mul, range(50), range(50), chunksize=7)) == [i * i for i in range(50)]
        it = ex.map(A.raise_value_error, ["a", "b"], chunksize=2)
        with pytest.raises(ValueError, match="^a$"):
            next(it)
