"""The OpenAI Agents SDK adapter (interrupt_pool.openai_agents) with the SDK's own scripted
model: batch results, a graceful stop in a sleeping tool and SIGKILL mid-run, each resumed to the
answer an uninterrupted run gives, finished turns not run again.

Timing: stops are asked once a marker file says the slow tool began; the only bound is that a
graceful stop ends far inside its 30 s grace (it ends at the flag in milliseconds).
"""

from __future__ import annotations

import json
import os
import time

import pytest

if os.environ.get("POOL_REQUIRE_EXTRAS") and not __import__("importlib.util").util.find_spec("agents"):
    pytest.fail("CI installs the openai-agents extra: these tests must run, not skip", pytrace=False)
pytest.importorskip("agents")

from interrupt_pool import Escalation, ExecutionStatus, Pool  # noqa: E402
from tests import oa_agents as O  # noqa: E402

LONG = Escalation(grace=30, term_grace=10)


def _calls(log) -> list:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _pool(tmp_path, **kw) -> Pool:
    return Pool(workers=kw.pop("workers", 1), checkpoint_dir=tmp_path / "ck", log_dir=None,
                escalation=kw.pop("escalation", LONG), **kw)  # fmt: skip


def test_a_batch_of_sdk_agents_returns_what_the_sdk_returns_in_process(tmp_path):
    """12 executions of an Agent with tools: each final output equals Runner.run_sync's in this process."""
    tasks = [{"question": f"q{i}", "searches": 1 + i % 3} for i in range(12)]
    with _pool(tmp_path, workers=2) as pool:
        results = pool.map(O.research, tasks)
    assert results == [O.reference(t) for t in tasks]
    assert results[0] == "answer: slow result for q0 0"


@pytest.mark.parametrize("mode,stage", [("graceful", "flag"), ("kill", "sigkill")])
def test_a_stop_in_a_tool_resumes_from_the_last_finished_turn_to_the_uninterrupted_answer(tmp_path, mode, stage):
    """Stopped in its third turn's tool: the stage is as asked, and the resumed run re-runs only that turn."""
    log, mark = tmp_path / "log", tmp_path / "mark"
    task = {"question": "q", "searches": 3}
    with _pool(tmp_path) as pool:
        ex = pool.submit(O.research, {**task, "log": str(log), "mark": str(mark), "slow": 60}, id="run")
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert time.monotonic() < deadline, "the agent never reached its slow tool"
            time.sleep(0.005)
        ex.cancel(mode=mode)
        first = ex.outcome(timeout=30)
        assert first.status is ExecutionStatus.INTERRUPTED and first.interrupt.stage.value == stage, first
        if mode == "graceful":
            assert first.interrupt.stop_latency < LONG.grace / 2
        second = pool.submit(O.research, {**task, "log": str(log)}, id="run", resume=True).outcome(timeout=30)
        again = pool.submit(O.research, {**task, "log": str(log)}, id="run", resume=True).outcome(timeout=30)
    assert second.status is ExecutionStatus.COMPLETED, second.error
    assert second.value == O.reference(task)
    calls = _calls(log)
    assert calls.count(["search", "q 0"]) == 1 and calls.count(["search", "q 1"]) == 1, f"a finished turn ran again: {calls}"
    assert calls.count(["slow_search", "q 2"]) == 2, calls  # cut off in its turn: run again
    assert again.value == second.value
    assert calls.count(["model", 3]) == 1, "a finished run resumed again returns its answer without the model"


def test_bad_inputs_to_run_agent_say_what_to_change(tmp_path):
    """Not an Agent, or a session of the caller's: clear errors."""
    with _pool(tmp_path) as pool:
        bad = pool.submit(O.bad, "not an agent").outcome(timeout=30)
        session = pool.submit(O.bad, "session").outcome(timeout=30)
    assert bad.error.type == "TypeError" and "agents.Agent" in bad.error.message
    assert session.error.type == "ValueError" and "session=" in session.error.message
