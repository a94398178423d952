"""The ``pool`` command's polish, each item driven in subprocesses as a user would: one-line
errors (and --debug on either side of the command), broken pipes, default pool names, how
'pool serve' ends, submit/wait/serve options, help text with defaults, case-insensitive names,
plurals, strict JSON, event lines, unwrapped output off a terminal, damaged checkpoints, input
ids, and 'pool bench' gone.

Bounds are generous (seconds) because CI shares 2 cores between the CLI, its pool and pytest;
waits for "the agent runs" use marker files, waits for "pool serve took the signal" read its
stderr line by line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from interrupt_pool import __version__
from interrupt_pool._cli import build_parser
from interrupt_pool.shared._checkpoint import CheckpointStore
from tests.procs import gone, wait_until
from tests.test_cli import AGENT, ROOT, cli, env, finish, results, start, write_inputs  # noqa: F401 - env is a fixture
from tests.test_core import wait_for_file


def one_line_error(r, *texts: str) -> None:
    """Exit code 2, one line on stderr holding every text, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    for text in texts:
        assert text in r.stderr, (text, r.stderr)


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (what a strict parser does)."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(autouse=True)
def _unset_columns(env):
    """Off a terminal the CLI does not wrap lines, unless $COLUMNS asks it to: these tests read whole lines."""
    env.pop("COLUMNS", None)


@pytest.fixture
def mods(env, tmp_path):
    """A directory on the CLI's PYTHONPATH for agent modules a test writes."""
    d = tmp_path / "mods"
    d.mkdir()
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{d}"
    return d


def write_module(mods: Path, name: str, source: str) -> str:
    (mods / f"{name}.py").write_text(textwrap.dedent(source))
    return name


