"""The LangGraph adapter (interrupt_pool.langgraph) with real LangGraph graphs and a scripted
chat model: batch results, every stop mode at every point of a graph (between steps, in a
sleeping tool, in a hung subprocess tool, in a CPU tool), nothing left running, and resumes
that end exactly where an uninterrupted run ends.

Timing: stops are asked while a marker file says the slow part has begun; tolerances are about
ordering (a graceful stop that ends at the flag ends long before its 30 s grace), never speed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

if os.environ.get("POOL_REQUIRE_EXTRAS") and not __import__("importlib.util").util.find_spec("langgraph"):
    pytest.fail("CI installs the langgraph extra: these tests must run, not skip", pytrace=False)
pytest.importorskip("langgraph")

from interrupt_pool import Escalation, ExecutionStatus, Pool, Stage  # noqa: E402
from interrupt_pool.langgraph import FORMAT  # noqa: E402
from interrupt_pool.shared._checkpoint import id_to_dirname  # noqa: E402
from tests import lg_agents as A  # noqa: E402
from tests.test_core import wait_for_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LONG = Escalation(grace=30, term_grace=10)  # a graceful stop that waits this long has failed the test's point


def _calls(log: Path) -> list[list]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pool(tmp_path, **kw) -> Pool:
    kw.setdefault("escalation", LONG)
    return Pool(workers=kw.pop("workers", 1), checkpoint_dir=tmp_path / "ck", log_dir=None, **kw)


def test_a_batch_of_graph_runs_returns_what_the_graph_returns_in_process_as_plain_data(tmp_path):
    """20 executions of a model+ToolNode graph: each result equals graph.invoke's in this process, as JSON-ready data."""
    tasks = [{"question": f"q{i}", "script": [[["search", {"query": f"x{i}"}]], "answer"]} for i in range(20)]
    with _pool(tmp_path, workers=2) as pool:
        results = pool.map(A.research, tasks)
    for task, got in zip(tasks, results, strict=True):
        assert A.without_ids(got) == A.without_ids(A.plain_reference(task))
        json.dumps(got)  # plain data: no message objects, no reprs
    assert got["messages"][-1] == {"type": "ai", "data": got["messages"][-1]["data"]}
    assert got["messages"][-1]["data"]["content"] == "answer | result for x19"


def test_with_graph_invoke_nothing_checks_between_steps_so_a_graceful_stop_waits_out_the_grace(tmp_path):
    """The observation that motivated the adapter: graph.invoke runs on past a graceful stop until SIGTERM."""
    mark = tmp_path / "mark"
    task = {"question": "q", "script": A.RESEARCH, "pause": {"1": 0.5, "2": 0.5}, "mark": str(mark)}
    with _pool(tmp_path, escalation=Escalation(grace=3, term_grace=5)) as pool:
        ex = pool.submit(A.invoke_agent, task)
        wait_for_file(mark)
        ex.cancel()
        out = ex.outcome(timeout=30)
    assert out.status in (ExecutionStatus.COMPLETED, ExecutionStatus.INTERRUPTED)
    if out.status is ExecutionStatus.INTERRUPTED:
        assert out.interrupt.stage is not Stage.FLAG, "nothing in graph.invoke looks at the flag"


def _step_with(call: list) -> dict:
    """A graph whose second step runs ``call`` beside an instant search, each call a task of its own."""
    return {"question": "q", "script": [[["search", {"query": "first"}]], [["search", {"query": "sibling"}], call],
                                        "answer"], "sends": True}  # fmt: skip


