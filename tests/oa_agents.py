"""OpenAI Agents SDK agents for the adapter's tests: a scripted model (the SDK's own
``agents.testing.ScriptedModel``) whose answer depends only on the conversation so far, so a run
resumed in another process answers as an uninterrupted one; tools that log each call.

``task``: ``question``; ``searches`` (how many search turns before the answer); ``log``/``mark``
(the test's files); ``slow`` (seconds ``slow_search`` sleeps in ``ctx.sleep``; unset: instant).
"""

from __future__ import annotations

import json
import os

from agents import Agent, RunConfig, function_tool
from agents.testing.model import ModelStep, ScriptedModel, assistant_message, function_call

import interrupt_pool
from interrupt_pool.openai_agents import run_agent


def _log(what: str, arg) -> None:
    if os.environ.get("IP_OA_LOG"):
        with open(os.environ["IP_OA_LOG"], "a") as f:
            f.write(json.dumps([what, arg]) + "\n")


def _mark(what: str) -> None:
    if os.environ.get("IP_OA_MARK"):
        path = os.environ["IP_OA_MARK"]
        with open(path + ".tmp", "w") as f:
            f.write(what)
        os.replace(path + ".tmp", path)


@function_tool
def search(query: str) -> str:
    """Search (instant)."""
    _log("search", query)
    return f"result for {query}"


@function_tool
def slow_search(query: str) -> str:
    """Search slowly, in ctx.sleep: a stop wakes it."""
    _log("slow_search", query)
    _mark("slow_search")
    if os.environ.get("IP_OA_SLOW"):
        interrupt_pool.current().sleep(float(os.environ["IP_OA_SLOW"]))
    return f"slow result for {query}"


def _agent(task: dict) -> Agent:
    searches = task.get("searches", 3)

    def respond(call):
        outputs = [i for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
        _log("model", len(outputs))
        n = len(outputs)
        if n < searches:
            tool = "slow_search" if n == searches - 1 else "search"
            return [function_call(tool, {"query": f"{task['question']} {n}"}, call_id=f"call-{n}")]
        return [assistant_message("answer: " + "; ".join(o["output"] for o in outputs))]

    model = ScriptedModel([ModelStep.respond(respond) for _ in range(2 * searches + 4)])
    return Agent(name="researcher", instructions="research", model=model, tools=[search, slow_search])


def _env(task: dict) -> None:
    for var, key in (("IP_OA_LOG", "log"), ("IP_OA_MARK", "mark"), ("IP_OA_SLOW", "slow")):
        if task.get(key):
            os.environ[var] = str(task[key])
        else:
            os.environ.pop(var, None)


def research(ctx, task: dict):
    _env(task)
    return run_agent(ctx, _agent(task), task["question"], run_config=RunConfig(tracing_disabled=True))


def reference(task: dict):
    """The same agent run in this process with Runner.run: what every run must end with. (asyncio.run
    closes its loop; Runner.run_sync would leave one open in the test process.)"""
    import asyncio

    from agents import Runner

    _env({k: v for k, v in task.items() if k not in ("log", "mark", "slow")})
    run = Runner.run(_agent(task), task["question"], run_config=RunConfig(tracing_disabled=True))
    return asyncio.run(run).final_output


def bad(ctx, what: str):
    if what == "not an agent":
        return run_agent(ctx, "researcher", "q")
    return run_agent(ctx, _agent({"question": "q"}), "q", session=object())
