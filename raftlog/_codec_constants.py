"""The wire and record constants, written once: both codec twins and the facade import them from here.

Record kinds, frame types, handshake roles, error codes and read consistencies are part of
the formats (see docs/formats.md): a change here is a protocol change.
"""
from __future__ import annotations

RECORD_HEADER_SIZE = 17
FRAME_HEADER_SIZE = 5
DEFAULT_MAX_FRAME = 64 << 20
MAGIC = b"RLOG"
PROTOCOL_VERSION = 1

KIND_DATA = 0      # a user payload
KIND_NOOP = 1      # the empty entry a new leader appends at the start of its term
KIND_CONF = 2      # a configuration change
KIND_SESSION = 3   # client session bookkeeping (exactly-once appends)

FRAME_HANDSHAKE = 1
FRAME_RAFT = 2
FRAME_APPEND = 10
FRAME_APPENDED = 11
FRAME_ERROR = 12
FRAME_READ = 13
FRAME_ENTRIES = 14
FRAME_STATUS = 15
FRAME_STATUS_REPLY = 16

ROLE_PEER = 1
ROLE_CLIENT = 2

ERR_NOT_LEADER = 1
ERR_TIMEOUT = 2
ERR_TOO_LARGE = 3
ERR_BAD_REQUEST = 4
ERR_SHUTTING_DOWN = 5
ERR_CLUSTER_MISMATCH = 6
ERR_VERSION = 7
ERR_INTERNAL = 8
ERR_SESSION_EXPIRED = 9   # an exactly-once session the log no longer knows (the client raises SessionExpired)
ERR_REMOVED = 10          # the node was removed from the cluster; the message names the members (Removed)
ERR_COMPACTED = 11        # a read below the first index kept; the error's leader_id field carries that first index

READ_STALE = 0          # a Read answered from the serving node's applied log at once
READ_LINEARIZABLE = 1   # a Read that waits for a ReadIndex round (dissertation 6.4)
READ_LEASE = 2          # a Read a leader answers while its lease holds
