"""Interrupt sources of issue 10, parts 1-4: budgets and groups, stalls, agent trees, shields.

Real supervisor, real workers, real signals. Escalation grace periods are short
(0.2-0.3 s) so every stage is reached quickly; timing assertions use generous
bounds (seconds) because CI runs on a loaded 2-core machine, and each bound says
why it is what it is. Agents live in tests/source_agents.py.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from interrupt_pool import (
    BudgetExceeded,
    Escalation,
    ExecutionStatus,
    InterruptMode,
    InterruptReason,
    InterruptSource,
    Pool,
    PoolError,
    Stage,
)
from tests import source_agents as sa
from tests.procs import wait_until
from tests.test_core import wait_for_file

FAST = Escalation(grace=0.2, term_grace=0.5)
INTERRUPTED = ExecutionStatus.INTERRUPTED
BUDGET = InterruptReason.BUDGET_EXCEEDED
STALLED = InterruptReason.STALLED
PARENT = InterruptReason.PARENT_CANCELLED
# What the CI machine may add to any deadline (2 noisy cores; a fork or a GC pause).
SLACK_S = 2.0


def make_pool(tmp_path, workers=2, escalation=FAST, **kw) -> Pool:
    return Pool(workers=workers, escalation=escalation, checkpoint_dir=tmp_path / "ck", log_dir=tmp_path / "logs",
                **kw)  # fmt: skip


def row_of(pool, id):
    return next((r for r in pool.status()["executions"] if r["id"] == id), None)


# == 1. budgets ===========================================================================


def test_spend_past_budget_raises_in_the_spending_call_at_stage_flag(tmp_path):
    """The ctx.spend call that reaches the budget raises Interrupted (budget_exceeded, stage flag); cost is reported."""
    log = tmp_path / "log"
    with make_pool(tmp_path) as pool:
        ex = pool.submit(sa.spend_steps, {"step": 0.1, "n": 100, "log": str(log)}, budget=0.35, id="b1")
        out = ex.outcome(timeout=10)
    assert out.status is INTERRUPTED
    i = out.interrupt
    assert (i.reason, i.stage, i.source) == (BUDGET, Stage.FLAG, InterruptSource.BUDGET)
    lines = log.read_text().splitlines()
    # The 4th spend (total 0.4 >= 0.35) raised inside the call: it never returned.
    assert lines[-1] == "before 4" and lines[-2].startswith("after 3")
    assert out.own_cost == pytest.approx(0.4) and out.cost == pytest.approx(0.4)
    assert out.budget == pytest.approx(0.35)
    assert "0.35" in (i.message or "") or "0.35" in str(out.error or "")


def test_a_spend_that_reaches_the_budget_exactly_uses_it_up(tmp_path):
    """A budget is used up when spend >= budget: the call that makes the total equal to it raises."""
    log = tmp_path / "log"
    with make_pool(tmp_path) as pool:
        out = pool.submit(sa.spend_steps, {"step": 0.25, "n": 100, "log": str(log)}, budget=0.5).outcome(timeout=10)
    assert out.status is INTERRUPTED and out.interrupt.reason is BUDGET
    assert log.read_text().splitlines()[-1] == "before 2"
    assert out.cost == pytest.approx(0.5)


def test_an_execution_under_its_budget_completes_and_reports_its_cost(tmp_path):
    """Spending less than the budget completes normally; outcome.cost, own_cost and budget say what was spent."""
    with make_pool(tmp_path) as pool:
        ex = pool.submit(sa.spend_steps, {"step": 0.1, "n": 3}, budget=1.0)
        out = ex.outcome(timeout=10)
        plain = pool.submit(sa.spend_steps, {"step": 2.0, "n": 2}).outcome(timeout=10)  # no budget: no limit
    assert out.status is ExecutionStatus.COMPLETED and out.value == pytest.approx(0.3)
    assert out.cost == pytest.approx(0.3) and out.own_cost == pytest.approx(0.3) and out.budget == 1.0
    assert plain.status is ExecutionStatus.COMPLETED and plain.cost == pytest.approx(4.0) and plain.budget is None


def test_agent_that_swallows_the_budget_stop_and_hangs_is_stopped_by_sigterm(tmp_path):
    """An agent that spends past its budget, catches the Interrupted and blocks without checking ends at SIGTERM."""
    log = tmp_path / "log"
    esc = Escalation(grace=0.3, term_grace=2.0)
    with make_pool(tmp_path, escalation=esc) as pool:
        t0 = time.monotonic()
        out = pool.submit(sa.spend_then_hang, {"amount": 0.5, "log": str(log)}, budget=0.1).outcome(timeout=15)
        elapsed = time.monotonic() - t0
    assert out.status is INTERRUPTED
    i = out.interrupt
    assert (i.reason, i.stage) == (BUDGET, Stage.SIGTERM)
    text = log.read_text()
    assert text.startswith("spend raised:") and "finally ran" in text
    # SIGTERM came after the grace (0.3 s) counted from the spend, not before.
    assert i.sigterm_ns - i.requested_ns >= 0.3e9 * 0.99
    assert elapsed < 0.3 + SLACK_S + 2  # start-up + grace + slack; well before term_grace's SIGKILL would matter
    assert out.cost == pytest.approx(0.5)


def test_group_budget_stops_every_live_member_and_refuses_new_ones_until_raised(tmp_path):
    """When a group's spend reaches its budget, all live members stop (budget_exceeded), submit raises BudgetExceeded."""
    d = tmp_path / "d"
    d.mkdir()
    hang_log = tmp_path / "hang"
    with make_pool(tmp_path, workers=3) as pool:
        g = pool.group("g", budget=1.0)
        assert (g.name, g.budget, g.spent, g.exhausted) == ("g", 1.0, 0.0, False)
        # A member that never spends nor checks, started first so it surely runs, and one queued behind.
        hanger = pool.submit(sa.hang, {"dir": str(d), "log": str(hang_log)}, group="g", id="hang")
        wait_for_file(d / "hang")
        spenders = [pool.submit(sa.spend_steps, {"step": 0.1, "pause": 0.05, "n": 100_000}, group="g", id=f"s{n}")
                    for n in range(2)]  # fmt: skip
        queued = pool.submit(sa.sleep_forever, None, group="g", id="queued")
        outs = {ex.id: ex.outcome(timeout=15) for ex in [hanger, *spenders, queued]}
        for id, out in outs.items():
            assert out.status is INTERRUPTED, id
            assert out.interrupt.reason is BUDGET, id
            assert out.group == "g"
        assert outs["hang"].interrupt.stage is Stage.SIGTERM  # it never checks: the escalation reached it
        assert outs["queued"].interrupt.stage in (Stage.QUEUED, Stage.FLAG)  # never ran, or stopped at once
        assert "finally ran" in hang_log.read_text()
        # Together the spenders reached the budget; the other members were stopped for it.
        assert sum(outs[s.id].own_cost for s in spenders) >= 1.0 - 1e-9
        assert outs["hang"].own_cost == 0.0
        row = next(r for r in pool.status()["groups"] if r["name"] == "g")
        assert row["exhausted"] is True and row["spent"] >= 1.0 - 1e-9 and row["live"] == 0

        with pytest.raises(BudgetExceeded, match=r"pool\.group") as err:
            pool.submit(sa.spend_steps, {"step": 0.1, "n": 1}, group="g")
        assert isinstance(err.value, PoolError)

        g = pool.group("g", budget=100.0)  # raised: takes new members again
        assert g.exhausted is False and g.budget == 100.0
        again = pool.submit(sa.spend_steps, {"step": 0.1, "n": 2}, group="g").outcome(timeout=10)
        assert again.status is ExecutionStatus.COMPLETED and again.group == "g"


