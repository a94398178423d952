"""Imported by a pool's preload= (tests/test_preload.py): remembers the process that imported it."""

import os

IMPORTED_IN = os.getpid()
