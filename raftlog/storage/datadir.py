"""Who may open a data dir and whose it is: the one-writer lock, the format marker and the identity record.

A data dir is one LMDB environment (`DIR/data.mdb`, two named databases `log` and `meta`;
the layout is described in raftlog.storage.lmdb) plus `DIR/snapshots/` and the lock file:

- `DIR/raftlog.lock`: flock()ed by the one writer process (`take_writer_lock`), released by
  the OS when the process dies, so a second writer on the same dir fails at once.
- `meta` keys `format` (layout version, ASCII digits) and `identity` (JSON: cluster_id,
  node_id, created_at): written once into a new, empty environment and checked against the
  configuration on every open (`check_or_init_identity`), before anything else is read.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

import lmdb

from raftlog.errors import IdentityMismatch, RaftlogError

__all__ = ["Identity", "FORMAT_VERSION", "LOCK_FILE", "LOG_DB", "META_DB",
           "take_writer_lock", "release_writer_lock", "check_or_init_identity"]

FORMAT_VERSION = 1
LOCK_FILE = "raftlog.lock"        # flock()ed by the one writer process of a data dir
LOG_DB = b"log"                   # the named databases of the environment, created with the identity
META_DB = b"meta"

_FORMAT = b"format"
_IDENTITY = b"identity"


@dataclass(frozen=True)
class Identity:
    """Who a data dir belongs to; written once when the dir is created."""

    cluster_id: str
    node_id: int
    created_at: str

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps({"cluster_id": self.cluster_id, "node_id": self.node_id,
                           "created_at": self.created_at}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Identity":
        """The inverse of to_json."""
        d = json.loads(raw)
        return cls(str(d["cluster_id"]), int(d["node_id"]), str(d.get("created_at", "")))


def take_writer_lock(path: str) -> int:
    """Take the data dir's writer lock (flock, released by the OS when the process dies); returns its fd.

    Creates the dir if needed. RaftlogError when another open (in this or another process)
    holds it.
    """
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RaftlogError(f"data dir {path} is already open for writing (by this or another process)") from None
    return fd


def release_writer_lock(fd: Optional[int]) -> None:
    """Release a lock take_writer_lock returned (None: no lock was taken)."""
    if fd is not None:
        os.close(fd)


def check_or_init_identity(env: lmdb.Environment, path: str, node_id: Optional[int],
                           cluster_id: Optional[str], readonly: bool) -> Identity:
    """Check the dir's format and identity against the configuration, writing both into a new dir.

    A writable open of an empty environment creates the `log` and `meta` databases and
    records the format and an identity (ValueError without a valid node_id and cluster_id).
    Otherwise IdentityMismatch when the databases, the format marker or the identity are
    missing, the format is not FORMAT_VERSION, or a given node_id or cluster_id differs from
    the stored one (the message names expected and found). None accepts whatever is stored.
    """
    if readonly:
        try:
            env.open_db(LOG_DB, create=False)
            meta_db = env.open_db(META_DB, create=False)
        except lmdb.NotFoundError:
            raise IdentityMismatch(f"{path} is not a raftlog data dir (no log/meta databases)") from None
        with env.begin() as txn:
            fmt = txn.get(_FORMAT, db=meta_db)
            raw = txn.get(_IDENTITY, db=meta_db)
    else:
        with env.begin(write=True) as txn:
            log_db = env.open_db(LOG_DB, txn=txn)
            meta_db = env.open_db(META_DB, txn=txn)
            fmt = txn.get(_FORMAT, db=meta_db)
            raw = txn.get(_IDENTITY, db=meta_db)
            if fmt is None and raw is None and txn.stat(log_db)["entries"] == 0 \
                    and txn.stat(meta_db)["entries"] == 0:
                if node_id is None or cluster_id is None:
                    raise ValueError("creating a data dir needs node_id and cluster_id")
                if not isinstance(node_id, int) or node_id < 1:
                    raise ValueError(f"node id must be a positive integer, got {node_id!r}")
                created = datetime.now(timezone.utc).isoformat(timespec="seconds")
                identity = Identity(str(cluster_id), node_id, created)
                txn.put(_FORMAT, str(FORMAT_VERSION).encode(), db=meta_db)
                txn.put(_IDENTITY, identity.to_json(), db=meta_db)
                return identity
    if fmt is None:
        raise IdentityMismatch(f"{path} has no raftlog format marker: not a raftlog data dir")
    if fmt != str(FORMAT_VERSION).encode():
        raise IdentityMismatch(f"{path} has layout format {bytes(fmt).decode(errors='replace')!r}; "
                               f"this raftlog reads format {FORMAT_VERSION}")
    if raw is None:
        raise IdentityMismatch(f"{path} has no identity record")
    found = Identity.from_json(raw)
    wrong = []
    if node_id is not None and found.node_id != node_id:
        wrong.append(f"node id {found.node_id} (expected {node_id})")
    if cluster_id is not None and found.cluster_id != cluster_id:
        wrong.append(f"cluster id {found.cluster_id!r} (expected {cluster_id!r})")
    if wrong:
        raise IdentityMismatch(f"data dir {path} belongs to another node: found " + " and ".join(wrong))
    return found
