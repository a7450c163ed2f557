"""`raftlog repair`: find entries of a stopped node's data dir that fail their CRC, and rewrite
each from the cluster's committed copy.

Why in place, and never by truncating: a node that acknowledged an entry is part of the
majority that made it committed. Dropping it (or everything after it) could let this node
and a lagging one elect a leader without that entry, losing a committed append. Replacing the
bad record with the committed record at the same index restores exactly the log the node
had, so every promise it made still holds.

What it can repair: data entries that the cluster has committed (fetched with a normal
client read, which returns the entry's term and payload; the record is rebuilt from them
and must not break the log's term order). What it cannot: a corrupt entry that is not a data
entry (a leader's no-op, a configuration change), or one the cluster has not committed; for
those it says so and the documented remedy is to replace the member: remove it, wipe the
data dir, and add it back (`raftlog members remove ID`, then `raftlog node --join`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from raftlog.errors import Compacted
from raftlog.hot import KIND_DATA, encode_record


@dataclass
class RepairReport:
    """What `repair` found and did."""

    corrupt: list[int] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    unrepairable: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing corrupt is left."""
        return not self.unrepairable


def repair(data_dir: str, client: Optional[Any], *, dry_run: bool = False) -> RepairReport:
    """Scan `data_dir` (the node must be stopped) and rewrite corrupt data entries from `client`'s cluster.

    `client` is a raftlog.Client connected to the other members (None, or dry_run, only scans).
    """
    from raftlog.storage.lmdb import LmdbStorage
    rep = RepairReport()
    storage = LmdbStorage.open(data_dir, node_id=None, cluster_id=None, create=False, readonly=dry_run)
    try:
        rep.corrupt = storage.corrupt_indexes()
        if dry_run or client is None:
            rep.unrepairable = {i: "not repaired (scan only)" for i in rep.corrupt}
            return rep
        for index in rep.corrupt:
            try:
                got = client.read(index, limit=1)
            except Compacted as exc:
                rep.unrepairable[index] = (f"the cluster compacted it (its log starts at {exc.first_index}): "
                                           "replace this member instead")
                continue
            if not got or got[0].index != index:
                rep.unrepairable[index] = ("not a committed data entry in the cluster's log (a no-op, a configuration "
                                           "change, or not yet committed): replace this member instead")
                continue
            entry = got[0]
            term_before = _term(storage, index - 1)
            term_after = _term(storage, index + 1)
            if (term_before is not None and entry.term < term_before) or \
                    (term_after is not None and entry.term > term_after):
                rep.unrepairable[index] = (f"the cluster's entry has term {entry.term}, out of order with this log's "
                                           f"neighbours ({term_before}, {term_after}): replace this member instead")
                continue
            storage.replace_record(index, encode_record(entry.term, KIND_DATA, entry.data))
            rep.repaired.append(index)
        left = set(storage.corrupt_indexes()) - set(rep.unrepairable)
        for index in sorted(left):
            rep.unrepairable[index] = "still corrupt after the rewrite"
        return rep
    finally:
        storage.close()


def _term(storage: Any, index: int) -> Optional[int]:
    """The term of the stored entry at `index`, or None when it is outside the log or corrupt itself."""
    try:
        return storage.records(index, index + 1).term(0)
    except Exception:
        return None
