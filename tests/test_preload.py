"""Warm workers: Pool(preload=[...]) imports modules once in the supervisor, before any fork, so
no worker (nor a replacement) imports them again; a module that starts a thread, or fails to
import, is refused with an error naming it; the CLI's --preload does the same."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import interrupt_pool._pool
from interrupt_pool import Pool, PoolBroken
from tests import preload_agents as PA
from tests.test_core import wait_for_file

ROOT = Path(__file__).resolve().parent.parent


def test_a_preloaded_module_is_imported_by_the_supervisor_and_never_again_by_a_worker_or_its_replacement(tmp_path):
    """The probe's import pid is the worker's parent (the supervisor), for the first worker and for one replaced after a kill."""
    with Pool(workers=1, preload=["tests.preload_probe", "json"], log_dir=None, checkpoint_dir=None) as pool:
        imported_in, pid, ppid, seen = pool.submit(PA.where, ["tests.preload_probe"]).result(timeout=30)
        assert seen == {"tests.preload_probe": True}, "the worker found it imported before the agent ran"
        assert imported_in == ppid == pool.supervisor_pid != pid
        stuck = pool.submit(PA.park, str(tmp_path / "running"))
        wait_for_file(tmp_path / "running")  # it runs (a kill before it began would only skip it)
        stuck.cancel(mode="kill")
        assert stuck.outcome(timeout=30).interrupt.stage.value == "sigkill"
        again = pool.submit(PA.where, ["tests.preload_probe"]).result(timeout=30)
    assert again[1] != pid, "a new worker ran it"
    assert again[0] == imported_in == again[2], "the replacement got the module from the same supervisor"


def test_without_preload_each_worker_imports_the_module_itself():
    """The baseline the feature changes: the probe is not imported until the agent imports it, in the worker."""
    with Pool(workers=1, log_dir=None, checkpoint_dir=None) as pool:
        imported_in, pid, _, seen = pool.submit(PA.where, ["tests.preload_probe"]).result(timeout=30)
    assert seen == {"tests.preload_probe": False} and imported_in == pid


@pytest.mark.skipif(not __import__("importlib.util").util.find_spec("langgraph"), reason="needs the langgraph extra")
def test_the_langgraph_adapter_s_preload_list_warms_workers_with_langgraph():
    """Pool(preload=interrupt_pool.langgraph.PRELOAD): workers start with LangGraph and LangChain imported."""
    from interrupt_pool.langgraph import PRELOAD

    with Pool(workers=1, preload=PRELOAD, log_dir=None, checkpoint_dir=None) as pool:
        _, _, _, seen = pool.submit(PA.where, list(PRELOAD)).result(timeout=60)
    assert seen == dict.fromkeys(PRELOAD, True)


def test_a_module_that_starts_a_thread_at_import_is_refused_by_name():
    """The supervisor forks, so it stays single-threaded: the pool does not start, and the error says what to do."""
    with pytest.raises(ValueError, match=r"preload: importing 'tests.preload_thread' started a thread.*initializer="):
        Pool(workers=1, preload=["json", "tests.preload_thread"], log_dir=None, checkpoint_dir=None)


def test_a_refused_module_s_non_daemon_thread_does_not_hold_the_pool_s_start():
    """The refusal comes at once although the module's non-daemon thread lives 60 s, and the supervisor is gone."""
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"preload: importing 'tests.preload_nondaemon' started a thread"):
        Pool(workers=1, preload=["tests.preload_nondaemon"], log_dir=None, checkpoint_dir=None)
    # (before the fix the supervisor's exit waited for the thread: 60 s; 15 s leaves room for a loaded machine)
    assert time.monotonic() - t0 < 15
    # the conftest leak fixture checks that no supervisor (nor its thread) is left


def test_a_module_whose_import_hangs_fails_the_start_and_the_stuck_supervisor_is_killed(monkeypatch):
    """Past the start timeout Pool() raises PoolBroken naming preload as the likely cause; no supervisor is left."""
    monkeypatch.setenv("IP_PRELOAD_HANG", "60")
    monkeypatch.setattr(interrupt_pool._pool, "_START_TIMEOUT", 1.5)
    t0 = time.monotonic()
    with pytest.raises(PoolBroken, match=r"a module in preload=\['tests.preload_hang'\] may hang or take longer"):
        Pool(workers=1, preload=["tests.preload_hang"], log_dir=None, checkpoint_dir=None)
    assert time.monotonic() - t0 < 15, "killed, not waited for (its import sleeps 60 s)"


