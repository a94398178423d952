"""What agents print never enters the result stream; a SIGTERM to 'pool run' drains it
like Ctrl+C; a result line cut in half is repaired on --resume. Real subprocesses."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.test_cli import AGENT, cli, env, finish, results, start, write_inputs  # noqa: F401 - env is a fixture
from tests.test_core import wait_for_file


def test_result_stream_stays_json_lines_whatever_agents_print(env, tmp_path):
    """Agents (and their tools) print on stdout and stderr; stdout is still pure JSON Lines, the
    printed lines appear on stderr prefixed with their execution id, and 'pool logs' has them."""
    items = [{"id": f"p{i}", "value": i, "say": f"hello {i}"} for i in range(7)]
    r = cli(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "2",
            "--name", "talk", "--no-progress", "--log-dir", str(tmp_path / "logs"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]  # every line is JSON
    assert sorted(row["id"] for row in rows) == [f"p{i}" for i in range(7)]
    for i in range(7):
        assert f"p{i} | hello {i}" in r.stderr
        assert f"p{i} | hello {i} (stderr)" in r.stderr and f"p{i} | hello {i} (a tool)" in r.stderr
    for i in range(7):
        logged = (tmp_path / "logs" / f"p{i}.log").read_text()
        assert f"hello {i}\n" in logged and f"hello {i} (a tool)" in logged


def test_pool_logs_prints_an_executions_output_and_follows_it(env, tmp_path):
    """'pool logs ID' prints what it printed so far; --follow prints the rest as it comes, until it ends."""
    serve = start(env, "serve", "--name", "logsvc", "--workers", "1", "--log-dir", str(tmp_path / "logs"))
    try:
        sockets = Path(env["POOL_SOCKET_DIR"])
        deadline = time.monotonic() + 20
        while not (sockets / "logsvc.sock").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        marker = tmp_path / "m"
        sub = cli(env, "submit", "logsvc", AGENT, "--id", "talker",
                  "--input", json.dumps({"say": "first words", "marker": str(marker), "wait": 1.0}))  # fmt: skip
        assert sub.returncode == 0, sub.stderr
        wait_for_file(marker)
        time.sleep(0.2)
        now = cli(env, "logs", "talker")
        assert now.returncode == 0 and "first words" in now.stdout, now.stderr
        followed = cli(env, "logs", "talker", "--follow", timeout=30)
        assert followed.returncode == 0 and "first words" in followed.stdout
    finally:
        serve.send_signal(signal.SIGTERM)
        finish(serve)


def test_sigterm_to_pool_run_drains_like_ctrl_c_and_writes_every_result_line(env, tmp_path):
    """SIGTERM (as timeout, CI or docker stop send it): every execution stopped gracefully and
    given a result line, the summary printed, exit code 143, no socket left behind."""
    marker = tmp_path / "m"
    items = [{"id": "long", "wait": 60, "marker": str(marker)}] + [{"id": f"q{i}", "wait": 60} for i in range(5)]
    run = start(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "2",
                "--name", "term", "--grace", "5")  # fmt: skip
    wait_for_file(marker)
    run.send_signal(signal.SIGTERM)
    code, out, err = finish(run, timeout=30)
    assert code == 143, err
    got = results(out)
    assert set(got) == {"long", *(f"q{i}" for i in range(5))}
    assert all(row["status"] == "interrupted" for row in got.values())
    assert "summary" in err and "SIGTERM: stopping every execution (graceful)" in err
    assert not list(Path(env["POOL_SOCKET_DIR"]).glob("*.sock"))


def test_resume_repairs_a_result_line_cut_in_half(env, tmp_path):
    """A crash left half a line at the end of --out: --resume cuts it off and appends whole lines."""
    out = tmp_path / "out.jsonl"
    items = [{"id": "a", "value": 1}, {"id": "b", "value": 2}]
    inputs = write_inputs(tmp_path / "in.jsonl", items)
    first = cli(env, "run", AGENT, "--inputs", inputs, "--out", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr
    lines = out.read_text().splitlines()
    a_line = next(line for line in lines if json.loads(line)["id"] == "a")
    out.write_text(a_line + "\n" + '{"id": "b", "status": "compl')  # b's line cut by a crash
    again = cli(env, "run", AGENT, "--inputs", inputs, "--out", str(out), "--resume", "--no-progress")
    assert again.returncode == 0, again.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # every line parses
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["value"] == 2


def test_out_writes_pydantic_objects_in_a_value_as_their_json_form_not_their_repr(env, tmp_path):
    """A pydantic model deep in a value (as LangChain messages are) is written as model_dump(mode='json') by --out."""
    r = cli(env, "run", "tests.pydantic_agents:reply", "--inputs", write_inputs(tmp_path / "in.jsonl", [{"id": "m"}]),
            "--workers", "1", "--no-progress", "--out", str(tmp_path / "out.jsonl"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    value = results((tmp_path / "out.jsonl").read_text())["m"]["value"]
    assert value["messages"] == [{"role": "ai", "parts": [{"text": "{'id': 'm'}", "at": "2026-01-02"}]}], value