# Where the stop lands: (task, the marker text that says it is there, what slows the first run).
POINTS = {
    "between steps": ({"question": "q", "script": A.RESEARCH}, "model 1", {"pause": {"1": 1.5}}),
    "sleeping tool": (_step_with(["slow_search", {"query": "s"}]), "slow_search", {"slow": 60}),
    "hung subprocess tool": (_step_with(["run_code", {"pid_file": "PID"}]), "run_code", {"slow": 1}),
    "cpu tool": (_step_with(["crunch", {"n": 1000}]), "crunch", {"slow": 60}),
}
# The stage each mode ends at, per point. A graceful stop of a hung subprocess tool needs SIGTERM
# (nothing checks). An immediate stop writes the flag and sends SIGTERM together: inside a tool
# step it may end at the flag, where the tool (ctx.sleep, a check) or run_graph's check after the
# sibling call's chunk sees the flag before the main thread handles the signal. Between steps
# nothing runs that could look, so it ends at SIGTERM.
STAGES = {
    "graceful": {"between steps": {"flag"}, "sleeping tool": {"flag"}, "hung subprocess tool": {"sigterm"},
                 "cpu tool": {"flag"}},
    "immediate": {"between steps": {"sigterm"}, "sleeping tool": {"sigterm", "flag"},
                  "hung subprocess tool": {"sigterm", "flag"}, "cpu tool": {"sigterm", "flag"}},
    "kill": dict.fromkeys(POINTS, {"sigkill"}),
}  # fmt: skip


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("mode", list(STAGES))
def test_every_stop_mode_at_every_point_ends_at_its_stage_leaves_nothing_running_and_resumes_exactly(
        tmp_path, mode, point):  # fmt: skip
    """Stopped between steps or inside a sleeping, hung-subprocess or CPU tool, by each mode: the expected
    stage, no process left, finished steps and finished sibling calls not run again, and the resumed run
    ends exactly as an uninterrupted one."""
    task, marker, slow = POINTS[point]
    pid_file = tmp_path / "pid"
    task = json.loads(json.dumps(task).replace('"PID"', json.dumps(str(pid_file))))
    log, mark = tmp_path / "log", tmp_path / "mark"
    escalation = Escalation(grace=0.3 if point == "hung subprocess tool" else 30, term_grace=5)
    with _pool(tmp_path, escalation=escalation) as pool:
        ex = pool.submit(A.research, {**task, **slow, "log": str(log), "mark": str(mark)}, id="run")
        deadline = time.monotonic() + 20
        while not (mark.exists() and mark.read_text() == marker):
            assert time.monotonic() < deadline, f"the graph never reached {marker!r}"
            time.sleep(0.005)
        ex.cancel(mode=mode)
        first = ex.outcome(timeout=30)
        assert first.status is ExecutionStatus.INTERRUPTED, first
        assert first.interrupt.stage.value in STAGES[mode][point], first.interrupt
        if pid_file.exists():
            assert not _alive(int(pid_file.read_text())), "the tool's subprocess outlived its execution"
        second = pool.submit(A.research, {**task, "log": str(log)}, id="run", resume=True).outcome(timeout=30)
    assert second.status is ExecutionStatus.COMPLETED, second.error
    assert A.without_ids(second.value) == A.without_ids(A.plain_reference(task)), "the resume must end where an uninterrupted run ends"
    calls = _calls(log)
    assert calls.count(["model", 0]) == 1, f"the first step ran again: {calls}"
    assert calls.count(["search", "first"]) == 1 or point == "between steps", calls
    if point == "between steps":
        assert calls.count(["model", 1]) == (1 if mode == "graceful" else 2), calls  # a signal cuts the step off
    elif mode == "graceful" and point != "hung subprocess tool":
        # The sibling's writes were saved when it finished; a graceful stop waits for nothing else.
        assert calls.count(["search", "sibling"]) == 1, f"the finished sibling call ran again: {calls}"


def test_a_graceful_stop_lands_long_before_the_grace(tmp_path):
    """Between steps and in a checking tool, a graceful stop ends within a fraction of its 30 s grace."""
    mark = tmp_path / "mark"
    with _pool(tmp_path) as pool:
        ex = pool.submit(A.research, {**_step_with(["crunch", {"n": 1000}]), "slow": 60, "mark": str(mark)})
        wait_for_file(mark)
        ex.cancel()
        out = ex.outcome(timeout=30)
    assert out.interrupt.stage is Stage.FLAG and out.interrupt.stop_latency < LONG.grace / 2, out.interrupt


def test_resuming_a_finished_graph_returns_its_final_state_at_once_without_running_anything(tmp_path):
    """A completed run resumed again: the same values, and neither the model nor any tool is called."""
    log = tmp_path / "log"
    task = {"question": "q", "log": str(log)}
    with _pool(tmp_path) as pool:
        done = pool.submit(A.research, task, id="run").result(timeout=30)
        n = len(_calls(log))
        again = pool.submit(A.research, task, id="run", resume=True).result(timeout=30)
    assert again == done
    assert len(_calls(log)) == n, "nothing ran on the second resume"


