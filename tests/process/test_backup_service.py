"""runtime/backup.py's BackupService on a real data dir in this process, its copy made by a real child process:
what it streams, one backup at a time, a storage without a data dir, and a client that goes away."""
from __future__ import annotations

import asyncio
import json
import subprocess
import zlib

import pytest

from raftlog.core.messages import ConfState, HardState
from raftlog.core.storage import MemoryStorage
from raftlog.hot import (FRAME_ENTRIES, FRAME_ERROR, FRAME_STATUS_REPLY, KIND_DATA, FrameDecoder, RecordBatch,
                         encode_error)
from raftlog.runtime.backup import BackupService
from raftlog.storage.lmdb import LmdbStorage
from raftlog.wire.requests import BACKUP_PIECE_BYTES
from support.async_wait import until

pytestmark = pytest.mark.process


class Conn:
    """A client connection double: frames sent to it are decoded and kept; it never backs up."""

    def __init__(self) -> None:
        self.frames: list[tuple] = []
        self.closed = False
        self.write_paused = False
        self.on_writable = None

    def take(self, frame: bytes) -> None:
        if not self.closed:
            self.frames.extend(FrameDecoder(1 << 30).feed(frame))


class Port:
    """The NodePort parts BackupService uses: node_id, storage, reply, error."""

    def __init__(self, storage) -> None:
        self.node_id = 7
        self.storage = storage

    def reply(self, conn: Conn, frame: bytes) -> None:
        conn.take(frame)

    def error(self, conn: Conn, request_id: int, code: int, message: str) -> None:
        conn.take(encode_error(request_id, code, message=message))


@pytest.fixture
def storage(tmp_path):
    s = LmdbStorage.open(str(tmp_path / "d"), node_id=7, cluster_id="c")
    payloads = [bytes(300) + b"%d" % i for i in range(20_000)]       # a copy of several pieces
    s.save(hard_state=HardState(2, 7, 19_000), first_index=1, conf_state=ConfState(voters=(7,)),
           records=RecordBatch.encode(2, KIND_DATA, payloads))
    yield s
    s.close()


def ended(conn: Conn) -> list[tuple] | None:
    """The frames sent to `conn` once the last one ends the backup (a StatusReply or an Error), else None."""
    return conn.frames if conn.frames and conn.frames[-1][0] != FRAME_ENTRIES else None


async def until_ended(conn: Conn, what: str) -> list[tuple]:
    return await until(lambda: ended(conn), what, timeout=120, seen=lambda: [f[0] for f in conn.frames][-3:])


def test_a_backup_streams_the_copy_in_pieces_then_its_header(storage):
    async def run() -> None:
        service = BackupService(Port(storage))
        conn = Conn()
        service.handle(conn, 5)
        frames = await until_ended(conn, "the backup's last frame")
        *pieces, end = frames
        assert end[0] == FRAME_STATUS_REPLY and end[1] == 5, end
        header = json.loads(end[2])
        data = b"".join(f[4].payload(0) for f in pieces)
        assert len(pieces) > 1 and all(f[1] == 5 and len(f[4]) == 1 for f in pieces)
        assert all(len(f[4].payload(0)) == BACKUP_PIECE_BYTES for f in pieces[:-1])
        assert [f[3][0] for f in pieces] == [k * BACKUP_PIECE_BYTES for k in range(len(pieces))]
        assert (header["data_size"], header["data_crc32"]) == (len(data), zlib.crc32(data))
        assert (header["index"], header["term"], header["node_id"], header["last_index"]) == (19_000, 2, 7, 20_000)
        assert data[16:20] == (0xBEEFC0DE).to_bytes(4, "little")      # LMDB's magic in its first meta page
    asyncio.run(run())


def test_one_backup_at_a_time(storage):
    async def run() -> None:
        service = BackupService(Port(storage))
        first, second = Conn(), Conn()
        service.handle(first, 1)
        service.handle(second, 2)
        assert second.frames[0][0] == FRAME_ERROR and "already sending a backup" in second.frames[0][5]
        await until_ended(first, "the first backup's last frame")
        assert first.frames[-1][0] == FRAME_STATUS_REPLY
        third = Conn()
        service.handle(third, 3)               # the first one is done: the next is served
        await until_ended(third, "the third backup's last frame")
        assert third.frames[-1][0] == FRAME_STATUS_REPLY
    asyncio.run(run())


def test_a_node_without_a_data_dir_refuses(storage):
    async def run() -> None:
        conn = Conn()
        BackupService(Port(MemoryStorage())).handle(conn, 9)
        assert conn.frames[0][0] == FRAME_ERROR and "no data dir" in conn.frames[0][5]
    asyncio.run(run())


def test_a_client_that_goes_away_ends_the_backup_and_its_child(storage, monkeypatch):
    children = []
    spawn = subprocess.Popen

    def spawn_and_keep(*args, **kw):
        children.append(spawn(*args, **kw))
        return children[-1]
    monkeypatch.setattr(subprocess, "Popen", spawn_and_keep)

    async def run() -> None:
        service = BackupService(Port(storage))
        conn = Conn()
        service.handle(conn, 4)
        await until(lambda: conn.frames, "the first piece", timeout=120)
        conn.closed = True
        (task,) = service._tasks
        await asyncio.wait_for(task, 60)
        assert not service._tasks
        assert all(f[0] == FRAME_ENTRIES for f in conn.frames)
        assert len(children) == 1 and children[0].returncode is not None     # the copy was stopped and reaped
    asyncio.run(run())
