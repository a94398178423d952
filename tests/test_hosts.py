"""The pool in real host programs: threaded hosts, open descriptors, forked children,
the death of the user process, agents the supervisor must never import.

Most tests run a small host program as a subprocess, because what they check is
about the host process itself (its threads, its descriptors, its forks, its death).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from interrupt_pool import Escalation, ExecutionStatus, Pool, Stage
from tests import agents
from tests.procs import gone
from tests.test_core import wait_for_file

ROOT = Path(__file__).resolve().parent.parent
# "Gone within 2 s" is the requirement; this test's own polling and a loaded 2-core CI
# machine's scheduling add up to half a second more. The benchmarks report the typical figure.
GONE_WITHIN_S = 2.5


def run_host(code: str, *args: str, timeout: float = 60, env: dict | None = None, warn: str = "error::DeprecationWarning"):
    """Run ``code`` as a host program (python -W WARN -c CODE ARGS) from the repository root."""
    return subprocess.run([sys.executable, "-W", warn, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=timeout)  # fmt: skip


def start_host(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip




# -- 1. threaded hosts ------------------------------------------------------------------------


def test_pools_created_while_eight_threads_log_run_every_execution():
    """Threads holding the logging lock while a Pool starts cannot deadlock its workers
    (the supervisor is a fresh interpreter, not a fork of the threaded host)."""
    r = run_host("""
        import logging, sys, threading
        from interrupt_pool import Pool
        logging.basicConfig(stream=open("/dev/null", "w"), level=logging.INFO)
        stop = threading.Event()
        def chatter():
            log = logging.getLogger("chatter")
            while not stop.is_set():
                log.info("x" * 200)
        threads = [threading.Thread(target=chatter) for _ in range(8)]
        for t in threads: t.start()
        done = 0
        try:
            for round in range(5):
                with Pool(workers=2) as pool:
                    done += len(pool.map("tests.agents:logs_and_returns", range(40), timeout=20))
        finally:
            stop.set()
            for t in threads: t.join()
        print(done)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "200"


