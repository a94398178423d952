"""What agents print: one pipe per worker, one bounded, rotating log per execution.

Owns: the read ends of the workers' output pipes (their fds 1 and 2 both write
into it, and so do the tools they start) and the open log files of running
executions. The stream is cut at the end-of-output mark (``OUTPUT_END``) the
worker writes after each execution, before its Result, and each piece goes to
the executions sent to that worker in order: an execution's output never lands
in another's log, even when the worker already runs its next (prefetched)
execution while the supervisor has not read the first one's Result yet.
Complete lines also go to subscribed clients as ``output`` events.

Logs: ``<log_dir>/<id>.log`` (the id encoded as a file name like checkpoint
directories), at most ``max_log_bytes``; past that it is renamed ``.log.1``
(replacing the previous one) and a new one starts, so an execution keeps at
most twice that. Output while a worker runs nothing goes to
``<log_dir>/.worker-<n>.log`` under the same bound (no execution id maps to it).
"""

from __future__ import annotations

import os

from ..shared._checkpoint import id_to_dirname

__all__ = ("OutputLog", "log_path", "read_log")


def log_path(log_dir: str, execution_id: str) -> str:
    return os.path.join(log_dir, id_to_dirname(execution_id) + ".log")


def read_log(log_dir: str, execution_id: str) -> str:
    """An execution's logged output, the rotated part first; "" if it printed nothing."""
    path = log_path(log_dir, execution_id)
    text = []
    for p in (path + ".1", path):
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                text.append(f.read())
        except FileNotFoundError:
            pass
    return "".join(text)


class OutputLog:
    """One execution's (or one idle worker's) log file and its partial last line."""

    __slots__ = ("path", "limit", "fd", "size", "partial")

    def __init__(self, path: str, limit: int):
        self.path, self.limit = path, limit
        self.fd = -1
        self.size = 0
        self.partial = b""

    def write(self, data: bytes) -> list[str]:
        """Append ``data``; return the lines it completed (for the event stream)."""
        if self.fd < 0:  # the directory is made on the first output: a pool whose agents print nothing makes none
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            self.size = 0
        if self.size + len(data) > self.limit:
            os.close(self.fd)
            os.replace(self.path, self.path + ".1")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            self.size = 0
            data = data[-self.limit :]
        os.write(self.fd, data)
        self.size += len(data)
        text = self.partial + data
        *lines, self.partial = text.split(b"\n")
        if len(self.partial) > 8192:  # a line without end: hand it on in pieces
            lines.append(self.partial)
            self.partial = b""
        return [line.decode("utf-8", "replace") for line in lines]

    def close(self) -> list[str]:
        """Close the file; the partial last line, if any, as a line."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        rest, self.partial = self.partial, b""
        return [rest.decode("utf-8", "replace")] if rest else []
