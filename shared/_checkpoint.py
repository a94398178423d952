"""Checkpoints: the msgpack codec, the file format and the per-execution store.

Owns: everything on disk under a pool's checkpoint directory. The worker
running an execution is the only writer of that execution's directory; any
process may read.

File format (one file per checkpoint, ``ckpt-<seq>.msgpack``)::

    header  24 bytes, little-endian: magic b"IPCK", format version u16,
            flags u16, seq u64, payload length u32, CRC32 of payload u32
    payload msgpack [execution id, seq, wall-clock time (s), state]

Write rule: temp file in the same directory, write, fsync, ``os.replace``,
fsync of the directory (``durable=False`` skips both fsyncs). A reader
therefore sees the previous or the new file, complete; a file that is
truncated, fails its CRC, has a bad magic or a newer version is skipped
with a warning naming it, and the next older one is used.

Types: msgpack's own (None, bool, int, float, str, bytes, list, dict with
str keys) plus, through ext types that :func:`decode` reverses, tuple, set,
frozenset, datetime, date, time, timedelta, UUID, Decimal and pydantic
models (re-validated by their class on restore). Anything else raises
:class:`CheckpointError` naming the path of the bad value.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import re
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

__all__ = ("CheckpointError", "CheckpointInfo", "CheckpointStore", "check_envelope", "encode", "decode", "id_to_dirname",
           "list_ids", "read_file")

MAGIC = b"IPCK"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sHHQII")
HEADER_SIZE = _HEADER.size  # 24
_FILE = re.compile(r"^ckpt-(\d{12})\.msgpack$")

_EXT_TUPLE, _EXT_SET, _EXT_FROZENSET, _EXT_DATETIME, _EXT_DATE, _EXT_TIME = 1, 2, 3, 4, 5, 6
_EXT_TIMEDELTA, _EXT_UUID, _EXT_DECIMAL, _EXT_MODEL = 7, 8, 9, 10


class CheckpointError(ValueError):
    """A state that cannot be saved, or a checkpoint that cannot be read."""


class CheckpointInfo(NamedTuple):
    seq: int
    path: str
    size: int
    time: float  # wall clock, seconds since the epoch

    def to_wire(self) -> list:
        return [self.seq, self.path, self.size, self.time]


# -- codec ----------------------------------------------------------------------------


def _default(obj: Any):
    t = type(obj)
    if t is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(obj)))
    if t is set or t is frozenset:
        code = _EXT_SET if t is set else _EXT_FROZENSET
        return msgpack.ExtType(code, _pack(list(obj)))
    if t is _dt.datetime:
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if t is _dt.date:
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if t is _dt.time:
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if t is _dt.timedelta:
        return msgpack.ExtType(_EXT_TIMEDELTA, _pack([obj.days, obj.seconds, obj.microseconds]))
    if t.__module__ == "uuid" and t.__name__ == "UUID":  # compared by name: no import until one is used
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if t.__module__ == "decimal" and t.__name__ == "Decimal":
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if _is_model(obj):
        cls = type(obj)
        return msgpack.ExtType(_EXT_MODEL, _pack([cls.__module__, cls.__qualname__, obj.model_dump(mode="python")]))
    if isinstance(obj, dict):  # OrderedDict, defaultdict, ...: saved as a plain dict
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, str):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} cannot be saved")


def _is_model(obj) -> bool:
    return hasattr(type(obj), "model_dump") and hasattr(type(obj), "model_validate")


_packer = msgpack.Packer(default=_default, use_bin_type=True, strict_types=True)


def _pack(obj) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=True)


def _ext_hook(code: int, data: bytes):
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code == _EXT_SET:
        return set(_unpack(data))
    if code == _EXT_FROZENSET:
        return frozenset(_unpack(data))
    if code == _EXT_DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return _dt.time.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        d, s, us = _unpack(data)
        return _dt.timedelta(days=d, seconds=s, microseconds=us)
    if code == _EXT_UUID:
        import uuid

        return uuid.UUID(bytes=data)
    if code == _EXT_DECIMAL:
        import decimal

        return decimal.Decimal(data.decode())
    if code == _EXT_MODEL:
        module, qualname, fields = _unpack(data)
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls.model_validate(fields)
    return msgpack.ExtType(code, data)


def _unpack(data: bytes):
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False, use_list=True)


def _find_unsaveable(obj, path: str, depth: int = 0) -> str | None:
    """The path and reason of the first value in ``obj`` that cannot be saved."""
    if depth > 500:
        return f"{path}: nested more than 500 levels deep (a reference cycle?)"
    if obj is None or type(obj) in (bool, int, float, str, bytes, bytearray):
        if type(obj) is int and not -(2**63) <= obj < 2**64:
            return f"{path}: integer {obj} does not fit in 64 bits"
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) not in (str, int, bytes, bool, float) and k is not None:
                return f"{path}: dict key {k!r} of type {type(k).__name__} cannot be saved (use str keys)"
            found = _find_unsaveable(v, f"{path}[{k!r}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(obj, (tuple, set, frozenset)) and type(obj) not in (tuple, set, frozenset):
        kind = "a NamedTuple" if hasattr(obj, "_fields") else f"a subclass of {type(obj).__mro__[1].__name__}"
        fix = "obj._asdict()" if hasattr(obj, "_fields") else "a plain tuple, set or list"
        return (f"{path}: object of type {type(obj).__name__} ({kind}) cannot be saved; save {fix} "
                "or a pydantic model instead")
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            found = _find_unsaveable(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    if _is_model(obj):
        return _find_unsaveable(obj.model_dump(mode="python"), f"{path}<{type(obj).__name__}>", depth + 1)
    try:
        _default(obj)
        return None
    except TypeError as exc:
        return f"{path}: {exc}"


def encode(state: Any) -> bytes:
    """msgpack bytes of ``state``; CheckpointError naming the bad value's path otherwise."""
    try:
        return _packer.pack(state)
    except (TypeError, ValueError, OverflowError) as exc:
        _packer.reset()
        where = _find_unsaveable(state, "state") or f"state: {exc}"
        raise CheckpointError(where) from None


