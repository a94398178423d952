"""Prefetch: a busy worker may hold its next short execution; nothing about a stop or a crash changes.

Prefetch switches on only while executions average under 5 ms; these tests raise that
threshold through the supervisor's private test knob (an environment variable it reads
at start), so the prefetched state is reached deterministically.
"""

from __future__ import annotations

import os
import signal

import pytest

from interrupt_pool import Escalation, ExecutionStatus, Pool, Stage
from tests import agents
from tests.test_core import wait_for_file


@pytest.fixture
def always_prefetch(monkeypatch):
    monkeypatch.setenv("_INTERRUPT_POOL_PREFETCH_BELOW_NS", str(10**15))


def test_a_prefetched_execution_cancelled_before_it_starts_never_runs(always_prefetch, tmp_path):
    with Pool(workers=1, escalation=Escalation(grace=0.2, term_grace=0.2)) as pool:
        first = pool.submit(agents.check_forever, str(tmp_path / "first"))
        wait_for_file(tmp_path / "first")
        behind = pool.submit(agents.check_forever, str(tmp_path / "behind"))
        assert [w.execution_id for w in pool.workers()] == [first.id]
        assert behind.status is ExecutionStatus.QUEUED
        assert pool.cancel(behind.id) is True
        pool.cancel(first.id)
        out = behind.outcome(timeout=10)
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.QUEUED
        assert out.worker_id is None
        assert first.outcome(timeout=10).interrupt.stage is Stage.FLAG
        assert pool.submit(agents.identity, 1).result(timeout=10) == 1
    assert not (tmp_path / "behind").exists(), "it never ran"


def test_a_prefetched_execution_survives_the_death_of_its_worker(always_prefetch, tmp_path):
    with Pool(workers=1) as pool:
        victim = pool.submit(agents.write_pid_and_sleep, str(tmp_path / "pid"))
        pid = int(wait_for_file(tmp_path / "pid"))
        behind = pool.submit(agents.whoami, None)
        os.kill(pid, signal.SIGKILL)
        assert victim.outcome(timeout=10).status is ExecutionStatus.CRASHED
        out = behind.outcome(timeout=10)
        assert out.status is ExecutionStatus.COMPLETED, "requeued to the replacement worker, not lost"
        assert out.value["pid"] != pid


def test_without_prefetch_nothing_waits_behind_a_long_execution(tmp_path):
    # The default threshold: long executions keep the average high, so a second worker
    # that frees up takes the next execution instead of it waiting behind the long one.
    with Pool(workers=2) as pool:
        long = pool.submit(agents.check_forever, str(tmp_path / "long"))
        wait_for_file(tmp_path / "long")
        shorts = [pool.submit(agents.sleeper, 0.05) for _ in range(4)]
        for ex in shorts:
            assert ex.result(timeout=10) == 0.05
        assert {ex.outcome().worker_id for ex in shorts} != {long.worker_id}
        long.cancel()