def test_group_budget_refusal_leaves_nothing_behind(tmp_path):
    """A submit refused with BudgetExceeded creates no execution: its id is free and the pool has no trace of it."""
    with make_pool(tmp_path) as pool:
        pool.group("z", budget=0.0)  # a zero budget is used up from the start
        with pytest.raises(BudgetExceeded):
            pool.submit(sa.spend_steps, {"step": 0.1, "n": 1}, group="z", id="refused")
        assert not pool.has("refused")
        ok = pool.submit(sa.square, 4, id="refused")  # the id was not taken
        assert ok.result(timeout=10) == 16


def test_cancel_group_stops_its_running_and_queued_members_only(tmp_path):
    """pool.cancel_group(name, mode) stops the group's running and queued members with that mode, returns the count."""
    d = tmp_path / "d"
    d.mkdir()
    with make_pool(tmp_path, workers=3) as pool:
        pool.group("c")  # no budget: a group only for cancelling together
        members = [pool.submit(sa.sleep_forever, {"dir": str(d)}, group="c", id=f"m{n}") for n in range(2)]
        other = pool.submit(sa.sleep_forever, {"dir": str(d)}, id="other")
        for id in ("m0", "m1", "other"):
            wait_for_file(d / id)
        queued = pool.submit(sa.sleep_forever, {"dir": str(d)}, group="c", id="mq")
        assert queued.status is ExecutionStatus.QUEUED
        assert pool.cancel_group("c", mode="immediate") == 3
        for ex in [*members, queued]:
            out = ex.outcome(timeout=10)
            assert out.status is INTERRUPTED, ex.id
            assert out.interrupt.mode is InterruptMode.IMMEDIATE, ex.id
            assert out.interrupt.reason is InterruptReason.USER_CANCELLED, ex.id
        assert queued.outcome().interrupt.stage is Stage.QUEUED and not (d / "mq").exists()
        assert not other.done()  # not a member: untouched
        assert pool.cancel_group("c") == 0  # nothing live is left in it
        with pytest.raises(ValueError, match="nope"):
            pool.cancel_group("nope")
        other.cancel()
        assert other.outcome(timeout=10).status is INTERRUPTED


