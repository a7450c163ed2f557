"""LmdbStorage: the durable Storage of a node: the log and its small state in LMDB transactions.

A data dir holds one LMDB environment, its snapshot files and its writer lock:

- `DIR/data.mdb`: layout format 1, two named databases, described below.
- `DIR/snapshots/`: the snapshot files, kept by raftlog.storage.snapshot_files (complete
  snapshots written durably before a transaction here records them, the snapshot being
  received, pruning).
- `DIR/raftlog.lock`: one writer process per data dir; the lock, the checks before LMDB maps
  the file, the format marker and the identity are raftlog.storage.datadir's.

The databases:

- `log`: key = entry index as 8-byte big-endian, value = the entry record exactly as the
  codec wrote it (`term u64 | kind u8 | crc32 u32 | len u32 | payload`). Keys are
  contiguous: `[log_start.index + 1, last_index]`.
- `meta`: `format` and `identity` (see raftlog.storage.datadir), `hard_state` (24 bytes:
  term, vote, commit as u64 big-endian, written on nearly every save so it is not JSON),
  `conf_state` (JSON), `snapshot` (the snapshot record of raftlog.storage.snapshot_files:
  JSON index, term, conf_state, file, size, crc32), `log_start` (16 bytes: index and term
  of the last compacted entry; the log may keep a tail below the snapshot, so this is at
  or below the snapshot's index; absent = the snapshot's), `incarnations` (JSON: peer id ->
  the data-dir incarnation this node knows it by, raftlog.core.incarnations; absent = none).

Snapshots: `save_snapshot` has the file store write the file durably, then one transaction
records it; the current and the previous file are kept. `install_snapshot` has the store
check the received snapshot's size and crc32 and promote it into place, then one
transaction empties the log and records it.

Durability: with `sync=True` (the default) `save` returns after LMDB's commit has fsynced
data and meta pages, so a save that returned survives power loss. With `sync=False` the
commit only reaches the OS page cache: a process crash loses nothing, but an OS crash or
power loss may undo the last commits, and LMDB guarantees integrity (no torn transaction)
only on a filesystem that preserves write order; call `flush()` to force a sync point.

Threads: LMDB write transactions are bound to the thread that began them. Every write
here begins and commits inside one call, and `save`/`compact` take a lock, so concurrent
calls are serialized; the runtime runs every `save` on one dedicated writer thread and
py-lmdb releases the GIL during commit and fsync, so the event loop keeps going while the
disk works. Reads (`records`, `log_index`) may come from any thread.

Map size: LMDB needs a maximum size up front. `map_size` is only the starting point: a
transaction that hits MapFullError is aborted, the map grown (at least doubled; LMDB
requires that no transaction of this process is open meanwhile, so resizing waits for
reads in flight) and the whole transaction redone. A readonly opener adopts a map that
the writer process grew (MapResizedError) on its next read.
"""
from __future__ import annotations

import json
import os
import struct
import threading
import time
from itertools import chain, islice
from typing import Any, Callable, Iterator, NamedTuple, Optional

import lmdb

from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.errors import Closed, CorruptLogError, DataDirError
from raftlog.hot import LogIndex, RecordBatch
from raftlog.core.storage import check_save_range, verified
from raftlog.storage.datadir import (FORMAT_VERSION, LOG_DB, META_DB, Identity, damaged_remedy, open_environment,
                                     release_writer_lock)
from raftlog.storage.snapshot_files import SnapshotFiles, decode_snapshot_record, encode_snapshot_record

__all__ = ["LmdbStorage", "Identity", "FORMAT_VERSION", "DEFAULT_MAP_SIZE", "hard_state_problems",
           "decode_meta_record", "index_of_key", "HARD_STATE_KEY", "CONF_STATE_KEY", "SNAPSHOT_KEY", "LOG_START_KEY"]

DEFAULT_MAP_SIZE = 64 << 20       # grown on demand by doubling; only address space is reserved
SNAPSHOT_DIR = "snapshots"

_KEY = struct.Struct(">Q")
_HARD = struct.Struct(">QQQ")
_key = _KEY.pack