def test_a_lock_a_host_thread_holds_while_the_pool_starts_is_free_in_the_workers():
    """A module-level lock held for good by a host thread (as a logging handler's can be when
    a fork happens) is a fresh, free lock in the workers: they never inherit the host's memory."""
    r = run_host("""
        import threading
        from interrupt_pool import Pool
        from tests import agents
        agents.HOST_LOCK.acquire()  # held by this host for the pool's whole life
        with Pool(workers=2) as pool:
            print(pool.map("tests.agents:takes_host_lock", range(4), timeout=20))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[True, True, True, True]"


def test_a_module_another_thread_is_importing_at_pool_start_loads_in_the_workers(tmp_path):
    """A module mid-import in another thread when the Pool starts imports normally in its workers."""
    r = run_host("""
        import threading, time
        from interrupt_pool import Pool
        t = threading.Thread(target=__import__, args=("tests.import_probe",))
        t.start()
        time.sleep(0.2)  # the import is now sleeping inside the module body
        with Pool(workers=2) as pool:
            print(pool.submit("tests.import_probe:agent", 7).result(timeout=30)["x"])
        t.join()
    """, env={"POOL_IMPORT_PROBE_DELAY": "1.0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "7"


def test_a_second_pool_in_a_threaded_process_raises_no_fork_warning():
    """Creating pools in a process that already has threads never forks it (no 3.12+ fork warning)."""
    r = run_host("""
        import threading, time
        from interrupt_pool import Pool
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        with Pool(workers=1) as a, Pool(workers=1) as b:
            print(a.submit("tests.agents:identity", 1).result() + b.submit("tests.agents:identity", 2).result())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3" and "fork" not in r.stderr


# -- 2. descriptors ------------------------------------------------------------------------------


def test_the_supervisor_and_workers_hold_none_of_the_users_descriptors():
    """A pipe the user opened before the Pool reaches EOF when the user closes it, and
    `cat` fed through communicate() ends, while the pool lives."""
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    r, w = os.pipe()
    try:
        with Pool(workers=2) as pool:
            assert pool.submit(agents.identity, 1).result(timeout=10) == 1
            os.close(w)
            w = -1
            ready, _, _ = select.select([r], [], [], 10)
            assert ready and os.read(r, 1) == b"", "EOF: nobody else holds the write end"
            out, _ = cat.communicate(b"hello", timeout=10)
            assert out == b"hello"
            for pid in [pool.supervisor_pid] + [wk.pid for wk in pool.workers()]:
                targets = set()
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
                    except FileNotFoundError:
                        pass  # closed while we listed it
                ours = {os.readlink(f"/proc/self/fd/{r}")}
                assert not targets & ours, f"process {pid} holds the user's pipe"
                assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        if cat.poll() is None:
            cat.kill()
            cat.wait()


# -- 3. forked children and the death of the user process ------------------------------------------


def test_a_child_the_user_forks_neither_shuts_the_pool_down_nor_can_use_it():
    """The child's exit (atexit included) leaves the parent's pool serving; the child gets a clear error."""
    r = run_host("""
        import os, sys
        from interrupt_pool import Pool, PoolClosed
        pool = Pool(workers=1)
        assert pool.submit("tests.agents:identity", 1).result(timeout=10) == 1
        pid = os.fork()
        if pid == 0:
            try:
                pool.submit("tests.agents:identity", 2)
                print("child used the pool")
            except PoolClosed as exc:
                print("child:", exc)
            sys.exit(0)  # runs atexit in the child
        os.waitpid(pid, 0)
        print("parent:", pool.submit("tests.agents:identity", 3).result(timeout=10))
        pool.shutdown()
    """, warn="ignore::DeprecationWarning")  # forking a host that has threads is the user's choice here
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("child: this Pool belongs to process") and "create a new Pool in the child" in lines[0]
    assert lines[1] == "parent: 3"


def test_when_the_user_process_is_killed_every_worker_and_tool_is_gone(tmp_path):
    """SIGKILL of the user process (with a forked child of it still alive) ends the
    supervisor, its workers and the tools agents started, in-group and setsid alike."""
    pidfile = tmp_path / "tools"
    host = start_host("""
        import json, os, sys, time
        from interrupt_pool import Pool, Escalation
        pool = Pool(workers=2, escalation=Escalation(grace=30, term_grace=30))
        ex = pool.submit("tests.agents:spawn_tools", sys.argv[1])
        ex.wait_started()
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        while not os.path.exists(sys.argv[1]) or not open(sys.argv[1]).read():
            time.sleep(0.01)
        print(json.dumps({"supervisor": pool.supervisor_pid, "workers": [w.pid for w in pool.workers()],
                          "child": child}), flush=True)
        time.sleep(60)
    """, str(pidfile))
    try:
        info = json.loads(host.stdout.readline())
        tools = [int(x) for x in pidfile.read_text().split()[:2]]
        host.kill()
        host.wait()
        left = gone([info["supervisor"], *info["workers"], *tools], GONE_WITHIN_S)
        assert left == [], f"still alive {GONE_WITHIN_S} s after the user process died: {left}"
    finally:
        try:
            os.kill(info["child"], signal.SIGKILL)
        except (ProcessLookupError, NameError, UnboundLocalError):
            pass  # already gone, or the host never got that far
        host.stdout.close()
        host.stderr.close()


def test_when_the_user_process_dies_mid_stop_the_long_term_grace_is_cut_short(tmp_path):
    """A stop already under way with a 30 s term grace: the user's death still ends
    everything within the 2 s bound (the owner-gone bound replaces the longer one)."""
    host = start_host("""
        import json, sys, time
        from interrupt_pool import Pool, Escalation
        pool = Pool(workers=1, escalation=Escalation(grace=0.05, term_grace=30))
        ex = pool.submit("tests.agents:ignore_term_sleep", sys.argv[1])
        while not __import__("os").path.exists(sys.argv[1]):
            time.sleep(0.01)
        ex.cancel()
        time.sleep(0.3)  # SIGTERM sent and ignored; SIGKILL is 30 s away
        print(json.dumps({"supervisor": pool.supervisor_pid, "workers": [w.pid for w in pool.workers()]}), flush=True)
        time.sleep(60)
    """, str(tmp_path / "m"))
    try:
        info = json.loads(host.stdout.readline())
        host.kill()
        host.wait()
        assert gone([info["supervisor"], *info["workers"]], GONE_WITHIN_S) == []
    finally:
        host.stdout.close()
        host.stderr.close()


def test_killing_the_supervisor_leaves_no_worker_or_in_group_tool(tmp_path):
    """SIGKILL of the supervisor: workers die with it (PDEATHSIG) and the owner kills their groups."""
    pidfile = tmp_path / "tools"
    with Pool(workers=1, escalation=Escalation(grace=30, term_grace=30)) as pool:
        ex = pool.submit(agents.spawn_tools, str(pidfile))
        in_group, _setsid, worker = (int(x) for x in wait_for_file(pidfile).split())
        os.kill(pool.supervisor_pid, signal.SIGKILL)
        assert ex.outcome(timeout=10).status is ExecutionStatus.CRASHED
        assert gone([worker, in_group, _setsid], GONE_WITHIN_S) == []


# -- 4. no execution takes the pool down; the supervisor never runs agent code ------------------------


def test_a_killed_execution_whose_checkpoint_the_supervisor_cannot_decode_leaves_the_pool_serving(tmp_path):
    """The supervisor checks checkpoint envelopes only: a state holding a model class whose
    validator raises in the supervisor (decoding it there would fail) leaves the pool serving,
    and resumes in a worker."""
    marker = tmp_path / "m"
    with Pool(workers=1, checkpoint_dir=tmp_path / "ck", escalation=Escalation(grace=0.1, term_grace=0.1)) as pool:
        ex = pool.submit("tests.model_agent:save_model_then_hang", str(marker), id="m1")
        wait_for_file(marker)
        pool.cancel("m1", mode="kill")
        out = ex.outcome(timeout=10)
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.SIGKILL
        assert out.checkpoint is not None and out.checkpoint.seq == 1
        again = pool.submit("tests.model_agent:restore_model", None, id="m1", resume=True)
        assert again.result(timeout=10) == ["search", "read"]
        assert pool.submit(agents.identity, "still serving").result(timeout=10) == "still serving"


def test_a_damaged_checkpoint_is_skipped_by_the_supervisor_and_the_pool_goes_on(tmp_path):
    """After a kill, the supervisor reports the newest checkpoint whose envelope is intact,
    skipping a corrupted one, and keeps serving."""
    with Pool(workers=1, checkpoint_dir=tmp_path / "ck", escalation=Escalation(grace=0.1, term_grace=0.1)) as pool:
        out = pool.submit(agents.ckpt_steps, {"n": 3}, id="d").outcome(timeout=10)
        assert out.status is ExecutionStatus.COMPLETED and out.checkpoint.seq == 3
        newest = Path(out.checkpoint.path)
        newest.write_bytes(newest.read_bytes()[:-3] + b"\xff\xff\xff")
        marker = tmp_path / "pid"
        again = pool.submit(agents.write_pid_and_sleep, str(marker), id="d", resume=True)
        wait_for_file(marker)
        pool.cancel("d", mode="kill")
        killed = again.outcome(timeout=10)
        assert killed.interrupt.stage is Stage.SIGKILL
        assert killed.checkpoint is not None and killed.checkpoint.seq == 2
        assert pool.submit(agents.identity, 1).result(timeout=10) == 1


def test_only_workers_import_agent_modules_and_the_supervisor_stays_single_threaded(tmp_path, monkeypatch):
    """An agent module that starts a thread at import is imported in workers only; the
    supervisor keeps one thread while it forks replacements."""
    probe = tmp_path / "importers"
    monkeypatch.setenv("POOL_IMPORT_PROBE", str(probe))
    with Pool(workers=2) as pool:
        results = [pool.submit("tests.import_probe:agent", i).result(timeout=20) for i in range(4)]
        worker = results[0]["pid"]
        os.kill(worker, signal.SIGKILL)  # force a replacement fork
        deadline = time.monotonic() + 10
        while worker in {w.pid for w in pool.workers()} or len(pool.workers()) < 2:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.01)
        assert pool.submit("tests.import_probe:agent", 9).result(timeout=20)["x"] == 9
        importers = {int(x) for x in probe.read_text().split()}
        assert pool.supervisor_pid not in importers and os.getpid() not in importers
        assert importers >= {r["pid"] for r in results}
        assert len(os.listdir(f"/proc/{pool.supervisor_pid}/task")) == 1