def test_submit_to_an_unknown_group_is_refused_naming_pool_group(tmp_path):
    """submit(group=...) of a group never created raises ValueError telling to call pool.group first."""
    with make_pool(tmp_path) as pool:
        with pytest.raises(ValueError, match=r"pool\.group\('ghost'"):
            pool.submit(sa.square, 2, group="ghost", id="g1")
        assert not pool.has("g1")
        assert pool.submit(sa.square, 3, id="g1").result(timeout=10) == 9


BAD_BUDGETS = [-1, -0.001, math.nan, math.inf, -math.inf, True, "1", [1]]


@pytest.mark.parametrize("bad", BAD_BUDGETS, ids=repr)
def test_bad_budgets_are_refused_at_submit_and_at_group(tmp_path, bad):
    """Negative, NaN, infinite, bool or non-number budgets raise ValueError/TypeError naming the budget, at both calls."""
    with make_pool(tmp_path, workers=1) as pool:
        with pytest.raises((ValueError, TypeError), match="budget") as e1:
            pool.submit(sa.square, 2, budget=bad, id="x")
        with pytest.raises((ValueError, TypeError), match="budget") as e2:
            pool.group("g", budget=bad)
        assert repr(bad) in str(e1.value) and repr(bad) in str(e2.value)  # says what was wrong
        assert not pool.has("x")
        assert all(g["name"] != "g" for g in pool.status().get("groups", []))


def test_ctx_spend_with_a_bad_amount_raises_value_error_in_the_agent(tmp_path):
    """ctx.spend of a negative, NaN, infinite, bool or non-number amount raises ValueError the agent can catch."""
    with make_pool(tmp_path, workers=1) as pool:
        got = pool.submit(sa.spend_bad_amounts, None, budget=10).result(timeout=10)
    errors = got["errors"]
    for kind, text in errors[:-1]:
        assert kind == "ValueError" and "ctx.spend" in text and "amount" in text
    assert errors[-1][0] == "TypeError" and "note" in errors[-1][1]  # a non-string note
    assert got["cost"] == pytest.approx(0.0)  # nothing was added by the refused calls (the bad note's call neither)


def test_a_parents_budget_covers_its_childrens_spend(tmp_path):
    """Children's spend pushes the parent over its budget: parent budget_exceeded, children parent_cancelled."""
    with make_pool(tmp_path, workers=2) as pool:
        ex = pool.submit(sa.spending_children, {"kids": 2, "step": 0.1, "pause": 0.05}, budget=1.0, id="pb")
        out = ex.outcome(timeout=15)
        assert out.status is INTERRUPTED and out.interrupt.reason is BUDGET
        assert out.own_cost == 0.0 and out.cost >= 1.0 - 1e-9  # all of it is its children's
        assert sorted(out.children) == ["pb.1", "pb.2"]
        kids = [pool.outcome(c, timeout=10) for c in out.children]
    for k in kids:
        assert k.status is INTERRUPTED and k.interrupt.reason is PARENT
        assert k.parent_id == "pb"
    # The parent's cost is its children's spend (a child may spend once more while the stop reaches it).
    assert sum(k.own_cost for k in kids) >= out.cost - 1e-9


def test_status_rows_and_group_rows_show_the_spend(tmp_path):
    """pool.status() shows a running execution's cost and budget and its group's spend; the ended row keeps the cost."""
    marker = tmp_path / "m"
    with make_pool(tmp_path) as pool:
        pool.group("s", budget=50)
        ex = pool.submit(sa.spend_and_wait, {"amount": 0.25, "marker": str(marker)}, budget=10, group="s", id="st")
        wait_for_file(marker)
        # The Spend frame was sent before the marker, but the supervisor may answer our query first: poll.
        row = wait_until(lambda: (r := row_of(pool, "st")) and r.get("cost") and r, what="cost in the status row")
        assert row["status"] == "running" and row["cost"] == pytest.approx(0.25) and row["budget"] == 10
        assert row["group"] == "s"
        grp = next(g for g in pool.status()["groups"] if g["name"] == "s")
        assert grp["spent"] == pytest.approx(0.25) and grp["live"] == 1 and grp["budget"] == 50
        ex.cancel()
        assert ex.outcome(timeout=10).cost == pytest.approx(0.25)
        ended = row_of(pool, "st")
        assert ended["status"] == "interrupted" and ended["cost"] == pytest.approx(0.25)


# == 2. stalls ============================================================================


