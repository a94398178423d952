"""LangGraph agents, natively: run a compiled graph inside an execution so that a stop is
graceful and a resume is exact (extra ``interrupt-pool[langgraph]``).

Owns: the graph's checkpointer for the length of one :func:`run_graph` call (a
:class:`_PoolSaver`, LangGraph's own ``InMemorySaver`` cut down to the newest checkpoint of
each namespace), and the translation between that saver's content and the execution's
checkpoints (``ctx`` writes them; this module never touches files).

How a run goes::

    agent(ctx, input) ── run_graph(ctx, graph, input) ──► graph.stream(..., durability="sync")
                                                               │ each superstep: saver.put ─► ctx checkpoint
                                                               │ each finished task: saver.put_writes ─► ctx checkpoint
    after every chunk: ctx.check() ◄───────────────────────────┘

- Saving comes first, then the check: the stream yields only after LangGraph handed the step's
  checkpoint (``durability="sync"``) and the finished task's writes to the saver, and the saver
  writes the execution's checkpoint before it returns. A stop at the flag therefore never loses
  a finished step, and a resumed run never calls a finished tool again.
- What is saved is compact: the newest checkpoint of each namespace (the root graph and any
  subgraph running now), the channel values it references and its pending writes, as the bytes
  LangGraph's serializer made (no second encoding). Older checkpoints are dropped from memory
  as soon as a newer one is saved, so the size follows the state, not the number of steps.
- On resume (``Pool.submit(..., resume=True)`` or ``pool run --resume``), the saved checkpoint
  is put back into a fresh saver and the run continues with ``graph.stream(None, config)``,
  which runs only what was left (nothing, if the graph had finished) and gives the same final
  state as a run that was never stopped: tasks whose writes were saved do not run again; tasks
  that were cut off run again from the start of their step.

Tools reach the execution through :func:`interrupt_pool.current` from any thread (LangGraph runs
sync tools on its own thread pool): ``current().check()`` in a CPU loop, ``current().sleep(s)``
instead of ``time.sleep``. A tool that does neither is stopped by the escalation (SIGTERM, then
SIGKILL of everything the execution started, subprocesses included).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

try:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.pregel import Pregel
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("interrupt_pool.langgraph needs LangGraph: pip install 'interrupt-pool[langgraph]' "
                      f"(or pip install 'langgraph>=1.2'); importing it failed with {exc}") from exc

from .shared import current

if TYPE_CHECKING:
    from .shared import Context

__all__ = ("FORMAT", "PRELOAD", "arun_graph", "run_graph", "to_plain")

FORMAT = "interrupt_pool.langgraph/1"  # the tag of the checkpoints run_graph writes
# Modules worth importing once per pool (Pool(preload=PRELOAD)) rather than once per worker.
PRELOAD = ("langgraph.graph", "langgraph.prebuilt", "langgraph.checkpoint.memory", "langchain_core.messages",
           "interrupt_pool.langgraph")  # fmt: skip


class _PoolSaver(InMemorySaver):
    """``InMemorySaver`` that keeps only the newest checkpoint per namespace and hands every
    change to ``on_change(state, step_end)`` (which writes the execution's checkpoint) before it
    returns; ``step_end`` is True for a step's checkpoint, False for a task's writes.

    Threads: LangGraph calls ``put``/``put_writes`` from its background threads, and may call
    them for several tasks at once; one lock makes each change and its export atomic."""

    def __init__(self, thread_id: str, on_change: Callable[[dict, bool], None]) -> None:
        super().__init__()
        self._thread = thread_id
        self._on_change = on_change
        self._lock = threading.RLock()
        self._versions: dict[str, Mapping[str, Any]] = {}  # namespace -> the newest checkpoint's channel versions

    # -- LangGraph's saver interface -------------------------------------------------

    def put(self, config, checkpoint, metadata, new_versions):
        with self._lock:
            ns = config["configurable"].get("checkpoint_ns", "")
            out = super().put(config, checkpoint, metadata, new_versions)
            self._versions[ns] = dict(checkpoint["channel_versions"])
            self._keep_newest(ns, checkpoint["id"])
            if ns == "":  # a root step ended: the subgraphs that ran in it have ended too
                for other in [n for n in self._versions if n != ""]:
                    self._forget(other)
            self._export(durable=True)
            return out

    def put_writes(self, config, writes, task_id, task_path=""):
        with self._lock:
            super().put_writes(config, writes, task_id, task_path)
            # Without fsync: a crash of the process loses nothing; a power cut may lose a finished
            # task's writes, and then that task runs again. Halves the fsyncs per step.
            self._export(durable=False)

    # -- pruning ------------------------------------------------------------------------------

    def _keep_newest(self, ns: str, checkpoint_id: str) -> None:
        thread = self._thread
        saved = self.storage[thread][ns]
        for old in [c for c in saved if c != checkpoint_id]:
            del saved[old]
            self.writes.pop((thread, ns, old), None)
        wanted = self._versions[ns]
        for key in [k for k in self.blobs if k[0] == thread and k[1] == ns and wanted.get(k[2]) != k[3]]:
            del self.blobs[key]

    def _forget(self, ns: str) -> None:
        thread = self._thread
        self.storage[thread].pop(ns, None)
        self._versions.pop(ns, None)
        for wkey in [k for k in self.writes if k[0] == thread and k[1] == ns]:
            del self.writes[wkey]
        for bkey in [k for k in self.blobs if k[0] == thread and k[1] == ns]:
            del self.blobs[bkey]

    # -- export and import --------------------------------------------------------------------

    def _export(self, durable: bool) -> None:
        thread = self._thread
        namespaces = {}
        for ns, saved in self.storage[thread].items():
            for checkpoint_id, (typed, meta, parent) in saved.items():
                versions = self._versions.get(ns, {})
                namespaces[ns] = {
                    "id": checkpoint_id,
                    "checkpoint": list(typed),
                    "metadata": list(meta),
                    "parent": parent,
                    "blobs": [[ch, ver, list(self.blobs[(thread, ns, ch, ver)])]
                              for ch, ver in versions.items() if (thread, ns, ch, ver) in self.blobs],
                    "writes": [[task_id, idx, channel, list(value), path]
                               for (task_id, idx), (_, channel, value, path)
                               in self.writes.get((thread, ns, checkpoint_id), {}).items()],
                }  # fmt: skip
        self._on_change({"format": FORMAT, "namespaces": namespaces}, durable)

    def load(self, state: dict, execution_id: str) -> None:
        """Put back what :meth:`_export` saved (under this run's thread id)."""
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"execution {execution_id!r} resumed from a checkpoint run_graph did not write "
                             f"(format {found!r}, expected {FORMAT!r}): an execution that calls run_graph must "
                             "not checkpoint anything else under its id (use ctx.state only through run_graph)")
        thread = self._thread
        for ns, saved in state["namespaces"].items():
            checkpoint_id = saved["id"]
            self.storage[thread][ns][checkpoint_id] = (tuple(saved["checkpoint"]), tuple(saved["metadata"]),
                                                       saved["parent"])  # fmt: skip
            versions = {}
            for ch, ver, typed in saved["blobs"]:
                self.blobs[(thread, ns, ch, ver)] = tuple(typed)
                versions[ch] = ver
            self._versions[ns] = versions
            for task_id, idx, channel, value, path in saved["writes"]:
                self.writes[(thread, ns, checkpoint_id)][(task_id, idx)] = (task_id, channel, tuple(value), path)


def _prepare(ctx: Context, graph: Any, config: Mapping[str, Any] | None, durable: bool):
    """(graph with our saver, config, resumed) for one run."""
    if not isinstance(graph, Pregel):
        raise TypeError(f"run_graph needs a compiled LangGraph graph (builder.compile()), got {type(graph).__name__}")
    from langgraph.channels.delta import DeltaChannel

    delta = [name for name, ch in graph.channels.items() if isinstance(ch, DeltaChannel)]
    if delta:
        raise ValueError(f"the graph's channel(s) {delta} are DeltaChannels (a LangGraph beta), which rebuild "
                         "their value from every earlier checkpoint; run_graph keeps only the newest: use a "
                         "plain reducer (e.g. add_messages) for these keys")  # fmt: skip
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict like {{'configurable': {{...}}, 'recursion_limit': 50}}, "
                        f"got {type(config).__name__}")
    config = dict(config or {})
    configurable = dict(config.get("configurable") or {})
    if configurable.get("checkpoint_id") or configurable.get("checkpoint_ns"):
        raise ValueError("run_graph manages checkpoint_id and checkpoint_ns itself (the execution's checkpoints "
                         "hold the graph's); leave them out of config['configurable']")
    thread_id = str(configurable.setdefault("thread_id", ctx.execution_id))
    config["configurable"] = configurable

    def save(state: dict, step_end: bool) -> None:
        ctx._save(state, durable and step_end)

    saver = _PoolSaver(thread_id, save)
    resumed = False
    state = ctx.restore()
    if state is not None:
        saver.load(state, ctx.execution_id)
        resumed = True
    return graph.copy(update={"checkpointer": saver}), config, resumed


