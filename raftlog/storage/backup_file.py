"""The backup file: a header with the backup's index, term and crc32, then a compacted copy of a member's data.mdb.

Layout (all integers big-endian):

    offset 0     magic b"RLOGBKUP"
    offset 8     format version, u32: 1 without a snapshot file, 2 with one
    offset 12    length L of the JSON header, u32
    offset 16    the JSON header, L bytes, then zeros up to offset 4092
    offset 4092  crc32 of bytes [0, 4092), u32
    offset 4096  version 2 only: the snapshot file, `snapshot_size` bytes
    then         the data: `data_size` bytes, an LMDB environment's data.mdb as
                 `mdb_env_copyfd3(MDB_CP_COMPACT)` wrote it from one read transaction

The JSON header (BackupHeader): `index` (the last entry of the copy known committed: the
member's durable commit index in that transaction), `term` (that entry's term, 0 at index
0), `hard_term` (the member's term then), `cluster_id` and `node_id` of the member, its
`first_index` and `last_index` then, `data_size` and `data_crc32` (of the data),
`created_at` (UTC, ISO 8601) and `raftlog` (the version that wrote it). Version 2 adds
`snapshot_file` (the name of the member's current snapshot file, which that transaction
recorded), `snapshot_size` and `snapshot_crc32`. A copy without a snapshot file is written
as version 1, byte for byte as before version 2 existed, so older raftlogs read it; they
refuse version 2 by its number.

A file whose size is not 4096 + snapshot_size + data_size, whose header fails its crc32, or
whose snapshot or data fails its crc32 is refused with BackupFileError (one line). A file is
written to `FILE.tmp`, fsynced, and renamed to FILE (the directory fsynced): FILE is
complete or absent.

This module uses neither LMDB nor the network: the client writes backups with it, and
raftlog.storage.restore reads them.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import struct
import zlib
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import BinaryIO, Iterator, Optional

from raftlog.errors import BackupFileError, RaftlogError
from raftlog.storage.datadir import fsync_dir

__all__ = ["BackupFileError", "BackupHeader", "BackupWriter", "read_backup", "copy_body", "snapshot_pieces",
           "HEADER_SIZE", "MAGIC"]

MAGIC = b"RLOGBKUP"
VERSION = 1                 # a copy without a snapshot file
VERSION_SNAPSHOT = 2        # a copy with one: the snapshot part precedes the data
_SNAPSHOT_FIELDS = ("snapshot_file", "snapshot_size", "snapshot_crc32")
HEADER_SIZE = 4096
_PREFIX = struct.Struct(">8sII")
_CRC = struct.Struct(">I")
_CRC_AT = HEADER_SIZE - _CRC.size
_PIECE = 1 << 20


@dataclass(frozen=True)
class BackupHeader:
    """What a backup file says about its copy (the JSON header; see the module docstring)."""

    index: int
    term: int
    hard_term: int
    cluster_id: str
    node_id: int
    first_index: int
    last_index: int
    data_size: int
    data_crc32: int
    created_at: str
    raftlog: str
    snapshot_file: Optional[str] = None
    snapshot_size: int = 0
    snapshot_crc32: int = 0

    @property
    def version(self) -> int:
        """The format version this header is written with: 2 when the backup carries a snapshot file, else 1."""
        return VERSION if self.snapshot_file is None else VERSION_SNAPSHOT

    @property
    def body_size(self) -> int:
        """The bytes after the header: the snapshot part and the data."""
        return self.snapshot_size + self.data_size

    @classmethod
    def received(cls, fields_sent: dict) -> "BackupHeader":
        """The header of a backup whose member sent `fields_sent` (every field but created_at and raftlog), made now.

        RaftlogError (one line) when the member sent fields this raftlog does not know (a newer
        member: its backup may hold parts this client cannot write) or lacks one it needs.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(fields_sent) - known)
        if unknown:
            raise RaftlogError(f"the member sent a backup with {', '.join(unknown)}, which this raftlog does not "
                               "know; use a raftlog client as new as the member")
        try:
            return cls(**{**fields_sent, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "raftlog": _raftlog_version()})
        except TypeError as exc:
            raise RaftlogError(f"the member sent an incomplete backup header ({exc})") from None

    def to_dict(self) -> dict:
        """The header's fields as the file's JSON holds them (a version 1 header: without the snapshot fields)."""
        d = asdict(self)
        if self.snapshot_file is None:
            for name in _SNAPSHOT_FIELDS:
                del d[name]
        return d

    def to_bytes(self) -> bytes:
        """The 4096 header bytes: magic, version, JSON, padding, crc32."""
        body = json.dumps(self.to_dict(), sort_keys=True).encode()
        if _PREFIX.size + len(body) > _CRC_AT:
            raise ValueError(f"backup header of {len(body)} bytes does not fit")
        head = (_PREFIX.pack(MAGIC, self.version, len(body)) + body).ljust(_CRC_AT, b"\0")
        return head + _CRC.pack(zlib.crc32(head))

    @classmethod
    def from_bytes(cls, raw: bytes, path: str) -> "BackupHeader":
        """The header of the file at `path` from its first bytes; BackupFileError when it is not a good one."""
        if len(raw) < HEADER_SIZE:
            raise BackupFileError(path, f"is truncated: {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte header")
        magic, version, length = _PREFIX.unpack_from(raw)
        if magic != MAGIC:
            raise BackupFileError(path, "is not a raftlog backup (bad magic)")
        if _CRC.unpack_from(raw, _CRC_AT)[0] != zlib.crc32(raw[:_CRC_AT]):
            raise BackupFileError(path, "has a damaged header (crc32 mismatch)")
        if version not in (VERSION, VERSION_SNAPSHOT):
            raise BackupFileError(path, f"has format version {version}; this raftlog reads versions "
                                        f"{VERSION} and {VERSION_SNAPSHOT}")
        try:
            d = json.loads(raw[_PREFIX.size:_PREFIX.size + length])
            names = [f.name for f in fields(cls) if version == VERSION_SNAPSHOT or f.name not in _SNAPSHOT_FIELDS]
            header = cls(**{name: d[name] for name in names})
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupFileError(path, f"has a header that does not decode ({exc})") from None
        carries = VERSION_SNAPSHOT if header.snapshot_file is not None or _SNAPSHOT_FIELDS[0] in d else VERSION
        if carries != version:
            raise BackupFileError(path, f"has format version {version} and a header of version {carries}")
        return header


