"""SnapshotFiles: a node's snapshot files in one directory; a file under its final name is complete and durable.

Files in the directory (`DIR/snapshots/` of a data dir):

- `snap-<index>-<term>.bin` (index zero-padded to 16 digits): a complete snapshot. It is
  written under a temporary name (`.tmp-<pid>-<thread>-<name>`), fsynced, renamed and the
  directory fsynced, so a file under this name holds the whole snapshot. Which one is
  current is recorded elsewhere (LmdbStorage's `snapshot` meta record); the store keeps the
  files it is told to keep and removes the other `snap-` files.
- `incoming.part`: a snapshot being received from a leader, as far as it has arrived,
  appended one chunk at a time (each chunk fsynced before the call returns).
- `incoming.json`: which snapshot `incoming.part` is (a snapshot record, file null), written
  durably when the first chunk arrives. A complete `incoming.part` is fsynced and renamed to
  its final `snap-` name and the directory fsynced.

Snapshot record: the JSON `{index, term, conf_state, file, size, crc32}` that `incoming.json`
holds and LmdbStorage stores as its current snapshot; `encode_snapshot_record` and
`decode_snapshot_record` are its one definition.

Durability: complete snapshots (`write`, `promote_incoming`) are always fsynced. `sync=False`
(a data dir opened without sync) skips only the fsyncs of the incoming chunks and of
`incoming.json`, so an OS crash may lose chunks received before it.
"""
from __future__ import annotations

import json
import os
import threading
import zlib
from typing import AbstractSet, Any, Iterable, Iterator, Optional

from raftlog.core.messages import ConfState, SnapshotMeta
from raftlog.errors import CorruptLogError
from raftlog.storage.datadir import fsync_dir

__all__ = ["SnapshotFiles", "encode_snapshot_record", "decode_snapshot_record", "file_size_crc32"]

_PREFIX = "snap-"
_INCOMING = "incoming.part"         # a snapshot being received, as far as it has arrived
_INCOMING_META = "incoming.json"    # which snapshot that is (meta with size and crc32)
_READ_PIECE = 1 << 20               # files and file-like sources are read in pieces of this size


def encode_snapshot_record(snapshot: SnapshotMeta, file: Optional[str]) -> bytes:
    """The snapshot record of `snapshot` stored in `file` (None: not yet a complete file), as JSON bytes."""
    return json.dumps({"index": snapshot.index, "term": snapshot.term,
                       "conf_state": snapshot.conf_state.to_dict(), "file": file,
                       "size": snapshot.size, "crc32": snapshot.crc32}).encode()


def decode_snapshot_record(raw: Optional[bytes]) -> tuple[SnapshotMeta, Optional[str]]:
    """The inverse of encode_snapshot_record; None (no record) is the empty snapshot without a file."""
    if raw is None:
        return SnapshotMeta(), None
    d = json.loads(raw)
    return SnapshotMeta(int(d["index"]), int(d["term"]), ConfState.from_dict(d.get("conf_state") or {}),
                        int(d.get("size", 0)), int(d.get("crc32", 0))), d.get("file")


