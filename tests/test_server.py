"""The supervisor as one server with many clients: Pool.connect, unique names,
callbacks that call back into the pool, backpressure and bounded state.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
import tracemalloc

import psutil
import pytest

from interrupt_pool import Escalation, EventKind, ExecutionStatus, InterruptReason, Pool, PoolClosed, QueueFull, Stage
from tests import agents
from tests.test_core import wait_for_file


@pytest.fixture(autouse=True)
def own_socket_dir(tmp_path, monkeypatch):
    """Named pools of this module live in a socket directory of their own."""
    monkeypatch.setenv("POOL_SOCKET_DIR", str(tmp_path / "sockets"))


# -- one server, many clients ------------------------------------------------------------------------


def test_a_second_client_submits_waits_cancels_and_streams_events(tmp_path):
    """Pool.connect attaches to a running pool: submit, result, cancel of another
    client's execution, outcome by id, events; its shutdown leaves the pool running."""
    marker = tmp_path / "m"
    with Pool(workers=2, name="svc", escalation=Escalation(grace=5, term_grace=1)) as owner:
        mine = owner.submit(agents.check_forever, str(marker), id="owned")
        wait_for_file(marker)
        client = Pool.connect("svc")
        assert client.name == "svc" and client.supervisor_pid == owner.supervisor_pid
        events = client.events()
        assert client.submit(agents.identity, "from the client", id="c1").result(timeout=10) == "from the client"
        assert client.cancel("owned") is True  # any client may stop any execution
        out = mine.outcome(timeout=10)
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.FLAG
        assert client.outcome("owned", timeout=10).interrupt.stage is Stage.FLAG  # another client's, by id
        kinds = []
        for ev in events:
            kinds.append(ev.kind)
            if ev.kind is EventKind.OBSERVED:
                break
        assert EventKind.REQUESTED in kinds
        client.shutdown()
        with pytest.raises(PoolClosed):
            client.submit(agents.identity, 1)
        assert owner.submit(agents.identity, "owner still serves").result(timeout=10) == "owner still serves"


def test_a_clients_executions_go_on_after_it_disconnects_and_are_found_by_id():
    """An execution submitted by a client that then disconnected ends in the pool; its outcome is kept."""
    with Pool(workers=1, name="svc") as owner:
        with Pool.connect("svc") as client:
            ex = client.submit(agents.sleeper, 0.3, id="detached")
            client.shutdown(wait=False)
        assert ex.done() and ex.outcome().error.type == "ClientDisconnected"
        again = Pool.connect("svc")
        assert again.outcome("detached", timeout=10).value == 0.3
        again.close()
        assert owner.has("detached")


def test_a_clients_shutdown_with_cancel_stops_its_own_running_execution_only(tmp_path):
    """shutdown(cancel=True) on a connected client returns without error once its own running
    execution has been stopped (reason shutdown); another client's execution goes on."""
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    with Pool(workers=2, name="svc", escalation=Escalation(grace=5, term_grace=1)) as owner:
        other = owner.submit(agents.check_forever, str(theirs), id="owned")
        wait_for_file(theirs)
        client = Pool.connect("svc")
        mine = client.submit(agents.check_forever, str(ours), id="mine")
        wait_for_file(ours)
        client.shutdown(cancel=True)  # raised ValueError (an integer mode code passed to cancel_all)
        assert mine.done()
        out = mine.outcome()
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.FLAG
        assert out.interrupt.reason is InterruptReason.SHUTDOWN
        assert not other.done()
        assert owner.cancel("owned") is True
        assert other.outcome(timeout=10).status is ExecutionStatus.INTERRUPTED


def test_a_live_pool_name_is_refused_with_its_pid_and_freed_when_the_pool_ends():
    """Names are unique per user: a second Pool with a live name is refused; the name is free again after."""
    with Pool(workers=1, name="unique") as first:
        with pytest.raises(ValueError, match=rf"a pool named 'unique' is already running \(supervisor pid {first.supervisor_pid}\)"):
            Pool(workers=1, name="unique")
    with Pool(workers=1, name="unique") as again:
        assert again.submit(agents.identity, 1).result(timeout=10) == 1


def test_connect_to_no_pool_says_which_pools_run():
    """Pool.connect with an unknown name raises PoolClosed naming the running pools."""
    with pytest.raises(PoolClosed, match="no pool is running"):
        Pool.connect("ghost")
    with Pool(workers=1, name="real"):
        with pytest.raises(PoolClosed, match="no running pool named 'ghost'; running: real"):
            Pool.connect("ghost")