class BackupWriter:
    """Writes a backup file durably: the body to `PATH.tmp` as it arrives, then the header, fsync, rename.

    `write` takes the body's pieces in order; `finish(header)` checks the body's size and
    crc32s against the header (a body with a snapshot part is read back to check each part's),
    writes it, fsyncs, renames to PATH and fsyncs the directory;
    `abort` removes the temporary file. Used as a context manager, an exception aborts.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.tmp_path = self.path + ".tmp"
        self.size = 0
        self.crc32 = 0
        self._file: Optional[BinaryIO] = open(self.tmp_path, "wb")
        self._file.write(bytes(HEADER_SIZE))

    def write(self, piece: bytes | memoryview) -> None:
        """Append one piece of the body."""
        assert self._file is not None, "the backup file is finished"
        self._file.write(piece)
        self.size += len(piece)
        self.crc32 = zlib.crc32(piece, self.crc32)

    def finish(self, header: BackupHeader) -> None:
        """Make PATH the complete backup; BackupFileError (nothing left behind) when the body is not `header`'s."""
        assert self._file is not None, "the backup file is finished"
        f = self._file
        if header.snapshot_file is None:
            received = [(self.size, self.crc32)]
        else:
            f.flush()
            with open(self.tmp_path, "rb") as back:
                back.seek(HEADER_SIZE)
                received = [_size_crc32(back, header.snapshot_size), _size_crc32(back, None)]
        sent = [(header.snapshot_size, header.snapshot_crc32)] if header.snapshot_file is not None else []
        sent.append((header.data_size, header.data_crc32))
        if received != sent:
            self.abort()
            raise BackupFileError(self.path, f"received {_parts(received)}, the member sent {_parts(sent)}")
        f.seek(0)
        f.write(header.to_bytes())
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._file = None
        os.replace(self.tmp_path, self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def abort(self) -> None:
        """Remove the temporary file (idempotent; a finished backup stays)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            try:
                os.remove(self.tmp_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "BackupWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _raftlog_version() -> str:
    """The installed raftlog's version ("unknown" when it is not installed as a package)."""
    try:
        return importlib.metadata.version("raftlog")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def read_backup(path: str | os.PathLike) -> BackupHeader:
    """The header of the backup at `path` after checking the whole file; BackupFileError (one line) otherwise.

    Checked: magic, version and the header's crc32, the file's size against the header's
    snapshot_size + data_size (truncated or too long), and the snapshot's and the data's crc32.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            header = BackupHeader.from_bytes(f.read(HEADER_SIZE), path)
            size = os.fstat(f.fileno()).st_size
            if size != HEADER_SIZE + header.body_size:
                what = "truncated" if size < HEADER_SIZE + header.body_size else "too long"
                raise BackupFileError(path, f"is {what}: {size} bytes, the header says "
                                            f"{HEADER_SIZE + header.body_size}")
            snapshot_crc = _size_crc32(f, header.snapshot_size)[1]
            data_crc = _size_crc32(f, None)[1]
    except OSError as exc:
        raise BackupFileError(path, f"cannot be read: {exc.strerror}") from None
    if snapshot_crc != header.snapshot_crc32:
        raise BackupFileError(path, f"is damaged: its snapshot file has crc32 {snapshot_crc:#010x}, the header says "
                                    f"{header.snapshot_crc32:#010x}")
    if data_crc != header.data_crc32:
        raise BackupFileError(path, f"is damaged: its data has crc32 {data_crc:#010x}, the header says "
                                    f"{header.data_crc32:#010x}")
    return header


def copy_body(path: str, dest: BinaryIO) -> None:
    """Copy the data (the data.mdb) of the (checked) backup at `path` to `dest`."""
    with open(path, "rb") as f:
        header = BackupHeader.from_bytes(f.read(HEADER_SIZE), path)
        f.seek(HEADER_SIZE + header.snapshot_size)
        for piece in _pieces(f, None):
            dest.write(piece)


def snapshot_pieces(path: str) -> Iterator[bytes]:
    """The snapshot file of the (checked) backup at `path`, in pieces (nothing when it carries none)."""
    with open(path, "rb") as f:
        header = BackupHeader.from_bytes(f.read(HEADER_SIZE), path)
        yield from _pieces(f, header.snapshot_size)


def _pieces(f: BinaryIO, size: Optional[int]) -> Iterator[bytes]:
    """The next `size` bytes of `f` (None: up to its end) in pieces."""
    left = size
    while left is None or left > 0:
        piece = f.read(_PIECE if left is None else min(_PIECE, left))
        if not piece:
            return
        if left is not None:
            left -= len(piece)
        yield piece


def _size_crc32(f: BinaryIO, size: Optional[int]) -> tuple[int, int]:
    """The count and crc32 of the next `size` bytes of `f` (None: up to its end)."""
    n, crc = 0, 0
    for piece in _pieces(f, size):
        n += len(piece)
        crc = zlib.crc32(piece, crc)
    return n, crc


def _parts(parts: list[tuple[int, int]]) -> str:
    """`12 bytes with crc32 0x0abc1234` per part (a snapshot part first), for a message."""
    return " then ".join(f"{size} bytes with crc32 {crc:#010x}" for size, crc in parts)
