"""The supervisor: the one owner of executions, workers, flags and stops, and the one server.

::

 clients (any process, any threads)        supervisor: a fresh interpreter,          workers: forked by the supervisor
                                           single-threaded for its whole life        (own process group, PDEATHSIG)
 Pool (the creator) ─── socketpair ─┐      ┌──────────────────────────────────┐ typed ┌──────────────────────────────┐
 Pool.connect / pool CLI ─── unix ──┼─────►│ loop: one selector, timer heap,  │◄─────►│ recv Run → run agent         │
   socket 0600, SO_PEERCRED         │typed │  signal wake-up fd, creator pidfd│ frames│ ctx.check() reads its slot   │
 (later: HTTP gateway, Ray actors) ─┘frames│ tables: executions, workers,     │       │ send Result                  │
                                           │  clients, history (bounded)      │ flags │                              │
                                           │ escalation: flag → TERM → KILL   │──────►│                              │
                                           │   ▲ one escalator, fed by:       │ Spend,│ ctx.spend / heartbeat /      │
                                           │   clients, timeouts, memory,     │◄──────│  shield / submit (children)  │
                                           │   sources/: budget, stall, tree, │ Submit│                              │
                                           │   priority; before_interrupt     │ Child │                              │
                                           └──────────────────────────────────┘       └──────────────────────────────┘

It starts as ``python -m interrupt_pool._supervisor FD`` (never as a fork of
the user's process), receives only the creator's socket (an allowlist of one
descriptor), reads its configuration (:class:`~interrupt_pool.shared._protocol.Start`)
from it and answers Welcome or Refused. It never imports agent modules and
never decodes agent data (inputs, results, checkpoint payloads are opaque
bytes here), so it stays single-threaded and forking workers from it is safe.

Modules: ``__main__`` (entry), ``core`` (the loop, tables, dispatch,
escalation, reaping, the veto round trip to the owner's ``before_interrupt``),
``clients`` (the control socket and per-client state), ``runqueue`` (queued
executions by priority), ``output`` (per-execution logs) and ``sources/``
(one module per reason to stop: budget, stall, tree, priority), which watch
executions through hooks and ask the one escalator for stops.
"""