def test_an_execution_that_stops_making_progress_is_stopped_as_stalled(tmp_path):
    """With stall_timeout=0.5, an agent that heartbeats for 1 s then hangs ends stalled, stall_timeout after its last beat."""
    log = tmp_path / "log"
    with make_pool(tmp_path) as pool:
        out = pool.submit(sa.heartbeat_then_hang, {"busy": 1.0, "log": str(log)}, stall_timeout=0.5).outcome(timeout=15)
    assert out.status is INTERRUPTED
    i = out.interrupt
    assert i.reason is STALLED and i.source is InterruptSource.SYSTEM
    assert i.stage is Stage.SIGTERM  # it never checks after its heartbeats: the escalation reached it
    last_beat, beats = map(int, log.read_text().split())
    assert beats >= 5  # it was alive and beating well past stall_timeout: the beats kept it going
    # Due stall_timeout after the last progress (which is at or after our stamp); the supervisor's
    # timer fires late on a busy box, but the request is timed from the deadline itself.
    assert i.requested_ns >= last_beat + 0.5e9 * 0.99
    assert i.requested_ns <= last_beat + (0.5 + SLACK_S) * 1e9


@pytest.mark.parametrize("kind", ["heartbeat", "sleep", "spend", "checkpoint"])
def test_progress_of_each_kind_keeps_an_execution_alive_past_its_stall_timeout(tmp_path, kind):
    """An agent that makes progress (heartbeat, ctx.sleep, ctx.spend, ctx.checkpoint) every 50 ms for 3.2x stall_timeout completes."""
    with make_pool(tmp_path, workers=1) as pool:
        # 50 ms between progress marks against a 0.5 s stall_timeout: a 10x margin for a slow CI box.
        out = pool.submit(sa.progress_for, {"kind": kind, "seconds": 1.6}, stall_timeout=0.5).outcome(timeout=15)
    assert out.status is ExecutionStatus.COMPLETED, out.interrupt
    assert out.value >= 5


def test_ctx_check_alone_is_not_progress(tmp_path):
    """An agent that only calls ctx.check() is stopped as stalled, at stage flag (its check sees the stop)."""
    log = tmp_path / "log"
    with make_pool(tmp_path, workers=1) as pool:
        out = pool.submit(sa.check_only, {"log": str(log)}, stall_timeout=0.5).outcome(timeout=15)
    assert out.status is INTERRUPTED
    assert (out.interrupt.reason, out.interrupt.stage) == (STALLED, Stage.FLAG)
    started = int(log.read_text())
    # Due 0.5 s after the start (its only progress); generous upper bound for a busy CI box.
    assert started + 0.5e9 * 0.9 <= out.interrupt.requested_ns <= started + (0.5 + SLACK_S) * 1e9


def test_a_childs_end_is_progress_for_its_waiting_parent(tmp_path):
    """A parent waiting on children in turn (each 0.3 s) outlives its 1 s stall_timeout; one 3 s child does not."""
    with make_pool(tmp_path) as pool:
        # 6 children of 0.3 s: ~1.8 s in all, > stall_timeout; each gap between ends (~0.3 s) is well under 1 s.
        ok = pool.submit(sa.sequential_children, {"n": 6, "each": 0.3}, stall_timeout=1.0).outcome(timeout=15)
        assert ok.status is ExecutionStatus.COMPLETED, ok.interrupt
        assert ok.value == 6 and len(ok.children) == 6
        # Control: the same parent with one child of 3 s sees no child end for 1 s: stalled.
        bad = pool.submit(sa.sequential_children, {"n": 1, "each": 3.0}, stall_timeout=1.0, id="st").outcome(timeout=15)
        assert bad.status is INTERRUPTED and bad.interrupt.reason is STALLED
        child = pool.outcome("st.1", timeout=10)
        assert child.status is INTERRUPTED and child.interrupt.reason is PARENT


def test_status_shows_seconds_since_the_last_progress(tmp_path):
    """pool.status() rows of running executions carry 'idle': time since their last progress (check() does not reset it)."""
    still, beating = tmp_path / "still", tmp_path / "beating"
    with make_pool(tmp_path) as pool:
        a = pool.submit(sa.check_and_wait, {"marker": str(still)}, id="still")
        b = pool.submit(sa.beat_and_wait, {"marker": str(beating)}, id="beating")
        wait_for_file(still)
        wait_for_file(beating)
        time.sleep(1.0)
        rows = {r["id"]: r for r in pool.status()["executions"]}
        # 'still' last progressed before it wrote its marker, >= 1 s ago; upper bound: slack for a slow box.
        assert 1.0 <= rows["still"]["idle"] < 1.0 + 5
        assert rows["beating"]["idle"] < 0.5  # beats every 20 ms; 0.5 s of scheduling slack
        a.cancel()
        b.cancel()
        assert a.outcome(timeout=10).interrupt.stage is Stage.FLAG
        b.outcome(timeout=10)


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-1, ValueError), (math.nan, ValueError),
                                      (math.inf, ValueError), ("1", TypeError), (True, TypeError)],
                         ids=["0", "-1", "nan", "inf", "str", "bool"])  # fmt: skip
def test_bad_stall_timeouts_are_refused(tmp_path, bad, exc):
    """stall_timeout of 0, negative, NaN or infinite raises ValueError (a non-number TypeError), naming stall_timeout."""
    with make_pool(tmp_path, workers=1) as pool:
        with pytest.raises(exc, match="stall_timeout"):
            pool.submit(sa.square, 2, stall_timeout=bad, id="x")
        assert not pool.has("x")


