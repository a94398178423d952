"""LangGraph graphs and agents for the LangGraph section (``bench_langgraph``); module-level, so
workers find them by name. Importing it imports LangGraph (about 0.7 s): only that section does.

The graphs are built as tests/lg_agents.py builds them (not imported from there: the suite
does not import from tests/): a model node with a scripted chat model (no network) and a
``ToolNode``, ``model → tools → model ...`` until the script's final text. A task names:

- ``turns``: how many model turns call one tool each before the final answer, so the graph
  runs ``2 * turns + 1`` supersteps (the input step not counted);
- ``tool``: ``search`` (instant), ``nap`` (``current().sleep(60)``: a stop wakes it) or
  ``crunch`` (a CPU loop that calls ``current().check()`` every 1000 iterations);
- ``think``: seconds every model turn spends in ``time.sleep`` (it never checks the flag);
- ``stamps``: a file the model and the slow tools append ``time.monotonic_ns()`` stamps to
  (``s``/``e``: a model turn's think began/ended; ``t``: a slow tool began), so the section
  can tell how much of a stop's latency was the model's remaining think time.

Every agent and function returns ``{"value": the final state as plain data, "run_s": seconds
the graph run took inside its process, "steps": supersteps}``, whichever way it ran the graph.
Compiled graphs are cached per process (building one costs about 1.5 ms, the same for every
row), so a figure is the cost of running a graph, not of building it.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import interrupt_pool
from interrupt_pool.langgraph import run_graph, to_plain

CONFIG = {"recursion_limit": 1000}  # 81 supersteps and more

_stamps: str | None = None  # the file the model and the slow tools append stamps to (set per run)


def _stamp(kind: str) -> None:
    if _stamps:
        fd = os.open(_stamps, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{kind} {time.monotonic_ns()}\n".encode())
        finally:
            os.close(fd)


class ScriptedModel(BaseChatModel):
    """Turn ``k`` (the number of AI messages so far) calls ``tool`` once while ``k < turns``, then
    answers with a text naming every tool result. Deterministic from the conversation."""

    turns: int
    tool_name: str = "search"
    tool_args: dict = {}
    think: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):  # the graph binds its tools; the script already names them
        return self

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        turn = sum(isinstance(m, AIMessage) for m in messages)
        if self.think:
            _stamp("s")
            time.sleep(self.think)
            _stamp("e")
        if turn >= self.turns:
            seen = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
            msg = AIMessage(content="answer | " + "; ".join(seen), id=f"ai-{turn}")
        else:
            args = self.tool_args or {"query": f"q{turn}"}
            call = {"name": self.tool_name, "args": args, "id": f"call-{turn}", "type": "tool_call"}
            msg = AIMessage(content="", id=f"ai-{turn}", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=msg)])


@tool
def search(query: str) -> str:
    """Look something up (instant)."""
    return f"result for {query}"


@tool
def nap(seconds: float) -> str:
    """Wait for a slow API in ``current().sleep``: a graceful stop wakes it."""
    _stamp("t")
    interrupt_pool.current().sleep(seconds)
    return "rested"


@tool
def crunch(n: int) -> int:
    """A CPU loop of ``n`` steps that checks the flag every 1000 iterations."""
    _stamp("t")
    ctx = interrupt_pool.current()
    total = 0
    for i in range(n):
        if i % 1000 == 0:
            ctx.check()
        total += i * i
    return total


# name -> (the arguments the model calls it with, the tool)
TOOLS: dict[str, tuple[dict, Any]] = {"search": ({}, search), "nap": ({"seconds": 60.0}, nap),
                                      "crunch": ({"n": 10**12}, crunch)}
_graphs: dict[tuple, Any] = {}


def graph(task: dict):
    """The compiled graph ``task`` names (cached in this process)."""
    key = (task["turns"], task.get("tool", "search"), task.get("think", 0.0))
    g = _graphs.get(key)
    if g is None:
        turns, name, think = key
        args, fn = TOOLS[name]
        model = ScriptedModel(turns=turns, tool_name=name, tool_args=args, think=think)

        def call_model(state: MessagesState) -> dict:
            return {"messages": [model.invoke(state["messages"])]}

        b = StateGraph(MessagesState)
        b.add_node("model", call_model)
        b.add_node("tools", ToolNode([fn]))
        b.add_edge(START, "model")
        b.add_conditional_edges("model", tools_condition)
        b.add_edge("tools", "model")
        g = _graphs[key] = b.compile()
    return g


def _begin(task: dict) -> dict:
    global _stamps
    _stamps = task.get("stamps")
    return {"messages": [HumanMessage(task.get("question", "q"), id="question")]}


def _report(value: Any, t0: float, steps: int) -> dict:
    return {"value": value, "run_s": time.perf_counter() - t0, "steps": steps}


# -- the ways to run a graph that the section compares ----------------------------------------------


def adapter(ctx, task: dict) -> dict:
    """An agent that runs the graph through the adapter (checkpoints after every step, then a check)."""
    inp, g = _begin(task), graph(task)
    steps = [0]

    def count(_chunk) -> None:
        steps[0] += 1

    t0 = time.perf_counter()
    value = run_graph(ctx, g, inp, CONFIG, durable=task.get("durable", True), on_chunk=count)
    return _report(value, t0, steps[0])


def invoke(task: dict) -> dict:
    """``graph.invoke`` alone: in this process, or in a ProcessPoolExecutor's worker."""
    inp, g = _begin(task), graph(task)
    t0 = time.perf_counter()
    value = to_plain(g.invoke(inp, CONFIG))
    return _report(value, t0, 2 * task["turns"] + 1)


