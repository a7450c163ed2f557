"""`raftlog inspect`: a read-only dump of one data dir, safe beside the node that writes it."""
from __future__ import annotations

import base64
from typing import Any, Optional

from raftlog.hot import KIND_CONF, KIND_DATA, KIND_NOOP, KIND_SESSION

KIND_NAMES = {KIND_DATA: "data", KIND_NOOP: "noop", KIND_CONF: "conf", KIND_SESSION: "session"}
_CHUNK = 4096


def inspect_dir(path: str, start: Optional[int] = None, stop: Optional[int] = None) -> dict[str, Any]:
    """The data dir's identity, hard state, bounds, snapshot and entries `[start, stop]` (inclusive, clamped).

    Opens the LMDB environment read-only, so it never writes and may run while the node
    is up (it sees the last committed transaction). FileNotFoundError for a missing or empty
    dir, DataDirError (one line with its remedy) for a damaged one or one that is not raftlog's.
    """
    from raftlog.storage.lmdb import LmdbStorage

    with LmdbStorage.open(path, node_id=None, cluster_id=None, readonly=True) as storage:
        identity = storage.identity()
        hard = storage.hard_state()
        snap = storage.snapshot_meta()
        first = storage.first_index()
        last = storage.last_index()
        lo = max(first, start or first)
        hi = min(last, stop if stop is not None else last)
        entries = []
        i = lo
        while i <= hi:
            batch = storage.records(i, min(hi, i + _CHUNK - 1) + 1)
            for index, term, kind, payload in batch.entries(i):
                entries.append({"index": index, "term": term, "kind": KIND_NAMES.get(kind, str(kind)),
                                "data_b64": base64.b64encode(payload).decode()})
            i += len(batch)
        return {"node_id": identity.node_id, "cluster_id": identity.cluster_id, "term": hard.term,
                "vote": hard.vote, "commit": hard.commit, "first_index": first, "last_index": last,
                "snapshot": {"index": snap.index, "term": snap.term}, "entries": entries}


def format_text(dump: dict[str, Any], width: int = 60) -> str:
    """The human form of inspect_dir's result: a header, then one line per entry."""
    lines = [
        f"node {dump['node_id']} of cluster {dump['cluster_id']!r}",
        f"term {dump['term']}  vote {dump['vote']}  commit {dump['commit']}",
        f"entries [{dump['first_index']}, {dump['last_index']}]  snapshot index {dump['snapshot']['index']} "
        f"term {dump['snapshot']['term']}",
    ]
    if dump["entries"]:
        lines.append(f"{'index':>8} {'term':>6} {'kind':<7} data")
    for e in dump["entries"]:
        data = base64.b64decode(e["data_b64"])
        text = data.decode("utf-8", "backslashreplace")
        if len(text) > width:
            text = text[:width - 3] + "..."
        lines.append(f"{e['index']:>8} {e['term']:>6} {e['kind']:<7} {text}")
    return "\n".join(lines)