# == 3. agent trees =======================================================================


def test_children_grandchildren_results_and_links(tmp_path):
    """ctx.submit + result() across two levels; outcome.parent_id and outcome.children link the tree."""
    with make_pool(tmp_path) as pool:
        got = pool.submit(sa.family, None, id="fam").result(timeout=15)
        assert got["ids"] == ["fam.1", "fam.2"]  # default ids: <parent>.<n>
        assert [v["grandchild"] for v in got["values"]] == [100, 400]
        assert [v["id"] for v in got["values"]] == ["fam.1", "fam.2"]
        root = pool.outcome("fam", timeout=10)
        assert root.parent_id is None and root.children == ["fam.1", "fam.2"]
        kid = pool.outcome("fam.1", timeout=10)
        assert kid.parent_id == "fam" and kid.children == ["fam.1.1"]
        g = pool.outcome("fam.2.1", timeout=10)
        assert g.status is ExecutionStatus.COMPLETED and g.value == 400 and g.parent_id == "fam.2"
    # The parent agent's child.outcome() says the same as the pool's outcome(id).
    assert got["outcomes"] == [["fam.1", "completed", "fam", ["fam.1.1"]], ["fam.2", "completed", "fam", ["fam.2.1"]]]


def test_ctx_map_returns_values_in_order(tmp_path):
    """ctx.map runs its inputs as child executions and returns their values in input order."""
    with make_pool(tmp_path) as pool:
        ex = pool.submit(sa.map_squares, [1, 2, 3, 4, 5], id="mp")
        assert ex.result(timeout=15) == [1, 4, 9, 16, 25]
        assert len(pool.outcome("mp").children) == 5


def test_ctx_map_first_failure_raises_and_cancels_the_rest(tmp_path):
    """ctx.map raises the first failure (in input order) and cancels the other children (parent_cancelled)."""
    d = tmp_path / "d"
    d.mkdir()
    with make_pool(tmp_path, workers=3) as pool:
        got = pool.submit(sa.map_first_fails, {"dir": str(d)}, id="mf").result(timeout=15)
        assert got["raised"] == "ExecutionFailed" and "bad item" in got["text"]
        for cid in ("mf.2", "mf.3"):
            out = pool.outcome(cid, timeout=10)
            assert out.status is INTERRUPTED and out.interrupt.reason is PARENT, cid


@pytest.mark.parametrize("mode", ["immediate", "kill"])
def test_cancelling_the_root_stops_every_descendant_with_the_same_mode(tmp_path, mode):
    """pool.cancel(root, mode) stops all 6 descendants with reason parent_cancelled and that mode."""
    d = tmp_path / "d"
    d.mkdir()
    ids = ["r", "r.1", "r.2", "r.1.1", "r.1.2", "r.2.1", "r.2.2"]
    with make_pool(tmp_path, workers=4) as pool:  # 4 leaves: each gets a worker, 3 waiting parents lend theirs
        root = pool.submit(sa.nested_forever, {"dir": str(d), "fanout": 2, "depth": 2}, id="r")
        for id in ids:
            wait_for_file(d / id)
        assert pool.status()["held"]["lent"] == 3  # the 3 inner nodes wait on their children
        assert pool.cancel("r", mode=mode) is True
        out = root.outcome(timeout=10)
        assert out.status is INTERRUPTED and out.interrupt.reason is InterruptReason.USER_CANCELLED
        for id in ids[1:]:
            o = pool.outcome(id, timeout=10)
            assert o.status is INTERRUPTED, id
            assert o.interrupt.reason is PARENT, id
            assert o.interrupt.mode is InterruptMode(mode), id
            if mode == "kill":
                assert o.interrupt.stage is Stage.SIGKILL, id
        assert pool.outcome("r.1").children == ["r.1.1", "r.1.2"]
        assert pool.outcome("r.2.2").parent_id == "r.2"
        # Nothing is left running, and the pool still works.
        assert wait_until(lambda: pool.status()["held"]["executions"] == 0, what="all ended")
        assert pool.submit(sa.square, 5).result(timeout=10) == 25


def test_an_immediate_cascade_ends_every_node_interrupted_never_crashed(tmp_path):
    """Cancelling (immediate) the root of a 9-deep chain, 10 times: every node ends interrupted, none crashed."""
    with make_pool(tmp_path, workers=1) as pool:  # one leaf per chain; the 8 waiting nodes lend their workers
        for n in range(10):  # repeated: each stop races the parents' exits against their children's ends
            d = tmp_path / f"d{n}"
            d.mkdir()
            root = pool.submit(sa.nested_forever, {"dir": str(d), "fanout": 1, "depth": 8}, id=f"c{n}")
            ids = [f"c{n}" + ".1" * k for k in range(9)]
            for id in ids:
                wait_for_file(d / id)
            pool.cancel(root.id, mode="immediate")
            got = {id: pool.outcome(id, timeout=10) for id in ids}
            bad = {id: (o.status.value, o.error and o.error.message) for id, o in got.items() if o.status is not INTERRUPTED}
            assert not bad, f"chain {n}: {bad}"
            assert all(o.interrupt.reason is PARENT and o.interrupt.mode is InterruptMode.IMMEDIATE
                       for o in list(got.values())[1:])  # fmt: skip


