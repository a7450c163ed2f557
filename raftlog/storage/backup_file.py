"""The backup file: a header with the backup's index, term and crc32, then a compacted copy of a member's data.mdb.

Layout (all integers big-endian):

    offset 0     magic b"RLOGBKUP"
    offset 8     format version, u32 (1)
    offset 12    length L of the JSON header, u32
    offset 16    the JSON header, L bytes, then zeros up to offset 4092
    offset 4092  crc32 of bytes [0, 4092), u32
    offset 4096  the body: `data_size` bytes, an LMDB environment's data.mdb as
                 `mdb_env_copyfd3(MDB_CP_COMPACT)` wrote it from one read transaction

The JSON header (BackupHeader): `index` (the last entry of the copy known committed: the
member's durable commit index in that transaction), `term` (that entry's term, 0 at index
0), `hard_term` (the member's term then), `cluster_id` and `node_id` of the member, its
`first_index` and `last_index` then, `data_size` and `data_crc32` (of the body),
`created_at` (UTC, ISO 8601) and `raftlog` (the version that wrote it).

A file whose size is not 4096 + data_size, whose header fails its crc32 or whose body fails
`data_crc32` is refused with BackupFileError (one line). A file is written to `FILE.tmp`,
fsynced, and renamed to FILE (the directory fsynced): FILE is complete or absent.

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

from raftlog.errors import BackupFileError
from raftlog.storage.datadir import fsync_dir

__all__ = ["BackupFileError", "BackupHeader", "BackupWriter", "read_backup", "copy_body", "HEADER_SIZE", "MAGIC"]

MAGIC = b"RLOGBKUP"
VERSION = 1
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

    @classmethod
    def received(cls, fields_sent: dict) -> "BackupHeader":
        """The header of a backup whose member sent `fields_sent` (every field but created_at and raftlog), made now."""
        return cls(**{**fields_sent, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "raftlog": _raftlog_version()})

    def to_bytes(self) -> bytes:
        """The 4096 header bytes: magic, version, JSON, padding, crc32."""
        body = json.dumps(asdict(self), sort_keys=True).encode()
        if _PREFIX.size + len(body) > _CRC_AT:
            raise ValueError(f"backup header of {len(body)} bytes does not fit")
        head = (_PREFIX.pack(MAGIC, VERSION, len(body)) + body).ljust(_CRC_AT, b"\0")
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
        if version != VERSION:
            raise BackupFileError(path, f"has format version {version}; this raftlog reads version {VERSION}")
        try:
            d = json.loads(raw[_PREFIX.size:_PREFIX.size + length])
            return cls(**{f.name: d[f.name] for f in fields(cls)})
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupFileError(path, f"has a header that does not decode ({exc})") from None


class BackupWriter:
    """Writes a backup file durably: the body to `PATH.tmp` as it arrives, then the header, fsync, rename.

    `write` takes the body's pieces in order; `finish(header)` checks the body's size and
    crc32 against the header, writes it, fsyncs, renames to PATH and fsyncs the directory;
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
        if (self.size, self.crc32) != (header.data_size, header.data_crc32):
            self.abort()
            raise BackupFileError(self.path, f"received {self.size} bytes with crc32 {self.crc32:#010x}, the member "
                                             f"sent {header.data_size} with crc32 {header.data_crc32:#010x}")
        f = self._file
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
    data_size (truncated or too long), and the body's crc32.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            header = BackupHeader.from_bytes(f.read(HEADER_SIZE), path)
            size = os.fstat(f.fileno()).st_size
            if size != HEADER_SIZE + header.data_size:
                what = "truncated" if size < HEADER_SIZE + header.data_size else "too long"
                raise BackupFileError(path, f"is {what}: {size} bytes, the header says "
                                            f"{HEADER_SIZE + header.data_size}")
            crc = 0
            for piece in _pieces(f):
                crc = zlib.crc32(piece, crc)
    except OSError as exc:
        raise BackupFileError(path, f"cannot be read: {exc.strerror}") from None
    if crc != header.data_crc32:
        raise BackupFileError(path, f"is damaged: its data has crc32 {crc:#010x}, the header says "
                                    f"{header.data_crc32:#010x}")
    return header


def copy_body(path: str, dest: BinaryIO) -> None:
    """Copy the body of the (checked) backup at `path` to `dest`."""
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE)
        for piece in _pieces(f):
            dest.write(piece)


def _pieces(f: BinaryIO) -> Iterator[bytes]:
    while True:
        piece = f.read(_PIECE)
        if not piece:
            return
        yield piece
