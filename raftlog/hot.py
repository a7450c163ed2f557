"""The hot path facade: LogIndex, match_append, quorum rules and the codec, Cython or pure Python.

Everything else in raftlog imports these names from here, never from the implementations.
Every name is listed explicitly, so readers and type checkers see what the facade holds;
tests/unit/test_hot_api.py pins the list against both implementations.
"""
from __future__ import annotations

from raftlog._codec_constants import (  # noqa: F401 - re-exported
    RECORD_HEADER_SIZE, FRAME_HEADER_SIZE, DEFAULT_MAX_FRAME, MAGIC, PROTOCOL_VERSION, KIND_DATA,
    KIND_NOOP, KIND_CONF, KIND_SESSION, FRAME_HANDSHAKE, FRAME_RAFT, FRAME_APPEND, FRAME_APPENDED,
    FRAME_ERROR, FRAME_READ, FRAME_ENTRIES, FRAME_STATUS, FRAME_STATUS_REPLY, ROLE_PEER,
    ROLE_CLIENT, ERR_NOT_LEADER, ERR_TIMEOUT, ERR_TOO_LARGE, ERR_BAD_REQUEST, ERR_SHUTTING_DOWN,
    ERR_CLUSTER_MISMATCH, ERR_VERSION, ERR_INTERNAL, ERR_SESSION_EXPIRED, ERR_REMOVED, ERR_COMPACTED,
    READ_STALE, READ_LINEARIZABLE,
    READ_LEASE,
)
from raftlog._ext import load

_log, _log_impl = load("_log")
_codec, _codec_impl = load("_codec")

IMPLEMENTATION: str = "cython" if (_log_impl, _codec_impl) == ("cython", "cython") else "python"

# The log index, AppendEntries matching and the quorum rules (src_pyx/_log.pyx, _log_py.py).
LogIndex = _log.LogIndex
match_append = _log.match_append
quorum_commit = _log.quorum_commit
joint_quorum_commit = _log.joint_quorum_commit

# Records, batches and frames (src_pyx/_codec.pyx, _codec_py.py).
RecordBatch = _codec.RecordBatch
FrameDecoder = _codec.FrameDecoder
encode_record = _codec.encode_record
encode_records = _codec.encode_records
encode_handshake = _codec.encode_handshake
encode_raft = _codec.encode_raft
encode_append = _codec.encode_append
encode_appended = _codec.encode_appended
encode_appended_run = _codec.encode_appended_run
encode_error = _codec.encode_error
encode_read = _codec.encode_read
encode_entries = _codec.encode_entries
encode_status = _codec.encode_status
encode_status_reply = _codec.encode_status_reply

__all__ = ["IMPLEMENTATION", *_log.__all__, *_codec.__all__]
