"""Bad input gets a clear error naming what was wrong, and nothing hangs."""

from __future__ import annotations

import pydantic
import pytest

from interrupt_pool import Escalation, ExecutionStatus, Pool
from tests import agents


@pytest.fixture
def pool():
    with Pool(workers=1) as p:
        yield p


def test_lambdas_and_nested_functions_travel_by_value_and_run(pool):
    """Functions a worker cannot import by name (lambdas, closures) are shipped by value."""
    offset = 10

    def inner(ctx, x):
        return x + offset

    assert pool.submit(lambda ctx, x: x * 2, 21).result(timeout=10) == 42
    assert pool.submit(inner, 1).result(timeout=10) == 11
    assert pool.map(inner, [1, 2]) == [11, 12]


def test_an_agent_that_cannot_travel_by_value_is_refused_at_submit(pool):
    import threading

    lock = threading.Lock()

    def holds_a_lock(ctx, x):
        with lock:
            return x

    with pytest.raises(TypeError, match="cannot be sent to a worker by value.*define it with def at the top level"):
        pool.submit(holds_a_lock, 1)


def test_non_importable_agent_string_is_rejected(pool):
    with pytest.raises(TypeError, match="no_such_module_xyz:run cannot be imported"):
        pool.submit("no_such_module_xyz:run", 1)
    with pytest.raises(TypeError, match="tests.agents:nope cannot be imported"):
        pool.submit("tests.agents:nope", 1)
    with pytest.raises(ValueError, match="'module:function'"):
        pool.submit("tests.agents.identity", 1)
    with pytest.raises(TypeError, match="must be a function"):
        pool.submit(42, 1)


def test_agent_given_as_string_runs(pool):
    assert pool.submit("tests.agents:identity", "hi").result(timeout=10) == "hi"


def test_unpicklable_input_is_rejected_at_submit(pool):
    import threading

    with pytest.raises(TypeError, match="input of execution 'x' cannot be pickled"):
        pool.submit(agents.identity, threading.Lock(), id="x")
    # the id was not consumed by the failed submit
    assert pool.submit(agents.identity, 1, id="x").result(timeout=10) == 1


def test_unpicklable_result_fails_the_execution_with_a_clear_error(pool):
    out = pool.submit(agents.unpicklable_result, None, id="lock").outcome(timeout=10)
    assert out.status is ExecutionStatus.FAILED
    assert "result of execution 'lock' cannot be pickled" in out.error.message


def test_duplicate_live_id_is_rejected(pool):
    first = pool.submit(agents.sleeper, 0.5, id="dup")
    with pytest.raises(ValueError, match="'dup' is already in use"):
        pool.submit(agents.identity, 1, id="dup")
    first.result(timeout=10)
    # once it ended, the id may be used again
    assert pool.submit(agents.identity, 2, id="dup").result(timeout=10) == 2


def test_bad_ids_are_rejected(pool):
    for bad in ("", 5, "a\x00b", "x" * 300):
        with pytest.raises(ValueError, match="execution id must be"):
            pool.submit(agents.identity, 1, id=bad)


@pytest.mark.parametrize("timeout", [-1, 0, float("nan"), float("inf")])
def test_bad_timeouts_are_rejected(pool, timeout):
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        pool.submit(agents.identity, 1, timeout=timeout)
    with pytest.raises(ValueError, match="timeout must be"):
        pool.map(agents.identity, [1], timeout=timeout)


def test_bad_timeout_type_is_rejected(pool):
    with pytest.raises(TypeError, match="timeout must be a number"):
        pool.submit(agents.identity, 1, timeout="5")


@pytest.mark.parametrize("kw", [{"grace": -1}, {"term_grace": -0.5}, {"grace": float("nan")}])
def test_negative_or_nan_grace_periods_are_rejected(kw):
    with pytest.raises(pydantic.ValidationError, match="grace"):
        Escalation(**kw)


@pytest.mark.parametrize("workers", [0, -2, 1.5, True, "4"])
def test_bad_worker_counts_are_rejected(workers):
    with pytest.raises(ValueError, match="workers must be a whole number of at least 1"):
        Pool(workers=workers)


def test_capacity_below_workers_is_rejected():
    with pytest.raises(ValueError, match="capacity must be a whole number of at least workers=2"):
        Pool(workers=2, capacity=1)


def test_bad_escalation_and_cancel_arguments_are_rejected(pool):
    with pytest.raises(TypeError, match="escalation must be an Escalation"):
        pool.submit(agents.identity, 1, escalation={"grace": 1})
    with pytest.raises(ValueError, match="mode must be one of graceful, immediate, kill"):
        pool.cancel("whatever", mode="soft")
    with pytest.raises(ValueError, match="reason must be one of"):
        pool.cancel("whatever", reason="bored")


def test_closed_pool_refuses_new_work():
    from interrupt_pool import PoolClosed

    p = Pool(workers=1)
    p.shutdown()
    with pytest.raises(PoolClosed, match="shut down"):
        p.submit(agents.identity, 1)
    assert p.cancel("anything") is False
