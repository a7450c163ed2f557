"""Request encodings the client and the node share, beyond the codec's frames: admin requests and read consistency.

The client (client.py) builds them, the node's services (runtime/membership.py,
runtime/reads.py) read them; both import this module and neither imports the other.
"""
from __future__ import annotations

import json

from raftlog.hot import KIND_CONF, READ_LEASE, READ_LINEARIZABLE, READ_STALE, RecordBatch

CONSISTENCY = {"stale": READ_STALE, "linearizable": READ_LINEARIZABLE, "lease": READ_LEASE}


def consistency_code(consistency: str) -> int:
    """The Read frame's consistency byte for "linearizable", "lease" or "stale"; ValueError otherwise."""
    try:
        return CONSISTENCY[consistency]
    except KeyError:
        raise ValueError(f"consistency must be one of {', '.join(CONSISTENCY)}, not {consistency!r}") from None


def admin_request(body: dict) -> RecordBatch:
    """The records of an admin request (what the client sends in an Append): one KIND_CONF record of JSON.

    Bodies (runtime/membership.py answers them):
        {"op": "add", "id": 4, "address": "127.0.0.1:7004", "learner": true}
        {"op": "remove", "id": 2}
        {"op": "promote", "id": 4, "max_lag": 0}
        {"op": "transfer", "to": 3}
    """
    return RecordBatch.encode(0, KIND_CONF, [json.dumps(body, separators=(",", ":")).encode()])


# -- backup (runtime/backup.py serves it, client.py's backup() reads it) ---------------------
# The request is an admin request {"op": "backup"}. The reply is a stream on its request id:
# Entries frames whose one KIND_DATA record each is the next piece of the copy (`next_index`
# is the count of bytes sent with it, `indexes` holds the piece's offset), then one
# StatusReply whose JSON is the backup header's fields without `created_at` and `raftlog`
# (raftlog.storage.backup_file.BackupHeader), or an Error frame instead at any point. With a
# snapshot file the pieces are that file's `snapshot_size` bytes, then the copy's.
BACKUP_OP = "backup"
BACKUP_PIECE_BYTES = 1 << 20      # bytes per Entries frame: far below the frame limit (DEFAULT_MAX_FRAME)


def backup_request() -> RecordBatch:
    """The records of a backup request."""
    return admin_request({"op": BACKUP_OP})


def is_backup_request(records: RecordBatch) -> bool:
    """True when an admin request's records (one KIND_CONF record) ask for a backup."""
    try:
        body = json.loads(bytes(records.payload(0)))
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("op") == BACKUP_OP