def test_an_over_long_socket_path_is_refused_with_the_fix(tmp_path, monkeypatch):
    """A socket path over the 107 bytes a Unix socket allows is a clear error, not a crash."""
    deep = tmp_path / ("d" * 90)
    deep.mkdir(mode=0o700)
    monkeypatch.setenv("POOL_SOCKET_DIR", str(deep / "sockets"))
    with pytest.raises(ValueError, match="more than the 107 a Unix socket allows; use a shorter name"):
        Pool(workers=1, name="n" * 40)


# -- callbacks and listeners never deadlock ------------------------------------------------------------


def test_done_callbacks_and_listeners_may_call_every_pool_method(tmp_path):
    """cancel, workers and cancel_worker from a done-callback and from an on_event listener all return."""
    seen: dict[str, object] = {}
    done = threading.Event()
    marker = tmp_path / "victim"

    def listener(ev):
        if ev.kind is EventKind.STARTED and ev.execution_id == "victim" and "listener" not in seen:
            seen["listener"] = [w.state for w in pool.workers()]
            seen["listener_cancel_worker"] = pool.cancel_worker(12345, mode="graceful")  # no such worker

    pool = Pool(workers=2, on_event=listener, escalation=Escalation(grace=5, term_grace=1))
    try:
        def callback(ex):
            seen["workers"] = len(pool.workers())
            seen["cancel"] = pool.cancel("victim")
            seen["cancel_worker"] = pool.cancel_worker(99)
            done.set()

        first = pool.submit(agents.identity, 1)
        victim = pool.submit(agents.check_forever, str(marker), id="victim")
        wait_for_file(marker)
        first.result(timeout=10)
        first.add_done_callback(callback)  # already ended: runs here
        assert done.wait(10), "the callback never returned"
        out = victim.outcome(timeout=10)
        assert out.status is ExecutionStatus.INTERRUPTED
        assert seen["workers"] == 2 and seen["cancel_worker"] is False and seen["cancel"] is True
        assert seen["listener"] and seen["listener_cancel_worker"] is False  # it answered

        # as_completed from a callback does not wait on the callback thread it runs on
        got = []
        trigger = pool.submit(agents.identity, "t")
        others = [pool.submit(agents.sleeper, 0.05) for _ in range(3)]
        finished = threading.Event()

        def collect(_ex):
            got.extend(pool.as_completed(others, timeout=10))
            finished.set()

        trigger.add_done_callback(collect)
        assert finished.wait(20) and sorted(e.id for e in got) == sorted(e.id for e in others)
    finally:
        pool.shutdown()


def test_a_callback_may_shut_the_pool_down():
    """shutdown() from a done-callback returns and the pool closes."""
    pool = Pool(workers=1)
    returned = threading.Event()

    def cb(ex):
        pool.shutdown(wait=True)
        returned.set()

    pool.submit(agents.identity, 1).add_done_callback(cb)
    assert returned.wait(20)
    with pytest.raises(PoolClosed):
        pool.submit(agents.identity, 2)


# -- backpressure -------------------------------------------------------------------------------------------


def test_max_queued_blocks_submit_raises_queue_full_and_resumes_when_work_starts(tmp_path):
    """With max_queued=N, the N+1st waiting submit blocks, or raises QueueFull (block=False, queue_timeout)."""
    marker = tmp_path / "busy"
    with Pool(workers=1, max_queued=3, escalation=Escalation(grace=5, term_grace=1)) as pool:
        busy = pool.submit(agents.check_forever, str(marker))
        wait_for_file(marker)
        queued = [pool.submit(agents.identity, i) for i in range(3)]
        with pytest.raises(QueueFull, match="3 executions are queued, max_queued=3"):
            pool.submit(agents.identity, 99, block=False)
        t0 = time.monotonic()
        with pytest.raises(QueueFull, match="after waiting 0.2 s"):
            pool.submit(agents.identity, 99, queue_timeout=0.2)
        assert time.monotonic() - t0 >= 0.2
        got = []
        blocked = threading.Thread(target=lambda: got.append(pool.submit(agents.identity, "late").result(timeout=20)))
        blocked.start()
        time.sleep(0.2)
        assert not got, "a full queue blocks submit"
        busy.cancel()
        blocked.join(20)
        assert got == ["late"] and [ex.result(timeout=10) for ex in queued] == [0, 1, 2]


def test_map_reads_its_inputs_lazily():
    """imap over an endless generator yields results (an eager map would never return)."""
    with Pool(workers=2) as pool:
        it = pool.imap(agents.identity, itertools.count(), window=8)
        assert [next(it) for _ in range(20)] == list(range(20))
        it.close()  # cancels what is still in flight