class SnapshotFiles:
    """The snapshot files in `directory`: durable writes, chunked reads, the incoming snapshot, pruning.

    Holds no state beyond the directory: every answer comes from the files, so several
    instances (a writer and a readonly inspector) may look at one directory. The directory
    is created on the first write.
    """

    def __init__(self, directory: str, sync: bool = True) -> None:
        """A store in `directory`; `sync=False` skips the fsyncs of incoming chunks (see the module docstring)."""
        self._dir = directory
        self._sync = sync

    @property
    def directory(self) -> str:
        """Where the files live."""
        return self._dir

    @staticmethod
    def name_for(index: int, term: int) -> str:
        """The file name of the complete snapshot at (index, term): `snap-<index:016d>-<term>.bin`."""
        return f"{_PREFIX}{index:016d}-{term}.bin"

    def path(self, name: str) -> str:
        """The full path of the file `name`."""
        return os.path.join(self._dir, name)

    # ---------------------------------------------------------------- complete snapshots

    def write(self, index: int, term: int, data: Any) -> tuple[str, int, int]:
        """Write the snapshot at (index, term) durably under its final name; returns (name, size, crc32).

        `data` is bytes, a binary file-like object (read in 1 MiB pieces) or an iterable of
        bytes. Written to a temporary name, fsynced, renamed and the directory fsynced: when
        this returns, the file survives power loss; if it raises, no file under the final
        name was created by it.
        """
        name = self.name_for(index, term)
        size, crc = _write_file_durably(self._dir, name, pieces(data), sync=True)
        return name, size, crc

    def read(self, name: str) -> bytes:
        """All bytes of the file `name` (FileNotFoundError when it is gone)."""
        with open(self.path(name), "rb") as f:
            return f.read()

    def read_chunk(self, index: int, offset: int, size: int, name: Optional[str] = None) -> bytes:
        """Bytes `[offset, offset + size)` of the snapshot at `index`; LookupError when it is not held.

        `name` is the file recorded for that snapshot, when the caller knows it; otherwise the
        held `snap-` file for `index` is looked up in the directory.
        """
        if name is None:
            prefix = f"{_PREFIX}{index:016d}-"
            try:
                name = next((n for n in os.listdir(self._dir) if n.startswith(prefix)), None)
            except FileNotFoundError:
                name = None
        if name is None:
            raise LookupError(f"snapshot {index} is not held")
        try:
            with open(self.path(name), "rb") as f:
                f.seek(offset)
                return f.read(size)
        except FileNotFoundError:
            raise LookupError(f"snapshot {index} is not held") from None

    def remove(self, name: str) -> None:
        """Remove the file `name`; a file already gone is no error."""
        _remove_quietly(self.path(name))

    def keep_only(self, keep: AbstractSet[Optional[str]]) -> None:
        """Remove every `snap-` file whose name is not in `keep`; the incoming snapshot and temporary files stay."""
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return
        for n in names:
            if n.startswith(_PREFIX) and n not in keep:
                _remove_quietly(self.path(n))

    # ---------------------------------------------------------------- the incoming snapshot

    def incoming(self) -> Optional[tuple[SnapshotMeta, int, int]]:
        """The partial snapshot being received: `(meta, bytes held, their crc32)`, or None.

        None also when `incoming.json` is missing or unreadable, `incoming.part` is missing, or
        more bytes are held than the snapshot has.
        """
        try:
            with open(self.path(_INCOMING_META), "rb") as f:
                meta, _ = decode_snapshot_record(f.read())
            size, crc = file_size_crc32(self.path(_INCOMING))
        except (FileNotFoundError, ValueError, KeyError):
            return None
        if size > meta.size:
            return None
        return meta, size, crc

    def append_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Append one received chunk of snapshot `meta` at `offset`, durably when sync; offset 0 starts anew.

        Offset 0 records `meta` in `incoming.json` (written durably) and truncates
        `incoming.part`; any other offset must continue the partial snapshot of the same meta
        exactly where it ends, else IndexError and nothing is written.
        """
        os.makedirs(self._dir, exist_ok=True)
        if offset == 0:
            _write_file_durably(self._dir, _INCOMING_META, [encode_snapshot_record(meta, None)], sync=self._sync)
            mode = "wb"
        else:
            held = self.incoming()
            if held is None or held[0] != meta or held[1] != offset:
                raise IndexError(f"snapshot chunk at {offset} does not continue the partial snapshot")
            mode = "ab"
        with open(self.path(_INCOMING), mode) as f:
            f.write(data)
            f.flush()
            if self._sync:
                os.fsync(f.fileno())
        if offset == 0 and self._sync:
            fsync_dir(self._dir)

    def promote_incoming(self, meta: SnapshotMeta) -> str:
        """Make the complete incoming snapshot `meta` a snapshot file durably; returns its name.

        CorruptLogError (nothing changed) when the partial snapshot is not exactly `meta`
        (size and crc32). Otherwise `incoming.part` is fsynced, renamed to its final name and
        the directory fsynced. `incoming.json` stays until `forget_incoming`.
        """
        held = self.incoming()
        if held is None or held[0] != meta or held[1] != meta.size or held[2] != meta.crc32:
            raise CorruptLogError(meta.index, "received snapshot is incomplete or fails its crc32")
        name = self.name_for(meta.index, meta.term)
        part = self.path(_INCOMING)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, self.path(name))
        fsync_dir(self._dir)
        return name

    def forget_incoming(self) -> None:
        """Remove `incoming.json`, the description of an incoming snapshot that was promoted."""
        _remove_quietly(self.path(_INCOMING_META))


def file_size_crc32(path: str) -> tuple[int, int]:
    """The size and crc32 of the file at `path`, read in pieces (OSError when it cannot be read)."""
    size, crc = 0, 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(_READ_PIECE)
            if not piece:
                return size, crc
            size += len(piece)
            crc = zlib.crc32(piece, crc)


def pieces(data: Any) -> Iterator[bytes]:
    """bytes, a binary file-like object or an iterable of bytes, as pieces."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
    elif hasattr(data, "read"):
        while True:
            piece = data.read(_READ_PIECE)
            if not piece:
                return
            yield piece
    else:
        for piece in data:
            yield bytes(piece)


def _write_file_durably(directory: str, name: str, pieces: Iterable[bytes], sync: bool) -> tuple[int, int]:
    """Write `pieces` to directory/name via a temp file: write, fsync, rename, fsync the dir. Returns (size, crc32).

    With `sync=False` the fsyncs are skipped (the rename still makes the file appear whole).
    """
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{threading.get_ident()}-{name}")
    size = 0
    crc = 0
    try:
        with open(tmp, "wb") as f:
            for piece in pieces:
                f.write(piece)
                size += len(piece)
                crc = zlib.crc32(piece, crc)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        _remove_quietly(tmp)
        raise
    if sync:
        fsync_dir(directory)
    return size, crc


def _remove_quietly(path: str) -> None:
    """Remove the file at `path`; a missing file is no error."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
