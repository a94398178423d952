"""Optional peers (pebble, billiard, loky): import them if installed, else say how to get them.

A section that compares against a peer asks :func:`peer` for it; when the
peer is missing it gets None and leaves that peer's rows out, with a one-line
"skipped" caption (:func:`skipped_note`). How to install them is said once per
run, at the top (:func:`run_note`), not under every table.
"""

from __future__ import annotations

import importlib

INSTALL_HINT = 'pip install "interrupt-pool[bench]"'

# Every optional peer some section compares against (the [bench] extra installs them all).
PEERS = ("pebble", "billiard", "loky")

_missing: dict[str, str] = {}


def peer(name: str):
    """The module ``name`` (pebble, billiard, loky), or None if it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing[name] = f"{type(exc).__name__}: {exc}"
        return None


def run_note() -> str:
    """The one note for the whole run: which peers are missing and how to install them ('' if none).
    Imports each peer (the sections would anyway) so the note is known before the first section."""
    names = [name for name in PEERS if peer(name) is None]
    if not names:
        return ""
    return (f"Not installed: {', '.join(sorted(names))}; their rows are skipped in every section. "
            f"`{INSTALL_HINT}` installs them.")  # fmt: skip


def skipped_note(names: list[str]) -> str:
    """A caption line for a table whose peer rows were left out ('' if none)."""
    if not names:
        return ""
    return f"\n\nSkipped (not installed, see the note at the top): {', '.join(sorted(set(names)))}."


def missing() -> dict[str, str]:
    """Every peer found missing so far in this run, with the import error."""
    return dict(_missing)
