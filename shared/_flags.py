"""The shared-memory flag array: one 128-byte slot of u64 words per execution slot.

Owns: the memory layout and every read and write of it. The supervisor
creates the array before it forks any worker, so workers inherit the mapping;
it is an anonymous ``MAP_SHARED`` mapping, which has no name in ``/dev/shm``
and therefore cannot leak a segment, whoever dies and however.

Layout (all words little-endian u64, accessed only through one
``memoryview.cast('Q')``: an aligned 8-byte store is atomic, while
``struct.pack_into`` is not)::

    header  [magic, layout version, slot count, 0, ...]                128 bytes
    slot i  [control, reason, requested_ns, observed_ns,
             cost, progress, pending, signalled,
             begun, shield, item, item_ns, limit, 0, 0, 0]        128 bytes each (two cache lines)

``control = (generation << 8) | request``; request 0 is none, otherwise an
``InterruptMode`` code. ``reason = (reason_code << 8) | source_code``.
``begun`` is written by the worker: the execution's armed control value once
it has taken the execution and will run its agent (it is not written when the
worker finds the flag already set and skips it). The supervisor sends a signal
for an execution only once ``begun`` holds exactly that execution's value: no
frame is needed for this acknowledgement.

``signalled`` is the execution's armed control value once the supervisor has
sent (or is about to send) SIGTERM for it, 0 before: a worker that receives a
SIGTERM checks it to tell a signal meant for the execution it runs from a late
one meant for the execution it has just finished (and from one sent by someone
outside the pool).

``pending`` mirrors the request of the current generation (0: none). It is
the word the agent's fast path reads: a value that is 0 while nothing is
requested reads as CPython's cached small int, where the generation-tagged
control word (>= 256) would allocate a new int on every read (measured here:
about 15 ns of a 60 ns check). The slow path then verifies ``control``.

``progress`` is the ``time.monotonic_ns()`` of the agent's last sign of progress
(``ctx.heartbeat``, ``sleep``, ``spend``, ``checkpoint``): the stall source reads
it when a stall deadline comes, so progress costs one store and no frame.
``shield`` is the ``time.monotonic_ns()`` at which the agent entered its
outermost ``ctx.shield()``, 0 outside one: a stop that ends in SIGKILL inside a
shield is reported as delayed by it. ``cost`` is the execution's own spend so
far as float64 bits (the Spend frame carries it to the supervisor too).

A chunk (one execution that runs several items of a ``map`` in turn, each with
its own id) uses three more: the worker writes ``item`` (index + 1 of the item
it is about to run) and ``item_ns`` (when it began it) before each item; the
supervisor writes ``limit`` (index + 1 of the first item the worker must not
start; 0: none) to stop a chunk at an item boundary. The worker writes
``item`` before it reads ``limit``, the supervisor ``limit`` before it reads
``item``; whichever way that race goes, the worker's report says which items
ran, and only that report ends them.

Writers: the supervisor is the only writer of control, reason, requested_ns
and signalled (single writer: no locks, no lost updates). The worker running
in the slot writes observed_ns (once), cost, progress and begun. ``pending`` is written by the
supervisor right after ``control``, and cleared with the rest of the slot on
arm, which happens only after the previous execution in it has ended.

The generation is bumped every time a slot is armed for a new execution, and
the supervisor arms a slot only when the previous execution in it has ended
and its worker no longer runs agent code for it; a worker compares its slot's
control word with the exact value it was started with, so a late request
aimed at an earlier generation can never stop the next execution (ABA).
"""

from __future__ import annotations

import mmap
import time

__all__ = ("FlagArray", "LAYOUT_MAGIC", "LAYOUT_VERSION", "SLOT_BYTES", "SLOT_WORDS")

LAYOUT_MAGIC = 0x4C4F4F50_49525054  # "TPRIPOOL" read little-endian
LAYOUT_VERSION = 4
SLOT_BYTES = 128  # two cache lines: two workers never share one
SLOT_WORDS = SLOT_BYTES // 8
HEADER_WORDS = SLOT_WORDS

# word offsets inside a slot
CONTROL = 0
REASON = 1
REQUESTED_NS = 2
OBSERVED_NS = 3
COST = 4
PROGRESS = 5
PENDING = 6
SIGNALLED = 7
BEGUN = 8
SHIELD = 9
ITEM = 10
ITEM_NS = 11
LIMIT = 12
_USED_WORDS = LIMIT + 1  # the rest of the slot is reserved (always 0)

_REQUEST_MASK = 0xFF