class Watched:
    """A 'pool' process whose stderr lines are read as they come (on a thread), so a test can
    wait for one (e.g. 'pool serve' saying it took a signal) before it goes on."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines, self.eof = proc, [], False
        self.supervisor_pid: int | None = None  # read from 'pool serve's banner
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cv:
                self.lines.append(line)
                self._cv.notify_all()
        with self._cv:
            self.eof = True
            self._cv.notify_all()

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        def found():
            return next((line for line in self.lines if text in line), None)

        with self._cv:
            self._cv.wait_for(lambda: found() or self.eof, timeout)
            line = found()
        assert line, f"{text!r} not on stderr within {timeout} s:\n" + "".join(self.lines)
        return line

    def finish(self, timeout: float = 30.0, cleanup: bool = False) -> tuple[int, str, str]:
        """Wait for its end (and its pool's supervisor's, unless this is a failed test's ``cleanup``)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(5)
            out = self.proc.stdout.read()
            self.proc.stdout.close()
            self.proc.stderr.close()
        if self.supervisor_pid is not None and not cleanup:
            # Its supervisor ends right after it (it only reaps its workers and removes its files):
            # bounded here more generously than the leak check's 5 s, for a loaded 2-core machine.
            assert not gone([self.supervisor_pid], timeout=20), "the pool's supervisor outlived 'pool serve'"
        return code, out, "".join(self.lines)


def serve(env, name: str, *args: str) -> Watched:
    w = Watched(start(env, "serve", "--name", name, *args))
    banner = w.wait_for("serving pool")  # a fresh interpreter plus the supervisor's: seconds on a loaded CI machine
    w.supervisor_pid = int(re.search(r"supervisor pid (\d+)", banner)[1])
    return w


@pytest.fixture
def short_dir():
    """A directory with a short path (tmp_path can be long), removed afterwards."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="pool-len-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def socket_dir_of_length(base: str, n: int) -> str:
    """A socket directory path of exactly ``n`` bytes under ``base`` (it does not exist yet)."""
    path = base + "/" + "d" * (n - len(base) - 1)
    assert len(os.fsencode(path)) == n
    return path


# -- 1. one-line errors, --debug on either side, long socket paths, broken pipes ------------


def test_a_bad_out_path_is_a_one_line_error_before_anything_runs(env, tmp_path):
    """--out in a missing directory, or --out that is a directory: exit 2, one line, no traceback."""
    inputs = write_inputs(tmp_path / "in.jsonl", [{"value": 1}])
    missing = tmp_path / "no" / "such" / "out.jsonl"
    r = cli(env, "run", AGENT, "--inputs", inputs, "--out", str(missing))
    one_line_error(r, f"'{missing.parent}' does not exist")
    r = cli(env, "run", AGENT, "--inputs", inputs, "--out", str(tmp_path))
    one_line_error(r, f"--out '{tmp_path}' is a directory")
    r = cli(env, "run", AGENT, "--inputs", inputs, "--out", str(tmp_path), "--resume")
    one_line_error(r, "is a directory")


def test_an_agent_module_that_fails_at_import_is_one_line_and_debug_works_on_either_side(env, mods, tmp_path):
    """A module raising at import, or with a syntax error: one line, exit 2; --debug on either side: traceback."""
    write_module(mods, "boom_at_import", 'raise RuntimeError("boom at import")\n')
    write_module(mods, "bad_syntax", "def f(:\n    pass\n")
    inputs = write_inputs(tmp_path / "in.jsonl", [{"value": 1}])
    r = cli(env, "run", "boom_at_import:f", "--inputs", inputs)
    one_line_error(r, "importing module 'boom_at_import' raised RuntimeError: boom at import", "line 1")
    r = cli(env, "run", "bad_syntax:f", "--inputs", inputs)
    one_line_error(r, "module 'bad_syntax' has a syntax error", "line 1")
    for args in (["--debug", "run", "boom_at_import:f", "--inputs", inputs],
                 ["run", "boom_at_import:f", "--inputs", inputs, "--debug"]):  # fmt: skip
        r = cli(env, *args)
        assert r.returncode == 2 and "Traceback" in r.stderr and "boom at import" in r.stderr, (args, r.stderr)


def test_a_socket_path_too_long_says_what_to_do(env, tmp_path, short_dir):
    """A --name, or a socket directory, that makes the Unix socket path exceed 107 bytes: one line naming the fix."""
    env["POOL_SOCKET_DIR"] = socket_dir_of_length(short_dir, 90)  # room for 107 - 90 - 1 - len(".sock") = 11 characters
    r = cli(env, "serve", "--name", "seventeen-letters", "--workers", "1")
    one_line_error(r, "give a --name of at most 11 characters", "POOL_SOCKET_DIR")
    inputs = write_inputs(tmp_path / "in.jsonl", [{"value": 1}])
    r = cli(env, "run", AGENT, "--inputs", inputs, "--name", "seventeen-letters")
    one_line_error(r, "give a --name of at most 11 characters")
    env["POOL_SOCKET_DIR"] = socket_dir_of_length(short_dir, 100)  # no room even for a short default name
    r = cli(env, "run", AGENT, "--inputs", inputs)
    one_line_error(r, "set POOL_SOCKET_DIR to a shorter directory, e.g. POOL_SOCKET_DIR=")


def test_pool_run_piped_into_head_exits_quietly_and_at_once(env, tmp_path):
    """'pool run ... | head -1': the first line arrives, the rest is cancelled, exit 141 at once, no BrokenPipeError."""
    items = [{"id": "first", "value": 1}] + [{"id": f"slow{i}", "wait": 60} for i in range(6)]
    inputs = write_inputs(tmp_path / "in.jsonl", items)
    err = tmp_path / "err.txt"
    pool = f"{shlex.quote(sys.executable)} -m interrupt_pool run {AGENT} --inputs {shlex.quote(inputs)} --workers 2"
    script = f'set -o pipefail; {pool} 2>{shlex.quote(str(err))} | head -n 1'
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole pipeline: bash, pool run and head
        proc.communicate()
        raise
    elapsed = time.monotonic() - t0
    # The whole batch needs 3 rounds of 60 s on 2 workers; stopping it takes about a second (the
    # stop flag ends ctx.sleep at once). 30 s leaves room for a loaded 2-core CI machine.
    assert elapsed < 30, elapsed
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["first"]
    assert proc.returncode == 141, (proc.returncode, err.read_text())
    text = err.read_text()
    assert "BrokenPipe" not in text and "Traceback" not in text and "Exception ignored" not in text, text


# -- 2. default pool names ------------------------------------------------------------------


def test_the_default_pool_name_works_for_any_function_name(env, mods, tmp_path, short_dir):
    """'pool run' without --name for a function named _agent, and for one of 80 characters, in a long socket dir."""
    long_name = "research_agent_" + "x" * 60 + "_done"
    assert len(long_name) == 80
    write_module(mods, "named_agents", f"""
        def _agent(ctx, item):
            return item["value"]

        def {long_name}(ctx, item):
            return item["value"]
    """)
    # 70 bytes: room for a 31-character name (107 - 70 - 1 - len(".sock")); a 40-character one does not fit
    env["POOL_SOCKET_DIR"] = socket_dir_of_length(short_dir, 70)
    inputs = write_inputs(tmp_path / "in.jsonl", [{"id": "a", "value": 5}])
    for func, shown in (("_agent", "agent "), (long_name, long_name[:20])):
        r = cli(env, "run", f"named_agents:{func}", "--inputs", inputs)
        assert r.returncode == 0, r.stderr
        assert results(r.stdout)["a"]["value"] == 5
        assert shown in r.stderr, r.stderr  # the progress bar names the pool


# -- 3. how 'pool serve' ends --------------------------------------------------------------------


def test_pool_serve_escalates_on_a_second_and_third_ctrl_c_and_exits_130(env, tmp_path):
    """Ctrl+C to 'pool serve': graceful, again immediate, a third time kill (an agent ignoring both); exit 130."""
    # grace and term grace of 60 s: only the second and third Ctrl+C can end it within the test
    srv = serve(env, "ladder", "--workers", "1", "--grace", "60", "--term-grace", "60")
    try:
        marker = tmp_path / "stubborn"
        sub = cli(env, "submit", "ladder", "tests.agents:ignore_term_sleep", "--input", json.dumps(str(marker)),
                  "--id", "stubborn")  # fmt: skip
        assert sub.returncode == 0, sub.stderr
        wait_for_file(marker)
        waiter = start(env, "wait", "stubborn")
        assert "waiting for execution 'stubborn'" in waiter.stderr.readline()  # connected
        for mode in ("graceful", "immediate", "kill"):
            srv.proc.send_signal(signal.SIGINT)
            srv.wait_for(f"Ctrl+C: stopping every execution ({mode})")  # one at a time: signals do not queue
        code, _, err = srv.finish()
        assert code == 130, err
        wcode, wout, _ = finish(waiter)
        i = json.loads(wout)["interrupt"]
        assert (wcode, i["mode"], i["stage"], i["reason"]) == (1, "kill", "sigkill", "shutdown")
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.finish(cleanup=True)


GATE = """
    import os
    from pathlib import Path

    def gate(ctx, params):
        Path(params["marker"]).write_text("started")
        while not os.path.exists(params["release"]):
            ctx.sleep(0.02)
        return "released"
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_pool_serve_drains_on_sigterm_and_sighup(env, mods, tmp_path, sig):
    """SIGTERM or SIGHUP: no new work, the running and the queued executions finish, then exit 0."""
    write_module(mods, "gates", GATE)
    srv = serve(env, "drain", "--workers", "1")
    waiters = []
    try:
        gate = {"marker": str(tmp_path / "started"), "release": str(tmp_path / "release")}
        assert cli(env, "submit", "drain", "gates:gate", "--input", json.dumps(gate), "--id", "running").returncode == 0
        wait_for_file(gate["marker"])
        queued = cli(env, "submit", "drain", AGENT, "--input", json.dumps({"value": 7}), "--id", "queued")
        assert queued.returncode == 0, queued.stderr
        for i in ("running", "queued"):
            waiters.append(start(env, "wait", i))
            assert "waiting for execution" in waiters[-1].stderr.readline()  # connected before the drain
        srv.proc.send_signal(sig)
        srv.wait_for(f"{sig.name}: draining")
        refused = cli(env, "submit", "drain", AGENT, "--input", "{}")
        assert refused.returncode == 2, refused.stderr  # no new work
        assert srv.proc.poll() is None, "it waits for the running execution"
        (tmp_path / "release").write_text("go")
        code, _, err = srv.finish()
        assert code == 0, err
        got = [finish(w) for w in waiters]
        assert [(c, json.loads(o)["status"], json.loads(o)["value"]) for c, o, _ in got] == [
            (0, "completed", "released"), (0, "completed", 7)]  # fmt: skip
    finally:
        (tmp_path / "release").write_text("go")
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGINT)
            srv.finish(cleanup=True)
        for w in waiters:
            if w.returncode is None:
                finish(w)


