"""Checkpoints: durable writes, restore, resume, and faults (SIGKILL mid-write, corrupt files)."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import random
import struct
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from pydantic import BaseModel

from interrupt_pool import CheckpointError, Escalation, ExecutionStatus, Pool, Stage
from interrupt_pool.shared._checkpoint import HEADER_SIZE, CheckpointStore, decode, encode, id_to_dirname, list_ids
from tests import agents
from tests.test_core import wait_for_file

FAST = Escalation(grace=0.2, term_grace=0.2)


class Note(BaseModel):
    text: str
    at: dt.datetime
    tags: tuple[str, ...] = ()


@pytest.fixture
def ckdir(tmp_path):
    return tmp_path / "ck"


def test_checkpoints_are_saved_restored_pruned_and_named_in_the_result(ckdir):
    with Pool(workers=1, checkpoint_dir=ckdir, keep_checkpoints=3) as pool:
        out = pool.submit(agents.ckpt_steps, {"n": 5}, id="steps").outcome(timeout=20)
    assert out.status is ExecutionStatus.COMPLETED and out.value["done"] == [0, 1, 2, 3, 4]
    ref = out.checkpoint
    assert ref.seq == 5 and Path(ref.path).exists() and ref.size == Path(ref.path).stat().st_size
    assert ref.time.tzinfo is not None and out.resume is None
    store = CheckpointStore(ckdir, "steps")
    assert store.sequence_numbers() == [5, 4, 3]  # the newest 3 are kept
    info, state = store.newest()
    assert info.seq == 5 and state["done"] == [0, 1, 2, 3, 4]
    assert not list(store.dir.glob(".tmp-*"))


def test_an_interrupted_execution_resumes_where_it_stopped(ckdir, tmp_path):
    marker = tmp_path / "m"
    params = {"n": 40, "step": 0.01, "marker_at": 4, "marker": str(marker)}
    with Pool(workers=1, checkpoint_dir=ckdir, escalation=FAST) as pool:
        first = pool.submit(agents.ckpt_steps, params, id="long")
        wait_for_file(marker)
        pool.cancel("long")
        out = first.outcome(timeout=10)
        assert out.status is ExecutionStatus.INTERRUPTED and out.interrupt.stage is Stage.FLAG
        saved = out.checkpoint.seq
        done_before = len(CheckpointStore(ckdir, "long").newest()[1]["done"])
        assert done_before >= 5
        again = pool.submit(agents.ckpt_steps, params, id="long", resume=True).outcome(timeout=30)
    assert again.status is ExecutionStatus.COMPLETED
    assert again.value["done"] == list(range(40)), "nothing done before the stop was lost or redone"
    assert again.value["resumed_at"] == done_before
    assert again.resume == "restored" and again.resumed_from.seq == saved
    assert again.checkpoint.seq > saved


def test_resume_without_a_checkpoint_starts_fresh_and_says_so(ckdir):
    with Pool(workers=1, checkpoint_dir=ckdir) as pool:
        out = pool.submit(agents.ckpt_steps, {"n": 2}, id="never-saved", resume=True).outcome(timeout=10)
    assert out.status is ExecutionStatus.COMPLETED and out.value["resumed_at"] is None
    assert out.resume == "fresh" and out.resumed_from is None


def test_a_fresh_execution_does_not_see_checkpoints_of_an_earlier_one_with_its_id(ckdir):
    with Pool(workers=1, checkpoint_dir=ckdir) as pool:
        pool.submit(agents.ckpt_steps, {"n": 3}, id="same").result(timeout=10)
        out = pool.submit(agents.ckpt_steps, {"n": 2}, id="same").outcome(timeout=10)
    assert out.value == {"done": [0, 1], "resumed_at": None}
    assert out.checkpoint.seq == 5  # numbering continues; the old ones are pruned in time


def test_ctx_state_is_saved_when_sigterm_stops_an_agent(ckdir, tmp_path):
    with Pool(workers=1, checkpoint_dir=ckdir, escalation=FAST) as pool:
        ex = pool.submit(agents.state_then_spin, {"progress": 7, "marker": str(tmp_path / "m")}, id="spinner")
        wait_for_file(tmp_path / "m")
        pool.cancel("spinner")
        out = ex.outcome(timeout=10)
    assert out.interrupt.stage is Stage.SIGTERM and out.error is None
    _, state = CheckpointStore(ckdir, "spinner").newest()
    assert state == {"progress": 7, "tags": ("a", "b")}
    assert out.checkpoint.path.endswith("ckpt-000000000001.msgpack")


def test_on_interrupt_hooks_decide_what_is_saved(ckdir, tmp_path):
    with Pool(workers=1, checkpoint_dir=ckdir, escalation=FAST) as pool:
        a = pool.submit(agents.with_hook, str(tmp_path / "a"), id="attr-hook")
        wait_for_file(tmp_path / "a")
        a.cancel()
        b = pool.submit(agents.with_hook, str(tmp_path / "b"), id="submit-hook", on_interrupt=agents.save_by_hook)
        wait_for_file(tmp_path / "b")
        b.cancel()
        assert a.outcome(timeout=10).interrupt.stage is Stage.FLAG
        assert b.outcome(timeout=10).checkpoint is not None
    assert CheckpointStore(ckdir, "attr-hook").newest()[1] == {"saved_by": "hook", "had": {"n": 1}}
    assert CheckpointStore(ckdir, "submit-hook").newest()[1] == {"saved_by": "submit hook", "had": {"n": 1}}


def test_sigkill_while_writing_never_leaves_a_partial_checkpoint(ckdir, tmp_path):
    # Kill the writer at random moments, over and over; the reader must always get a
    # complete checkpoint (its digest matches) and the result must name exactly it.
    rng = random.Random(1234)
    with Pool(workers=1, checkpoint_dir=ckdir, escalation=FAST) as pool:
        for round_ in range(25):
            marker = tmp_path / f"m{round_}"
            ex = pool.submit(agents.ckpt_writer, {"seed": round_, "max_size": 200_000, "marker": str(marker)},
                             id=f"w{round_}")  # fmt: skip
            wait_for_file(marker)
            time.sleep(rng.uniform(0.0, 0.05))
            pool.cancel(ex.id, mode="kill")
            out = ex.outcome(timeout=10)
            assert out.interrupt.stage is Stage.SIGKILL
            store = CheckpointStore(ckdir, ex.id)
            found = store.newest()
            if found is None:  # killed before its first checkpoint was committed
                assert out.checkpoint is None
                continue
            info, state = found
            assert hashlib.sha256(state["data"]).hexdigest() == state["sha"]
            assert state["i"] == info.seq
            assert out.checkpoint is not None and out.checkpoint.seq == info.seq
            assert not list(store.dir.glob(".tmp-*")), "half-written temp files are removed"


def _three(ckdir) -> CheckpointStore:
    store = CheckpointStore(ckdir, "damaged")
    for i in range(1, 4):
        store.write({"i": i})
    return store


@pytest.mark.parametrize(
    "damage, complaint",
    [
        (lambda b: b[: len(b) - 3], "truncated"),
        (lambda b: b[:HEADER_SIZE], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "CRC32 mismatch"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack("<H", 99) + b[6:], "format version 99"),
    ],
)
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning_naming_it(ckdir, damage, complaint):
    store = _three(ckdir)
    newest = store.path(3)
    newest.write_bytes(damage(newest.read_bytes()))
    with pytest.warns(RuntimeWarning, match=f"{newest.name}.*{complaint}|{complaint}.*{newest.name}"):
        info, state = store.newest()
    assert (info.seq, state) == (2, {"i": 2})


def test_restore_in_a_worker_falls_back_past_a_corrupt_file(ckdir):
    store = _three(ckdir)
    store.path(3).write_bytes(b"garbage")
    with Pool(workers=1, checkpoint_dir=ckdir) as pool:
        out = pool.submit(agents.save_types, {"new": True}, id="damaged", resume=True).outcome(timeout=10)
    assert out.resume == "restored" and out.resumed_from.seq == 2
    assert out.value == {"new": True}  # its own new checkpoint (seq 4) is newest now
    assert out.checkpoint.seq == 4


def test_ids_that_are_not_safe_file_names_are_encoded_not_rejected(ckdir):
    ids = ["../escape", "a/b", ".hidden", "..", "日本語 id", "é" * 200, "a%2Fb"]
    with Pool(workers=2, checkpoint_dir=ckdir) as pool:
        outs = [pool.submit(agents.save_types, {"id": i}, id=i).outcome(timeout=10) for i in ids]
    for i, out in zip(ids, outs, strict=True):
        assert out.status is ExecutionStatus.COMPLETED, out.error
        assert out.value == {"id": i}
        path = Path(out.checkpoint.path).resolve()
        assert path.parent.parent == ckdir.resolve(), f"{i!r} wrote outside its own directory: {path}"
    dirs = {Path(o.checkpoint.path).parent for o in outs}
    assert len(dirs) == len(ids), "every execution has a directory of its own"
    assert sorted(list_ids(ckdir)) == sorted(ids)
    assert id_to_dirname("a/b") != id_to_dirname("a%2Fb")


def test_rich_types_round_trip_and_bad_values_are_named_by_path(ckdir):
    state = {
        "when": dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.timezone.utc), "day": dt.date(2026, 1, 2),
        "t": dt.time(3, 4), "span": dt.timedelta(seconds=90), "pair": (1, "x"), "seen": {1, 2}, "frozen": frozenset("ab"),
        "raw": b"\x00\xff", "id": uuid.UUID(int=7), "price": decimal.Decimal("0.10"),
        "note": Note(text="hi", at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), tags=("a",)),
    }  # fmt: skip
    assert decode(encode(state)) == state
    with Pool(workers=1, checkpoint_dir=ckdir) as pool:
        assert pool.submit(agents.save_types, state).result(timeout=10) == state
        bad = pool.submit(agents.save_bad, None).outcome(timeout=10)
    assert bad.status is ExecutionStatus.FAILED and bad.error.type == "CheckpointError"
    assert bad.error.message == "state['messages'][1]['tool']: object of type Tool cannot be saved"
    with pytest.raises(CheckpointError, match=r"state\['k'\]\[0\]: object of type object cannot be saved"):
        encode({"k": [object()]})


class _Point(NamedTuple):
    x: int
    y: int


class _Pair(tuple):
    pass


def test_a_namedtuple_or_tuple_subclass_deep_in_the_state_is_named_by_its_path():
    """A NamedTuple nested in the state: the error names its path and the fix, not just its type."""
    with pytest.raises(CheckpointError) as caught:
        encode({"a": {"b": _Point(1, 2)}})
    assert str(caught.value).startswith("state['a']['b']: object of type _Point (a NamedTuple) cannot be saved")
    assert "_asdict()" in str(caught.value)
    with pytest.raises(CheckpointError, match=r"state\[0\]\['p'\]: object of type _Pair \(a subclass of tuple\)"):
        encode([{"p": _Pair((1,))}])


def test_no_checkpoint_directory_is_created_for_executions_that_do_not_checkpoint(ckdir):
    with Pool(workers=1, checkpoint_dir=ckdir) as pool:
        pool.map(agents.identity, range(50))
    assert not ckdir.exists()
