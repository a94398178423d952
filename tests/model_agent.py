"""An agent whose checkpointed state holds a pydantic model defined here.

The supervisor must never decode it: it checks checkpoint envelopes only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pydantic


class Plan(pydantic.BaseModel):
    steps: list[str]

    @pydantic.field_validator("steps")
    @classmethod
    def _refuse_in_the_supervisor(cls, v):
        # Decoding this state in the supervisor is the bug this module exists to catch: loud.
        with open("/proc/self/comm") as f:
            if f.read().startswith("pool-supervisor"):
                raise RuntimeError("Plan was decoded in the supervisor")
        return v


def save_model_then_hang(ctx, marker):
    ctx.checkpoint({"plan": Plan(steps=["search", "read"])})
    Path(marker).write_text(str(os.getpid()))
    time.sleep(1000)


def restore_model(ctx, _):
    state = ctx.restore()
    return state["plan"].steps if state else None
