"""Fault injection for interrupt-pool: ``python -m benchmarks.chaos SCENARIO [--short] [--seed N]``.

Each scenario drives real pools through the public API while something goes
wrong on purpose (workers and supervisors killed, stopped and signalled from
outside, a user process SIGKILLed, hostile agents, checkpoints cut mid-write,
huge queues, threaded hosts), then checks the same invariants:

- every submitted execution ended in exactly one terminal status (completed,
  failed, interrupted, crashed) with its value or error; none lost;
- no process of ours is left (every process started during the scenario
  carries the environment marker ``CHAOS_MARK``), no zombie child, no new
  ``/dev/shm`` entry, no extra descriptor in the host process;
- stop deadlines held: an interrupted execution ended at most
  ``grace + term_grace + ALLOWANCE_S`` after its stop was requested.

Each scenario prints one JSON line on stdout when it ends; the exit code is 0
if and only if every invariant held. ``all`` runs each scenario in a process
of its own (so one scenario's chaos cannot disturb the next) and forwards
their lines. Modules: ``_harness`` (the invariants, the JSON line),
``agents`` (what workers run, by name), ``scenarios`` (the nine scenarios),
``__main__`` (the command line).
"""
