"""``python -m interrupt_pool._http --name NAME [--bind HOST:PORT] [--token-file PATH] [--cors ORIGIN]``

The gateway process: resolves the token (see ``_auth``), refuses a non-loopback address
without a token someone chose (exit code 2), binds the listening socket itself (so port 0
works and the address printed is the real one), prints one line on stderr saying where it
listens and where its token is, and serves with uvicorn until SIGINT or SIGTERM. It needs
no running pool to start: until the pool is reachable, data routes answer 503.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from ._auth import ENV_VAR, TokenError, default_token_file, is_loopback, parse_bind, resolve_token

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m interrupt_pool._http",
                                description="HTTP gateway of a named interrupt-pool (a client of its supervisor).")  # fmt: skip
    p.add_argument("--name", required=True, help="the pool to serve (as in 'pool serve --name NAME')")
    p.add_argument("--bind", default="127.0.0.1:8700",
                   help="HOST:PORT to listen on (default 127.0.0.1:8700; port 0 picks a free one). A non-loopback "
                        f"address needs an explicit token: {ENV_VAR} or an existing --token-file")  # fmt: skip
    p.add_argument("--token-file", type=Path, default=None,
                   help="the bearer token's file: read if it exists, else generated there with mode 0600 (default: "
                        "<name>.http-token beside the pool's control socket)")  # fmt: skip
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (e.g. https://ops.example.com) to call the API; repeatable; "
                        "none by default")  # fmt: skip
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default warning; info logs every request)")  # fmt: skip
    return p


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from .. import _naming

        _naming.check_name(args.name)
        host, port = parse_bind(args.bind)
        token_file = args.token_file if args.token_file is not None else default_token_file(args.name)
        if not is_loopback(host) and not (os.environ.get(ENV_VAR) or token_file.exists()):
            raise TokenError(f"refusing to listen on {host} (not a loopback address) with a generated token: set "
                             f"{ENV_VAR}, or write a token to {token_file} (mode 0600) first, or bind 127.0.0.1")  # fmt: skip
        token = resolve_token(token_file)
    except (TokenError, ValueError, _naming.NameError_) as exc:
        print(f"pool http: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        import uvicorn

        from ._link import PoolLink
        from .app import create_app
    except ImportError as exc:
        print(f"pool http: error: the HTTP gateway needs the 'http' extra ({exc}); "
              "pip install 'interrupt-pool[http]'", file=sys.stderr, flush=True)  # fmt: skip
        return EXIT_ERROR
    try:
        sock = _listen(host, port)
    except OSError as exc:
        print(f"pool http: error: cannot listen on {args.bind}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    where = f"from {ENV_VAR}" if token.source == ENV_VAR else f"in {token.source}"
    print(f"pool http: gateway for pool {args.name!r} on http://{shown}:{bound[1]} (bearer token {where}"
          f"{', generated now' if not token.explicit else ''})", file=sys.stderr, flush=True)  # fmt: skip
    link = PoolLink(args.name)
    app = create_app(link, token.value, cors=args.cors)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level in ("info", "debug"),
                            timeout_graceful_shutdown=2, server_header=False, lifespan="on")  # fmt: skip

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            """SIGINT or SIGTERM: a graceful stop and exit code 0 (uvicorn's own re-raises the
            signal after its shutdown, which would make every normal stop look like a crash)."""
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in old.items():
                    signal.signal(s, handler)

    server = Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