def test_a_root_timeout_cascades_to_its_descendants(tmp_path):
    """A root's timeout stops it (reason timeout) and every descendant (parent_cancelled)."""
    d = tmp_path / "d"
    d.mkdir()
    with make_pool(tmp_path, workers=4) as pool:
        # 2 s: room for all 7 to start on a slow box before the timeout fires.
        root = pool.submit(sa.nested_forever, {"dir": str(d), "fanout": 2, "depth": 2}, id="t", timeout=2.0)
        for id in ["t", "t.1", "t.2", "t.1.1", "t.1.2", "t.2.1", "t.2.2"]:
            wait_for_file(d / id)
        out = root.outcome(timeout=15)
        assert out.status is INTERRUPTED and out.interrupt.reason is InterruptReason.TIMEOUT
        for id in ["t.1", "t.2", "t.1.1", "t.1.2", "t.2.1", "t.2.2"]:
            o = pool.outcome(id, timeout=10)
            assert o.status is INTERRUPTED and o.interrupt.reason is PARENT, id


def test_a_parent_that_crashes_takes_its_children_with_it(tmp_path):
    """A parent agent that dies (os._exit) ends crashed, and its running child is stopped (parent_cancelled)."""
    d = tmp_path / "d"
    d.mkdir()
    with make_pool(tmp_path) as pool:
        out = pool.submit(sa.crash_after_child, {"dir": str(d)}, id="cp").outcome(timeout=15)
        assert out.status is ExecutionStatus.CRASHED and out.exit_code == 7
        child = pool.outcome("cp.1", timeout=10)
        assert child.status is INTERRUPTED and child.interrupt.reason is PARENT
        assert child.parent_id == "cp"


def test_a_parent_that_returns_without_waiting_stops_its_live_children(tmp_path):
    """A parent that returns while a child still runs completes, and the child is stopped (parent_cancelled)."""
    d = tmp_path / "d"
    d.mkdir()
    with make_pool(tmp_path) as pool:
        out = pool.submit(sa.return_without_waiting, {"dir": str(d)}, id="rw").outcome(timeout=15)
        assert out.status is ExecutionStatus.COMPLETED and out.value == "rw.1"
        child = pool.outcome("rw.1", timeout=10)
        assert child.status is INTERRUPTED and child.interrupt.reason is PARENT
        assert child.interrupt.stage is Stage.FLAG  # it sleeps through ctx.sleep: the flag reached it


def test_a_tree_wider_and_deeper_than_the_pool_completes(tmp_path):
    """4 workers run a fan-out 3, depth 4 tree (121 executions, 40 waiting parents) to the right sum, no deadlock."""
    with make_pool(tmp_path, workers=4) as pool:
        t0 = time.monotonic()
        ex = pool.submit(sa.tree_sum, {"fanout": 3, "depth": 4}, id="w")
        max_lent = 0
        while not ex.done():
            max_lent = max(max_lent, pool.status()["held"]["lent"])
            time.sleep(0.02)
        assert ex.result(timeout=1) == 121
        assert time.monotonic() - t0 < 30  # generous: ~1-3 s here; a deadlock would hit the pytest timeout instead
        assert max_lent >= 1  # the root waits on its children for the whole run: its worker was lent
        assert pool.status()["held"]["lent"] == 0
        assert len(pool.outcome("w").children) == 3 and pool.outcome("w.3.3.3.3").parent_id == "w.3.3.3"
        # The stand-ins retire once idle and not needed: back to 4 workers.
        wait_until(lambda: len(pool.workers()) == 4, timeout=10, what="stand-ins retired")


def test_a_wide_tree_never_runs_more_than_workers_leaves_at_once(tmp_path):
    """While parents wait, stand-ins keep `workers` executions running, never more: <= 4 leaves at once on 4 workers."""
    counter = tmp_path / "leaves"
    with make_pool(tmp_path, workers=4) as pool:
        # Each leaf counts itself in and out of a flock-guarded counter around 20 ms of ctx.sleep; the
        # counted span lies inside its execution, so the measured maximum can only under-count.
        ex = pool.submit(sa.tree_sum, {"fanout": 3, "depth": 4, "counter": str(counter), "leaf_s": 0.02}, id="w")
        assert ex.result(timeout=30) == 121
    current, top = map(int, counter.read_text().split())
    assert current == 0 and top >= 1
    assert top <= 4, f"{top} leaves ran at once with 4 workers (waiting parents' places are lent, not added)"


