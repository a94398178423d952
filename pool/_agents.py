"""How a function reaches a worker: by name (``module:qualname``) or by value (cloudpickle).

Owns: the rule that decides between the two and the error a function that can
travel neither way gets. Used by the user-side Pool and by agents that start
child executions (``ctx.submit``) inside a worker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import pickle
import sys
from typing import Any, overload

from .shared import _protocol as P

__all__ = ("agent_spec", "build_task", "check_id", "check_timeout")

_MAX_PRIORITY = 1 << 31  # priorities travel as msgpack ints; far more levels than anyone needs


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
        fn_module: str | None = getattr(fn, "__module__", None)
        fn_qualname: str | None = getattr(fn, "__qualname__", None)
        by_name = False
        if fn_module and fn_qualname and fn_module != "__main__" and "<" not in fn_qualname:
            obj = sys.modules.get(fn_module)
            for part in fn_qualname.split("."):
                obj = getattr(obj, part, None)
            by_name = obj is fn
        if by_name:
            spec = (f"{fn_module}:{fn_qualname}", None)
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


@overload
def check_timeout(name: str, value: None) -> None: ...
@overload
def check_timeout(name: str, value: float) -> float: ...
@overload
def check_timeout(name: str, value: Any) -> float | None: ...


def check_timeout(name: str, value: Any) -> float | None:
    """Validate a timeout argument: None or a positive, finite number of seconds
    (a number in, a float out, so callers that refused None keep a float)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds or None, got {value!r}")
    return float(value)


def check_budget(name: str, value: Any) -> float | None:
    """None or a finite number >= 0 (0: nothing may be spent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (in your cost unit) or None, got {value!r}")
    return float(value)


def build_task(fn, input, id: str, cache: dict, max_frame: int, checkpoints: bool, timeout=None,
               escalation=None, resume=False, on_interrupt=None, memory_limit=None, budget=None,
               stall_timeout=None, group=None, priority=0, preemptible=False, call=0, retries=0, retry_on=None,
               backoff=1.0) -> tuple[P.Task, list]:  # fmt: skip
    """The Task frame for one execution and the DefineAgent frames it needs first; every
    argument checked, with an error that names it and the fix."""
    defs = []
    agent, blob = agent_spec(fn, cache)
    if blob is not None:
        if len(blob) > max_frame // 2:
            raise TypeError(f"agent {fn!r} is {len(blob)} bytes when sent by value (it captures large objects), "
                            f"more than half the pool's max_frame ({max_frame}); make it an importable "
                            "module-level function, or pass the data as its input")  # fmt: skip
        defs.append(P.DefineAgent(agent[5:], blob))
    hook = None
    if on_interrupt is not None:
        hook, hblob = agent_spec(on_interrupt, cache, "on_interrupt")
        if hblob is not None:
            defs.append(P.DefineAgent(hook[5:], hblob))
    if resume and not checkpoints:
        raise ValueError("resume=True needs checkpoints; this pool was created with checkpoint_dir=None")
    if timeout is not None:
        timeout = check_timeout("timeout", timeout)
    if stall_timeout is not None:
        stall_timeout = check_timeout("stall_timeout", stall_timeout)
    if budget is not None:
        budget = check_budget("budget", budget)
    grace = term_grace = None
    if escalation is not None:
        from ._models import Escalation

        if not isinstance(escalation, Escalation):
            raise TypeError(f"escalation must be an Escalation(grace=..., term_grace=...), got {escalation!r}")
        grace, term_grace = escalation.grace, escalation.term_grace
    if group is not None and (not isinstance(group, str) or not group or len(group) > 256):
        raise ValueError(f"group must be the name of a group created with pool.group(name, ...), got {group!r}")
    if priority != 0 or type(priority) is not int:
        if isinstance(priority, bool) or not isinstance(priority, int) or not -_MAX_PRIORITY < priority < _MAX_PRIORITY:
            raise ValueError(f"priority must be a whole number (higher runs first), got {priority!r}")
    if preemptible is not False and preemptible is not True:
        raise TypeError(f"preemptible must be True or False, got {preemptible!r}")
    if memory_limit is not None and (isinstance(memory_limit, bool) or not isinstance(memory_limit, int)
                                     or memory_limit < (1 << 20)):  # fmt: skip
        raise ValueError(f"memory_limit must be a whole number of bytes of at least 1 MiB, got {memory_limit!r}")
    if retries:
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
            raise ValueError(f"retries must be a whole number from 0 to 100, got {retries!r}")
    if retry_on is not None:
        retry_on = [retry_on] if isinstance(retry_on, str) else list(retry_on)
        bad = [s for s in retry_on if s not in ("crashed", "failed", "interrupted")]
        if bad or not retry_on:
            raise ValueError(f"retry_on must name statuses among 'crashed', 'failed' and 'interrupted' (timeouts and "
                             f"stalls only), got {bad or retry_on!r}")  # fmt: skip
    if backoff != 1.0:
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff <= 3600:
            raise ValueError(f"backoff must be a number of seconds from 0 to 3600, got {backoff!r}")
    try:
        payload = pickle.dumps(input, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"the input of execution {id!r} cannot be pickled ({type(exc).__name__}: {exc}); "
                        "pass plain data (str, numbers, lists, dicts) or picklable objects") from exc  # fmt: skip
    if len(payload) > max_frame - 4096:
        raise ValueError(f"the input of execution {id!r} is {len(payload)} bytes pickled, more than the pool's "
                         f"max_frame ({max_frame}); pass a path or a reference instead, or raise max_frame")  # fmt: skip
    task = P.Task(id, agent, payload, timeout, grace, term_grace, bool(resume), hook, memory_limit, budget,
                  stall_timeout, group, priority, preemptible, call, None, retries, retry_on, float(backoff))  # fmt: skip
    return task, defs
