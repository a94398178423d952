"""The gateway's bearer token and the rule for which addresses it may listen on.

Owns: where the token comes from, in this order: the ``POOL_HTTP_TOKEN`` environment
variable; else the token file (``--token-file PATH``, by default ``<name>.http-token``
beside the pool's control socket, see :mod:`interrupt_pool._naming`) if it exists; else a
new token from :mod:`secrets`, written to that file with mode 0600 (created exclusively,
so two gateways starting at once agree on one). A token from the environment or from a
file that already existed is *explicit*: only an explicit token lets the gateway listen on
a non-loopback address, so a generated secret is never exposed to a network before anyone
has read it. The check itself is :func:`hmac.compare_digest` (constant time).

Standard library only: the CLI may import it to say where the token is.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path
from typing import NamedTuple

from .. import _naming

__all__ = ("ENV_VAR", "TokenError", "Token", "default_token_file", "is_loopback", "parse_bind", "resolve_token",
           "token_matches")  # fmt: skip

ENV_VAR = "POOL_HTTP_TOKEN"
MIN_TOKEN_CHARS = 16  # a shorter secret is guessable over a network; the generated one has 43


class TokenError(Exception):
    """A token or bind-address problem, phrased for the person who can fix it (exit code 2)."""


class Token(NamedTuple):
    value: str
    source: str
    """Where it came from, for the one line the gateway prints: the variable or the file's path."""
    explicit: bool
    """True if someone chose it (the variable, or a file that existed); False if generated now."""


def default_token_file(name: str) -> Path:
    """``<socket dir>/<name>.http-token``: beside the pool's control socket, in a 0700 directory."""
    _naming.check_name(name)
    d = _naming.ensure_dir(create=True)
    if d is None:  # removed between its creation and the check
        raise TokenError(f"the socket directory {_naming.socket_dir()} disappeared as it was created; retry")
    return d / f"{name}.http-token"


def _read_token_file(path: Path) -> str:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise TokenError(f"token file {path} is not a regular file; point --token-file at a file")
    if st.st_uid != os.getuid():
        raise TokenError(f"token file {path} belongs to uid {st.st_uid}, not you (uid {os.getuid()}); "
                         "use a file of your own")  # fmt: skip
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise TokenError(f"token file {path} has mode {stat.S_IMODE(st.st_mode):04o}: other users could read the "
                         f"token; run chmod 600 {path}")  # fmt: skip
    value = path.read_text(encoding="utf-8", errors="strict").strip()
    if len(value) < MIN_TOKEN_CHARS:
        raise TokenError(f"token file {path} holds {len(value)} characters; a token needs at least "
                         f"{MIN_TOKEN_CHARS} (delete the file to have one generated)")  # fmt: skip
    return value


def resolve_token(token_file: Path) -> Token:
    """The token to require, from the environment, the file, or generated into the file."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        value = env.strip()
        if len(value) < MIN_TOKEN_CHARS:
            raise TokenError(f"{ENV_VAR} holds {len(value)} characters; a token needs at least {MIN_TOKEN_CHARS} "
                             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")  # fmt: skip
        return Token(value, ENV_VAR, True)
    try:
        return Token(_read_token_file(token_file), str(token_file), True)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read token file {token_file}: {exc}") from exc
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another gateway wrote it just now: use that one
        return Token(_read_token_file(token_file), str(token_file), True)
    except OSError as exc:
        raise TokenError(f"cannot create token file {token_file}: {exc}; choose another path with --token-file "
                         f"or set {ENV_VAR}") from exc  # fmt: skip
    try:
        os.write(fd, (value + "\n").encode())
    finally:
        os.close(fd)
    return Token(value, str(token_file), False)


def token_matches(expected: str, header: str | None) -> bool:
    """True if ``header`` is ``Bearer <expected>``; compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected.encode())


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8700`` for IPv6; port 0 picks a free one) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise TokenError(f"--bind {text!r} must be HOST:PORT, e.g. 127.0.0.1:8700 or [::1]:8700")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise TokenError(f"--bind {text!r} names no host; write 127.0.0.1:{port} (loopback) or the address to use")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