class FlagArray:
    """``slots`` control slots in one anonymous shared mapping.

    Create it in the supervisor before forking workers; a forked worker uses
    the same object (inherited) through :meth:`base` and :attr:`words`.
    """

    __slots__ = ("_map", "words", "slots")

    def __init__(self, slots: int):
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"a flag array needs at least one slot, got {slots!r}")
        self.slots = slots
        self._map = mmap.mmap(-1, SLOT_BYTES * (slots + 1), flags=mmap.MAP_SHARED)
        self.words = memoryview(self._map).cast("Q")
        w = self.words
        w[0], w[1], w[2] = LAYOUT_MAGIC, LAYOUT_VERSION, slots

    @property
    def nbytes(self) -> int:
        return len(self._map)

    def base(self, slot: int) -> int:
        """Index in :attr:`words` of the first word (control) of ``slot``."""
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} is outside 0..{self.slots - 1}")
        return (slot + 1) * SLOT_WORDS

    # -- supervisor side -------------------------------------------------

    def arm(self, slot: int) -> int:
        """Give ``slot`` to a new execution: bump its generation, clear every
        word, and return the control value the execution must compare with."""
        b = self.base(slot)
        w = self.words
        control = ((w[b + CONTROL] >> 8) + 1) << 8
        for i in range(1, _USED_WORDS):
            w[b + i] = 0
        w[b + CONTROL] = control  # last: a reader that sees it sees cleared words
        return control

    def request(
        self, slot: int, armed: int, mode_code: int, reason_code: int, source_code: int, now_ns: int | None = None
    ) -> int | None:
        """Post a stop request for the execution armed with ``armed``.

        Returns the ``requested_ns`` stamp, or None if the slot has been armed
        for another execution since (the request is stale and is dropped).
        Requests only escalate: a weaker or equal mode changes nothing and
        returns the original stamp.
        """
        b = self.base(slot)
        w = self.words
        current = w[b + CONTROL]
        if current >> 8 != armed >> 8:
            return None
        if current & _REQUEST_MASK >= mode_code:
            return w[b + REQUESTED_NS]
        now = now_ns or time.monotonic_ns()
        if current & _REQUEST_MASK == 0:
            w[b + REASON] = (reason_code << 8) | source_code
            w[b + REQUESTED_NS] = now
        w[b + CONTROL] = (armed & ~_REQUEST_MASK) | mode_code
        w[b + PENDING] = mode_code
        return w[b + REQUESTED_NS]

    def begun(self, slot: int, armed: int) -> bool:
        """True once the worker has taken the execution armed with ``armed`` (and runs it)."""
        return self.words[self.base(slot) + BEGUN] == armed

    def progress_ns(self, slot: int) -> int:
        """The agent's last sign of progress (monotonic ns), 0 if none yet."""
        return self.words[self.base(slot) + PROGRESS]

    def shield_ns(self, slot: int) -> int:
        """When the agent entered the shield it is in now (monotonic ns), 0 if in none."""
        return self.words[self.base(slot) + SHIELD]

    def item(self, slot: int) -> tuple[int, int]:
        """The chunk's current item (index, -1 before the first) and when it began (monotonic ns)."""
        b = self.base(slot)
        return self.words[b + ITEM] - 1, self.words[b + ITEM_NS]

    def limit(self, slot: int, index: int) -> None:
        """Ask the chunk in ``slot`` not to start item ``index`` or any after it (only lowers)."""
        b = self.base(slot)
        current = self.words[b + LIMIT]
        if not current or index + 1 < current:
            self.words[b + LIMIT] = index + 1

    def mark_signalled(self, slot: int, armed: int) -> None:
        """Record, before sending SIGTERM, that it is meant for the execution armed with ``armed``."""
        self.words[self.base(slot) + SIGNALLED] = armed

    # -- reads (either side) ---------------------------------------------

    def read(self, slot: int) -> dict[str, int]:
        b = self.base(slot)
        w = self.words
        control = w[b + CONTROL]
        reason = w[b + REASON]
        return {
            "generation": control >> 8,
            "request": control & _REQUEST_MASK,
            "reason": reason >> 8,
            "source": reason & 0xFF,
            "requested_ns": w[b + REQUESTED_NS],
            "observed_ns": w[b + OBSERVED_NS],
            "cost": w[b + COST],
            "progress": w[b + PROGRESS],
            "pending": w[b + PENDING],
            "signalled": w[b + SIGNALLED],
            "begun": w[b + BEGUN],
            "shield": w[b + SHIELD],
            "item": w[b + ITEM],
            "item_ns": w[b + ITEM_NS],
            "limit": w[b + LIMIT],
        }

    def close(self) -> None:
        self.words.release()
        self._map.close()