def decode(data: bytes) -> Any:
    return _unpack(data)


# -- files ---------------------------------------------------------------------------------


def id_to_dirname(execution_id: str) -> str:
    """A safe, reversible directory name for any execution id (encoded, never rejected)."""
    import urllib.parse

    name = urllib.parse.quote(execution_id, safe="-_")  # '/', '%', NUL, ... become %XX
    if name.startswith("."):
        name = "%2E" + name[1:]  # no hidden names, no '.' or '..'
    if len(name) > 200:  # file names stop at 255 bytes: a readable prefix and a digest
        import hashlib

        # quote() never produces "%%", so the marker cannot collide with an encoded id
        name = name[:120] + "%%" + hashlib.sha256(execution_id.encode()).hexdigest()[:32]
    return name


def _frame(exec_id: str, seq: int, state_bytes: bytes, wall: float) -> bytes:
    # The envelope is packed around the already-encoded state so the state is encoded once.
    payload = b"".join((b"\x94", msgpack.packb(exec_id), msgpack.packb(seq), msgpack.packb(wall), state_bytes))
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, seq, len(payload), zlib.crc32(payload)) + payload


def check_envelope(path: Path, keep_payload: bool = False) -> tuple[int, bytes | None]:
    """(seq, payload or None) of a complete checkpoint file: header, length and CRC32
    checked, the payload *not* decoded (the supervisor uses this: it never imports agent
    types) and, unless asked for, not kept (it is read in chunks). CheckpointError naming
    the file and the fault otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                raise CheckpointError(f"{path} is truncated ({len(head)} bytes, the header alone is {HEADER_SIZE})")
            magic, version, _flags, seq, length, crc = _HEADER.unpack_from(head)
            if magic != MAGIC:
                raise CheckpointError(f"{path} is not a checkpoint (bad magic {magic!r})")
            if version > FORMAT_VERSION:
                raise CheckpointError(f"{path} has format version {version}, newer than this interrupt-pool reads "
                                      f"({FORMAT_VERSION}); upgrade interrupt-pool")  # fmt: skip
            parts, got, running = [], 0, 0
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                running = zlib.crc32(chunk, running)
                if keep_payload:
                    parts.append(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if got != length:
        raise CheckpointError(f"{path} is truncated ({got} of {length} payload bytes)")
    if running != crc:
        raise CheckpointError(f"{path} is corrupted (CRC32 mismatch)")
    return seq, b"".join(parts) if keep_payload else None


def read_file(path: Path) -> tuple[int, str, float, Any]:
    """(seq, execution id, time, state) of one checkpoint file; CheckpointError if it is not complete and valid."""
    seq, payload = check_envelope(path, keep_payload=True)
    assert payload is not None  # (keep_payload=True: it is kept)
    try:
        exec_id, _seq, wall, state = decode(payload)
    except CheckpointError:
        raise
    except Exception as exc:  # a class that no longer imports, a model that no longer validates, ...
        raise CheckpointError(f"{path} cannot be decoded here: {type(exc).__name__}: {exc}") from exc
    return seq, exec_id, wall, state


class CheckpointStore:
    """The checkpoints of one execution id, in ``root/<encoded id>/``."""

    def __init__(self, root: str | os.PathLike, execution_id: str, keep: int = 3):
        self.execution_id = execution_id
        self.dir = Path(root) / id_to_dirname(execution_id)
        self.keep = keep
        self._next_seq: int | None = None
        self._on_disk: list[int] | None = None  # our view of the files, oldest first, once listed
        self._dir_ready = False
        self._last: tuple[CheckpointInfo, bytes] | None = None  # what this store wrote last

    def sequence_numbers(self) -> list[int]:
        """Sequence numbers on disk, newest first (not yet validated)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted((int(m[1]) for m in map(_FILE.match, names) if m), reverse=True)

    def path(self, seq: int) -> Path:
        return self.dir / f"ckpt-{seq:012d}.msgpack"

    def write(self, state: Any, durable: bool = True, before_commit=None, skip_if_unchanged: bool = False
              ) -> CheckpointInfo:  # fmt: skip
        """Save ``state`` as the next checkpoint. ``before_commit(info)`` runs after
        the temp file is complete (and synced), right before it becomes visible.
        With ``skip_if_unchanged``, a state that encodes exactly like the last one this
        store wrote is not written again (its info is returned)."""
        data = encode(state)  # first: a bad state must not create directories or files
        if skip_if_unchanged and self._last is not None and self._last[1] == data:
            return self._last[0]
        if not self._dir_ready:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._dir_ready = True
        seq = self.next_seq()
        wall = time.time()
        blob = _frame(self.execution_id, seq, data, wall)
        final = self.path(seq)
        tmp = self.dir / f".tmp-{seq:012d}-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        info = CheckpointInfo(seq, str(final), len(blob), wall)
        if before_commit is not None:
            before_commit(info)
        os.replace(tmp, final)
        if durable:
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._next_seq = seq + 1
        on_disk = self._on_disk
        assert on_disk is not None  # (next_seq() above listed the directory)
        on_disk.append(seq)
        while len(on_disk) > self.keep:  # this worker is the only writer: no need to list the directory
            try:
                self.path(on_disk.pop(0)).unlink()
            except FileNotFoundError:
                pass  # removed by hand meanwhile
        self._last = (info, data)
        return info

    def next_seq(self) -> int:
        """The sequence number the next write will use."""
        if self._next_seq is None:
            seqs = self.sequence_numbers()
            self._on_disk = seqs[::-1]
            self._next_seq = (seqs[0] + 1) if seqs else 1
        return self._next_seq

    def newest(self, min_seq: int = 0) -> tuple[CheckpointInfo, Any] | None:
        """The newest complete checkpoint with seq >= min_seq and its state; damaged
        files are skipped with a warning naming them."""
        for seq in self.sequence_numbers():
            if seq < min_seq:
                break
            path = self.path(seq)
            try:
                fseq, _id, wall, state = read_file(path)
            except CheckpointError as exc:
                warnings.warn(f"skipping checkpoint: {exc}", RuntimeWarning, stacklevel=2)
                continue
            return CheckpointInfo(fseq, str(path), path.stat().st_size, wall), state
        return None

    def newest_complete(self, min_seq: int = 0) -> CheckpointInfo | None:
        """The newest file whose envelope is complete (not decoded: safe in the supervisor)."""
        for seq in self.sequence_numbers():
            if seq < min_seq:
                break
            path = self.path(seq)
            try:
                check_envelope(path)
                st = path.stat()
            except (CheckpointError, OSError):
                continue
            return CheckpointInfo(seq, str(path), st.st_size, st.st_mtime)
        return None

    def list(self) -> list[CheckpointInfo]:
        """Every checkpoint file of this id, newest first (sizes and times from the file system)."""
        out = []
        for seq in self.sequence_numbers():
            p = self.path(seq)
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append(CheckpointInfo(seq, str(p), st.st_size, st.st_mtime))
        return out


def list_ids(root: str | os.PathLike) -> list[str]:
    """The execution ids that have a checkpoint directory under ``root``."""
    try:
        entries = sorted(p for p in Path(root).iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    ids = []
    for p in entries:
        if "%%" not in p.name:
            import urllib.parse

            ids.append(urllib.parse.unquote(p.name))
            continue
        for f in sorted(p.glob("ckpt-*.msgpack"), reverse=True):  # hashed name: the id is in the payload
            try:
                ids.append(read_file(f)[1])
                break
            except CheckpointError:
                continue
    return ids
