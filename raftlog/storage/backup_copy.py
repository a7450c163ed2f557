"""`python -m raftlog.storage.backup_copy DIR`: a compacted copy of a live data dir's data.mdb from one transaction.

Run by a node (raftlog.runtime.backup) in a child process beside itself, so that the copy
neither holds the node's storage locks nor takes its GIL: the child opens the environment
readonly and registers as a reader in LMDB's lock file, so the node keeps writing and
keeps the pages the child reads.

Output on stdout: a u32 (big-endian) length, a JSON object of that length (CopyState: what
the transaction held), then the snapshot file the transaction records, if any
(`snapshot_size` bytes: a log compacted behind a snapshot file, e.g. by retention or an
embedded state machine), then the copy (`mdb_env_copyfd3` with MDB_CP_COMPACT, from that
same transaction) until EOF. A refusal is one line on stderr and exit status 1; a snapshot
file whose bytes do not match the size and crc32 its record says is a refusal too (after
its bytes were written: the node then answers with that refusal, not a backup).

The snapshot file is opened while the read transaction that names it is open. The node may
prune that file meanwhile (a newer snapshot, an installed one); then the transaction is
begun again (the open file stays readable once opened, whatever is pruned afterwards).
"""
from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Optional

import lmdb

from raftlog.core.messages import HardState
from raftlog.core.storage import verified
from raftlog.errors import RaftlogError
from raftlog.storage.datadir import LOG_DB, META_DB, SNAPSHOT_DIR, open_environment
from raftlog.storage.lmdb import (DEFAULT_MAP_SIZE, HARD_STATE_KEY, LOG_START_KEY, SNAPSHOT_KEY,
                                  decode_meta_record)

__all__ = ["CopyState", "LENGTH", "copy_to"]

LENGTH = struct.Struct(">I")
_PIECE = 1 << 20
_ATTEMPTS = 5          # transactions begun before giving up on a snapshot file pruned under each of them


@dataclass(frozen=True)
class CopyState:
    """What the copied transaction held: the durable commit index (the backup's index), its term, the log's bounds.

    `snapshot_file` and `snapshot_size`: the snapshot file the transaction records (None, 0
    when it records none); its bytes follow this state in the child's output.
    """

    index: int
    term: int
    hard_term: int
    cluster_id: str
    node_id: int
    first_index: int
    last_index: int
    snapshot_file: Optional[str] = None
    snapshot_size: int = 0


def _state(env: lmdb.Environment, txn: lmdb.Transaction, cluster_id: str, node_id: int) -> tuple[CopyState, int]:
    """The CopyState of `txn` (snapshot_size from the record) and the recorded snapshot file's crc32."""
    meta_db = env.open_db(META_DB, txn=txn, create=False)
    log_db = env.open_db(LOG_DB, txn=txn, create=False)

    def meta(key: bytes) -> Any:
        return decode_meta_record(key, txn.get(key, db=meta_db))
    hard = meta(HARD_STATE_KEY) or HardState()
    snapshot, file = meta(SNAPSHOT_KEY)
    start = meta(LOG_START_KEY) or (snapshot.index, snapshot.term)
    cur = txn.cursor(log_db)
    last = max(start[0], snapshot.index)
    if cur.last():
        last = struct.unpack(">Q", cur.key())[0]
    # A snapshot covers applied, hence committed, entries; the durable commit index may lag it
    # (the node saves a commit index that moved without entries a moment later).
    index = max(hard.commit, snapshot.index)
    if index > start[0] and index != snapshot.index:
        raw = txn.get(struct.pack(">Q", index), db=log_db)
        if raw is None:
            raise RaftlogError(f"node {node_id}'s committed entry {index} is missing from its log")
        term = verified(index, raw).term(0)
    elif index == snapshot.index and index:
        term = snapshot.term
    else:
        index, term = start
    state = CopyState(index, term, hard.term, cluster_id, node_id, start[0] + 1, last,
                      file, snapshot.size if file is not None else 0)
    return state, snapshot.crc32


def _open_snapshot(path: str, state: CopyState) -> Optional[BinaryIO]:
    """The snapshot file `state` names, open (None when the transaction names none or it was pruned meanwhile)."""
    if state.snapshot_file is None:
        return None
    try:
        return open(os.path.join(path, SNAPSHOT_DIR, state.snapshot_file), "rb")
    except FileNotFoundError:
        return None


def _send_snapshot(f: BinaryIO, fd: int, state: CopyState, crc32: int) -> None:
    """Write the open snapshot file to `fd`; RaftlogError when it is not the `snapshot_size` bytes of crc `crc32`."""
    size, crc = 0, 0
    while size < state.snapshot_size:
        piece = f.read(min(_PIECE, state.snapshot_size - size))
        if not piece:
            break
        _write_all(fd, piece)
        size += len(piece)
        crc = zlib.crc32(piece, crc)
    if (size, crc) != (state.snapshot_size, crc32) or f.read(1):
        raise RaftlogError(f"node {state.node_id}'s snapshot file {state.snapshot_file} is not the one its record "
                           f"describes ({state.snapshot_size} bytes, crc32 {crc32:#010x})")


def copy_to(path: str, fd: int) -> CopyState:
    """Write the length-prefixed CopyState, the snapshot file it names and the compacted copy of `path` to `fd`."""
    env, identity, _ = open_environment(path, node_id=None, cluster_id=None, readonly=True, create=False,
                                        sync=False, map_size=DEFAULT_MAP_SIZE)
    try:
        for _ in range(_ATTEMPTS):
            try:
                txn = env.begin()
            except lmdb.MapResizedError:
                env.set_mapsize(0)          # the node grew the map: adopt its size
                txn = env.begin()
            try:
                state, crc32 = _state(env, txn, identity.cluster_id, identity.node_id)
                snapshot = _open_snapshot(path, state)
                if state.snapshot_file is not None and snapshot is None:
                    continue                # pruned since this transaction began: a newer one names another
                head = json.dumps(asdict(state)).encode()
                _write_all(fd, LENGTH.pack(len(head)) + head)
                if snapshot is not None:
                    with snapshot:
                        _send_snapshot(snapshot, fd, state, crc32)
                env.copyfd(fd, compact=True, txn=txn)
                return state
            finally:
                txn.abort()
        raise RaftlogError(f"node {identity.node_id}'s snapshot files were replaced {_ATTEMPTS} times while the "
                           "backup began; try again")
    finally:
        env.close()


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (a pipe takes part of a large write at a time)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str]) -> int:
    """The child process: copy the data dir argv[0] to stdout; one line on stderr and 1 when refused."""
    try:
        copy_to(argv[0], sys.stdout.fileno())
    except (RaftlogError, lmdb.Error, OSError, ValueError) as exc:
        print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
