"""Optional peers (pebble, billiard, loky): import them if installed, else say how to get them.

A section that compares against a peer asks :func:`peer` for it; when the
peer is missing it gets None and a note for its table instead of a traceback.
"""

from __future__ import annotations

import importlib

INSTALL_HINT = 'pip install "interrupt-pool[bench]"'

_missing: dict[str, str] = {}


def peer(name: str):
    """The module ``name`` (pebble, billiard, loky), or None if it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing[name] = f"{type(exc).__name__}: {exc}"
        return None


def skipped_note(names: list[str]) -> str:
    """A line for a table's caption: which peers were skipped and how to install them ('' if none)."""
    if not names:
        return ""
    return f"\n\nSkipped (not installed): {', '.join(sorted(set(names)))}; `{INSTALL_HINT}` to compare against them."


def missing() -> dict[str, str]:
    """Every peer found missing so far in this run, with the import error."""
    return dict(_missing)