# -- 7. many workers -----------------------------------------------------------------------------------


def test_a_worker_count_the_machine_cannot_hold_is_refused_saying_what_fits():
    """workers= beyond what memory or the process limit allows is refused at once, with the number that fits."""
    from interrupt_pool._pool import WORKER_MEMORY_ESTIMATE

    avail = psutil.virtual_memory().available
    too_many = int(avail // WORKER_MEMORY_ESTIMATE) + 10
    with pytest.raises(ValueError, match=r"workers=\d+ does not fit .* at most \d+ "):
        Pool(workers=too_many)


@pytest.mark.timeout(180)
def test_memory_grows_linearly_in_workers_at_most_3_mib_each_at_1000():
    """From 100 to 1,000 workers the pool's memory (proportional set size of the supervisor
    and every worker, shared pages split fairly) grows by at most 3 MiB per worker, and the
    cost per worker at 1,000 is no higher than at 100 (linear, not worse)."""

    def pss(pid: int) -> int:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))

    def pool_pss(n: int) -> int:
        with Pool(workers=n, capacity=n) as pool:
            deadline = time.monotonic() + 120
            while True:
                ws = pool.workers()
                if all(w.state == "idle" for w in ws) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert len(ws) == n
            return sum(pss(w.pid) for w in ws) + pss(pool.supervisor_pid)

    small, large = pool_pss(100), pool_pss(1000)
    per_worker = (large - small) / 900
    assert per_worker <= 3 * 2**20, f"{per_worker / 2**20:.2f} MiB per added worker"
    # Linear: the average at 1,000 is not above the average at 100 (10 % for measurement noise).
    assert large / 1000 <= small / 100 * 1.1


# -- 11. fair dispatch ----------------------------------------------------------------------------------


def test_idle_workers_are_used_in_turn_the_one_idle_longest_first():
    """Sequential executions go round the idle workers instead of reusing the last one."""
    with Pool(workers=3) as pool:
        for w in range(20):  # all three up and idle
            if sum(x.state == "idle" for x in pool.workers()) == 3:
                break
            time.sleep(0.05)
        used = [pool.submit(agents.identity, i).outcome(timeout=10).worker_id for i in range(6)]
    assert len(set(used[:3])) == 3 and used[3:] == used[:3]
