# mypy: disallow-untyped-calls, disallow-untyped-defs, disallow-incomplete-defs, check-untyped-defs
# mypy: disallow-untyped-decorators, disallow-subclassing-any, disallow-any-generics, warn-return-any
# mypy: no-implicit-reexport, strict-equality, extra-checks, warn-unused-ignores
"""The public API as a type-checked user program sees it (never run: nothing here is called).

tests/test_typing.py runs mypy over this file with the flags ``mypy --strict`` turns on
(listed above: ``strict`` itself cannot be set inline; ``warn_redundant_casts``, global
only, is on in pyproject.toml). Each ``assert_type`` pins a return type a caller relies
on, so a public method that loses its annotation (and returns ``Any``) fails the test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, assert_type

from interrupt_pool import (
    BudgetExceeded,
    CheckpointError,
    CheckpointRef,
    ChildExecution,
    Context,
    ErrorInfo,
    Escalation,
    Event,
    EventKind,
    Execution,
    ExecutionError,
    ExecutionFailed,
    ExecutionInfo,
    ExecutionInterrupted,
    ExecutionResult,
    ExecutionStatus,
    Group,
    InterruptInfo,
    InterruptMode,
    InterruptReason,
    InterruptRequest,
    InterruptSource,
    Interrupted,
    Pool,
    PoolBroken,
    PoolClosed,
    PoolError,
    Preemption,
    QueueFull,
    Stage,
    StopRequest,
    WorkerCrashed,
    WorkerInfo,
)


def summarise(ctx: Context, text: str) -> str:
    """A child agent."""
    ctx.check()
    return text[:10]


def research(ctx: Context, topic: str) -> dict[str, Any]:
    """An agent that uses every method of its context."""
    assert_type(ctx.execution_id, str)
    assert_type(ctx.worker_id, int)
    ctx.check()
    ctx.heartbeat()
    ctx.sleep(0.01)
    assert_type(ctx.interrupted, bool)
    request = ctx.interrupt
    assert_type(request, InterruptRequest | None)
    if request is not None:
        assert_type(request.mode, InterruptMode)
        assert_type(request.reason, InterruptReason)
        assert_type(request.source, InterruptSource)
        assert_type(request.message, str | None)
        assert_type(request.requested_ns, int)
    assert_type(ctx.spend(0.25, note="tokens"), float)
    assert_type(ctx.cost, float)
    ctx.state = {"topic": topic, "done": 0}
    with ctx.shield() as shielded:
        assert_type(shielded, Context)
    saved = ctx.checkpoint({"topic": topic}, durable=False)
    assert_type(saved.seq, int)
    assert_type(saved.path, str)
    restored = ctx.restore()
    child = ctx.submit(summarise, topic, timeout=5.0)
    assert_type(child, ChildExecution)
    handle: ChildExecution = child
    assert_type(handle.id, str)
    assert_type(handle.done(), bool)
    assert_type(handle.result(timeout=1.0), Any)  # a child's value: whatever its agent returned
    assert_type(handle.outcome(), ExecutionResult)
    assert_type(handle.cancel("immediate", message="enough"), bool)
    assert_type(ctx.map(summarise, ["a", "b"], timeout=1.0), list[Any])
    return {"topic": topic, "restored": restored}


def on_event(event: Event) -> None:
    assert_type(event.kind, EventKind)
    assert_type(event.mono_ns, int)
    assert_type(event.at, dt.datetime)
    assert_type(event.execution_id, str | None)
    assert_type(event.status, ExecutionStatus | None)
    assert_type(event.stage, Stage | None)
    assert_type(event.text, str | None)


def veto(request: StopRequest) -> bool:
    assert_type(request.execution_id, str)
    assert_type(request.mode, InterruptMode)
    return request.reason is not InterruptReason.USER_CANCELLED


def after(outcome: ExecutionResult) -> None:
    assert_type(outcome.checkpoint, CheckpointRef | None)


def read_outcome(out: ExecutionResult) -> None:
    assert_type(out.id, str)
    assert_type(out.status, ExecutionStatus)
    assert_type(out.status.terminal, bool)
    assert_type(out.ok, bool)
    assert_type(out.value, Any)
    assert_type(out.error, ErrorInfo | None)
    assert_type(out.started_at, dt.datetime | None)
    assert_type(out.cost, float)
    assert_type(out.children, list[str])
    assert_type(out.preemptions, list[Preemption])
    if out.error is not None:
        assert_type(out.error.message, str)
        assert_type(out.error.traceback, str | None)
    info = out.interrupt
    assert_type(info, InterruptInfo | None)
    if info is not None:
        assert_type(info.mode, InterruptMode)
        assert_type(info.stage, Stage | None)
        assert_type(info.requested_ns, int | None)
        assert_type(info.stop_latency, float | None)
        assert_type(info.observe_latency, float | None)
        assert_type(info.shield_delay, float | None)
    if out.checkpoint is not None:
        assert_type(out.checkpoint.seq, int)
        assert_type(out.checkpoint.time, dt.datetime)


def drive_a_pool() -> None:
    escalation = Escalation(grace=1.0, term_grace=0.5)
    assert_type(escalation.grace, float)
    with Pool(workers=2, escalation=escalation, name="typing", on_event=on_event, checkpoint_dir=None,
              before_interrupt=veto, after_interrupt=after, max_queued=100) as pool:  # fmt: skip
        assert_type(pool, Pool)
        assert_type(pool.escalation, Escalation)
        assert_type(pool.supervisor_pid, int)
        assert_type(pool.name, str | None)

        ex = pool.submit(research, "mice", id="r1", timeout=30.0, budget=2.0, stall_timeout=5.0, priority=1,
                         preemptible=True, escalation=Escalation(grace=0.1))  # fmt: skip
        assert_type(ex, Execution)
        assert_type(ex.id, str)
        assert_type(ex.status, ExecutionStatus)
        assert_type(ex.worker_id, int | None)
        assert_type(ex.done(), bool)
        assert_type(ex.wait_started(timeout=5.0), bool)
        assert_type(ex.result(timeout=10.0), Any)  # the agent's value: whatever it returned
        out = ex.outcome()
        assert_type(out, ExecutionResult)
        read_outcome(out)
        assert_type(ex.cancel(InterruptMode.KILL), bool)
        assert_type(ex.cancel("graceful", reason=InterruptReason.TIMEOUT, message="late"), bool)
        assert_type(ex.logs(), str)
        ex.add_done_callback(lambda e: print(e.id))
        by_name = pool.submit("tests.agents:echo", {"x": 1}, on_interrupt="tests.agents:save", block=False)
        assert_type(by_name, Execution)

        assert_type(pool.map(summarise, ["a", "b"], timeout=5.0), list[Any])
        values = pool.imap(summarise, iter(["a", "b"]), window=8)
        assert_type(values, Iterator[Any])
        for done in Pool.as_completed([ex, by_name], timeout=5.0):
            assert_type(done, Execution)

        assert_type(pool.cancel("r1", "immediate", "user_cancelled", "stop it", source="user"), bool)
        assert_type(pool.cancel("r1", InterruptMode.GRACEFUL, InterruptReason.CUSTOM,
                                source=InterruptSource.PROGRAMMATIC), bool)  # fmt: skip
        assert_type(pool.cancel_worker(0, "kill"), bool)
        assert_type(pool.cancel_all("graceful", mine_only=True), None)
        group = pool.group("team", budget=10.0)
        assert_type(group, Group)
        assert_type(group.spent, float)
        assert_type(pool.group("team"), Group)
        assert_type(pool.cancel_group("team", "immediate"), int)

        source = pool.add_interrupt_source(lambda: ["r1", StopRequest(execution_id="r2")], interval=0.5)
        source.remove(wait=True)
        with pool.handle_signals(announce=lambda name, mode: print(name, mode.value)):
            pass

        for event in pool.events():
            assert_type(event, Event)
            break
        assert_type(pool.workers(), list[WorkerInfo])
        assert_type(pool.executions(), list[ExecutionInfo])
        assert_type(pool.execution("r1"), Execution)
        assert_type(pool.has("r1"), bool)
        assert_type(pool.outcome("r1", timeout=1.0), ExecutionResult)
        assert_type(pool.status(), dict[Any, Any])
        pool.shutdown(wait=True, cancel="immediate")

    client = Pool.connect("typing", timeout=5.0)
    assert_type(client, Pool)
    client.shutdown()


def handle_errors(pool: Pool, ex: Execution) -> str:
    try:
        ex.result()
    except ExecutionInterrupted as exc:
        assert_type(exc.outcome, ExecutionResult)
        return str(exc.outcome.interrupt)
    except ExecutionFailed as exc:
        error = exc.outcome.error
        return error.message if error else ""
    except WorkerCrashed as exc:
        return str(exc.outcome.signal)
    except ExecutionError as exc:
        return exc.outcome.id
    except (QueueFull, BudgetExceeded, PoolClosed, PoolBroken, CheckpointError) as exc:
        return str(exc)
    except PoolError:
        raise
    except Interrupted as exc:  # (only inside an agent)
        assert_type(exc.stage, Stage)
        raise
    return ""
