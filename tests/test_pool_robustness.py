"""Failures around the issue-11 machinery, found by review and fault injection: each test states
the behaviour that used to break."""

from __future__ import annotations

import asyncio
import time

from interrupt_pool import Escalation, ExecutionStatus, Pool

from . import feature_agents as fa
from .procs import wait_until


def _pool(**kw) -> Pool:
    kw.setdefault("log_dir", None)
    kw.setdefault("checkpoint_dir", None)
    return Pool(**kw)


def test_a_call_that_kills_its_worker_ends_alone_even_when_the_pool_batched_it_with_others():
    """600 short executions of one agent (the pool sends them to workers several at a time), one of
    which kills its worker: only that one ends crashed; every other completes with its value."""
    inputs = [f"x{i}" for i in range(600)]
    inputs[300] = "crash"
    with _pool(workers=2) as pool:
        execs = [pool.submit(fa.crash_on, x) for x in inputs]
        outs = [ex.outcome(timeout=60) for ex in execs]
    crashed = [o.id for o in outs if o.status is ExecutionStatus.CRASHED]
    assert crashed == [execs[300].id]
    assert [o.value for o in outs if o.status is ExecutionStatus.COMPLETED] == inputs[:300] + inputs[301:]


def test_shutdown_does_not_wait_forever_for_a_worker_stuck_in_its_initializer():
    """An initializer that never returns: shutdown(cancel=True) still ends the pool (its workers are
    killed), and the queued execution ends interrupted."""
    pool = _pool(workers=1, initializer=fa.hangs_forever)
    ex = pool.submit(fa.pid, None)
    time.sleep(0.3)
    t = time.monotonic()
    pool.shutdown(wait=True, cancel=True)
    assert time.monotonic() - t < 20  # generous for a loaded machine; it used to never return
    assert ex.outcome(timeout=5).status is ExecutionStatus.INTERRUPTED


def test_an_initializer_that_fails_in_one_worker_leaves_the_work_to_the_others(tmp_path):
    """With 3 workers, the first initializer raises: the queued work runs on the other workers
    instead of failing with InitializerFailed."""
    with _pool(workers=3, initializer=fa.fails_in_the_first_worker, initargs=(str(tmp_path / "flag"),)) as pool:
        outs = [pool.submit(fa.pid, i).outcome(timeout=30) for i in range(6)]
    assert [o.status for o in outs] == [ExecutionStatus.COMPLETED] * 6, [o.error for o in outs]


def test_an_abandoned_chunked_map_is_stopped_at_once():
    """Leaving an imap of 4,000 items in chunks of 500 after its first value stops every other item
    in one request (a chunk named whole stops whole): all have ended within seconds."""
    with _pool(workers=2) as pool:
        it = pool.imap(fa.sleeps, [0.05] * 4000, chunksize=500)
        assert next(it) == 0.05
        t = time.monotonic()
        it.close()  # the generator's exit cancels what is left
        wait_until(lambda: not pool.status()["executions"] or all(
            e["status"] not in ("queued", "running", "cancelling") for e in pool.status()["executions"]), 30,
            "every item to end")  # fmt: skip
        took = time.monotonic() - t
    assert took < 10, took  # it used to take from 5 to over 70 s (a chunk split per cancelled item)


def test_an_async_wait_that_times_out_leaves_no_watcher_behind():
    """Two hundred waits that time out on a running execution add nothing to it."""

    async def main(pool):
        ex = pool.submit(fa.sleeps, 5)
        for _ in range(200):
            try:
                await ex.wait(timeout=0.001)
            except TimeoutError:
                pass
        assert not ex._watchers
        ex.cancel()
        await ex.wait(timeout=20)

    with _pool(workers=1, escalation=Escalation(grace=0.2, term_grace=0.5)) as pool:
        asyncio.run(main(pool))


def test_an_execution_the_pool_batched_can_still_checkpoint(tmp_path):
    """An agent that ran plain often enough to be batched, then checkpoints in some executions: they
    complete and their checkpoints are on disk under their own ids (batching changes nothing)."""
    with Pool(workers=2, log_dir=None, checkpoint_dir=tmp_path / "ck") as pool:
        for _ in range(3):
            pool.map(fa.saves_when_told, ["x"] * 40)  # plain runs: its executions become batchable
        inputs = ["x"] * 300
        inputs[150] = inputs[250] = "save"
        execs = [pool.submit(fa.saves_when_told, x) for x in inputs]
        outs = [ex.outcome(timeout=60) for ex in execs]
        assert [o.status for o in outs] == [ExecutionStatus.COMPLETED] * 300, [o.error for o in outs if o.error][:2]
        for i in (150, 250):
            assert pool.submit(fa.restores, None, id=execs[i].id, resume=True).result(timeout=30) == {
                "saved": execs[i].id}


def test_a_batched_execution_s_tools_are_stopped_before_the_next_one_begins(tmp_path):
    """An execution the pool batched with others leaves a tool running: it is stopped when that
    execution ends, as for one run alone, not when the whole batch ends."""
    from .procs import alive

    pidfile = tmp_path / "tool"
    with _pool(workers=1) as pool:
        for _ in range(3):
            pool.map(fa.leaves_a_tool, ["x"] * 40)  # plain runs: its executions become batchable
        inputs = ["x"] * 200
        inputs[100], inputs[102] = str(pidfile), "slow"
        execs = [pool.submit(fa.leaves_a_tool, x) for x in inputs]
        execs[101].outcome(timeout=60)  # the next execution has ended (the batch goes on, 102 is slow)
        assert not execs[102].done()
        tool = int(pidfile.read_text())
        assert not alive(tool)
        assert all(ex.outcome(timeout=60).status is ExecutionStatus.COMPLETED for ex in execs)
