"""The benchmark suite runs from a checkout with whatever peers are installed: a missing peer
is one note with the install command, never a traceback (CI installs no peer)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_run_and_name_the_missing_peers(tmp_path):
    """`python -m benchmarks --quick` exits 0, writes its JSON, prints no traceback, and says how
    to install any peer that is missing."""
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "throughput", "stuck", "ecosystem",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""))  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Traceback" not in text, text
    missing = [p for p in ("pebble", "billiard", "loky") if importlib.util.find_spec(p) is None]
    if missing:
        assert 'pip install "interrupt-pool[bench]"' in out.stdout
        assert all(p in out.stdout for p in missing)
    (result,) = tmp_path.glob("quick-*.json")
    data = json.loads(result.read_text())
    assert data["quick"] is True and {"throughput", "stuck", "ecosystem"} <= set(data)
