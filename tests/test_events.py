"""The event stream in Python: Pool(on_event=...) and pool.events()."""

from __future__ import annotations

import threading

from interrupt_pool import Escalation, Event, EventKind, ExecutionStatus, Pool, Stage
from tests import agents
from tests.test_core import wait_for_file


def test_on_event_sees_a_full_escalation_in_order(tmp_path):
    events: list[Event] = []
    replaced = threading.Event()

    def on_event(e: Event) -> None:
        events.append(e)
        if e.kind is EventKind.WORKER_STARTED:
            replaced.set()

    with Pool(workers=1, escalation=Escalation(grace=0.2, term_grace=0.2), on_event=on_event) as pool:
        ex = pool.submit(agents.ignore_term_sleep, str(tmp_path / "m"), id="stubborn")
        wait_for_file(tmp_path / "m")  # its SIGTERM handler is set: the agent really runs
        pool.cancel("stubborn")
        assert ex.outcome(timeout=10).interrupt.stage is Stage.SIGKILL
        # The killed worker's place is taken (by the spare, which is replaced 100 ms later): a worker
        # starts after the kill, but not necessarily before the outcome; wait for it, not a time.
        assert replaced.wait(timeout=10), "no worker started after the kill"
    mine = [e for e in events if e.execution_id == "stubborn"]
    kinds = [e.kind for e in mine]
    assert kinds == [EventKind.SUBMITTED, EventKind.STARTED, EventKind.REQUESTED, EventKind.SIGTERM,
                     EventKind.SIGKILL, EventKind.ENDED]  # fmt: skip
    sigterm, sigkill, ended = mine[3], mine[4], mine[5]
    assert sigkill.mono_ns - sigterm.mono_ns >= 0.2e9 * 0.99
    assert sigterm.late_ms is not None and sigterm.late_ms >= 0
    assert ended.status is ExecutionStatus.INTERRUPTED and ended.stage is Stage.SIGKILL
    assert all(e.worker_id is not None for e in mine[1:])
    worker_kinds = {e.kind for e in events if e.execution_id is None}
    assert {EventKind.WORKER_STARTED, EventKind.WORKER_EXITED} <= worker_kinds


def test_events_iterator_yields_observed_and_ends_with_the_pool():
    pool = Pool(workers=1)
    seen: list[Event] = []
    ready = threading.Event()

    def consume():
        it = pool.events()
        ready.set()
        for ev in it:
            seen.append(ev)

    t = threading.Thread(target=consume)
    t.start()
    ready.wait(5)
    ex = pool.submit(agents.check_forever, None)
    ex.wait_started(timeout=10)
    pool.cancel(ex.id)
    ex.outcome(timeout=10)
    pool.shutdown()
    t.join(10)
    assert not t.is_alive(), "events() ends when the pool has shut down"
    kinds = [e.kind for e in seen if e.execution_id == ex.id]
    assert EventKind.OBSERVED in kinds and kinds[-1] is EventKind.ENDED
    observed = next(e for e in seen if e.kind is EventKind.OBSERVED)
    requested = next(e for e in seen if e.kind is EventKind.REQUESTED)
    assert observed.mono_ns >= requested.mono_ns
    assert observed.at.tzinfo is not None


def test_a_failing_listener_does_not_stop_results(capsys):
    def broken(ev):
        raise RuntimeError("listener bug")

    with Pool(workers=1, on_event=broken) as pool:
        assert pool.submit(agents.identity, 7).result(timeout=10) == 7
    assert "listener bug" in capsys.readouterr().err