_HARD_STATE = HARD_STATE_KEY = b"hard_state"
_CONF_STATE = CONF_STATE_KEY = b"conf_state"
_SNAPSHOT = SNAPSHOT_KEY = b"snapshot"
_INCARNATIONS = b"incarnations"
_LOG_START = LOG_START_KEY = b"log_start"   # 16 bytes: index, term of the last compacted entry (absent: the snapshot's)
_START = struct.Struct(">QQ")

# save() hands putmulti its (key, record) pairs in chunks of this many. A whole batch's list
# would be 2n live GC-tracked objects (tuples, memoryviews): at 4096 entries that set off
# ~7 young collections per save and promoted the list into the old generations, costing
# more than the putmulti itself inside a big process (pytest-benchmark: 2.0x raw).
# Chunks stay below the young generation's threshold (700).
_STREAM_CHUNK = 256

# log_index() parses the stored records in chunks of this many entries, so that rebuilding
# the index of a big log never holds more than one chunk's bytes in memory at once.
_INDEX_CHUNK = 1 << 16


class _State(NamedTuple):
    """Everything small the storage answers from memory; replaced whole after each commit.

    A NamedTuple, not a frozen dataclass: built once per save, it costs 0.3 us instead of 0.9 us
    (timeit), a tenth of LmdbStorage's own per-save overhead.
    """

    hard_state: HardState
    conf_state: Optional[ConfState]
    snapshot: SnapshotMeta
    snapshot_file: Optional[str]
    last_index: int
    start: tuple[int, int]      # (index, term) of the last compacted entry: the log holds (start, last]


