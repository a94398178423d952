"""The shared-memory flag array, across a real fork."""

from __future__ import annotations

import os

import pytest

from interrupt_pool.shared import FlagArray, InterruptMode, InterruptReason, InterruptSource
from interrupt_pool.shared._flags import LAYOUT_MAGIC, OBSERVED_NS


def test_header_and_slots_are_laid_out_as_documented():
    flags = FlagArray(4)
    try:
        assert flags.words[0] == LAYOUT_MAGIC and flags.words[2] == 4
        assert flags.nbytes == 128 * 5  # a header and four slots of 128 bytes (two cache lines each)
        assert [flags.base(i) for i in range(4)] == [16, 32, 48, 64]
        with pytest.raises(IndexError, match="slot 4 is outside 0..3"):
            flags.base(4)
    finally:
        flags.close()


def test_a_request_written_by_the_parent_is_seen_by_a_forked_child():
    flags = FlagArray(2)
    armed = flags.arm(1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: wait for the go, read the slot, report, write observed
        os.read(r, 1)
        word = flags.words[flags.base(1)]
        flags.words[flags.base(1) + OBSERVED_NS] = 12345
        os._exit(0 if word == (armed | InterruptMode.GRACEFUL.code) else 1)
    try:
        flags.request(1, armed, InterruptMode.GRACEFUL.code, InterruptReason.TIMEOUT.code, InterruptSource.TIMEOUT.code)
        os.write(w, b"x")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        state = flags.read(1)
        assert state["observed_ns"] == 12345
        assert (state["reason"], state["source"]) == (InterruptReason.TIMEOUT.code, InterruptSource.TIMEOUT.code)
    finally:
        os.close(r)
        os.close(w)
        flags.close()


def test_requests_only_escalate_and_stale_generations_are_dropped():
    flags = FlagArray(1)
    try:
        first = flags.arm(0)
        t = flags.request(0, first, InterruptMode.IMMEDIATE.code, 1, 1)
        assert flags.read(0)["request"] == InterruptMode.IMMEDIATE.code
        assert flags.request(0, first, InterruptMode.GRACEFUL.code, 2, 2) == t  # weaker: no change
        assert flags.read(0)["request"] == InterruptMode.IMMEDIATE.code and flags.read(0)["reason"] == 1
        second = flags.arm(0)
        assert second >> 8 == (first >> 8) + 1 and flags.read(0)["request"] == 0
        assert flags.request(0, first, InterruptMode.KILL.code, 1, 1) is None  # aimed at the old generation
        assert flags.words[flags.base(0)] == second
    finally:
        flags.close()
