"""The hot path facade: LogIndex, match_append, quorum rules and the codec, Cython or pure Python.

Everything else in raftlog imports these names from here, never from the implementations.
"""
from __future__ import annotations

from raftlog._ext import load

_log, _log_impl = load("_log")
_codec, _codec_impl = load("_codec")

IMPLEMENTATION = "cython" if (_log_impl, _codec_impl) == ("cython", "cython") else "python"

LogIndex = _log.LogIndex
match_append = _log.match_append
quorum_commit = _log.quorum_commit
joint_quorum_commit = _log.joint_quorum_commit

globals().update({name: getattr(_codec, name) for name in _codec.__all__})

__all__ = ["IMPLEMENTATION", *_log.__all__, *_codec.__all__]