def test_a_deep_chain_completes_on_two_workers(tmp_path):
    """A chain 12 levels deep (13 executions, 12 of them waiting at once) completes on 2 workers, with ctx.map too."""
    with make_pool(tmp_path, workers=2) as pool:
        assert pool.submit(sa.tree_sum, {"fanout": 1, "depth": 12}).result(timeout=30) == 13
        assert pool.submit(sa.tree_sum, {"fanout": 2, "depth": 3, "use_map": True}).result(timeout=30) == 15


def test_a_parent_cancels_its_child(tmp_path):
    """child.cancel() from the parent agent stops the child (parent_cancelled, source agent) and the parent goes on."""
    d = tmp_path / "d"
    d.mkdir()
    with make_pool(tmp_path) as pool:
        got = pool.submit(sa.cancel_my_child, {"dir": str(d), "mode": "immediate"}, id="cc").result(timeout=15)
        assert got == {"id": "cc.1", "first": True, "again": False, "status": "interrupted",
                       "reason": "parent_cancelled", "source": "agent", "mode": "immediate", "done": True}  # fmt: skip
        out = pool.outcome("cc.1", timeout=10)
        assert out.interrupt.reason is PARENT and out.interrupt.source is InterruptSource.AGENT


def test_submit_from_a_thread_left_after_the_execution_ended_raises(tmp_path):
    """ctx.submit from a thread the agent left behind, after its execution ended, raises RuntimeError."""
    out = tmp_path / "out"
    with make_pool(tmp_path, workers=1) as pool:
        ex = pool.submit(sa.leave_thread, {"what": "submit", "out": str(out), "delay": 0.3}, id="lt")
        assert ex.result(timeout=10) == "returned"
        text = wait_for_file(out)
        assert text.startswith("RuntimeError") and "'lt'" in text and "ended" in text
        assert pool.outcome("lt").children == []
        assert not pool.has("lt.1")
        assert pool.submit(sa.square, 6).result(timeout=10) == 36  # the worker is still fine


def test_ctx_submit_rejects_unknown_options(tmp_path):
    """ctx.submit with an unknown option raises TypeError inside the agent, naming it."""
    with make_pool(tmp_path, workers=1) as pool:
        text = pool.submit(sa.submit_unknown_option, None, id="uo").result(timeout=10)
        assert text.startswith("TypeError") and "bogus" in text
        assert pool.outcome("uo").children == []


# == 4. shields ===========================================================================


def shield_paths(tmp_path, how, seconds):
    return {"how": how, "seconds": seconds, "entered": str(tmp_path / "entered"), "done": str(tmp_path / "done"),
            "after": str(tmp_path / "after"), "inner_done": str(tmp_path / "inner_done")}  # fmt: skip


def test_a_cooperative_stop_waits_for_the_end_of_the_shield(tmp_path):
    """A graceful stop inside `with ctx.shield()` lets the body finish; Interrupted comes at the shield's exit."""
    p = shield_paths(tmp_path, "ctx", 1.5)
    # grace 10 s: nothing but the flag can end it within this test.
    with make_pool(tmp_path, escalation=Escalation(grace=10, term_grace=1)) as pool:
        ex = pool.submit(sa.shielded, p)
        wait_for_file(p["entered"])
        assert ex.cancel() is True
        out = ex.outcome(timeout=15)
    assert out.status is INTERRUPTED and out.interrupt.stage is Stage.FLAG
    done_ns = int(Path(p["done"]).read_text())  # the body ran to its end...
    assert not Path(p["after"]).exists()  # ...and nothing after the shield ran
    i = out.interrupt
    assert done_ns > i.requested_ns  # the body was still running when the stop came
    # shield_delay is how long the shield held the stop: from the request to the shield's end (the
    # agent's stamp is taken just before it); 0.3 s tolerance for scheduling on a busy box.
    assert i.shield_delay is not None and i.shield_delay > 0
    assert i.shield_delay == pytest.approx((done_ns - i.requested_ns) / 1e9, abs=0.3)
    assert i.shield_ns == pytest.approx(i.shield_delay * 1e9)


def test_a_stop_is_held_until_the_outermost_shield_ends(tmp_path):
    """With nested shields, the stop is delivered only when the outer one ends, not at the inner one's end."""
    p = shield_paths(tmp_path, "nested", 1.0)
    with make_pool(tmp_path, escalation=Escalation(grace=10, term_grace=1)) as pool:
        ex = pool.submit(sa.shielded, p)
        wait_for_file(p["entered"])
        ex.cancel()
        out = ex.outcome(timeout=15)
    assert out.status is INTERRUPTED and out.interrupt.stage is Stage.FLAG
    inner, done = int(Path(p["inner_done"]).read_text()), int(Path(p["done"]).read_text())
    assert done - inner >= 0.3e9 * 0.99  # the outer shield's 0.3 s more ran after the inner one ended
    assert not Path(p["after"]).exists()
    assert out.interrupt.shield_delay == pytest.approx((done - out.interrupt.requested_ns) / 1e9, abs=0.3)