@pytest.mark.parametrize("name,why", [("tests.preload_broken", r"RuntimeError: this module cannot be imported"),
                                      ("tests.no_such_module", r"ModuleNotFoundError")])  # fmt: skip
def test_a_module_that_cannot_be_imported_is_refused_by_name(name, why):
    """A failing import stops the pool from starting, with the module's name and the exception."""
    with pytest.raises(ValueError, match=rf"preload: importing '{name}' in the supervisor failed \({why}"):
        Pool(workers=1, preload=[name], log_dir=None, checkpoint_dir=None)


@pytest.mark.parametrize("bad,error,text", [
    ("langgraph", TypeError, "a list of module names, e.g. preload=['langgraph'], not a string"),
    (3, TypeError, "a list of module names"),
    (["lang graph"], ValueError, "'lang graph' is not a module name"),
    ([None], ValueError, "None is not a module name"),
])  # fmt: skip
def test_bad_preload_arguments_say_how_to_write_them(bad, error, text):
    """A string instead of a list, a non-list, a bad name: the error shows the right form."""
    with pytest.raises(error, match=__import__("re").escape(text)):
        Pool(workers=1, preload=bad, log_dir=None, checkpoint_dir=None)


def test_the_cli_preloads_with_repeated_or_comma_separated_names_and_refuses_a_bad_one_in_one_line(tmp_path):
    """pool run --preload A,B --preload C works; a module that starts a thread ends the command with exit 2 and one line."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps(["tests.preload_probe", "json", "csv"]) + "\n")
    base = [sys.executable, "-m", "interrupt_pool", "run", "tests.preload_agents:where", "--inputs", str(inputs),
            "--workers", "1", "--no-progress", "--log-dir", str(tmp_path / "logs")]  # fmt: skip
    ok = subprocess.run(base + ["--preload", "tests.preload_probe,json", "--preload", "csv"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    value = json.loads(ok.stdout.splitlines()[0])["value"]
    assert value[3] == {"tests.preload_probe": True, "json": True, "csv": True}
    bad = subprocess.run(base + ["--preload", "tests.preload_thread"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("pool: error: preload: importing 'tests.preload_thread' started a thread")
    assert bad.stderr.count("\n") == 1


def test_what_a_preloaded_module_prints_at_import_stays_out_of_pool_run_s_result_stream(tmp_path):
    """print() and raw fd-1 writes during a preload import go to stderr; stdout holds only JSON result lines."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps(["tests.preload_noisy"]) + "\n")
    r = subprocess.run([sys.executable, "-m", "interrupt_pool", "run", "tests.preload_agents:where", "--inputs",
                        str(inputs), "--workers", "1", "--no-progress", "--log-dir", str(tmp_path / "logs"),
                        "--preload", "tests.preload_noisy"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["value"][3] == {"tests.preload_noisy": True}
    assert "preload_noisy: hello from print" in r.stderr and "preload_noisy: hello from fd 1" in r.stderr


def test_pool_serve_refuses_a_bad_preload_in_one_line_with_exit_2(tmp_path):
    """pool serve --preload of a missing module: exit 2, one 'pool: error:' line naming it, nothing left serving."""
    env = dict(__import__("os").environ, POOL_SOCKET_DIR=str(tmp_path / "sockets"))
    r = subprocess.run([sys.executable, "-m", "interrupt_pool", "serve", "--name", "warm", "--workers", "1",
                        "--preload", "tests.no_such_module"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith("pool: error: preload: importing 'tests.no_such_module' in the supervisor failed "
                               "(ModuleNotFoundError"), r.stderr  # fmt: skip
    assert r.stderr.count("\n") == 1
    assert not list((tmp_path / "sockets").glob("warm*")), "no socket or lock of the refused pool is left"


def test_the_quick_preload_benchmark_runs_and_reports_off_against_on(tmp_path):
    """`python -m benchmarks --quick --only preload` exits 0 with its table (or its skip note without LangGraph)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "preload", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    (result,) = tmp_path.glob("quick-*.json")
    section = json.loads(result.read_text())["preload"]
    if "skipped" in section:
        assert "pip install" in section["skipped"]
        return
    assert {(r["spare_worker"], bool(r["preload"])) for r in section["rows"]} == {
        (s, p) for s in (False, True) for p in (False, True)}
    assert "replacement off/on" in out.stdout
