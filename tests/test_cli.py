"""The ``pool`` command, driven for real in subprocesses, as a user at a terminal would.

Each test gets its own socket directory (POOL_SOCKET_DIR). Waits for "the
agent is running" use marker files the agents write; bounds are generous
(seconds) because CI shares 2 cores between the CLI, its pool and pytest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interrupt_pool.shared import _protocol as P
from tests.test_core import wait_for_file

ROOT = Path(__file__).resolve().parent.parent
AGENT = "tests.agents:cli_job"


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, POOL_SOCKET_DIR=str(tmp_path / "sockets"), PYTHONPATH=str(ROOT))
    e.pop("XDG_RUNTIME_DIR", None)
    return e


def cli(env, *args, timeout=60, input=None):
    return subprocess.run([sys.executable, "-m", "interrupt_pool", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)  # fmt: skip


def start(env, *args):
    return subprocess.Popen([sys.executable, "-m", "interrupt_pool", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def write_inputs(path: Path, items: list[dict]) -> str:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return str(path)


def results(text: str) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, text.splitlines())}


def test_run_completes_a_batch_and_writes_one_result_line_each(env, tmp_path):
    inputs = write_inputs(tmp_path / "in.jsonl", [{"id": f"j{i}", "value": i * i} for i in range(20)] + [{"value": "no id"}])
    r = cli(env, "run", AGENT, "--inputs", inputs, "--workers", "2", "--out", str(tmp_path / "out.jsonl"))
    assert r.returncode == 0, r.stderr
    got = results((tmp_path / "out.jsonl").read_text())
    assert {k: v["value"] for k, v in got.items()} == {**{f"j{i}": i * i for i in range(20)}, "21": "no id"}
    assert all(v["status"] == "completed" for v in got.values())
    assert "completed" in r.stderr and "summary" in r.stderr


def test_run_reads_stdin_and_exits_1_when_an_execution_fails(env, tmp_path):
    lines = json.dumps({"id": "ok", "value": 1}) + "\n" + json.dumps({"id": "bad", "fail": "tool broke"}) + "\n"
    r = cli(env, "run", AGENT, "--inputs", "-", "--workers", "1", input=lines)
    assert r.returncode == 1
    got = results(r.stdout)  # without --out, result lines go to stdout
    assert got["ok"]["status"] == "completed"
    assert got["bad"]["status"] == "failed" and got["bad"]["error"]["message"] == "tool broke"


def test_a_second_process_cancels_one_execution_by_id(env, tmp_path):
    marker = tmp_path / "slow.started"
    inputs = write_inputs(tmp_path / "in.jsonl", [
        {"id": "slow", "marker": str(marker), "wait": 60},
        {"id": "quick", "value": 1},
    ])  # fmt: skip
    run = start(env, "run", AGENT, "--inputs", inputs, "--workers", "2", "--out", str(tmp_path / "out.jsonl"))
    wait_for_file(marker)
    c = cli(env, "cancel", "slow", "--reason", "operator says stop")
    assert c.returncode == 0 and "stopping execution 'slow'" in c.stdout, c.stderr
    code, _, err = finish(run)
    assert code == 1, err
    got = results((tmp_path / "out.jsonl").read_text())
    assert got["quick"]["status"] == "completed"
    i = got["slow"]["interrupt"]
    assert got["slow"]["status"] == "interrupted" and i["stage"] == "flag"
    assert (i["reason"], i["message"], i["source"]) == ("custom", "operator says stop", "user")
    # now that the run is over there is no pool to ask
    again = cli(env, "cancel", "slow")
    assert again.returncode == 2 and "no pool is running" in again.stderr


def test_cancel_worker_and_status_json_while_a_batch_runs(env, tmp_path):
    markers = [tmp_path / f"m{i}" for i in range(2)]
    inputs = write_inputs(tmp_path / "in.jsonl", [{"id": f"w{i}", "marker": str(m), "wait": 60} for i, m in enumerate(markers)]
                          + [{"id": "later", "value": 3}])  # fmt: skip
    run = start(env, "run", AGENT, "--inputs", inputs, "--workers", "2", "--name", "batch")
    for m in markers:
        wait_for_file(m)
    st = cli(env, "status", "--json")
    assert st.returncode == 0, st.stderr
    [pool] = json.loads(st.stdout)
    assert pool["name"] == "batch" and len(pool["workers"]) == 2
    rows = {r["id"]: r for r in pool["executions"]}
    assert rows["w0"]["status"] == "running" and rows["later"]["status"] == "queued"
    assert rows["w0"]["elapsed"] > 0
    human = cli(env, "status", "--name", "batch")
    assert human.returncode == 0 and "w0" in human.stdout and "running" in human.stdout
    busy = {w["execution_id"]: w["id"] for w in pool["workers"]}
    c = cli(env, "cancel", "--worker", str(busy["w1"]), "--mode", "immediate")
    assert c.returncode == 0, c.stderr
    assert cli(env, "cancel", "--worker", "99").returncode == 2
    assert cli(env, "cancel", "w0").returncode == 0
    code, out, err = finish(run)
    got = results(out)
    assert got["w1"]["interrupt"]["mode"] == "immediate" and got["w0"]["interrupt"]["stage"] == "flag"
    assert got["later"]["status"] == "completed" and code == 1


def test_ctrl_c_once_stops_everything_gracefully_and_loses_nothing(env, tmp_path):
    markers = [tmp_path / f"m{i}" for i in range(2)]
    items = [{"id": f"r{i}", "marker": str(m), "wait": 60} for i, m in enumerate(markers)]
    items += [{"id": f"q{i}", "value": i} for i in range(5)]
    run = start(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "2")
    for m in markers:
        wait_for_file(m)
    run.send_signal(signal.SIGINT)
    code, out, err = finish(run)
    assert code == 130, err
    got = results(out)
    assert set(got) == {i["id"] for i in items}, "every execution has its result line"
    assert {got[f"r{i}"]["interrupt"]["stage"] for i in range(2)} == {"flag"}
    assert {got[f"q{i}"]["interrupt"]["stage"] for i in range(5)} == {"queued"}
    assert got["r0"]["interrupt"]["source"] == "signal"
    assert "Ctrl+C" in err and "Traceback" not in err


def test_ctrl_c_twice_escalates_to_sigterm(env, tmp_path):
    marker = tmp_path / "spin"
    items = [{"id": "spinner", "marker": str(marker), "spin": True}]
    # grace 60 s: only the second Ctrl+C (immediate) can end it quickly
    run = start(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", items), "--workers", "1",
                "--grace", "60", "--term-grace", "5")  # fmt: skip
    wait_for_file(marker)
    run.send_signal(signal.SIGINT)
    time.sleep(0.3)  # let the first request reach the pool before the second
    run.send_signal(signal.SIGINT)
    code, out, err = finish(run, timeout=20)
    assert code == 130, err
    i = results(out)["spinner"]["interrupt"]
    assert (i["mode"], i["stage"]) == ("immediate", "sigterm")


def test_serve_submit_wait_and_sigterm_drains_then_ctrl_c_stops(env, tmp_path):
    serve = start(env, "serve", "--name", "svc", "--workers", "2", "--grace", "0.3", "--term-grace", "0.3")
    sockets = Path(env["POOL_SOCKET_DIR"])
    deadline = time.monotonic() + 20
    while not (sockets / "svc.sock").exists():
        assert time.monotonic() < deadline and serve.poll() is None, "pool serve did not start"
        time.sleep(0.02)
    sub = cli(env, "submit", "svc", AGENT, "--input", json.dumps({"value": [1, 2]}), "--id", "first")
    assert sub.returncode == 0 and sub.stdout.strip() == "first", sub.stderr
    w = cli(env, "wait", "first")
    assert w.returncode == 0 and json.loads(w.stdout)["value"] == [1, 2]
    auto = cli(env, "submit", "svc", AGENT, "--input", json.dumps({"fail": "x"})).stdout.strip()
    w = cli(env, "wait", auto)
    assert w.returncode == 1 and json.loads(w.stdout)["status"] == "failed"
    marker = tmp_path / "long"
    cli(env, "submit", "svc", AGENT, "--input", json.dumps({"marker": str(marker), "wait": 60}), "--id", "long")
    wait_for_file(marker)
    waiter = start(env, "wait", "long")
    assert "waiting for execution 'long'" in waiter.stderr.readline()  # printed once it is connected
    serve.send_signal(signal.SIGTERM)  # drains: 'long' (60 s) would run to its end...
    while "draining" not in (line := serve.stderr.readline()):
        assert line, "pool serve ended without draining"
    serve.send_signal(signal.SIGINT)  # ...so Ctrl+C stops it (gracefully: ctx.sleep sees the flag at once)
    code, _, err = finish(serve)
    assert code == 130, err
    wcode, wout, _ = finish(waiter)
    got = json.loads(wout)
    assert wcode == 1 and got["status"] == "interrupted" and got["interrupt"]["reason"] == "shutdown"
    assert not list(sockets.glob("*.sock")), "the socket is removed on exit"


def test_socket_permissions_and_peer_credentials(env, tmp_path):
    import shutil
    import tempfile

    # Under /tmp (world-traversable), so that 'nobody' can reach the socket once we loosen it.
    outer = Path(tempfile.mkdtemp(prefix="pool-perm-", dir="/tmp"))
    sockets = outer / "sockets"
    env = dict(env, POOL_SOCKET_DIR=str(sockets))
    serve = start(env, "serve", "--name", "perm", "--workers", "1")
    try:
        deadline = time.monotonic() + 20
        sock_path = sockets / "perm.sock"
        while not sock_path.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sockets.stat().st_mode & 0o777 == 0o700
        assert sock_path.stat().st_mode & 0o777 == 0o600
        # Loosen everything by hand: the peer-uid check must still refuse another user.
        os.chmod(outer, 0o755)
        os.chmod(sockets, 0o777)
        os.chmod(sock_path, 0o666)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # become 'nobody' and try to talk to the pool
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(sock_path))
                ch = P.Channel(s)
                try:
                    ch.send(P.Hello(P.PROTOCOL_VERSION, os.getpid()))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server may refuse before it reads: its answer is still readable
                msg = ch.recv()
                os.write(w, json.dumps({"error": msg.message if type(msg) is P.Refused else repr(msg)}).encode())
            except BaseException as exc:
                os.write(w, json.dumps({"exception": repr(exc)}).encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        reply = json.loads(os.read(r, 65536))
        os.close(r)
        assert "refused" in reply.get("error", ""), reply
        # And our own CLI now refuses to use the loosened directory, saying how to fix it.
        st = cli(env, "status")
        assert st.returncode == 2 and "must be 0700" in st.stderr and "chmod 700" in st.stderr
        assert "Traceback" not in st.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        finish(serve)
        shutil.rmtree(outer, ignore_errors=True)


def test_socket_directory_of_another_owner_is_refused(env, tmp_path):
    sockets = Path(env["POOL_SOCKET_DIR"])
    sockets.mkdir(mode=0o700)
    os.chown(sockets, 65534, 65534)
    r = cli(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "in.jsonl", [{"value": 1}]))
    assert r.returncode == 2 and "owned by uid 65534" in r.stderr and "Traceback" not in r.stderr


def test_a_live_pool_name_is_refused_and_ids_in_two_pools_are_ambiguous(env, tmp_path):
    assert "no pool is running" in cli(env, "cancel", "x").stderr
    assert cli(env, "status").stdout.strip() == "no pool is running"
    a = start(env, "serve", "--name", "twin", "--workers", "1")
    b = start(env, "serve", "--name", "other", "--workers", "1")
    try:
        sockets = Path(env["POOL_SOCKET_DIR"])
        deadline = time.monotonic() + 20
        while not ((sockets / "twin.sock").exists() and (sockets / "other.sock").exists()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # names are unique per user: a second pool with a live name is refused, saying whose it is
        dup = cli(env, "serve", "--name", "twin", "--workers", "1")
        assert dup.returncode == 2 and "a pool named 'twin' is already running" in dup.stderr, dup.stderr
        assert "Traceback" not in dup.stderr
        unknown = cli(env, "cancel", "no-such-execution")
        assert unknown.returncode == 2 and "no running pool has an execution 'no-such-execution'" in unknown.stderr
        # the same id in both pools: ambiguous, and ids with braces are just text
        for name in ("twin", "other"):
            assert cli(env, "submit", name, AGENT, "--input", '{"wait": 30}', "--id", "x{0}").returncode == 0
        both = cli(env, "cancel", "x{0}")
        assert both.returncode == 2 and "exists in 2 pools" in both.stderr and "'x{0}'" in both.stderr
        assert cli(env, "cancel", "x{0}", "--name", "twin").returncode == 0
        clash = cli(env, "submit", "other", AGENT, "--input", "{}", "--id", "x{0}")
        assert clash.returncode == 2 and "already in use" in clash.stderr
        assert cli(env, "status", "--name", "ghost").returncode == 2
    finally:
        for p in (a, b):
            p.send_signal(signal.SIGINT)  # stop what runs ('other' still runs x{0}); SIGTERM would let it finish
        for p in (a, b):
            finish(p)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "no_such_module_q:f", "--inputs", "IN"], "cannot import module 'no_such_module_q'"),
        (["run", "tests.agents:nope", "--inputs", "IN"], "module 'tests.agents' has no function 'nope'"),
        (["run", "tests.agents", "--inputs", "IN"], "must be MODULE:FUNC"),
        (["run", AGENT, "--inputs", "BAD"], "line 2 is not valid JSON"),
        (["run", AGENT, "--inputs", "MISSING"], "does not exist"),
        (["run", AGENT, "--inputs", "IN", "--timeout", "-1"], "--timeout must be a finite number of seconds >= 0"),
        (["run", AGENT, "--inputs", "IN", "--grace", "-2"], "--grace must be a finite number of seconds >= 0"),
        (["run", AGENT, "--inputs", "IN", "--workers", "0"], "must be at least 1"),
        (["submit", "p", AGENT, "--input", "{nope"], "--input is not valid JSON"),
    ],
)
def test_bad_input_is_one_line_with_a_nonzero_exit(env, tmp_path, args, message):
    good = write_inputs(tmp_path / "in.jsonl", [{"value": 1}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"value": 1}\n{value: 2}\n')
    subst = {"IN": good, "BAD": str(bad), "MISSING": str(tmp_path / "missing.jsonl")}
    r = cli(env, *[subst.get(a, a) for a in args])
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(env, tmp_path):
    r = cli(env, "--debug", "run", "no_such_module_q:f", "--inputs", write_inputs(tmp_path / "i.jsonl", [{}]))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_demo_finishes_in_under_30_seconds_and_exits_0(env):
    t0 = time.monotonic()
    r = cli(env, "demo", timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
    for stage in ("flag", "sigterm", "sigkill"):
        assert f"at stage {stage}" in r.stderr
    assert "SIGKILL process group" in r.stderr and "observed" in r.stderr


def test_run_resume_skips_completed_and_resumes_interrupted_from_checkpoints(env, tmp_path):
    ck = tmp_path / "ck"
    items = [
        {"id": "done", "n": 2},
        {"id": "graceful", "n": 200, "step": 0.02, "marker": str(tmp_path / "g")},
        {"id": "killed", "n": 200, "step": 0.02, "marker": str(tmp_path / "k")},
    ]
    inputs = write_inputs(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    common = ["--inputs", inputs, "--out", str(out), "--workers", "3", "--checkpoint-dir", str(ck)]
    run = start(env, "run", "tests.agents:ckpt_steps", *common)
    wait_for_file(tmp_path / "g")
    wait_for_file(tmp_path / "k")
    assert cli(env, "cancel", "graceful").returncode == 0
    assert cli(env, "cancel", "killed", "--mode", "kill").returncode == 0
    assert finish(run)[0] == 1
    first = results(out.read_text())
    assert first["done"]["status"] == "completed"
    assert first["killed"]["interrupt"]["stage"] == "sigkill" and first["killed"]["checkpoint"]["seq"] >= 3

    listing = cli(env, "checkpoints", "list", "--dir", str(ck), "--json")
    assert {r["id"] for r in json.loads(listing.stdout)} == {"done", "graceful", "killed"}
    shown = json.loads(cli(env, "checkpoints", "show", "killed", "--dir", str(ck), "--json").stdout)
    saved_killed = len(shown["state"]["done"])
    assert shown["seq"] == first["killed"]["checkpoint"]["seq"] and saved_killed >= 3

    # shorten the rest so the resumed run is quick: same ids, fewer steps left to do
    write_inputs(tmp_path / "in.jsonl", [{"id": "done", "n": 2}, {"id": "graceful", "n": saved_killed + 30},
                                         {"id": "killed", "n": saved_killed + 5}])  # fmt: skip
    again = cli(env, "run", "tests.agents:ckpt_steps", *common, "--resume")
    assert again.returncode == 0, again.stderr
    assert "1 completed (skipped), 2 resume from checkpoints" in again.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in lines].count("done") == 1, "completed executions are not run again"
    final = results(out.read_text())  # the newest line of each id wins
    assert final["killed"]["resume"] == "restored" and final["killed"]["value"]["resumed_at"] == saved_killed
    assert final["killed"]["value"]["done"] == list(range(saved_killed + 5))
    assert final["graceful"]["status"] == "completed" and final["graceful"]["value"]["resumed_at"] >= 3


def test_checkpoints_commands_report_missing_ids_and_resume_needs_out(env, tmp_path):
    r = cli(env, "checkpoints", "show", "nope", "--dir", str(tmp_path))
    assert r.returncode == 2 and "has no checkpoints" in r.stderr
    assert cli(env, "checkpoints", "list", "--dir", str(tmp_path)).stdout.startswith("no checkpoints")
    r = cli(env, "run", AGENT, "--inputs", write_inputs(tmp_path / "i.jsonl", [{}]), "--resume")
    assert r.returncode == 2 and "--resume needs --out" in r.stderr