def test_sigterm_is_held_during_a_shield(tmp_path):
    """A shield that never checks delays the SIGTERM stage: its body completes, then it ends at stage sigterm."""
    p = shield_paths(tmp_path, "sleep", 1.5)
    # SIGTERM due 0.2 s after the request, well inside the 1.5 s shield; SIGKILL 4 s later, well after it.
    with make_pool(tmp_path, escalation=Escalation(grace=0.2, term_grace=4.0)) as pool:
        ex = pool.submit(sa.shielded, p)
        wait_for_file(p["entered"])
        ex.cancel()
        out = ex.outcome(timeout=15)
    i = out.interrupt
    assert out.status is INTERRUPTED and i.stage is Stage.SIGTERM
    done_ns = int(Path(p["done"]).read_text())
    assert not Path(p["after"]).exists()
    assert done_ns > i.requested_ns + 0.2e9  # the body was still running when SIGTERM was due
    assert i.shield_delay == pytest.approx((done_ns - i.requested_ns) / 1e9, abs=0.3)
    assert i.shield_delay > 0.2  # it held the stop past the SIGTERM deadline


def test_a_shield_cannot_outlast_the_sigkill_deadline(tmp_path):
    """A shield longer than grace + term_grace is killed at the SIGKILL deadline (stage sigkill), delay reported."""
    p = shield_paths(tmp_path, "sleep", 8.0)
    with make_pool(tmp_path, escalation=Escalation(grace=0.2, term_grace=0.5)) as pool:
        ex = pool.submit(sa.shielded, p)
        wait_for_file(p["entered"])
        t0 = time.monotonic()
        ex.cancel()
        out = ex.outcome(timeout=15)
        elapsed = time.monotonic() - t0
    i = out.interrupt
    assert out.status is INTERRUPTED and i.stage is Stage.SIGKILL
    assert not Path(p["done"]).exists()  # killed inside the shield
    assert i.sigkill_ns - i.requested_ns >= 0.7e9 * 0.99  # not before grace + term_grace
    assert elapsed < 0.7 + SLACK_S + 2  # far from the shield's 8 s
    # It held the stop from the request until the kill: ~0.7 s (0.5 s tolerance for a slow box).
    assert i.shield_delay is not None
    assert i.shield_delay == pytest.approx((i.sigkill_ns - i.requested_ns) / 1e9, abs=0.5)


def test_entering_a_shield_from_a_thread_left_after_the_execution_ended_raises(tmp_path):
    """ctx.shield() entered by a leftover thread after its execution ended raises RuntimeError."""
    out = tmp_path / "out"
    with make_pool(tmp_path, workers=1) as pool:
        ex = pool.submit(sa.leave_thread, {"what": "shield", "out": str(out), "delay": 0.3}, id="ls")
        assert ex.result(timeout=10) == "returned"
        text = wait_for_file(out)
        assert text.startswith("RuntimeError") and "'ls'" in text and "shield" in text
        assert pool.submit(sa.square, 7).result(timeout=10) == 49


# -- regressions from the review ---------------------------------------------------------------


def test_child_done_becomes_true_without_the_parent_blocking_in_ctx(tmp_path):
    """child.done() reads the child's end itself: a parent polling it (plain time.sleep) sees it end."""
    with make_pool(tmp_path) as pool:
        out = pool.submit(sa.poll_child_done, {"child_s": 0.1, "within_s": 8}).outcome(timeout=20)
    assert out.ok and out.value == 0.1


def test_a_parent_is_never_preempted_for_its_own_child(tmp_path):
    """A preemptible parent whose child has a higher priority runs once: it is not preempted to make room for it."""
    runs = tmp_path / "runs"
    with make_pool(tmp_path, workers=1) as pool:
        out = pool.submit(sa.high_priority_child, {"runs": str(runs), "priority": 5}, preemptible=True)
        assert out.result(timeout=20) == 0.1
        assert out.outcome().preemptions == []
    assert runs.read_text().count("run") == 1


def test_reading_a_group_keeps_its_budget(tmp_path):
    """pool.group(name) without budget= reads the group; only budget=None removes its budget."""
    with make_pool(tmp_path) as pool:
        pool.group("keep", budget=1.5)
        assert pool.group("keep").budget == 1.5
        assert pool.group("keep", budget=None).budget is None


def test_an_agent_past_a_raised_group_budget_goes_on(tmp_path):
    """A spend that reaches the allowance the agent started with asks the supervisor: the group's
    budget was raised meanwhile, so the agent goes on and completes (no stale stop)."""
    marker, go = tmp_path / "spent", tmp_path / "go"
    with make_pool(tmp_path) as pool:
        pool.group("grow", budget=2.5)
        ex = pool.submit(sa.spend_past_then_continue, {"step": 1.0, "n": 5, "marker": str(marker), "go": str(go)},
                         group="grow")  # fmt: skip
        wait_for_file(marker)
        pool.group("grow", budget=100)
        go.write_text("go")
        out = ex.outcome(timeout=20)
    assert out.ok and out.value == 5.0 and out.cost == 5.0
