"""The public API is typed: mypy passes over the package and over a typed user program.

* ``interrupt_pool`` type-checks with the ``[tool.mypy]`` settings in pyproject.toml
  (the modules that define the public API with every function annotated);
* tests/typing_usage.py, a user program that drives the whole public API, type-checks
  with the flags ``mypy --strict`` turns on, and its ``assert_type`` lines show that the
  return types callers rely on are what they should be, never ``Any``;
* every public function, method and property (``interrupt_pool.__all__``) annotates its
  parameters and its return, checked at run time, since mypy only checks that in the
  modules it is told to be strict about.

mypy runs in a subprocess with this interpreter, so CI checks each Python it runs.
It runs over the package *as installed*: mypy has no package-dir mapping and cannot
follow the editable install's import hook, and from the checkout the names would be
``pool`` and ``shared``. So a temporary directory gets the installed layout, built from
pyproject.toml's ``[tool.setuptools.package-dir]`` as symlinks (``interrupt_pool/`` holds
the entries of ``pool/``, ``interrupt_pool/shared`` is ``shared/``), and mypy runs from
there with ``-p interrupt_pool``; the checkout's top-level names are not on its path. Its
cache lives in that directory too, shared by the two runs (about 2 s cold with mypy's
compiled wheels).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
USAGE = Path(__file__).resolve().parent / "typing_usage.py"
MYPY_TIMEOUT = 180  # seconds for one mypy run: a bound for a hung run, not the expected time

@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the package as it installs (symlinks into the checkout), and the usage file."""
    root = tmp_path_factory.mktemp("typing")
    with open(ROOT / "pyproject.toml", "rb") as f:
        package_dir: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    for package in sorted(package_dir, key=lambda name: name.count(".")):  # parents first
        target = root.joinpath(*package.split("."))
        target.mkdir()
        for entry in (ROOT / package_dir[package]).iterdir():
            if entry.name != "__pycache__" and f"{package}.{entry.name}" not in package_dir:
                (target / entry.name).symlink_to(entry)
    (root / USAGE.name).symlink_to(USAGE)
    return root


def _mypy(layout: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    try:
        import mypy  # noqa: F401  (only to say how to get it)
    except ImportError:
        pytest.fail("mypy is not installed: it is in the test extra (pip install -e '.[test]')")
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--cache-dir", str(layout / ".mypy_cache"), "--no-color-output", *targets]  # fmt: skip
    return subprocess.run(cmd, cwd=layout, env=env, capture_output=True, text=True, timeout=MYPY_TIMEOUT)


def _passed(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, (f"mypy found type errors in {what} (exit code {proc.returncode}):\n"
                                  f"{proc.stdout}{proc.stderr}")  # fmt: skip


def test_package_type_checks(layout: Path) -> None:
    """mypy -p interrupt_pool reports no error with the project's settings."""
    _passed(_mypy(layout, "-p", "interrupt_pool"), "the package")


def test_typed_usage_type_checks_strictly(layout: Path) -> None:
    """A user program using the whole public API passes mypy's strict flags; key return types are not Any."""
    # Errors in the package itself are the other test's: here, as for a user, they are not reported.
    _passed(_mypy(layout, "--follow-imports=silent", USAGE.name), USAGE.name)


def _functions(owner: str, obj: Any) -> Iterator[tuple[str, Callable[..., Any]]]:
    """(qualified name, function) for a public function, or each public method and property of a
    public class (the ones it and its bases in this package define, __init__ included)."""
    if not isinstance(obj, type):
        if callable(obj):
            yield owner, obj
        return
    seen: set[str] = set()
    for klass in obj.__mro__:
        if not klass.__module__.startswith("interrupt_pool"):
            continue
        for name, member in vars(klass).items():
            if name in seen or (name.startswith("_") and name not in ("__init__", "__enter__", "__exit__")):
                continue
            seen.add(name)
            if isinstance(member, (classmethod, staticmethod)):
                member = member.__func__
            elif isinstance(member, property):
                member = member.fget
            elif type(member).__name__ == "PydanticDescriptorProxy":  # @computed_field
                member = getattr(member.wrapped, "fget", member.wrapped)
            if inspect.isfunction(member):
                yield f"{obj.__name__}.{name}", inspect.unwrap(member)


def _unannotated(fn: Callable[..., Any]) -> list[str]:
    """What in ``fn``'s signature carries no annotation: parameter names, and 'return'."""
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    missing = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    # As mypy: an __init__ with an annotated parameter needs no "-> None".
    exempt = fn.__name__ == "__init__" and params and not missing
    if "return" not in fn.__annotations__ and not exempt:
        missing.append("return")
    return missing


def test_public_api_is_annotated() -> None:
    """Every public function, method and property of interrupt_pool.__all__ annotates its parameters and return."""
    import interrupt_pool

    missing: dict[str, list[str]] = {}
    for name in interrupt_pool.__all__:
        for qualname, fn in _functions(name, getattr(interrupt_pool, name)):
            gaps = _unannotated(fn)
            if gaps:
                missing[qualname] = gaps
    assert not missing, f"public callables without annotations (name: what lacks one): {missing}"