# -- bounded memory -------------------------------------------------------------------------------------------


def test_ended_executions_cost_nothing_once_their_handles_are_dropped():
    """2,000 results of 100 kB: the user process's Python memory returns to where it was once handles are dropped."""
    with Pool(workers=2) as pool:
        pool.map(agents.identity, [b"w"], window=1)  # warm-up: imports, first frames
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            execs = [pool.submit(agents.big_result, 100_000) for _ in range(2000)]
            assert all(len(ex.result(timeout=60)) == 100_000 for ex in execs)
            held = tracemalloc.get_traced_memory()[0]
            del execs
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert held - before > 150e6, "the results were really held while the handles lived"
    assert after - before < 2e6, f"{(after - before) / 1e6:.1f} MB still held after the handles were dropped"


def test_the_supervisor_holds_nothing_per_ended_execution_even_with_long_timeouts():
    """5,000 executions with timeout=3600 end; the supervisor's timers, tables and history stay bounded."""
    with Pool(workers=2, history=100) as pool:
        pool.map(agents.identity, range(5000), timeout=3600)
        held = pool.status()["held"]
        rss_before = psutil.Process(pool.supervisor_pid).memory_info().rss
        pool.map(agents.identity, range(5000), timeout=3600)
        held2 = pool.status()
        rss_after = psutil.Process(pool.supervisor_pid).memory_info().rss
    assert held["timers"] < 100 and held["executions"] == 0 and held["history"] == 100
    assert held2["held"]["timers"] < 100 and held2["held"]["history"] == 100
    assert len(held2["executions"]) == 100, "status lists the live executions and the last `history` ended ones"
    # 5,000 more ended executions: each would cost ~1 kB if anything were kept per execution.
    assert rss_after - rss_before < 2 * 2**20, f"supervisor grew {(rss_after - rss_before) / 2**20:.1f} MiB"


def test_worker_replacements_release_their_memory_in_the_supervisor(tmp_path):
    """200 workers killed and replaced: the supervisor's tables hold only the live ones and its RSS stays flat."""
    # No spare worker: it is forked 100 ms after it took a place, so the tables would count it or
    # not depending on when they are read.
    with Pool(workers=1, escalation=Escalation(grace=0, term_grace=0), spare_worker=False) as pool:
        for _ in range(20):  # warm-up: the first replacements allocate what later ones reuse
            pool.submit(agents.sleeper, 30).cancel(mode="kill")
        pool.submit(agents.identity, 0).result(timeout=10)
        rss_before = psutil.Process(pool.supervisor_pid).memory_info().rss
        for i in range(200):
            marker = tmp_path / f"running-{i}"
            ex = pool.submit(agents.write_pid_and_sleep, str(marker))
            # Its worker runs it: the kill SIGKILLs that worker (a kill that comes before the worker
            # took its execution only sets the flag, so it never runs and no worker is replaced).
            wait_for_file(marker)
            ex.cancel(mode="kill")
            assert ex.outcome(timeout=10).interrupt.stage is Stage.SIGKILL
        pool.submit(agents.identity, 0).result(timeout=10)
        held = pool.status()["held"]
        rss_after = psutil.Process(pool.supervisor_pid).memory_info().rss
    assert held["workers"] == 1 and held["pids"] == 1 and held["free_slots"] == held["capacity"]
    assert rss_after - rss_before < 2 * 2**20, f"supervisor grew {(rss_after - rss_before) / 2**20:.1f} MiB"


def test_inputs_results_and_agents_larger_than_max_frame_are_clear_errors_not_a_broken_pool():
    """Over the pool's frame limit: one input is refused at submit, a result fails its execution,
    a closure capturing too much is refused; many inputs that fit one by one are split into
    frames that fit. The pool serves on."""
    with Pool(workers=1, max_frame=1 << 20) as pool:
        with pytest.raises(ValueError, match="more than the pool's max_frame"):
            pool.submit(agents.identity, b"x" * (2 << 20))
        out = pool.submit(agents.big_result, 2 << 20).outcome(timeout=10)
        assert out.status is ExecutionStatus.FAILED and "more than the pool's max_frame" in out.error.message
        big = b"z" * (800 << 10)
        with pytest.raises(TypeError, match="more than half the pool's max_frame"):
            pool.submit(lambda ctx, x: len(big), 1)
        assert pool.map(agents.identity, [b"y" * 100_000] * 40) == [b"y" * 100_000] * 40  # 4 MB in all
        assert pool.submit(agents.identity, "still serving").result(timeout=10) == "still serving"
