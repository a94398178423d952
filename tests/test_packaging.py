"""The built wheel installs exactly one import name, ``interrupt_pool``, and works from it alone.

The repository keeps its code in top-level ``pool/`` and ``shared/`` directories,
which pyproject.toml maps to ``interrupt_pool`` and ``interrupt_pool.shared``. An
editable install or a run from the checkout cannot show that the mapping holds, so
this module builds a real wheel from a copy of the checkout and proves:

* the wheel holds ``interrupt_pool/...`` (with ``py.typed``) and its dist-info, and
  no top-level ``pool/`` or ``shared/``;
* installed into a fresh venv with ``--no-deps --no-index``, it is imported from that
  venv (not from this checkout or the outer editable install), and neither ``pool``
  nor ``shared`` is importable there;
* a user project with its own ``shared.py`` and ``pool.py`` can use both its modules
  and ``interrupt_pool`` side by side, in the script and inside agents run by name
  and by value;
* the ``pool`` console script and ``python -m interrupt_pool`` run.

Nothing is downloaded to install: the fresh venv reaches the dependencies (psutil,
pydantic, msgpack, rich, cloudpickle and what they need) through a ``.pth`` file that
lists the running interpreter's site-packages directories that hold them. A path line
in a ``.pth`` file only appends that directory to ``sys.path``; the ``.pth`` files inside
it (such as the outer editable install's finder) are not run, so the outer
``interrupt_pool`` does not leak in. Building the wheel uses the running interpreter's
setuptools when it can build wheels on its own (``--no-build-isolation``); otherwise pip
builds in an isolated environment, fetching the build requirement as any install does.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPENDENCIES = ("psutil", "pydantic", "msgpack", "rich", "cloudpickle")
TIMEOUT = 300  # seconds, for each test (the first one also builds the wheel and the venv)
STEP_TIMEOUT = 240  # seconds, for any one subprocess

# What a checkout may hold that is not source: never copied into the build tree.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "venv", ".ci-venv-*", ".pool", ".pytest_cache", ".mypy_cache"
)


def _clean_env(tmp: Path) -> dict[str, str]:
    """This process's environment without anything that would point Python or pip elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["POOL_SOCKET_DIR"] = str(tmp / "sockets")
    return env