def test_an_async_graph_stopped_gracefully_ends_at_the_flag_and_its_subprocess_is_gone_before_the_next_run(tmp_path):
    """arun_graph with an async tool awaiting a subprocess: a graceful stop cancels it; the subprocess does not outlive it."""
    pid_file = tmp_path / "pid"
    task = {"question": "q", "script": [[["arun_code", {"pid_file": str(pid_file)}]], "answer"], "async": True}
    with _pool(tmp_path) as pool:
        ex = pool.submit(A.aresearch, {**task, "slow": 1}, id="run")
        pid = int(wait_for_file(pid_file))
        ex.cancel()
        first = ex.outcome(timeout=30)
        assert first.status is ExecutionStatus.INTERRUPTED and first.interrupt.stage is Stage.FLAG, first
        assert not _alive(pid), "the async tool's subprocess was left running in the worker's group"
        second = pool.submit(A.aresearch, task, id="run", resume=True).outcome(timeout=30)
    assert second.status is ExecutionStatus.COMPLETED, second.error
    assert A.without_ids(second.value) == A.without_ids(A.plain_reference(task))


def test_the_checkpoint_stays_the_size_of_the_state_not_of_the_history(tmp_path):
    """40 supersteps: the last checkpoint is within a small factor of the state's own size, and only keep_checkpoints files remain."""
    script = [[["search", {"query": f"q{i}"}]] for i in range(20)] + ["answer"]
    with _pool(tmp_path, keep_checkpoints=2) as pool:
        out = pool.submit(A.research, {"question": "q", "script": script}, id="long").outcome(timeout=60)
    assert out.status is ExecutionStatus.COMPLETED, out.error
    state_size = len(json.dumps(out.value).encode())
    assert out.checkpoint.size < 3 * state_size, (out.checkpoint.size, state_size)  # InMemorySaver's history: ~20x
    assert len(list(Path(out.checkpoint.path).parent.glob("ckpt-*"))) == 2


def test_bad_inputs_to_run_graph_say_what_to_change(tmp_path):
    """Not a compiled graph, a managed config key, or a checkpoint another writer left: each a clear error."""
    with _pool(tmp_path) as pool:
        bad = pool.submit(A.bad_graph, "not compiled").outcome(timeout=30)
        ns = pool.submit(A.bad_graph, "checkpoint_ns").outcome(timeout=30)
        other = pool.submit(A.bad_graph, "foreign checkpoint", id="foreign").outcome(timeout=30)
        resumed = pool.submit(A.research, {"question": "q"}, id="foreign", resume=True).outcome(timeout=30)
    assert bad.error.type == "TypeError" and "compiled LangGraph graph" in bad.error.message
    assert ns.error.type == "ValueError" and "checkpoint_ns" in ns.error.message
    assert other.status is ExecutionStatus.COMPLETED
    assert resumed.error.type == "ValueError" and FORMAT in resumed.error.message
    assert "'foreign'" in resumed.error.message


def _readme(pattern: str) -> str:
    found = re.search(pattern, (ROOT / "README.md").read_text(), re.S)
    assert found, f"README has no {pattern!r}"
    return found.group(1)


