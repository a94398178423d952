"""OpenAI Agents SDK agents, natively: run an ``agents.Agent`` inside an execution so that a
stop lands between turns and a resume continues the conversation (extra
``interrupt-pool[openai-agents]``).

Owns: the run's session (a :class:`_CheckpointSession`, the SDK's ``SessionABC`` kept in the
execution's checkpoints) and the run hooks that check the flag. The same design as
:mod:`interrupt_pool.langgraph`, through the SDK's own extension points:

- **Save, then check.** The SDK hands each finished turn to the session as one batch (the
  model's tool calls together with their outputs), and the session writes the execution's
  checkpoint before it returns; the hooks check the flag before each model call and each tool
  call. So a stop never leaves a tool call without its output in the saved conversation (which a
  model API would reject), and a finished turn is never run again.
- **Resume.** A resumed execution starts the session from the saved items and runs the agent on
  no new input: the SDK sends the saved conversation to the model and carries on. A turn cut off
  in the middle runs again (its model call and its tools); a run that had finished returns its
  saved final output without calling the model.
- Tools reach the execution through :func:`interrupt_pool.current` (the SDK runs sync function
  tools on worker threads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    from agents import Agent, RunHooks, Runner
    from agents.memory.session import SessionABC
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("interrupt_pool.openai_agents needs the OpenAI Agents SDK: pip install "
                      f"'interrupt-pool[openai-agents]' (or pip install openai-agents); importing it failed with {exc}"
                      ) from exc  # fmt: skip

from .shared import current

if TYPE_CHECKING:
    from .shared import Context

__all__ = ("FORMAT", "arun_agent", "run_agent")

FORMAT = "interrupt_pool.openai_agents/1"  # the tag of the checkpoints run_agent writes


class _CheckpointSession(SessionABC):
    """The conversation of one execution: in memory, and saved as its checkpoint at every change.
    The SDK calls it from its event loop, one call at a time."""

    def __init__(self, ctx: Context, durable: bool, items: list | None = None) -> None:
        self.session_id = ctx.execution_id
        self.session_settings = None
        self._ctx = ctx
        self._durable = durable
        self.items: list = list(items or [])

    def _save(self) -> None:
        self._ctx._save({"format": FORMAT, "items": self.items}, self._durable)

    async def get_items(self, limit: int | None = None) -> list:
        return list(self.items if limit is None else self.items[-limit:] if limit > 0 else [])

    async def add_items(self, items: list) -> None:
        self.items.extend(items)
        self._save()

    async def pop_item(self) -> Any:
        if not self.items:
            return None
        item = self.items.pop()
        self._save()
        return item

    async def clear_session(self) -> None:
        self.items.clear()
        self._save()


class _CheckingHooks(RunHooks):
    """Checks the flag at the SDK's natural stopping points (the turn before them was saved)."""

    def __init__(self, ctx: Context, user: RunHooks | None) -> None:
        self._ctx = ctx
        self._user = user

    async def on_llm_start(self, context, agent, system_prompt, input_items) -> None:
        self._ctx.check()
        if self._user is not None:
            await self._user.on_llm_start(context, agent, system_prompt, input_items)

    async def on_tool_start(self, context, agent, tool) -> None:
        self._ctx.check()
        if self._user is not None:
            await self._user.on_tool_start(context, agent, tool)

    async def on_llm_end(self, context, agent, response) -> None:
        if self._user is not None:
            await self._user.on_llm_end(context, agent, response)

    async def on_agent_start(self, context, agent) -> None:
        if self._user is not None:
            await self._user.on_agent_start(context, agent)

    async def on_agent_end(self, context, agent, output) -> None:
        if self._user is not None:
            await self._user.on_agent_end(context, agent, output)

    async def on_handoff(self, context, from_agent, to_agent) -> None:
        if self._user is not None:
            await self._user.on_handoff(context, from_agent, to_agent)

    async def on_tool_end(self, context, agent, tool, result) -> None:
        if self._user is not None:
            await self._user.on_tool_end(context, agent, tool, result)


def _prepare(ctx: Context, agent: Any, input: Any, options: Mapping[str, Any], durable: bool):
    if not isinstance(agent, Agent):
        raise TypeError(f"run_agent needs an agents.Agent, got {type(agent).__name__}")
    if "session" in options:
        raise ValueError("run_agent keeps the conversation in the execution's checkpoints (its own session); "
                         "leave session= out")  # fmt: skip
    saved = ctx.restore()
    items = None
    if saved is not None:
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"execution {ctx.execution_id!r} resumed from a checkpoint run_agent did not write "
                             f"(format {found!r}, expected {FORMAT!r}): an execution that calls run_agent must "
                             "not checkpoint anything else under its id")  # fmt: skip
        if "final" in saved:  # it had finished: its answer, without asking the model again
            return saved, None, None
        items = saved["items"]
    session = _CheckpointSession(ctx, durable, items)
    kwargs = dict(options)
    kwargs["hooks"] = _CheckingHooks(ctx, kwargs.get("hooks"))
    kwargs["session"] = session
    return None, ([] if items else input), kwargs


def _finish(ctx: Context, kwargs: dict, output: Any, plain: bool) -> Any:
    """Save the final output beside the conversation (a resume returns it at once) and return it."""
    value = _plain(output) if plain else output
    session = kwargs["session"]
    ctx._save({"format": FORMAT, "items": session.items, "final": value}, session._durable)
    return value


def _plain(output: Any) -> Any:
    return output.model_dump(mode="json") if hasattr(type(output), "model_dump") else output


def run_agent(ctx: Context | None, agent: Any, input: Any, *, durable: bool = True, plain: bool = True,
              **options: Any) -> Any:  # fmt: skip
    """Run ``agent`` on ``input`` (``Runner.run_sync``) as this execution and return its final
    output (a pydantic ``output_type`` as plain data unless ``plain=False``). Every finished turn
    is saved before the next model or tool call checks the flag; a resumed execution continues
    from the saved conversation. ``options`` go to ``Runner.run_sync`` (``max_turns``,
    ``run_config``, ``context``, ``hooks``: yours run after the check). ``ctx`` may be None:
    :func:`interrupt_pool.current` is used."""
    ctx = ctx if ctx is not None else current()
    done, input, kwargs = _prepare(ctx, agent, input, options, durable)
    if done is not None:
        return done["final"]
    ctx.check()
    result = Runner.run_sync(agent, input, **kwargs)
    return _finish(ctx, kwargs, result.final_output, plain)


async def arun_agent(ctx: Context | None, agent: Any, input: Any, *, durable: bool = True, plain: bool = True,
                     **options: Any) -> Any:  # fmt: skip
    """:func:`run_agent` for ``async def`` agents (``await Runner.run``)."""
    ctx = ctx if ctx is not None else current()
    done, input, kwargs = _prepare(ctx, agent, input, options, durable)
    if done is not None:
        return done["final"]
    ctx.check()
    result = await Runner.run(agent, input, **kwargs)
    return _finish(ctx, kwargs, result.final_output, plain)