def run_graph(ctx: Context | None, graph: Any, input: Any, config: Mapping[str, Any] | None = None, *,
              stream_mode: str | list[str] = "updates", on_chunk: Callable[[Any], Any] | None = None,
              durable: bool = True, plain: bool = True) -> Any:  # fmt: skip
    """Run a compiled LangGraph ``graph`` on ``input`` as this execution and return its final
    state (plain data unless ``plain=False``).

    - Streams superstep by superstep with ``durability="sync"``; after each step and each
      finished task the newest graph checkpoint is saved as the execution's checkpoint, then
      the flag is checked: a graceful stop lands between steps, never losing a finished one.
    - A resumed execution continues where the saved checkpoint left off (``stream(None, ...)``);
      one whose graph had finished returns its final state at once.
    - ``config`` is passed on (``recursion_limit``, ``configurable``, callbacks...); its
      ``thread_id`` defaults to the execution id. ``on_chunk`` sees every chunk of
      ``stream_mode`` (as ``graph.stream`` yields it) before the check.
    - ``durable=False`` skips the fsyncs of each step's save (a crash of the process still loses
      nothing; a power cut may lose the last step). A finished task's writes are saved without
      fsync either way (a power cut would only make that task run again).
    - ``ctx`` may be None: then :func:`interrupt_pool.current` is used (for functions run by
      ``Executor.submit``)."""
    ctx = ctx if ctx is not None else current()
    graph, config, resumed = _prepare(ctx, graph, config, durable)
    ctx.check()
    for chunk in graph.stream(None if resumed else input, config, stream_mode=stream_mode, durability="sync"):
        if on_chunk is not None:
            on_chunk(chunk)
        ctx.check()
    values = graph.get_state(config).values
    return to_plain(values) if plain else values