def test_the_readme_langgraph_example_runs_a_batch_stops_one_and_resumes_it_as_written(tmp_path):
    """README's research_agent.py with its pool run / pool cancel / pool run --resume commands: plain JSON lines, q1
    interrupted at the flag with its graph saved, then resumed to the same answer as the others got theirs."""
    (tmp_path / "research_agent.py").write_text(_readme(r"Save as `research_agent.py`.*?```python\n(.*?)```"))
    commands = [line for line in _readme(r"resume what was stopped:\n\n```bash\n(.*?)```").splitlines() if line]
    printf, run, cancel, resume = (c.split("#")[0].strip() for c in commands[:4])
    env = dict(os.environ, PYTHONPATH=str(ROOT), POOL_SOCKET_DIR=str(tmp_path / "s"))

    def pool_cmd(cmd: str, **kw):
        args = shlex.split(cmd.replace("pool ", f"{shlex.quote(sys.executable)} -m interrupt_pool ", 1))
        return subprocess.Popen(args + ["--no-progress"] * ("run" in args), cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip

    subprocess.run(printf, shell=True, cwd=tmp_path, check=True)
    batch = pool_cmd(run)
    saved = tmp_path / ".pool" / "checkpoints" / id_to_dirname("q1")
    deadline = time.monotonic() + 30
    while not list(saved.glob("ckpt-*")):  # q1 (among the first two) has saved its graph's first step
        assert time.monotonic() < deadline and batch.poll() is None, batch.stderr.read() if batch.poll() else "no save"
        time.sleep(0.01)
    while True:  # as soon as the pool answers
        stop = pool_cmd(cancel)
        out, err = stop.communicate(timeout=30)
        if stop.returncode == 0:
            break
        assert time.monotonic() < deadline, err
        time.sleep(0.05)
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 1, err  # one execution did not complete
    lines = {d["id"]: d for d in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert lines["q1"]["status"] == "interrupted", lines["q1"]
    assert lines["q2"]["value"] == "answer to 'pidfds' from 3 searches"
    again = pool_cmd(resume)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert lines["q1"]["checkpoint"] is not None, json.dumps(lines["q1"])
    assert "resuming: 2 completed (skipped), 1 resumes from a checkpoint, 0 start fresh" in err, err
    last = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()][-1]
    assert last["id"] == "q1" and last["status"] == "completed"
    assert last["value"] == "answer to 'cgroups' from 3 searches"
    assert "AIMessage(" not in (tmp_path / "results.jsonl").read_text()


def test_a_stop_inside_a_subgraph_resumes_the_subgraph_from_its_own_checkpoint(tmp_path):
    """A graph nested as a node: stopped in its sleeping tool, the resume keeps the outer and inner steps that had finished."""
    task = {**_step_with(["slow_search", {"query": "s"}]), "nested": True}
    log, mark = tmp_path / "log", tmp_path / "mark"
    with _pool(tmp_path) as pool:
        ex = pool.submit(A.research, {**task, "slow": 60, "log": str(log), "mark": str(mark)}, id="run")
        wait_for_file(mark)
        ex.cancel()
        first = ex.outcome(timeout=30)
        assert first.interrupt.stage is Stage.FLAG, first
        second = pool.submit(A.research, {**task, "log": str(log)}, id="run", resume=True).outcome(timeout=30)
    assert second.status is ExecutionStatus.COMPLETED, second.error
    assert A.without_ids(second.value) == A.without_ids(A.plain_reference(task))
    calls = _calls(log)
    # (the intake's message counts as the model's turn 0: the script starts at its second step)
    assert calls.count(["intake", 1]) == 1, calls
    assert calls.count(["model", 1]) == 1, f"the subgraph started over: {calls}"
    assert calls.count(["search", "sibling"]) == 1 and calls.count(["slow_search", "s"]) == 2, calls


def test_plain_false_returns_langchain_message_objects(tmp_path):
    """run_graph(plain=False): the final state keeps its message objects (pickled back to the caller)."""
    from langchain_core.messages import AIMessage, HumanMessage

    with _pool(tmp_path) as pool:
        state = pool.submit(A.raw_research, {"question": "q"}).result(timeout=30)
    assert isinstance(state["messages"][0], HumanMessage) and isinstance(state["messages"][-1], AIMessage)
    assert state["messages"][-1].content.startswith("answer | ")


def test_pool_run_writes_a_returned_message_object_as_json_not_its_repr(tmp_path):
    """A pydantic object in a value (a LangChain message) becomes its JSON form in pool run's result line."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": "m"}\n')
    r = subprocess.run([sys.executable, "-m", "interrupt_pool", "run", "tests.lg_agents:message_object", "--inputs",
                        str(inputs), "--workers", "1", "--no-progress", "--log-dir", str(tmp_path / "logs")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    value = json.loads(r.stdout.splitlines()[0])["value"]
    assert value["reply"]["content"] == "hi" and value["reply"]["type"] == "ai", value
