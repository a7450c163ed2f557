"""`raftlog restore`: a new cluster's data dir from a backup file (etcd's `etcdutl snapshot restore`, for a log).

What a restored dir holds (every member of the new cluster is restored from the same file
with the same peers):

- the backup's entries `[first_index, index]`, byte for byte; entries the member held past
  its durable commit index (`index`) are dropped: they may never have committed, and a
  different entry may have committed at their index in the old cluster;
- one configuration entry at `index + 1`, at the backup's term (`hard_term`, at least 1:
  never below the term of an entry before it), whose configuration is the given peers and whose
  previous configuration is the old one. It is the log's latest configuration entry, so
  the engine and every service that reads configurations from the log (diss. 4.1: the
  latest configuration in the log rules) see the new members, never the old ones;
- the hard state (term = the backup's `hard_term`, vote = none, commit = index + 1) and the
  configuration record (`conf_state`) of the new peers;
- a new identity: the given node id, a new random incarnation, and the cluster id given, or
  else one derived from the backup's crc32, its index and the peers (`restored-<12 hex>`),
  so that members restored from different files or with different peers refuse each other;
- no incarnations of peers (the new members have new ones, learned at first contact);
- a log compacted behind a snapshot file: that file, byte for byte (checked against the
  size and crc32 its record says), written durably into `snapshots/` (SnapshotFiles.write,
  renamed into the dir before data.mdb), and the snapshot record with the new peers'
  configuration. The file itself holds no configuration (the session table and an
  application's image, runtime/sessions.py); the table is kept: a client retrying a request
  in the new cluster gets its original index (exactly-once carries over, as the log does).

Raft safety. Every member of the new cluster starts with the same log (the same file cut at
the same index, the same configuration entry), so Log Matching holds between them, and
`commit = index + 1` is true: each of those entries is on every member, hence on a majority
of any configuration of them. The vote is empty and the term is not below any entry's term,
so the first election runs at a higher term than every stored entry (§5.2, §5.4.1). The
old cluster's members are unknown to the new one (a new cluster id and new incarnations),
so nothing of the old cluster can vote or append in the new one. A member restored with
other peers (or from another file) writes a different entry at `index + 1` at the same term:
that would break Log Matching, which is why the derived cluster id covers the peers and the
file; with an explicit --cluster-id, giving every member the same file and peers is the
operator's job, as with etcd's --initial-cluster.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional

import lmdb

from raftlog.core import confchange
from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.errors import BackupFileError, DataDirError
from raftlog.hot import KIND_CONF, encode_record
from raftlog.storage.backup_file import BackupHeader, copy_body, read_backup, snapshot_pieces
from raftlog.storage.datadir import (DATA_FILE, FORMAT_KEY, FORMAT_VERSION, IDENTITY_KEY, LOG_DB, MAX_DBS, META_DB,
                                     NOT_RAFTLOG_REMEDY, SNAPSHOT_DIR, Identity, create_with, release_writer_lock,
                                     validate_data_dir)
from raftlog.storage.lmdb import CONF_STATE_KEY, HARD_STATE_KEY, SNAPSHOT_KEY, decode_meta_record
from raftlog.storage.snapshot_files import SnapshotFiles, decode_snapshot_record, encode_snapshot_record

__all__ = ["Restored", "restore", "derived_cluster_id"]

_KEY = struct.Struct(">Q")
_HARD = struct.Struct(">QQQ")
_INCARNATIONS = b"incarnations"


@dataclass(frozen=True)
class Restored:
    """What `restore` made: the dir, its identity, and where its log ends."""

    path: str
    cluster_id: str
    node_id: int
    index: int            # the backup's index: the last entry kept from it
    conf_index: int       # the new configuration entry (index + 1), the dir's last index and commit
    term: int
    backup: BackupHeader


def derived_cluster_id(header: BackupHeader, peers: Mapping[int, str]) -> str:
    """The cluster id of members restored from this backup with these peers: `restored-` and 12 hex digits."""
    spec = ",".join(f"{i}={a}" for i, a in sorted(peers.items()))
    digest = hashlib.sha256(f"{header.data_crc32}:{header.index}:{header.created_at}:{spec}".encode()).hexdigest()
    return f"restored-{digest[:12]}"


def restore(backup_path: str, data_dir: str, node_id: int, peers: Mapping[int, str],
            cluster_id: Optional[str] = None) -> Restored:
    """Make `data_dir` (missing or empty) a data dir of node `node_id` of a new cluster of `peers` from a backup.

    BackupFileError when the backup is damaged or truncated; DataDirError when `data_dir`
    holds anything; ValueError when `node_id` is not one of `peers`. The dir is created
    atomically (raftlog.storage.datadir.create_with): on any failure no data.mdb appears.
    """
    if node_id not in peers:
        raise ValueError(f"node id {node_id} is not one of the peers {sorted(peers)}")
    header = read_backup(backup_path)
    data_dir = os.fspath(data_dir)
    if not _is_new(data_dir):
        raise DataDirError(data_dir, "is not empty: a restore makes a new data dir",
                           "give a missing or empty dir (nothing in this one was changed)")
    cluster = cluster_id or derived_cluster_id(header, peers)
    conf = ConfState(voters=tuple(sorted(peers)), addresses=tuple(sorted(peers.items())))
    term = max(header.hard_term, 1)      # a backup of a member that never voted: no entry of term 0

    def build(creating: str) -> None:
        with open(os.path.join(creating, DATA_FILE), "wb") as f:
            copy_body(backup_path, f)
            f.flush()
            os.fsync(f.fileno())
        _rewrite(creating, data_dir, header, Identity.new(cluster, node_id), conf, term,
                 lambda meta, file: _write_snapshot(backup_path, header, meta, file, creating))

    lock_fd = create_with(data_dir, build, f"node {node_id} of cluster {cluster} (restored from {backup_path})")
    release_writer_lock(lock_fd)
    return Restored(data_dir, cluster, node_id, header.index, header.index + 1, term, header)


def _is_new(path: str) -> bool:
    """True when `path` is what the data-dir rules take as new: missing, empty, or an interrupted creation.

    DataDirError when it is no directory.
    """
    try:
        return validate_data_dir(path) is None
    except DataDirError:
        if os.path.isdir(path):
            return False            # damaged or foreign files: not empty either way
        raise


def _write_snapshot(backup_path: str, header: BackupHeader, meta: SnapshotMeta, file: Optional[str],
                    creating: str) -> Optional[str]:
    """Write the backup's snapshot file durably into `creating/snapshots/`; its name (None: the data records none).

    BackupFileError when the backup's snapshot part is not the file the data's snapshot
    record (`meta`, `file`) names (missing, extra, or another size or crc32): the data and
    its snapshot file must come from one copy.
    """
    if file is None:
        if header.snapshot_file is not None:
            raise BackupFileError(backup_path, "carries a snapshot file its data does not record")
        return None
    if header.snapshot_file is None:
        raise BackupFileError(backup_path, f"records the snapshot file of snapshot {meta.index} but carries none")
    name, size, crc = SnapshotFiles(os.path.join(creating, SNAPSHOT_DIR)).write(
        meta.index, meta.term, snapshot_pieces(backup_path))
    if (size, crc) != (meta.size, meta.crc32):
        raise BackupFileError(backup_path, f"carries a snapshot file of {size} bytes with crc32 {crc:#010x}; its data "
                                           f"records {meta.size} bytes with crc32 {meta.crc32:#010x}")
    return name


def _rewrite(creating: str, data_dir: str, header: BackupHeader, identity: Identity, conf: ConfState,
             term: int, place_snapshot: Callable[[SnapshotMeta, Optional[str]], Optional[str]]) -> None:
    """In one durable transaction: the new identity, the log cut at the backup's index, the configuration entry.

    A snapshot recorded with a file gets its file from `place_snapshot` (durable before the
    transaction records it) and the new configuration in its record.
    """
    env = lmdb.open(creating, subdir=True, max_dbs=MAX_DBS, map_size=max(64 << 20, 2 * header.data_size),
                    sync=True, metasync=True, lock=False, create=False)
    try:
        with env.begin(write=True) as txn:
            try:
                log_db = env.open_db(LOG_DB, txn=txn, create=False)
                meta_db = env.open_db(META_DB, txn=txn, create=False)
            except lmdb.NotFoundError:
                raise DataDirError(data_dir, "the backup holds no raftlog databases", NOT_RAFTLOG_REMEDY) from None
            fmt = txn.get(FORMAT_KEY, db=meta_db)
            if fmt != str(FORMAT_VERSION).encode():
                raise DataDirError(data_dir, f"the backup has layout format {fmt!r}; this raftlog writes "
                                             f"format {FORMAT_VERSION}", "restore it with the raftlog that wrote it")
            old_conf = decode_meta_record(CONF_STATE_KEY, txn.get(CONF_STATE_KEY, db=meta_db)) or ConfState()
            cur = txn.cursor(log_db)
            if cur.set_range(_KEY.pack(header.index + 1)):
                while cur.delete():
                    pass
            payload = confchange.encode_entry(conf, old_conf, [])
            txn.put(_KEY.pack(header.index + 1), encode_record(term, KIND_CONF, payload), db=log_db, append=True)
            txn.put(HARD_STATE_KEY, _HARD.pack(*HardState(term, 0, header.index + 1)), db=meta_db)
            txn.put(CONF_STATE_KEY, _conf_json(conf), db=meta_db)
            txn.put(IDENTITY_KEY, identity.to_json(), db=meta_db)
            txn.delete(_INCARNATIONS, db=meta_db)
            snapshot, file = decode_snapshot_record(txn.get(SNAPSHOT_KEY, db=meta_db))
            file = place_snapshot(snapshot, file)
            if snapshot.index:
                # The compaction point (with or without a file) says which configuration rules
                # when the log is loaded or the snapshot sent: it must be the new one.
                txn.put(SNAPSHOT_KEY, encode_snapshot_record(replace(snapshot, conf_state=conf), file), db=meta_db)
    finally:
        env.close()


def _conf_json(conf: ConfState) -> bytes:
    """The conf_state record as LmdbStorage stores it."""
    return json.dumps(conf.to_dict()).encode()