def _run(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a command to its end (subprocess.run waits for it, or kills and waits on timeout)."""
    return subprocess.run([str(c) for c in cmd], env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


def _builds_wheels_without_isolation() -> bool:
    """Whether this interpreter's own setuptools can build the wheel: setuptools >= 70.1
    has bdist_wheel built in; 64 to 70.0 needs the 'wheel' package beside it."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major_minor = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    if major_minor >= (70, 1):
        return True
    if major_minor < (64, 0):
        return False
    try:
        importlib.metadata.version("wheel")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _dependency_dirs() -> list[str]:
    """The directories of this interpreter that hold the dependencies and, recursively, theirs."""
    dirs: list[str] = []
    seen: set[str] = set()
    todo = list(DEPENDENCIES)
    while todo:
        name = re.split(r"[\s\[<>=!~;(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            assert name not in DEPENDENCIES, f"dependency {name} is not installed in {sys.executable}"
            continue  # a conditional requirement that does not apply here
        where = str(Path(dist.locate_file("")).resolve())
        if where not in dirs:
            dirs.append(where)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return dirs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the wheel from a copy of the checkout, and install it into a fresh venv."""
    tmp = tmp_path_factory.mktemp("packaging")
    env = _clean_env(tmp)

    # A copy, so that setuptools' build/ and *.egg-info neither land in the checkout
    # nor (left from an earlier build) slip stale files into this wheel.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    wheels = tmp / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels]
    if _builds_wheels_without_isolation():
        cmd.append("--no-build-isolation")
    _ok(_run(cmd + [src], env=env, cwd=tmp), "pip wheel")
    found = sorted(wheels.glob("interrupt_pool-*.whl"))
    assert len(found) == 1, f"expected one wheel in {wheels}, found {[p.name for p in wheels.iterdir()]}"
    wheel = found[0]

    venv = tmp / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv], env=env, cwd=tmp), "python -m venv")
    python = venv / "bin" / "python"
    _ok(_run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], env=env, cwd=tmp), "pip install")
    purelib = Path(_ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env, cwd=tmp),
                       "asking the venv for its site-packages").stdout.strip())  # fmt: skip
    (purelib / "_outer_dependencies.pth").write_text("".join(d + "\n" for d in _dependency_dirs()))
    return {"tmp": tmp, "env": env, "wheel": wheel, "venv": venv, "python": python, "purelib": purelib}


@pytest.mark.timeout(TIMEOUT)
def test_wheel_holds_only_interrupt_pool_and_its_dist_info(built):
    """The wheel's files are interrupt_pool/... (with py.typed) and its dist-info; no top-level pool/ or shared/."""
    names = zipfile.ZipFile(built["wheel"]).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and next(iter(dist_info)).startswith("interrupt_pool-"), sorted(tops)
    assert tops - dist_info == {"interrupt_pool"}, f"unexpected top-level entries: {sorted(tops - dist_info)}"
    assert not [n for n in names if n.startswith(("pool/", "shared/"))]
    for needed in ("interrupt_pool/__init__.py", "interrupt_pool/__main__.py", "interrupt_pool/py.typed",
                   "interrupt_pool/_supervisor/__main__.py", "interrupt_pool/shared/__init__.py"):  # fmt: skip
        assert needed in names, f"{needed} is missing from the wheel: {sorted(names)}"
    top_level = zipfile.ZipFile(built["wheel"]).read(f"{next(iter(dist_info))}/top_level.txt").decode().split()
    assert top_level == ["interrupt_pool"], top_level
    entry_points = zipfile.ZipFile(built["wheel"]).read(f"{next(iter(dist_info))}/entry_points.txt").decode()
    assert re.search(r"^pool\s*=\s*interrupt_pool\._cli:main\s*$", entry_points, re.M), entry_points


@pytest.mark.timeout(TIMEOUT)
def test_fresh_venv_imports_interrupt_pool_from_the_wheel_and_no_pool_or_shared(built):
    """In the fresh venv interrupt_pool comes from the venv itself, and no top-level pool or shared exists."""
    empty = built["tmp"] / "empty-cwd"
    empty.mkdir(exist_ok=True)
    probe = textwrap.dedent("""
        import importlib.metadata, importlib.util, json, sys
        import interrupt_pool
        from interrupt_pool import Pool, Escalation, Interrupted
        print(json.dumps({
            "file": interrupt_pool.__file__,
            "version": interrupt_pool.__version__,
            "dist_version": importlib.metadata.version("interrupt-pool"),
            "pool": importlib.util.find_spec("pool") is not None,
            "shared": importlib.util.find_spec("shared") is not None,
            "Pool": Pool.__module__,
            "prefix": sys.prefix,
        }))
    """)
    got = json.loads(_ok(_run([built["python"], "-c", probe], env=built["env"], cwd=empty), "the import probe").stdout)
    venv = built["venv"].resolve()
    assert Path(got["file"]).resolve().is_relative_to(venv), f"interrupt_pool came from {got['file']}, not from {venv}"
    assert Path(got["prefix"]).resolve() == venv
    assert got["version"] == got["dist_version"], got
    assert got["Pool"] == "interrupt_pool._pool", got
    assert not got["pool"], "a top-level 'pool' is importable in the fresh venv"
    assert not got["shared"], "a top-level 'shared' is importable in the fresh venv"


USER_SHARED = 'VALUE = "user shared"\n'
USER_POOL = 'NAME = "user pool"\n'
USER_AGENTS = '''
def agent(ctx, tag):
    import shared, pool
    import interrupt_pool
    ctx.check()
    return {"tag": tag, "shared": shared.VALUE, "shared_file": shared.__file__, "pool": pool.NAME,
            "pool_file": pool.__file__, "interrupt_pool": interrupt_pool.__file__, "ctx": type(ctx).__module__}
'''
USER_MAIN = '''
import json
import sys

import interrupt_pool
from interrupt_pool import Pool

import pool
import shared

if __name__ == "__main__":
    def from_main(ctx, tag):  # defined in __main__: travels to the worker by value
        import shared, pool
        import interrupt_pool
        ctx.check()
        return {"tag": tag, "shared": shared.VALUE, "shared_file": shared.__file__, "pool": pool.NAME,
                "pool_file": pool.__file__, "interrupt_pool": interrupt_pool.__file__, "ctx": type(ctx).__module__}

    with Pool(workers=2) as workers:
        by_name = workers.submit("myagents:agent", "by name", timeout=120).result(timeout=180)
        by_value = workers.submit(from_main, "by value", timeout=120).result(timeout=180)
    print(json.dumps({
        "script": {"shared": shared.VALUE, "shared_file": shared.__file__, "pool": pool.NAME,
                   "pool_file": pool.__file__, "interrupt_pool": interrupt_pool.__file__},
        "by_name": by_name,
        "by_value": by_value,
    }))
'''


@pytest.mark.timeout(TIMEOUT)
def test_user_modules_named_shared_and_pool_work_beside_interrupt_pool(built):
    """A project with its own shared.py and pool.py uses them and interrupt_pool, in its script and in agents."""
    project = built["tmp"] / "project"
    project.mkdir(exist_ok=True)
    (project / "shared.py").write_text(USER_SHARED)
    (project / "pool.py").write_text(USER_POOL)
    (project / "myagents.py").write_text(USER_AGENTS)
    (project / "main.py").write_text(USER_MAIN)

    proc = _ok(_run([built["python"], "main.py"], env=built["env"], cwd=project), "main.py")
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    venv = built["venv"].resolve()
    where = project.resolve()
    for part in ("script", "by_name", "by_value"):
        seen = got[part]
        assert seen["shared"] == "user shared", (part, seen)
        assert seen["pool"] == "user pool", (part, seen)
        assert Path(seen["shared_file"]).resolve() == where / "shared.py", (part, seen)
        assert Path(seen["pool_file"]).resolve() == where / "pool.py", (part, seen)
        assert Path(seen["interrupt_pool"]).resolve().is_relative_to(venv), (part, seen)
    assert got["by_name"]["tag"] == "by name" and got["by_value"]["tag"] == "by value", got
    for part in ("by_name", "by_value"):  # the agents got a real interrupt_pool context
        assert got[part]["ctx"].startswith("interrupt_pool."), got[part]


@pytest.mark.timeout(TIMEOUT)
def test_console_script_and_python_m_interrupt_pool_run(built):
    """The installed 'pool' script and 'python -m interrupt_pool' answer --help (and --version, if offered) with exit 0."""
    empty = built["tmp"] / "empty-cwd"
    empty.mkdir(exist_ok=True)
    script = built["venv"] / "bin" / "pool"
    assert script.is_file(), f"the wheel installed no 'pool' script in {script.parent}"
    by_script = _ok(_run([script, "--help"], env=built["env"], cwd=empty), "pool --help")
    by_module = _ok(_run([built["python"], "-m", "interrupt_pool", "--help"], env=built["env"], cwd=empty),
                    "python -m interrupt_pool --help")  # fmt: skip
    for proc in (by_script, by_module):
        assert "usage:" in proc.stdout and "run" in proc.stdout, proc.stdout
    if "--version" in by_script.stdout:
        version = _ok(_run([script, "--version"], env=built["env"], cwd=empty), "pool --version")
        assert built["wheel"].name.split("-")[1] in version.stdout + version.stderr, version
