"""async def agents: the doorbell cancels their task at its current await."""

from __future__ import annotations

from interrupt_pool import Escalation, ExecutionStatus, Pool, Stage
from tests import agents
from tests.test_core import wait_for_file


def test_an_async_agent_completes_and_is_stopped_at_its_await(tmp_path):
    with Pool(workers=1, escalation=Escalation(grace=5, term_grace=0.2)) as pool:
        assert pool.submit(agents.async_agent, {"marker": str(tmp_path / "a"), "sleep": 0.01}).result(timeout=10) == "slept"
        ex = pool.submit(agents.async_agent, {"marker": str(tmp_path / "b")})
        wait_for_file(tmp_path / "b")
        pool.cancel(ex.id, message="enough")
        out = ex.outcome(timeout=10)
    assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.FLAG
    # grace is 5 s: only the doorbell can have stopped it this fast
    assert out.interrupt.stop_latency < 2.0
    assert out.interrupt.observe_latency is not None
    assert (tmp_path / "b").read_text() == "finally ran"


def test_an_async_agent_that_never_awaits_is_stopped_by_sigterm(tmp_path):
    with Pool(workers=1, escalation=Escalation(grace=0.2, term_grace=0.5)) as pool:
        ex = pool.submit(agents.async_agent, {"marker": str(tmp_path / "c"), "block": True})
        wait_for_file(tmp_path / "c")
        pool.cancel(ex.id)
        out = ex.outcome(timeout=10)
    assert out.interrupt.stage is Stage.SIGTERM
    assert (tmp_path / "c").read_text() == "finally ran"
