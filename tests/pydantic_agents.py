"""Agents returning pydantic objects (as LangChain messages are) for 'pool run --out' tests."""

from __future__ import annotations

import datetime

from pydantic import BaseModel


class Part(BaseModel):
    text: str
    at: datetime.date


class Message(BaseModel):
    role: str
    parts: list[Part]


def reply(ctx, x):
    """A model inside a dict inside a list, with a nested model and a date (JSON mode makes it a string)."""
    msg = Message(role="ai", parts=[Part(text=str(x), at=datetime.date(2026, 1, 2))])
    return {"messages": [msg], "n": x}
