"""The Cython modules and their pure twins export the same names (so they cannot drift)."""
from __future__ import annotations

from types import ModuleType

import pytest

import raftlog
from raftlog import _codec_py, _log_py, hot

LOG_NAMES = ["LogIndex", "match_append", "quorum_commit", "joint_quorum_commit"]
CLASS_NAMES = {"_log": ["LogIndex"], "_codec": ["RecordBatch", "FrameDecoder"]}


def public(obj: object) -> set[str]:
    """The public attribute names of a class or module."""
    return {name for name in dir(obj) if not name.startswith("_")}


def test_log_all_is_pinned(log_mod: ModuleType) -> None:
    assert log_mod.__all__ == LOG_NAMES


def test_codec_all_matches_the_twin(codec_mod: ModuleType) -> None:
    assert codec_mod.__all__ == _codec_py.__all__


@pytest.mark.parametrize("name", ["_log", "_codec"])
def test_every_exported_name_is_present(name: str, log_mod: ModuleType, codec_mod: ModuleType) -> None:
    mod = log_mod if name == "_log" else codec_mod
    for export in mod.__all__:
        assert hasattr(mod, export), export


def test_constants_equal_the_twin(codec_mod: ModuleType) -> None:
    for name in _codec_py.__all__:
        value = getattr(_codec_py, name)
        if isinstance(value, (int, bytes)):
            assert getattr(codec_mod, name) == value, name


@pytest.mark.parametrize("name", ["_log", "_codec"])
def test_classes_have_the_same_public_members(name: str, log_mod: ModuleType, codec_mod: ModuleType) -> None:
    mod, twin = (log_mod, _log_py) if name == "_log" else (codec_mod, _codec_py)
    for cls in CLASS_NAMES[name]:
        assert public(getattr(mod, cls)) == public(getattr(twin, cls)), cls


def test_facade_exports_everything() -> None:
    assert set(hot.__all__) == {"IMPLEMENTATION", *_log_py.__all__, *_codec_py.__all__}
    for name in hot.__all__:
        assert hasattr(hot, name), name
    assert raftlog.IMPLEMENTATION == hot.IMPLEMENTATION in ("cython", "python")