async def arun_graph(ctx: Context | None, graph: Any, input: Any, config: Mapping[str, Any] | None = None, *,
                     stream_mode: str | list[str] = "updates", on_chunk: Callable[[Any], Any] | None = None,
                     durable: bool = True, plain: bool = True) -> Any:  # fmt: skip
    """:func:`run_graph` for ``async def`` agents and async graphs (``graph.astream``). A stop
    cancels the agent's task at its current await (LangGraph cancels the step's tasks), or is
    seen by the check after each chunk."""
    ctx = ctx if ctx is not None else current()
    graph, config, resumed = _prepare(ctx, graph, config, durable)
    ctx.check()
    async for chunk in graph.astream(None if resumed else input, config, stream_mode=stream_mode,
                                     durability="sync"):  # fmt: skip
        if on_chunk is not None:
            on_chunk(chunk)
        ctx.check()
    values = (await graph.aget_state(config)).values
    return to_plain(values) if plain else values


def to_plain(value: Any) -> Any:
    """``value`` with LangChain messages as ``messages_to_dict`` gives them (``{"type", "data"}``)
    and other pydantic models as their JSON-ready dump, inside dicts, lists and tuples: data that
    ``pool run --out`` writes as JSON and any process reads without LangChain.
    ``messages_from_dict`` turns the messages back into objects."""
    from langchain_core.messages import BaseMessage, message_to_dict

    if isinstance(value, BaseMessage):
        return message_to_dict(value)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(type(value), "model_dump"):
        return value.model_dump(mode="json")
    return value