def invoke_agent(ctx, task: dict) -> dict:
    """The same body as :func:`invoke` as a pool agent: what users wrote before the adapter
    (no checkpoints, nothing checks between steps)."""
    return invoke(task)


def _plain_tables(saver: InMemorySaver) -> tuple:
    """InMemorySaver's three tables as plain dicts (its defaultdicts hold lambdas pickle refuses)."""
    storage = {t: {ns: dict(saved) for ns, saved in by_ns.items()} for t, by_ns in saver.storage.items()}
    return storage, {k: dict(v) for k, v in saver.writes.items()}, dict(saver.blobs)


def _with_memory_saver(ctx, task: dict, after_step) -> dict:
    """The graph with LangGraph's own ``InMemorySaver`` and ``durability="sync"``; ``after_step(saver)``
    runs after every chunk."""
    inp, saver = _begin(task), InMemorySaver()
    g = graph(task).copy(update={"checkpointer": saver})
    config = {**CONFIG, "configurable": {"thread_id": ctx.execution_id}}
    steps = 0
    t0 = time.perf_counter()
    for _chunk in g.stream(inp, config, stream_mode="updates", durability="sync"):
        steps += 1
        after_step(saver)
    value = to_plain(g.get_state(config).values)
    return _report(value, t0, steps)


def memory_saver(ctx, task: dict) -> dict:
    """LangGraph's own saver with what run_graph asks of it, nothing exported: LangGraph's share
    of run_graph's cost."""
    return _with_memory_saver(ctx, task, lambda saver: ctx.check())


def naive(ctx, task: dict) -> dict:
    """What users wrote by hand before the adapter: after every step the saver's whole content
    (``pickle.dumps`` of its storage, writes and blobs) saved as the execution's checkpoint
    (durable), then the check that ``ctx.checkpoint`` makes."""
    durable = task.get("durable", True)
    return _with_memory_saver(ctx, task,
                              lambda saver: ctx.checkpoint(pickle.dumps(_plain_tables(saver)), durable=durable))


def deaf(ctx, task: dict) -> None:
    """Writes ``task["marker"]`` (it runs: a kill now hits its worker, not a skipped prefetch), then
    sleeps, never checking: stopped only by a signal (the warm-workers rows kill it)."""
    with open(task["marker"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
