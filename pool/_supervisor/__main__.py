"""Entry point of the supervisor process: ``python -m interrupt_pool._supervisor FD``.

FD is the supervisor's end of the creator's socketpair, the one descriptor it
is handed. Exits 0 after a clean drain; 2 when the configuration is refused
(the creator is told why first).
"""

from __future__ import annotations

import socket
import sys


def main() -> int:
    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    from .core import run_supervisor

    return run_supervisor(sock)


if __name__ == "__main__":
    sys.exit(main())