class LmdbStorage:
    """Storage in an LMDB environment: atomic saves, CRC-checked reads, identity-checked opens.

    Open with `LmdbStorage.open(path, node_id=..., cluster_id=...)`. Ranges are half-open
    `[lo, hi)`. The small state (hard state, configuration, snapshot position, last
    index) is cached in memory and answered without touching LMDB; in readonly mode it is
    re-read on every call because another process is writing.
    """

    def __init__(self, env: lmdb.Environment, path: str, *, readonly: bool, sync: bool,
                 identity: Identity, lock_fd: Optional[int]) -> None:
        """Use `LmdbStorage.open`; this wraps an environment that open() has validated."""
        self._env = env
        self._path = path
        self._readonly = readonly
        self._sync = sync
        self._identity = identity
        self._lock_fd = lock_fd
        self._files = SnapshotFiles(os.path.join(path, SNAPSHOT_DIR), sync)
        self._log_db = env.open_db(LOG_DB, create=False)
        self._meta_db = env.open_db(META_DB, create=False)
        self._write_lock = threading.Lock()     # one save/compact at a time
        self.commit_seconds = 0.0               # the last save's LMDB commit: its page writes and, with sync, fsync
        self._map_lock = threading.Lock()       # no read txn may be open while the map is resized
        self._closed = False
        with self._reading() as txn:
            self._state = self._load(txn)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | os.PathLike, *, node_id: Optional[int], cluster_id: Optional[str],
             sync: bool = True, map_size: int = DEFAULT_MAP_SIZE, create: bool = True,
             readonly: bool = False) -> "LmdbStorage":
        """Open (or create) the data dir at `path` for node `node_id` of cluster `cluster_id`.

        Only a missing or empty dir is created. Any other dir is checked before LMDB maps it
        and before anything is written (raftlog.storage.datadir): DataDirError (one line:
        the dir, what is wrong, the remedy) for a damaged, emptied or foreign dir; its
        subclass IdentityMismatch when the dir belongs to another node or cluster (the
        message names expected and found), has an unknown format or no raftlog identity.
        Then a saved hard state must fit the log (`hard_state_problems`; the term only when
        there is a last entry and it reads back whole: a corrupt entry is CorruptLogError
        where it is read, and `raftlog repair` must be able to open the dir), else DataDirError.
        `node_id`/`cluster_id` None accept whatever is stored (for inspection); creating a
        dir needs both. `readonly=True` never writes and may run beside the writer process
        (`raftlog inspect`). `create=False` raises FileNotFoundError for a missing dir.
        Another process holding the dir open for writing raises RaftlogError.
        """
        path = os.fspath(path)
        env, identity, lock_fd = open_environment(path, node_id=node_id, cluster_id=cluster_id, readonly=readonly,
                                                  create=create, sync=sync, map_size=map_size,
                                                  verify=_startup_check(path, node_id))
        try:
            return cls(env, path, readonly=readonly, sync=sync, identity=identity, lock_fd=lock_fd)
        except BaseException:
            env.close()
            release_writer_lock(lock_fd)
            raise

    # ---------------------------------------------------------------- the Storage protocol

    def hard_state(self) -> HardState:
        """The last saved hard state (all zero when new)."""
        return self._current().hard_state

    def conf_state(self) -> Optional[ConfState]:
        """The last saved configuration, or None when none was saved."""
        return self._current().conf_state

    def snapshot_meta(self) -> SnapshotMeta:
        """The last snapshot's position (index 0 when there is none)."""
        return self._current().snapshot

    def first_index(self) -> int:
        """The first index held: the compaction point + 1 (at or below snapshot index + 1: a retained tail)."""
        return self._current().start[0] + 1

    def last_index(self) -> int:
        """The last index held (the snapshot index when no entry is held)."""
        return self._current().last_index

    def log_index(self) -> LogIndex:
        """A LogIndex of the stored entries' terms, offset by the snapshot; CRC-checks every record.

        The values are joined a chunk at a time and parsed by RecordBatch, which reads the
        terms from the record headers on the hot path: no Python work per entry here
        (~0.5 us per entry, most of it py-lmdb's cursor walk and the CRC). Meant for startup:
        it holds off saves while it reads, so the index matches the cached state exactly.
        """
        self._check_open()
        with self._write_lock, self._reading() as txn:
            st = self._load(txn) if self._readonly else self._state
            log = LogIndex(*st.start)
            lo = st.start[0] + 1
            count = st.last_index - st.start[0]
            if count == 0:
                return log
            cur = txn.cursor(self._log_db)
            if not cur.set_key(_key(lo)):
                raise CorruptLogError(lo, "entry missing from the log database")
            values = cur.iternext(keys=False, values=True)
            while count > 0:
                chunk = list(islice(values, min(count, _INDEX_CHUNK)))
                if not chunk:
                    raise CorruptLogError(lo, "entry missing from the log database")
                batch = verified(lo, b"".join(chunk))
                if len(batch) != len(chunk):
                    raise CorruptLogError(lo, "a stored value does not hold exactly one record")
                try:
                    log.extend(batch.terms())
                except ValueError as exc:
                    raise CorruptLogError(lo, f"terms out of order: {exc}") from None
                lo += len(chunk)
                count -= len(chunk)
            return log

    def records(self, lo: int, hi: int, max_bytes: Optional[int] = None) -> RecordBatch:
        """Entries `[lo, hi)`, cut short to fit max_bytes (but at least one). CRC-checked: CorruptLogError(index).

        IndexError when the range is outside `[first_index, last_index + 1)`. One read
        transaction, one cursor walk, one join, one parse.
        """
        self._check_open()
        # The cached state is read BEFORE the transaction begins: save() replaces it only
        # after its commit, so every entry it counts is visible to the transaction unless a
        # later truncation or compaction removed it (the writer thread does not wait for
        # readers); _vanished() tells that race from a hole.
        st = None if self._readonly else self._state
        with self._reading() as txn:
            if st is None:
                st = self._load(txn)
            first = st.start[0] + 1
            if lo > hi or lo < first or hi > st.last_index + 1:
                raise IndexError(f"range [{lo}, {hi}) outside [{first}, {st.last_index + 1})")
            n = hi - lo
            if n == 0:
                return RecordBatch(b"")
            cur = txn.cursor(self._log_db)
            if not cur.set_key(_key(lo)):
                raise self._vanished(txn, lo, hi)
            values = islice(cur.iternext(keys=False, values=True), n)
            cut = False
            if max_bytes is None:
                chosen = list(values)
            else:
                chosen = []
                total = 0
                for value in values:
                    total += len(value)
                    if total > max_bytes and chosen:
                        cut = True
                        break
                    chosen.append(value)
            if len(chosen) < n and not cut:
                raise self._vanished(txn, lo, hi)
            buf = b"".join(chosen)
        batch = verified(lo, buf)
        if len(batch) != len(chosen):
            raise CorruptLogError(lo, "a stored value does not hold exactly one record")
        return batch

    def save(self, *, hard_state: Optional[HardState] = None, truncate_from: int = 0,
             first_index: int = 0, records: Optional[RecordBatch] = None,
             conf_state: Optional[ConfState] = None) -> None:
        """Atomically: drop entries >= truncate_from (0 = none), store `records` from first_index,
        set hard and conf state.

        PRECONDITION: first_index == last_index + 1 after the truncation (IndexError
        otherwise, nothing written). ONE write transaction; durable on return when sync.
        On MapFullError the transaction is aborted, the map doubled and the whole batch
        redone, so a save is never half-written.
        """
        self._check_writable()
        with self._write_lock:
            st = self._state
            new_last = check_save_range(st.last_index, truncate_from, first_index, records, st.start[0])
            n = len(records) if records is not None else 0
            hs = _HARD.pack(*hard_state) if hard_state is not None else None
            cs = json.dumps(conf_state.to_dict()).encode() if conf_state is not None else None
            drop_from = truncate_from if truncate_from and truncate_from <= st.last_index else 0
            if not (drop_from or n or hs is not None or cs is not None):
                return
            whole_log = drop_from == st.start[0] + 1
            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        if drop_from:
                            if whole_log:
                                txn.drop(self._log_db, delete=False)
                            else:
                                cur = txn.cursor(self._log_db)
                                if cur.set_range(_key(drop_from)):
                                    while cur.delete():
                                        pass
                        if n:
                            cur = txn.cursor(self._log_db)
                            try:
                                consumed, added = cur.putmulti(_stream(first_index, records, n), append=True)
                            except lmdb.KeyExistsError:
                                consumed, added = n, -1
                            if (consumed, added) != (n, n):
                                raise CorruptLogError(first_index, f"append of {n} records added {added}: "
                                                      "the log database holds keys past the known last index")
                        if hs is not None:
                            txn.put(_HARD_STATE, hs, db=self._meta_db)
                        if cs is not None:
                            txn.put(_CONF_STATE, cs, db=self._meta_db)
                        committing = time.perf_counter()
                    self.commit_seconds = time.perf_counter() - committing     # leaving the block commits
                    break
                except lmdb.MapFullError:
                    self._grow(records.nbytes if n else 0)
            self._state = _State(hard_state if hard_state is not None else st.hard_state,
                                 conf_state if conf_state is not None else st.conf_state,
                                 st.snapshot, st.snapshot_file, new_last, st.start)

    def compact(self, snapshot: SnapshotMeta, file: Optional[str] = None) -> None:
        """Drop entries <= snapshot.index and record the snapshot's position (and its file name) in one txn.

        A snapshot at or below the current one is ignored; one past the last index empties
        the log, which then continues from snapshot.index + 1.
        """
        self._check_writable()
        with self._write_lock:
            st = self._state
            if snapshot.index <= st.snapshot.index:
                return
            drop = max(0, min(snapshot.index, st.last_index) - st.start[0])
            whole_log = snapshot.index >= st.last_index
            meta = encode_snapshot_record(snapshot, file)
            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        if whole_log:
                            txn.drop(self._log_db, delete=False)
                        elif drop:
                            cur = txn.cursor(self._log_db)
                            cur.first()
                            for _ in range(drop):
                                cur.delete()
                        txn.put(_SNAPSHOT, meta, db=self._meta_db)
                        txn.put(_LOG_START, _START.pack(snapshot.index, snapshot.term), db=self._meta_db)
                    break
                except lmdb.MapFullError:
                    self._grow(0)
            self._state = _State(st.hard_state, st.conf_state, snapshot, file,
                                 max(st.last_index, snapshot.index), (snapshot.index, snapshot.term))

    # ---------------------------------------------------------------- snapshot files

    def save_snapshot(self, snapshot: SnapshotMeta, data: Any) -> SnapshotMeta:
        """Write a snapshot file and make it the current snapshot; return its meta with size and crc32.

        `data` is bytes, a binary file-like object (read in 1 MiB pieces) or an iterable of
        bytes. The file is written under a temporary name in `DIR/snapshots/`, fsynced,
        renamed to `snap-<index>-<term>.bin` and the directory fsynced; only then does one
        transaction record it. The log is untouched (see compact_log). The previous
        snapshot's file is kept (a transfer may still be reading it), older ones removed.
        A snapshot at or below the current one is ignored (the current meta is returned).
        """
        self._check_writable()
        if snapshot.index <= self._state.snapshot.index:
            return self._state.snapshot
        name, size, crc = self._files.write(snapshot.index, snapshot.term, data)
        meta = SnapshotMeta(snapshot.index, snapshot.term, snapshot.conf_state, size, crc)
        with self._write_lock:
            st = self._state
            if meta.index <= st.snapshot.index:
                self._files.remove(name)
                return st.snapshot
            self._put_meta({_SNAPSHOT: encode_snapshot_record(meta, name),
                            _LOG_START: _START.pack(*st.start)})
            self._state = st._replace(snapshot=meta, snapshot_file=name, last_index=max(st.last_index, meta.index))
            self._files.keep_only({name, st.snapshot_file})
        return meta

    def compact_log(self, index: int, *, batch: int = 16384) -> None:
        """Drop entries <= index (at most the snapshot's index): the log then starts at index + 1.

        Runs in transactions of at most `batch` deletions (py-lmdb holds the GIL per call,
        so one huge transaction would stall the event loop), each recording the new
        compaction point, so a crash leaves a consistent log that merely starts earlier.
        """
        self._check_writable()
        while True:
            with self._write_lock:
                st = self._state
                if index <= st.start[0]:
                    return
                if index > st.snapshot.index or index > st.last_index:
                    raise IndexError(f"cannot compact to {index}: snapshot {st.snapshot.index}, last {st.last_index}")
                upto = min(index, st.start[0] + batch)
                term = self.records(upto, upto + 1).term(0)
                while True:
                    try:
                        with self._env.begin(write=True) as txn:
                            cur = txn.cursor(self._log_db)
                            cur.first()
                            for _ in range(upto - st.start[0]):
                                cur.delete()
                            txn.put(_LOG_START, _START.pack(upto, term), db=self._meta_db)
                        break
                    except lmdb.MapFullError:
                        self._grow(0)
                self._state = st._replace(start=(upto, term))

    def snapshot_path(self) -> Optional[str]:
        """The current snapshot's file (None when there is none)."""
        name = self._current().snapshot_file
        return self._files.path(name) if name else None

    def snapshot_data(self) -> bytes:
        """The current snapshot's bytes (b"" when there is none)."""
        name = self._current().snapshot_file
        return self._files.read(name) if name else b""

    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        """Bytes `[offset, offset + size)` of the snapshot at `index` (current or previous); LookupError if gone."""
        st = self._current()
        return self._files.read_chunk(index, offset, size, st.snapshot_file if st.snapshot.index == index else None)

    def incoming_snapshot(self) -> Optional[tuple[SnapshotMeta, int, int]]:
        """The partial snapshot being received: `(meta, bytes held, their crc32)`, or None."""
        return self._files.incoming()

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Append one received chunk to the partial snapshot, durably (offset 0 starts a new one).

        IndexError on a gap.
        """
        self._check_writable()
        self._files.append_chunk(meta, offset, data)

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the log by the received snapshot `meta`: verify, fsync, rename, then one transaction.

        CorruptLogError when the partial snapshot is not exactly `meta` (size and crc32).
        The transaction drops every entry and records the snapshot, the compaction point
        (meta.index, meta.term) and the snapshot's configuration.
        """
        self._check_writable()
        name = self._files.promote_incoming(meta)
        with self._write_lock:
            st = self._state
            puts = {_SNAPSHOT: encode_snapshot_record(meta, name), _LOG_START: _START.pack(meta.index, meta.term)}
            if meta.conf_state.voters:
                puts[_CONF_STATE] = json.dumps(meta.conf_state.to_dict()).encode()
            self._put_meta(puts, drop_log=True)
            self._state = st._replace(snapshot=meta, snapshot_file=name, last_index=meta.index,
                                      start=(meta.index, meta.term),
                                      conf_state=meta.conf_state if meta.conf_state.voters else st.conf_state)
            self._files.keep_only({name})
        self._files.forget_incoming()

    def incarnations(self) -> dict[int, int]:
        """The saved peer id -> incarnation book (empty when none was saved)."""
        self._check_open()
        with self._reading() as txn:
            raw = txn.get(_INCARNATIONS, db=self._meta_db)
        return {int(peer): int(incarnation) for peer, incarnation in json.loads(raw).items()} if raw else {}

    def save_incarnations(self, known: dict[int, int]) -> None:
        """Replace the saved incarnation book by `known` in one transaction (durable on return when sync)."""
        self._check_writable()
        record = json.dumps({str(peer): incarnation for peer, incarnation in sorted(known.items())}).encode()
        with self._write_lock:
            self._put_meta({_INCARNATIONS: record})

    def _put_meta(self, puts: dict, drop_log: bool = False) -> None:
        """One write transaction of meta puts (and optionally emptying the log); the map grows on demand."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    if drop_log:
                        txn.drop(self._log_db, delete=False)
                    for k, v in puts.items():
                        txn.put(k, v, db=self._meta_db)
                break
            except lmdb.MapFullError:
                self._grow(0)

    def close(self) -> None:
        """Release the environment and the data dir lock; the storage is unusable afterwards. Idempotent."""
        if self._closed:
            return
        with self._write_lock, self._map_lock:
            self._closed = True
            self._env.close()
            release_writer_lock(self._lock_fd)
            self._lock_fd = None

    # ---------------------------------------------------------------- beyond the protocol

    @property
    def path(self) -> str:
        """The data dir."""
        return self._path

    @property
    def snapshot_dir(self) -> str:
        """Where snapshot files live: `DIR/snapshots/`."""
        return self._files.directory

    @property
    def readonly(self) -> bool:
        """True when opened for inspection only."""
        return self._readonly

    @property
    def sync(self) -> bool:
        """True when every save is fsynced before it returns."""
        return self._sync

    def identity(self) -> Identity:
        """Who this data dir belongs to."""
        return self._identity

    def snapshot_file(self) -> Optional[str]:
        """The file name recorded with the last snapshot (relative to snapshot_dir), or None."""
        return self._current().snapshot_file

    def corrupt_indexes(self, limit: int = 1000) -> list[int]:
        """Indexes in [first_index, last_index] whose stored record fails its CRC or does not parse
        (at most `limit`)."""
        bad: list[int] = []
        lo, last = self.first_index(), self.last_index()
        while lo <= last and len(bad) < limit:
            hi = min(last + 1, lo + 4096)
            try:
                self.records(lo, hi)
            except CorruptLogError:
                # One record at a time inside this chunk: a corrupt length field can make the
                # joined chunk misparse at another record than the bad one.
                for i in range(lo, hi):
                    try:
                        self.records(i, i + 1)
                    except CorruptLogError:
                        bad.append(i)
            lo = hi
        return bad[:limit]

    def replace_record(self, index: int, record: bytes) -> None:
        """Overwrite the stored entry at `index` with `record` in place (repair only; nothing else changes).

        PRECONDITION: `record` is the cluster's committed entry at `index` and this process is
        the only writer (the node is stopped: open() holds the data dir's lock).
        """
        self._check_writable()
        if not self.first_index() <= index <= self.last_index():
            raise IndexError(f"index {index} is outside the stored log [{self.first_index()}, {self.last_index()}]")
        with self._env.begin(write=True) as txn:
            txn.put(_key(index), bytes(record), db=self._log_db)

    def flush(self) -> None:
        """Force everything committed so far to disk (a durability point when sync=False)."""
        self._check_writable()
        self._env.sync(True)

    def stats(self) -> dict[str, Any]:
        """Map size, bytes in use, entry count and index range: for `raftlog inspect` and status."""
        self._check_open()
        with self._reading() as txn:
            st = self._load(txn) if self._readonly else self._state
            log = txn.stat(self._log_db)
            info = self._env.info()
            env_stat = self._env.stat()
        return {"path": self._path, "format": FORMAT_VERSION, "cluster_id": self._identity.cluster_id,
                "node_id": self._identity.node_id, "map_size": info["map_size"],
                "used_bytes": (info["last_pgno"] + 1) * env_stat["psize"], "entries": log["entries"],
                "first_index": st.start[0] + 1, "last_index": st.last_index,
                "snapshot_index": st.snapshot.index, "sync": self._sync, "readonly": self._readonly}

    def __enter__(self) -> "LmdbStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        ident = self._identity
        return f"LmdbStorage({self._path!r}, node_id={ident.node_id}, cluster_id={ident.cluster_id!r})"

    # ---------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"storage at {self._path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise PermissionError(f"storage at {self._path} is open readonly")

    def _current(self) -> _State:
        """The cached state, or in readonly mode a fresh read (another process writes)."""
        if not self._readonly:
            return self._state
        self._check_open()
        with self._reading() as txn:
            return self._load(txn)

    def _reading(self) -> "_ReadTxn":
        return _ReadTxn(self)

    def _load(self, txn: lmdb.Transaction) -> _State:
        """The small state and the log's bounds as `txn` sees them (_load_state)."""
        return _load_state(txn, self._log_db, self._meta_db)

    def _vanished(self, txn: lmdb.Transaction, lo: int, hi: int) -> Exception:
        """The error for entries of `[lo, hi)` the transaction does not see: IndexError if a concurrent
        truncation or compaction moved the log's bounds past them, CorruptLogError for a hole."""
        cur = txn.cursor(self._log_db)
        if cur.first():
            first = _KEY.unpack(cur.key())[0]
            cur.last()
            last = _KEY.unpack(cur.key())[0]
            if first <= lo and hi - 1 <= last:
                return CorruptLogError(lo, "entry missing from the log database")
            return IndexError(f"range [{lo}, {hi}) no longer held: the log now holds [{first}, {last}]")
        return IndexError(f"range [{lo}, {hi}) no longer held: the log is now empty")

    def _grow(self, need: int) -> None:
        """Enlarge the map (no write txn is open here): at least double it, and leave room for `need`
        bytes twice over."""
        with self._map_lock:
            size = self._env.info()["map_size"]
            new = max(size * 2, size + 2 * need)
            page = 1 << 16
            self._env.set_mapsize((new + page - 1) // page * page)


class _ReadTxn:
    """A read transaction held under the map lock; a map grown by another process is adopted first."""

    __slots__ = ("_storage", "_txn")

    def __init__(self, storage: LmdbStorage) -> None:
        self._storage = storage

    def __enter__(self) -> lmdb.Transaction:
        s = self._storage
        s._map_lock.acquire()
        try:
            # buffers=False on purpose: py-lmdb hands out a bytes copy of a 117-byte record
            # ~4x faster than a zero-copy memoryview (426 vs 1987 ns per entry over 262k
            # entries, measured), and records() copies the values into one buffer anyway.
            try:
                self._txn = s._env.begin()
            except lmdb.MapResizedError:
                s._env.set_mapsize(0)           # the writer process grew the map: adopt its size
                self._txn = s._env.begin()
        except BaseException:
            s._map_lock.release()
            raise
        return self._txn

    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._storage._map_lock.release()


def _load_state(txn: lmdb.Transaction, log_db: Any, meta_db: Any) -> _State:
    """Read the small state and the log's bounds, checking the keys are exactly `[snapshot + 1, last]`.

    ValueError when a meta record does not decode; CorruptLogError for a gap.
    """
    def meta(key: bytes) -> Any:
        return decode_meta_record(key, txn.get(key, db=meta_db))
    hard = meta(_HARD_STATE) or HardState()
    conf = meta(_CONF_STATE)
    snapshot, file = meta(_SNAPSHOT)
    start = meta(_LOG_START) or (snapshot.index, snapshot.term)
    cur = txn.cursor(log_db)
    last = max(start[0], snapshot.index)
    if cur.last():
        last = _KEY.unpack(cur.key())[0]
        cur.first()
        first = _KEY.unpack(cur.key())[0]
        if first != start[0] + 1:
            raise CorruptLogError(start[0] + 1, f"log starts at {first}, after compaction point {start[0]}")
        entries = txn.stat(log_db)["entries"]
        if entries != last - first + 1:
            raise CorruptLogError(first, f"{entries} entries stored for indexes [{first}, {last}]: a gap")
    return _State(hard, conf, snapshot, file, last, start)


def _startup_check(path: str, node_id: Optional[int]) -> Callable[[lmdb.Environment, lmdb.Transaction], None]:
    """The cheap check of every open, run in a read transaction before the dir is used (open_environment's verify).

    The meta records decode (else DataDirError), the log has no gap (else CorruptLogError)
    and a saved hard state fits the log (hard_state_problems, else DataDirError); the term
    only when there is a last entry and it reads back whole: a corrupt entry is
    CorruptLogError where it is read, and `raftlog repair` must be able to open the dir.
    """
    def check(env: lmdb.Environment, txn: lmdb.Transaction) -> None:
        log_db = env.open_db(LOG_DB, txn=txn, create=False)
        try:
            st = _load_state(txn, log_db, env.open_db(META_DB, txn=txn, create=False))
        except ValueError as exc:
            raise DataDirError(path, f"has a meta record that does not decode ({exc})",
                               damaged_remedy(node_id)) from None
        last_term = 0
        raw = txn.get(_key(st.last_index), db=log_db) if st.hard_state != HardState() else None
        if raw is not None:
            try:
                last_term = verified(st.last_index, raw).term(0)
            except CorruptLogError:
                pass
        wrong = hard_state_problems(st.hard_state, st.last_index, last_term)
        if wrong:
            raise DataDirError(path, f"has a hard state that does not fit its log: {wrong[0]}",
                               damaged_remedy(node_id))
    return check


def decode_meta_record(key: bytes, raw: Optional[bytes]) -> Any:
    """The `meta` record `key` decoded from `raw` (None: absent); ValueError naming it when it does not decode.

    hard_state: HardState or None; conf_state: ConfState or None; snapshot: (SnapshotMeta,
    file name or None), the empty snapshot when absent; log_start: (index, term) or None.
    """
    try:
        if key == _SNAPSHOT:
            return decode_snapshot_record(raw)
        if raw is None:
            return None
        if key == _HARD_STATE:
            return HardState(*_HARD.unpack(raw))
        if key == _CONF_STATE:
            return ConfState.from_dict(json.loads(raw))
        if key == _LOG_START:
            return tuple(_START.unpack(raw))
    except (ValueError, struct.error, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{key.decode()}: {exc}") from None
    raise KeyError(key)


def index_of_key(key: bytes) -> int:
    """The entry index a `log` key stands for; ValueError when the key is not 8 bytes."""
    try:
        return _KEY.unpack(key)[0]
    except struct.error:
        raise ValueError(f"a log key of {len(key)} bytes") from None


def hard_state_problems(hard: HardState, last_index: int, last_term: int) -> list[str]:
    """What is wrong with a hard state beside the log it was saved with (empty: nothing).

    `last_term` is the last entry's term (0: no entry to judge by).

    The node saves its hard state and its entries in one transaction, so on disk the commit
    index is never past the last entry (a committed entry this node acknowledged would be
    gone), and the term is never below the last entry's (a node takes an entry's term
    before it stores the entry).
    """
    wrong = []
    if hard.commit > last_index:
        wrong.append(f"commit index {hard.commit} is past the last entry {last_index}: committed entries are missing")
    if hard.term < last_term:
        wrong.append(f"term {hard.term} is below the last entry's term {last_term}")
    return wrong


def _stream(first_index: int, records: RecordBatch, n: int) -> Iterator[tuple[bytes, memoryview]]:
    """The pairs of records.items(first_index), built _STREAM_CHUNK at a time as putmulti takes them."""
    if n <= _STREAM_CHUNK:
        return iter(records.items(first_index))
    return chain.from_iterable(records.slice(k, k + _STREAM_CHUNK).items(first_index + k)
                               for k in range(0, n, _STREAM_CHUNK))
