"""How a function reaches a worker: by name (``module:qualname``) or by value (cloudpickle).

Owns: the rule that decides between the two and the error a function that can
travel neither way gets. Used by the user-side Pool and by agents that start
child executions (``ctx.submit``) inside a worker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import sys
from typing import Any

__all__ = ("agent_spec", "check_id")


def agent_spec(fn: Any, cache: dict, what: str = "agent") -> tuple[str, bytes | None]:
    """How a worker finds ``fn``: ('module:qualname', None) for an importable function,
    ('blob:<sha256>', bytes) for one shipped by value (defined in __main__, a notebook,
    a REPL, or nested). A clear error if neither works."""
    try:
        return cache[fn]
    except (KeyError, TypeError):
        pass
    if isinstance(fn, str):
        module, sep, qualname = fn.partition(":")
        if not sep or not module or not qualname:
            raise ValueError(f"{what} {fn!r} must be written as 'module:function', e.g. 'mypkg.agents:research'")
        # Checked without importing the agent's module here (only workers import agents):
        # the module must be findable; if this process already imported it, the name too.
        obj = sys.modules.get(module)
        if obj is not None and getattr(getattr(obj, "__spec__", None), "_initializing", False):
            obj = None  # another thread is still importing it: its names are not all there yet
        try:
            if obj is None and importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(f"No module named {module!r}")
            if obj is not None:
                for part in qualname.split("."):
                    obj = getattr(obj, part)
        except Exception as exc:
            raise TypeError(f"{what} {fn} cannot be imported ({type(exc).__name__}: {exc}); "
                            "check the module path and the function name") from exc  # fmt: skip
        if obj is not None and not callable(obj):
            raise TypeError(f"{what} {fn} is a {type(obj).__name__}, not a function")
        spec = (fn, None)
    else:
        if not callable(fn):
            raise TypeError(f"{what} must be a function taking (ctx, input), got {type(fn).__name__} {fn!r}")
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
        by_name = False
        if module and qualname and module != "__main__" and "<" not in qualname:
            obj = sys.modules.get(module)
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            by_name = obj is fn
        if by_name:
            spec = (f"{module}:{qualname}", None)
        else:
            import cloudpickle  # by value, as loky and Ray do for __main__, notebooks and closures

            try:
                blob = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise TypeError(f"{what} {fn!r} cannot be sent to a worker by value ({type(exc).__name__}: {exc}); "
                                "define it with def at the top level of an importable module") from exc  # fmt: skip
            spec = (f"blob:{hashlib.sha256(blob).hexdigest()}", blob)
    try:
        cache[fn] = spec
    except TypeError:
        pass  # unhashable callable: just not cached
    return spec


def check_id(id: Any) -> str:
    if not isinstance(id, str) or not id or len(id) > 256 or "\x00" in id:
        raise ValueError(f"execution id must be a non-empty string of at most 256 characters without NUL, got {id!r}")
    return id
