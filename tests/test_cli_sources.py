"""The CLI's side of the interrupt sources, driven in subprocesses against a 'pool serve' pool:
groups (pool group, pool cancel --group), submit's source options, and what pool status shows
(spend, time since the last progress, the tree of child executions, the groups)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.test_cli import cli, env, finish, start  # noqa: F401 (env is a fixture)
from tests.test_core import wait_for_file


def _serve(env, name: str = "src", workers: int = 2):
    serve = start(env, "serve", "--name", name, "--workers", str(workers), "--grace", "0.3", "--term-grace", "0.5")
    sock = Path(env["POOL_SOCKET_DIR"]) / f"{name}.sock"
    deadline = time.monotonic() + 20  # a fresh interpreter plus the supervisor's: seconds on a loaded CI machine
    while not sock.exists():
        assert time.monotonic() < deadline and serve.poll() is None, "pool serve did not start"
        time.sleep(0.02)
    return serve


def _stop(serve) -> None:
    serve.send_signal(signal.SIGTERM)
    code, _, err = finish(serve)
    assert code == 0, err


def test_status_shows_the_tree_the_spend_and_the_time_since_progress_and_cancel_group_stops_it(env, tmp_path):
    """pool group / submit --group --budget / status (tree, cost, idle, groups) / cancel --group, end to end."""
    serve = _serve(env, workers=3)  # two leaves and the spender run; the waiting root lends its place
    try:
        made = cli(env, "group", "batch", "--budget", "100")
        assert made.returncode == 0 and "group 'batch'" in made.stdout and "budget 100" in made.stdout, made.stderr
        tree = {"fanout": 2, "depth": 1, "dir": str(tmp_path)}
        sub = cli(env, "submit", "src", "tests.source_agents:nested_forever", "--input", json.dumps(tree), "--id",
                  "root", "--group", "batch", "--budget", "50")  # fmt: skip
        assert sub.returncode == 0 and sub.stdout.strip() == "root", sub.stderr
        spender = {"amount": 0.25, "marker": str(tmp_path / "spent")}
        sub = cli(env, "submit", "src", "tests.source_agents:spend_and_wait", "--input", json.dumps(spender), "--id",
                  "payer", "--group", "batch")  # fmt: skip
        assert sub.returncode == 0, sub.stderr
        for node in ("root", "root.1", "root.2"):
            wait_for_file(tmp_path / node)
        wait_for_file(tmp_path / "spent")
        doc = json.loads(cli(env, "status", "--name", "src", "--json").stdout)[0]
        rows = {r["id"]: r for r in doc["executions"]}
        assert rows["root.1"]["parent"] == "root" and sorted(rows["root"]["children"]) == ["root.1", "root.2"]
        assert rows["root"].get("waiting") is True and rows["root"]["budget"] == 50
        assert rows["payer"]["cost"] == 0.25 and rows["payer"]["group"] == "batch"
        assert all(rows[i]["idle"] >= 0 for i in ("root", "root.1", "payer"))
        assert doc["groups"] == [{"name": "batch", "budget": 100.0, "spent": 0.25, "live": 4, "exhausted": False,
                                  "submitted": 4}]  # fmt: skip
        text = cli(dict(env, COLUMNS="200"), "status", "--name", "src").stdout  # wide enough for one line per row
        assert "└ root.1" in text and "└ root.2" in text and "waiting on children" in text
        assert "0.25" in text and "50" in text and "groups" in text and "batch" in text

        stop = cli(env, "cancel", "--group", "batch", "--mode", "immediate")
        assert stop.returncode == 0 and "of group 'batch'" in stop.stdout, stop.stderr
        root = json.loads(cli(env, "wait", "root").stdout)
        child = json.loads(cli(env, "wait", "root.2").stdout)
        payer = json.loads(cli(env, "wait", "payer").stdout)
        assert root["status"] == "interrupted" and root["interrupt"]["reason"] == "user_cancelled"
        assert child["interrupt"]["reason"] == "parent_cancelled" and child["interrupt"]["mode"] == "immediate"
        assert child["parent_id"] == "root" and payer["cost"] == 0.25 and payer["group"] == "batch"

        again = cli(env, "cancel", "--group", "batch")
        assert again.returncode == 1 and "nothing queued or running" in again.stderr
        unknown = cli(env, "cancel", "--group", "nope")
        assert unknown.returncode == 2 and "group 'nope' is not defined" in unknown.stderr
    finally:
        _stop(serve)


def test_a_group_whose_budget_is_used_up_refuses_cli_submissions_until_raised(env, tmp_path):
    """Once its members spent its budget, 'pool submit --group' exits 2 naming the budget; 'pool group' raises it."""
    serve = _serve(env, "gb")
    try:
        assert cli(env, "group", "tight", "--budget", "0.5", "--name", "gb").returncode == 0
        spender = {"amount": 1.0, "marker": str(tmp_path / "spent")}
        cli(env, "submit", "gb", "tests.source_agents:spend_and_wait", "--input", json.dumps(spender), "--id", "big",
            "--group", "tight")  # fmt: skip
        out = json.loads(cli(env, "wait", "big").stdout)
        assert out["interrupt"]["reason"] == "budget_exceeded" and out["cost"] == 1.0
        refused = cli(env, "submit", "gb", "tests.agents:cli_job", "--input", "{}", "--group", "tight")
        assert refused.returncode == 2 and "has spent 1 of its budget 0.5" in refused.stderr
        shown = cli(env, "group", "tight", "--budget", "5", "--name", "gb")
        assert shown.returncode == 0 and "budget 5, spent 1" in shown.stdout
        ok = cli(env, "submit", "gb", "tests.agents:cli_job", "--input", json.dumps({"value": 3}), "--group", "tight")
        assert ok.returncode == 0 and json.loads(cli(env, "wait", ok.stdout.strip()).stdout)["value"] == 3
    finally:
        _stop(serve)


def test_bad_source_options_are_one_line_errors(env, tmp_path):
    """Bad budgets, stall timeouts and priorities from the CLI exit 2 with a sentence, no traceback."""
    serve = _serve(env, "bad")
    try:
        for args, text in ((["--budget", "-1"], "budget must be a finite number >= 0"),
                           (["--budget", "nan"], "budget must be a finite number >= 0"),
                           (["--stall-timeout", "0"], "stall_timeout must be a positive"),
                           (["--priority", "x"], "invalid int value"),
                           (["--group", "ghost"], "group 'ghost' is not defined")):  # fmt: skip
            got = cli(env, "submit", "bad", "tests.agents:cli_job", "--input", "{}", *args)
            assert got.returncode == 2 and text in got.stderr and "Traceback" not in got.stderr, (args, got.stderr)
        assert cli(env, "group", "g", "--budget", "inf", "--name", "bad").returncode == 2
    finally:
        _stop(serve)
