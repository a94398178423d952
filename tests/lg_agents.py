"""Real LangGraph graphs for the adapter's tests: a model node and a ToolNode, with a scripted
chat model (no network) whose answer depends only on the conversation so far, so that a run
resumed in another process answers exactly as an uninterrupted one.

The tools: ``search`` (instant, deterministic), ``slow_search`` (sleeps with ``ctx.sleep``),
``stuck_search`` (sleeps with ``time.sleep``: only SIGTERM stops it), ``run_code`` (a subprocess
that hangs; it writes its pid to a file), ``crunch`` (a CPU loop that checks the flag through
``interrupt_pool.current()``). Every tool call is appended to a log file named in the input, so a
test can count how many times each tool ran across a stop and a resume.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.prebuilt.tool_node import ToolCallWithContext
from langgraph.types import Send

import interrupt_pool
from interrupt_pool.langgraph import arun_graph, run_graph

LOG = "IP_LG_LOG"  # environment variable: the file each tool call is appended to
MARK = "IP_LG_MARK"  # environment variable: a file written when a slow part begins (what began)
SLOW = "IP_LG_SLOW"  # environment variable: seconds the slow tools take (unset: they are quick)


def _log(what: str, arg: Any) -> None:
    path = os.environ.get(LOG)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps([what, arg]) + "\n")


def _mark(what: str) -> None:
    path = os.environ.get(MARK)
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(what)
        os.replace(path + ".tmp", path)


class ScriptedModel(BaseChatModel):
    """Answers turn ``k`` (the number of AI messages so far) with ``script[k]``: a list of tool
    calls ``[[name, args], ...]`` or a final text. Deterministic from the conversation."""

    script: list
    pause: dict = {}  # turn -> seconds the model spends in time.sleep (after writing the marker file)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):  # the graph binds its tools; the script already names them
        return self

    def _generate(self, messages: list[AnyMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        turn = sum(isinstance(m, AIMessage) for m in messages)
        _log("model", turn)
        if turn in self.pause:
            _mark(f"model {turn}")
            time.sleep(self.pause[turn])
        step = self.script[min(turn, len(self.script) - 1)]
        if isinstance(step, str):
            seen = [m.content for m in messages if isinstance(m, ToolMessage)]
            msg = AIMessage(content=f"{step} | " + "; ".join(seen), id=f"ai-{turn}")
        else:
            calls = [{"name": n, "args": a, "id": f"call-{turn}-{i}", "type": "tool_call"} for i, (n, a) in enumerate(step)]
            msg = AIMessage(content="", tool_calls=calls, id=f"ai-{turn}")
        return ChatResult(generations=[ChatGeneration(message=msg)])


@tool
def search(query: str) -> str:
    """Look something up (instant)."""
    _log("search", query)
    return f"result for {query}"


@tool
def slow_search(query: str) -> str:
    """Look something up slowly (IP_LG_SLOW seconds), in ctx.sleep: a graceful stop wakes it."""
    _log("slow_search", query)
    _mark("slow_search")
    if os.environ.get(SLOW):  # (quick runs also run in the test's own process, outside any pool)
        interrupt_pool.current().sleep(float(os.environ[SLOW]))
    return f"slow result for {query}"


@tool
def stuck_search(query: str) -> str:
    """Look something up slowly (IP_LG_SLOW seconds) in time.sleep: it never sees the flag."""
    _log("stuck_search", query)
    _mark("stuck_search")
    time.sleep(float(os.environ.get(SLOW, 0)))
    return f"stuck result for {query}"


@tool
def run_code(pid_file: str) -> str:
    """Run code in a subprocess (one that hangs while IP_LG_SLOW is set); its pid goes to pid_file."""
    _log("run_code", pid_file)
    proc = subprocess.Popen(["sleep", "300" if os.environ.get(SLOW) else "0"])
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(proc.pid))
    os.replace(pid_file + ".tmp", pid_file)
    _mark("run_code")
    proc.wait()
    return "done"


@tool
def crunch(n: int) -> int:
    """Sum of squares below n; while IP_LG_SLOW is set, first a CPU loop of that many seconds
    that checks the flag through interrupt_pool.current() every 1000 iterations."""
    _log("crunch", n)
    if os.environ.get(SLOW):  # (quick runs also run in the test's own process, outside any pool)
        _mark("crunch")
        ctx = interrupt_pool.current()
        deadline = time.monotonic() + float(os.environ[SLOW])
        i = 0
        while True:
            i += 1
            if i % 1000 == 0:
                ctx.check()
                if time.monotonic() > deadline:
                    break
    return sum(i * i for i in range(n))


@tool
async def arun_code(pid_file: str) -> str:
    """run_code awaited from an async tool."""
    _log("arun_code", pid_file)
    proc = await asyncio.create_subprocess_exec("sleep", "300" if os.environ.get(SLOW) else "0")
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(proc.pid))
    os.replace(pid_file + ".tmp", pid_file)
    await proc.wait()
    return "done"


TOOLS = [search, slow_search, stuck_search, run_code, crunch, arun_code]


def build(script: list, pause: dict | None = None, sends: bool = False):
    """model ⇄ tools until the model answers without tool calls. ``sends``: each tool call is a
    task of its own (``Send``, as ``create_agent`` does), so one call's result is saved as soon as
    it finishes; otherwise one ToolNode task runs all of a turn's calls."""
    model = ScriptedModel(script=script, pause=pause or {})

    def call_model(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState):
        calls = state["messages"][-1].tool_calls
        if not calls:
            return END
        return [Send("tools", ToolCallWithContext(__type="tool_call_with_context", tool_call=c, state=state))
                for c in calls]  # fmt: skip

    g = StateGraph(MessagesState)
    g.add_node("model", call_model)
    g.add_node("tools", ToolNode(TOOLS))
    g.add_edge(START, "model")
    if sends:
        g.add_conditional_edges("model", route, ["tools", END])
    else:
        g.add_conditional_edges("model", tools_condition)
    g.add_edge("tools", "model")
    return g.compile()


