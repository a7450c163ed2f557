"""A write that fails for any reason but lack of space (here EIO, as from a failed fsync) is fail-stop.

LMDB's state after a failed sync cannot be trusted, so the node never retries that commit and
never acknowledges what it carried: the append fails, the node stops with one log line, and
the data dir reopens with everything acknowledged before and nothing of the failed write.
The failure is injected at the storage boundary: the storage's `save` raises as the commit
would, once, for the write that carries the marked entry.
"""
from __future__ import annotations

import asyncio
import errno
import logging

import pytest

import raftlog
from raftlog import Closed

MARK = b"this-write-fails"


def test_a_failed_commit_stops_the_node_and_acknowledges_nothing(tmp_path, caplog) -> None:
    path = str(tmp_path / "log")
    calls: list[int] = []

    async def main() -> None:
        async with raftlog.open(path) as log:
            before = [await log.append(b"ok-%d" % k) for k in range(5)]
            node = log._node
            storage = node.storage
            real_save = storage.save

            def save(**kw):
                records = kw.get("records")
                if records is not None and any(records.payload(i) == MARK for i in range(len(records))):
                    calls.append(1)
                    raise OSError(errno.EIO, "Input/output error")
                return real_save(**kw)
            storage.save = save
            with pytest.raises(Closed):
                await log.append(MARK)
            with pytest.raises(OSError):
                await asyncio.wait_for(node.wait_stopped(), 30)
            assert [int(i) for i in before] == list(range(2, 7))

    with caplog.at_level(logging.ERROR, logger="raftlog.node"):
        asyncio.run(main())
    assert calls == [1], "the failed commit is never retried"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "storage write failed, stopping" in lines[0] and "Input/output error" in lines[0]
    with raftlog.open_sync(path) as log:
        assert [e.data for e in log.read(1)] == [b"ok-%d" % k for k in range(5)]
