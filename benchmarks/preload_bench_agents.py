"""Agents for the preload section (``bench_preload``): a small agent module that imports LangGraph
as a real one does, at its top. Module-level, so workers find them by name; importing it costs
LangGraph's import (about 0.7 s), which is what ``Pool(preload=...)`` moves into the supervisor.
"""

from __future__ import annotations

import operator
import os
import time
from typing import Annotated, TypedDict

import langchain_core.messages  # noqa: F401 - imported for its cost, as an agent using LangChain's messages does
import langgraph.graph
import langgraph.prebuilt  # noqa: F401 - likewise (ToolNode, create_react_agent)

# What Pool(preload=...) imports for this module: the frameworks, not the agent module itself.
PRELOAD = ("langgraph.graph", "langgraph.prebuilt", "langchain_core.messages")


class _State(TypedDict):
    total: Annotated[int, operator.add]


_graph = None  # compiled once per process


def _compiled():
    global _graph
    if _graph is None:
        g = langgraph.graph.StateGraph(_State)
        g.add_node("add", lambda state: {"total": 1})
        g.add_edge(langgraph.graph.START, "add")
        g.add_edge("add", langgraph.graph.END)
        _graph = g.compile()
    return _graph


def work(ctx, x: int) -> dict:
    """Run a one-node graph; return its total and this worker's pid (which worker ran it)."""
    return {"total": _compiled().invoke({"total": x})["total"], "pid": os.getpid()}


def deaf(ctx, fifo: str) -> None:
    """Write a byte to the FIFO ``fifo`` (it runs: a kill now kills its worker), then sleep, never
    checking the flag, until killed."""
    with open(fifo, "wb") as f:
        f.write(b"r")
    time.sleep(60)