RESEARCH = [
    [["search", {"query": "pools"}], ["search", {"query": "signals"}]],
    [["search", {"query": "cgroups"}]],
    "answer",
]  # three model turns, three search calls


def _input(task: dict) -> dict:
    """The graph's input. ``log``/``mark`` name the test's files; ``slow`` (seconds) makes the slow
    tools slow. None of them reaches a message, so a slowed run and a quick one end the same."""
    for var, key in ((LOG, "log"), (MARK, "mark"), (SLOW, "slow")):
        if task.get(key):
            os.environ[var] = str(task[key])
        else:
            os.environ.pop(var, None)
    return {"messages": [HumanMessage(task["question"], id="question")]}


def _graph(task: dict):
    """``pause``: {turn: seconds} the model thinks (in time.sleep) at that turn; ``nested``: the
    agent graph runs as a subgraph node of an outer graph (its checkpoints get a namespace)."""
    inner = build(task.get("script", RESEARCH), {int(k): v for k, v in task.get("pause", {}).items()},
                  task.get("sends", False))
    if not task.get("nested"):
        return inner

    def intake(state: MessagesState) -> dict:
        _log("intake", len(state["messages"]))
        return {"messages": [AIMessage("on it", id="intake")]}

    outer = StateGraph(MessagesState)
    outer.add_node("intake", intake)
    outer.add_node("agent", inner)
    outer.add_edge(START, "intake")
    outer.add_edge("intake", "agent")
    outer.add_edge("agent", END)
    return outer.compile()


def research(ctx, task: dict):
    """The agent a user writes: build the graph, run it through the adapter."""
    return run_graph(ctx, _graph(task), _input(task), {"recursion_limit": 100})


async def aresearch(ctx, task: dict):
    return await arun_graph(ctx, _graph(task), _input(task), {"recursion_limit": 100})


def plain_reference(task: dict):
    """The same graph run in this process with graph.invoke (ainvoke when ``async``): what
    every run must end with."""
    from interrupt_pool.langgraph import to_plain

    if task.get("async"):
        return to_plain(asyncio.run(_graph(task).ainvoke(_input(task), {"recursion_limit": 100})))
    return to_plain(_graph(task).invoke(_input(task), {"recursion_limit": 100}))


def invoke_agent(ctx, task: dict):
    """What users wrote before the adapter: graph.invoke, nothing checks between steps."""
    from interrupt_pool.langgraph import to_plain

    return to_plain(_graph(task).invoke(_input(task), {"recursion_limit": 100}))


def bad_graph(ctx, what: str):
    """run_graph called wrongly, as a user might."""
    if what == "not compiled":
        g = StateGraph(MessagesState)
        g.add_node("model", lambda state: {})
        g.add_edge(START, "model")
        return run_graph(ctx, g, {"messages": []})
    if what == "checkpoint_ns":
        return run_graph(ctx, build(["answer"]), {"messages": []}, {"configurable": {"checkpoint_ns": "x"}})
    if what == "foreign checkpoint":
        ctx.checkpoint({"step": 3})  # the agent's own checkpoint, under the id run_graph will resume
        return "saved"
    raise ValueError(what)


def raw_research(ctx, task: dict):
    """run_graph(..., plain=False): the final state with LangChain's message objects."""
    _input(task)
    return run_graph(ctx, _graph(task), _input(task), plain=False)


def message_object(ctx, _):
    """An agent that returns a LangChain message object itself (not through run_graph)."""
    return {"reply": AIMessage("hi", id="m1")}


def without_ids(value):
    """A final state without LangGraph's random message ids (ToolNode's messages get uuid4s), to
    compare runs that must end in the same state."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "id" or not isinstance(v, str)}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value
