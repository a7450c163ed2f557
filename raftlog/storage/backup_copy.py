"""`python -m raftlog.storage.backup_copy DIR`: a compacted copy of a live data dir's data.mdb from one transaction.

Run by a node (raftlog.runtime.backup) in a child process beside itself, so that the copy
neither holds the node's storage locks nor takes its GIL: the child opens the environment
readonly and registers as a reader in LMDB's lock file, so the node keeps writing and
keeps the pages the child reads.

Output on stdout: a u32 (big-endian) length, a JSON object of that length (CopyState: what
the transaction held), then the copy (`mdb_env_copyfd3` with MDB_CP_COMPACT, from that same
transaction) until EOF. A refusal is one line on stderr and exit status 1.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import asdict, dataclass
from typing import Any

import lmdb

from raftlog.core.messages import HardState
from raftlog.core.storage import verified
from raftlog.errors import RaftlogError
from raftlog.storage.datadir import LOG_DB, META_DB, open_environment
from raftlog.storage.lmdb import (DEFAULT_MAP_SIZE, HARD_STATE_KEY, LOG_START_KEY, SNAPSHOT_KEY,
                                  decode_meta_record)

__all__ = ["CopyState", "LENGTH", "copy_to"]

LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class CopyState:
    """What the copied transaction held: the durable commit index (the backup's index), its term, the log's bounds."""

    index: int
    term: int
    hard_term: int
    cluster_id: str
    node_id: int
    first_index: int
    last_index: int


def _state(env: lmdb.Environment, txn: lmdb.Transaction, cluster_id: str, node_id: int) -> CopyState:
    """The CopyState of `txn`; RaftlogError when the log is compacted behind a snapshot file (not backed up yet)."""
    meta_db = env.open_db(META_DB, txn=txn, create=False)
    log_db = env.open_db(LOG_DB, txn=txn, create=False)

    def meta(key: bytes) -> Any:
        return decode_meta_record(key, txn.get(key, db=meta_db))
    hard = meta(HARD_STATE_KEY) or HardState()
    snapshot, file = meta(SNAPSHOT_KEY)
    if file is not None:
        raise RaftlogError(f"node {node_id}'s log is compacted behind the snapshot file {file}: "
                           "backing up snapshot files is not supported")
    start = meta(LOG_START_KEY) or (snapshot.index, snapshot.term)
    cur = txn.cursor(log_db)
    last = max(start[0], snapshot.index)
    if cur.last():
        last = struct.unpack(">Q", cur.key())[0]
    index = hard.commit
    if index > start[0]:
        raw = txn.get(struct.pack(">Q", index), db=log_db)
        if raw is None:
            raise RaftlogError(f"node {node_id}'s committed entry {index} is missing from its log")
        term = verified(index, raw).term(0)
    else:
        index, term = start
    return CopyState(index, term, hard.term, cluster_id, node_id, start[0] + 1, last)


def copy_to(path: str, fd: int) -> CopyState:
    """Write the length-prefixed CopyState and the compacted copy of the data dir at `path` to `fd`."""
    env, identity, _ = open_environment(path, node_id=None, cluster_id=None, readonly=True, create=False,
                                        sync=False, map_size=DEFAULT_MAP_SIZE)
    try:
        try:
            txn = env.begin()
        except lmdb.MapResizedError:
            env.set_mapsize(0)          # the node grew the map: adopt its size
            txn = env.begin()
        try:
            state = _state(env, txn, identity.cluster_id, identity.node_id)
            head = json.dumps(asdict(state)).encode()
            os.write(fd, LENGTH.pack(len(head)) + head)
            env.copyfd(fd, compact=True, txn=txn)
        finally:
            txn.abort()
    finally:
        env.close()
    return state


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