# -- 4. submit --input @file / -, serve --checkpoint-dir, submit --resume, wait --timeout, --version --


def test_submit_reads_input_from_a_file_or_stdin_resumes_and_wait_timeout_has_its_own_exit_code(env, tmp_path):
    """submit --input @FILE / -, serve --checkpoint-dir with submit --resume, wait --timeout exits 124, --version."""
    ck = tmp_path / "ck"
    srv = serve(env, "opts", "--workers", "2", "--checkpoint-dir", str(ck), "--grace", "0.5", "--term-grace", "0.5")
    try:
        (tmp_path / "input.json").write_text(json.dumps({"value": [1, 2]}))
        assert cli(env, "submit", "opts", AGENT, "--input", f"@{tmp_path / 'input.json'}", "--id", "f").returncode == 0
        assert json.loads(cli(env, "wait", "f").stdout)["value"] == [1, 2]
        piped = cli(env, "submit", "opts", AGENT, "--input", "-", "--id", "s", input='{"value": "piped"}')
        assert piped.returncode == 0, piped.stderr
        assert json.loads(cli(env, "wait", "s").stdout)["value"] == "piped"
        one_line_error(cli(env, "submit", "opts", AGENT, "--input", f"@{tmp_path / 'nope.json'}"), "does not exist")

        assert cli(env, "submit", "opts", "tests.agents:ckpt_steps", "--input", '{"n": 3}', "--id", "c").returncode == 0
        assert json.loads(cli(env, "wait", "c").stdout)["value"]["done"] == [0, 1, 2]
        assert list((ck / "c").glob("ckpt-*.msgpack")), "checkpoints go to serve's --checkpoint-dir"
        again = cli(env, "submit", "opts", "tests.agents:ckpt_steps", "--input", '{"n": 5}', "--id", "c", "--resume")
        assert again.returncode == 0, again.stderr
        value = json.loads(cli(env, "wait", "c").stdout)["value"]
        assert value == {"done": [0, 1, 2, 3, 4], "resumed_at": 3}

        assert cli(env, "submit", "opts", AGENT, "--input", '{"wait": 60}', "--id", "slow").returncode == 0
        t0 = time.monotonic()
        late = cli(env, "wait", "slow", "--timeout", "0.5")
        assert late.returncode == 124 and "has not ended after --timeout 0.5 s" in late.stderr, late.stderr
        assert time.monotonic() - t0 < 20  # 0.5 s, plus a fresh interpreter on a loaded machine
        assert cli(env, "cancel", "slow").returncode == 0
        unknown = cli(env, "wait", "it's", "--name", "opts")
        one_line_error(unknown, '''"it's"''')  # the id keeps its quotes
    finally:
        srv.proc.send_signal(signal.SIGINT)
        srv.finish()
    version = cli(env, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"interrupt-pool {__version__}"


# -- 5. help text and defaults ---------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser, path: str = "pool"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_has_help_and_shows_its_default(env):
    """Every argument of every command has help text; each one taking a value with a non-None default shows it."""
    checked = 0
    for path, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            what = f"{path} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help is not argparse.SUPPRESS, f"{what} has no help"
            # Flags (no value: --json, --events, --help) have no default worth showing.
            if action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
                assert f"(default: {action.default})" in formatter._expand_help(action), f"{what} hides its default"
                checked += 1
    assert checked >= 10
    shown = cli(env, "run", "--help").stdout
    assert "(default: 5.0)" in shown and "(default: .pool/checkpoints)" in shown


# -- 6. case-insensitive names -----------------------------------------------------------------------


def test_mode_and_reason_names_are_case_insensitive(env, tmp_path):
    """'pool cancel --mode IMMEDIATE --reason USER_CANCELLED' and '--mode Graceful --reason Budget_Exceeded' work."""
    markers = [tmp_path / "a", tmp_path / "b"]
    items = [{"id": m.name, "marker": str(m), "wait": 60} for m in markers]
    run = start(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "2",
                "--no-progress")  # fmt: skip
    try:
        for m in markers:
            wait_for_file(m)
        a = cli(env, "cancel", "a", "--mode", "IMMEDIATE", "--reason", "USER_CANCELLED")
        assert a.returncode == 0 and "(immediate)" in a.stdout, a.stderr
        b = cli(env, "cancel", "b", "--mode", "Graceful", "--reason", "Budget_Exceeded")
        assert b.returncode == 0 and "(graceful)" in b.stdout, b.stderr
    except BaseException:
        run.send_signal(signal.SIGINT)  # stop what a failed step left running
        finish(run)
        raise
    code, out, err = finish(run)
    got = {k: v["interrupt"] for k, v in results(out).items()}
    assert (got["a"]["mode"], got["a"]["reason"], got["a"]["message"]) == ("immediate", "user_cancelled", None)
    assert (got["b"]["mode"], got["b"]["reason"], got["b"]["message"]) == ("graceful", "budget_exceeded", None)


# -- 7. plurals ----------------------------------------------------------------------------------------------


def test_counts_of_one_are_singular(env, tmp_path):
    """'1 more ended execution' in pool status, '1 resumes from a checkpoint, 1 starts fresh' in pool run --resume."""
    marker = tmp_path / "blocker"
    items = [{"id": "blocker", "marker": str(marker), "wait": 60}] + [{"id": f"q{i}", "value": i} for i in range(20)]
    run = start(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "2",
                "--name", "plural", "--no-progress")  # fmt: skip
    try:
        wait_for_file(marker)

        def twenty_done():
            st = cli(env, "status", "--name", "plural", "--json")
            return st.returncode == 0 and json.loads(st.stdout)[0]["counts"].get("completed") == 20

        wait_until(twenty_done, timeout=30, what="20 completed executions")
        # 21 rows, 20 shown (the live one and the newest 19 ended): one more
        text = cli(env, "status", "--name", "plural").stdout
        assert "(1 more ended execution; --json lists all)" in text, text
    finally:
        cli(env, "cancel", "blocker", "--name", "plural")
        finish(run)

    ck, out = tmp_path / "ck", tmp_path / "out.jsonl"
    CheckpointStore(ck, "b").write({"done": [0], "resumed_at": None}, durable=False)
    out.write_text(json.dumps({"id": "a", "status": "completed"}) + "\n")
    inputs = write_inputs(tmp_path / "steps.jsonl", [{"id": i, "n": 2} for i in ("a", "b", "c")])
    r = cli(env, "run", "tests.agents:ckpt_steps", "--inputs", inputs, "--out", str(out), "--resume",
            "--checkpoint-dir", str(ck), "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "resuming: 1 completed (skipped), 1 resumes from a checkpoint, 1 starts fresh" in r.stderr, r.stderr


# -- 8. strict JSON ----------------------------------------------------------------------------------------


def test_json_output_stays_strict_for_nan_and_infinity(env, tmp_path):
    """Result lines (stdout, --out), pool wait, pool status --json parse strictly: NaN and +/-Infinity become null."""
    marker = tmp_path / "blocker"
    inputs = tmp_path / "in.jsonl"  # Python's json (the inputs' reader) takes these tokens; its output must not
    inputs.write_text('{"id": "nan", "value": NaN}\n{"id": "inf", "value": [Infinity, -Infinity, {"x": NaN}]}\n'
                      + json.dumps({"id": "blocker", "marker": str(marker), "wait": 60}) + "\n")  # fmt: skip
    run = start(env, "run", AGENT, "--inputs", str(inputs), "--workers", "2", "--name", "strict", "--no-progress")
    try:
        wait_for_file(marker)
        wait_until(lambda: cli(env, "wait", "inf", "--name", "strict").returncode == 0, timeout=20, what="inf ended")
        waited = cli(env, "wait", "nan", "--name", "strict")
        assert waited.returncode == 0 and strict_json(waited.stdout)["value"] is None, waited.stdout
        status = cli(env, "status", "--name", "strict", "--json")
        assert status.returncode == 0 and strict_json(status.stdout)[0]["name"] == "strict"
    finally:
        cli(env, "cancel", "blocker", "--name", "strict")
        code, out, err = finish(run)
    rows = {r["id"]: r for r in map(strict_json, out.splitlines())}
    assert rows["nan"]["value"] is None and rows["inf"]["value"] == [None, None, {"x": None}]
    to_file = tmp_path / "out.jsonl"
    r = cli(env, "run", AGENT, "--inputs", str(inputs), "--out", str(to_file), "--no-progress", "--timeout", "0.5")
    assert r.returncode == 1, r.stderr  # the blocker times out
    assert {row["id"]: row["value"] for row in map(strict_json, to_file.read_text().splitlines())}["nan"] is None


# -- 9. event lines -----------------------------------------------------------------------------------------


def test_a_worker_start_line_reads_well(env, tmp_path):
    """With --events, a replacement worker shows as 'worker N started (pid P)', its name said once."""
    marker = tmp_path / "victim"
    # The spare takes the killed worker's place at once; its own replacement is forked 100 ms later,
    # and the start lines of the first workers may come before the CLI subscribes: 'after' runs
    # for a second, so that a worker starts while the run is sure to be listening.
    items = [{"id": "victim", "marker": str(marker), "wait": 60}, {"id": "after", "value": 1, "wait": 1.0}]
    run = start(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "1",
                "--events", "--no-progress", "--name", "lines")  # fmt: skip
    wait_for_file(marker)
    assert cli(env, "cancel", "victim", "--mode", "kill").returncode == 0  # its worker dies: a new one starts
    code, out, err = finish(run)
    assert results(out)["after"]["status"] == "completed", err
    started = [line for line in err.splitlines() if "started (pid" in line]
    assert started and all(re.fullmatch(r"\s*\d+\.\d{3}s  worker \d+ started \(pid \d+\)", s) for s in started), err


# -- 10. no hard wrapping off a terminal ---------------------------------------------------------------------------


def test_output_to_a_pipe_is_not_wrapped_at_80_columns(env, tmp_path):
    """A status row and an event line with a 150-character id stay on one line when stdout/stderr are pipes."""
    long_id = "a-very-long-execution-id-" + "x" * 125
    marker = tmp_path / "m"
    items = [{"id": long_id, "marker": str(marker), "wait": 60}]
    run = start(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "1",
                "--events", "--no-progress", "--name", "wide")  # fmt: skip
    try:
        wait_for_file(marker)
        text = cli(env, "status", "--name", "wide").stdout
        assert any(long_id in line and "running" in line for line in text.splitlines()), text
    finally:
        cli(env, "cancel", long_id, "--name", "wide")
        code, out, err = finish(run)
    assert any(long_id in line and "started" in line for line in err.splitlines()), err


# -- 11. damaged checkpoints ----------------------------------------------------------------------------------------


def test_checkpoints_list_marks_damaged_files_and_show_names_the_previous_good_seq(env, tmp_path):
    """A checkpoint failing its CRC is marked by 'list'; 'show' names the good --seq; a missing --dir is an error."""
    ck = tmp_path / "ck"
    store = CheckpointStore(ck, "job")
    for step in range(3):
        store.write({"step": step}, durable=False)
    newest = store.path(3)
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF  # one payload byte flipped: the CRC32 no longer matches
    newest.write_bytes(bytes(data))
    CheckpointStore(ck, "fine").write({"ok": True}, durable=False)

    listing = cli(env, "checkpoints", "list", "--dir", str(ck))
    assert listing.returncode == 0, listing.stderr
    row = {m[1]: line for line in listing.stdout.splitlines() if (m := re.match(r"\W*(\w+) ", line))}
    assert "DAMAGED" in row["job"] and "newest good: --seq 2" in row["job"], listing.stdout
    assert " ok " in row["fine"], listing.stdout
    rows = json.loads(cli(env, "checkpoints", "list", "job", "--dir", str(ck), "--json").stdout)
    assert [(r["seq"], bool(r["damaged"])) for r in rows] == [(3, True), (2, False), (1, False)]
    assert "CRC32" in rows[0]["damaged"]

    shown = cli(env, "checkpoints", "show", "job", "--dir", str(ck))
    one_line_error(shown, "checkpoint 3 of execution 'job' is damaged", f"pool checkpoints show job --seq 2 --dir {ck}")
    good = cli(env, "checkpoints", "show", "job", "--dir", str(ck), "--seq", "2", "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["state"] == {"step": 1}
    for action in (["list"], ["show", "job"]):
        one_line_error(cli(env, "checkpoints", *action, "--dir", str(tmp_path / "missing")), "does not exist")


# -- 12. input ids ---------------------------------------------------------------------------------------------------


def test_input_ids_that_are_not_strings_or_numbers_are_refused_with_their_line(env, tmp_path):
    """An "id" that is null, a list, an object or a boolean: exit 2 naming the line; messages keep the id's quotes."""
    for bad in ("null", "[1]", '{"k": 1}', "true"):
        path = tmp_path / "in.jsonl"
        path.write_text('{"id": "a"}\n{"id": 7}\n' + f'{{"id": {bad}, "value": 1}}\n')
        one_line_error(cli(env, "run", AGENT, "--inputs", str(path)), "line 3", "not a string or a number")
    path.write_text('{"id": "it\'s"}\n{"id": "it\'s"}\n')
    one_line_error(cli(env, "run", AGENT, "--inputs", str(path)), '''line 2: id "it's" is used twice''')


# -- 13. pool bench is gone ------------------------------------------------------------------------------------------


def test_pool_bench_is_gone_and_never_imports_the_benchmarks(env, mods):
    """'pool bench' is a one-line error pointing at 'python -m benchmarks', never imports it; help omits it."""
    pkg = mods / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"open({str(mods / 'imported')!r}, 'w').close()\n")
    (pkg / "__main__.py").write_text("def main(argv):\n    return 0\n")
    r = subprocess.run([sys.executable, "-m", "interrupt_pool", "bench", "--quick"], cwd=mods, env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    one_line_error(r, "python -m benchmarks")
    assert not (mods / "imported").exists(), "pool bench imported the benchmarks package"
    assert "bench" not in cli(env, "--help").stdout
