"""One API shape: the same read/entries/wait_for_leader/promote on Client, AsyncClient, RaftLog and SyncRaftLog,
Appended prints as its index, the package lists its API, and typed errors for a locked dir, a file, a taken port."""
from __future__ import annotations

import asyncio
import inspect
import os
import pydoc
import socket
import warnings

import pytest

import raftlog
from raftlog.client import AsyncClient, Client
from raftlog.embed import RaftLog, SyncRaftLog
from raftlog.runtime.launcher import free_ports

FACES = (Client, AsyncClient, RaftLog, SyncRaftLog)


def test_appended_prints_as_its_index():
    index = raftlog.Appended(7, result="r")
    assert (str(index), f"{index}", f"{index:>3}", int(index), index + 1) == ("7", "7", "  7", 7, 8)
    assert repr(index) == "Appended(7, result='r')"


def test_dir_and_help_list_the_api():
    for name in ("open", "open_sync", "Client", "AsyncClient", "RaftLog", "SyncRaftLog", "Appended",
                 "DataDirLocked", "NotADirectory", "AddressInUse", "Unreachable", "NoLeader", "RequestRejected"):
        assert name in dir(raftlog) and name in raftlog.__all__, name
    text = pydoc.plain(pydoc.render_doc(raftlog))
    for name in ("class Client", "class AsyncClient", "class RaftLog", "class SyncRaftLog", "open("):
        assert name in text, name


def test_the_package_is_typed():
    assert os.path.exists(os.path.join(os.path.dirname(raftlog.__file__), "py.typed"))


def test_every_public_method_of_every_face_has_a_docstring():
    missing = [f"{cls.__name__}.{name}" for cls in FACES for name, _ in inspect.getmembers(cls)
               if not name.startswith("_") and not inspect.getdoc(getattr(cls, name))]
    assert missing == []


@pytest.mark.parametrize("face", FACES)
def test_the_same_signatures_on_every_face(face):
    read = inspect.signature(face.read).parameters
    assert read["stop"].default is None and read["limit"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "max_lag" in inspect.signature(face.promote).parameters
    entries = inspect.signature(face.entries).parameters
    assert entries["follow"].default is True
    assert inspect.signature(face.wait_for_leader).parameters["timeout"].default == 10.0


def test_read_entries_and_wait_for_leader_mean_the_same_on_the_log_and_the_client(tmp_path):
    address = f"127.0.0.1:{free_ports(1)[0]}"

    async def scenario() -> None:
        async with raftlog.open(str(tmp_path / "d"), peers={1: address}, sync=False) as log:
            await log.wait_for_leader()
            first = await log.append_many([b"a", b"b", b"c", b"d"])
            async with AsyncClient([address]) as client:
                assert await client.wait_for_leader() == 1
                for face in (log, client):
                    got = await face.read(first[1], stop=first[3])
                    assert [e.data for e in got] == [b"b", b"c"], face
                    got = await face.read(first[0], limit=3)
                    assert [e.data for e in got] == [b"a", b"b", b"c"], face
                    assert [e.data async for e in face.entries(first[2], follow=False)] == [b"c", b"d"]
                with pytest.warns(DeprecationWarning, match="limit= and consistency= by keyword"):
                    old = await client.read(first[0], 2, "linearizable")
                assert [e.data for e in old] == [b"a", b"b"]         # the old positional meaning: limit
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                await log.read(first[0], first[1])                    # RaftLog: positional stop, no warning
    asyncio.run(scenario())


def test_a_locked_data_dir_is_a_typed_error(tmp_path):
    with raftlog.open_sync(str(tmp_path / "d"), sync=False):
        with pytest.raises(raftlog.DataDirLocked) as caught:
            raftlog.open_sync(str(tmp_path / "d"), sync=False)
    assert isinstance(caught.value, raftlog.RaftlogError) and "already open for writing" in str(caught.value)


def test_a_file_as_data_dir_is_a_typed_error_that_old_handlers_still_catch(tmp_path):
    (tmp_path / "f").write_text("not a dir")
    with pytest.raises(raftlog.NotADirectory) as caught:
        raftlog.open_sync(str(tmp_path / "f"), sync=False)
    assert isinstance(caught.value, FileExistsError) and isinstance(caught.value, raftlog.DataDirError)


def test_an_address_in_use_is_a_typed_error_that_old_handlers_still_catch(tmp_path):
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(raftlog.AddressInUse) as caught:
            raftlog.open_sync(str(tmp_path / "d"), peers={1: address}, sync=False)
    finally:
        holder.close()
    assert isinstance(caught.value, OSError) and address in str(caught.value)


def test_a_client_with_nothing_listening_raises_unreachable_at_once_with_fail_fast_else_no_leader():
    address = f"127.0.0.1:{free_ports(1)[0]}"
    with Client([address], fail_fast=True, timeout=60) as client:      # without fail_fast: NoLeader after 60 s
        with pytest.raises(raftlog.Unreachable, match=f"{address} refused the connection") as caught:
            client.append(b"x")
    assert isinstance(caught.value, ConnectionError)
    with Client([address], timeout=0.5) as client:
        with pytest.raises(raftlog.NoLeader, match=f"no leader: 0 of 1 members reachable .{address} refused"):
            client.append(b"x")


def test_the_blocking_faces_read_and_follow_alike(tmp_path):
    address = f"127.0.0.1:{free_ports(1)[0]}"
    with raftlog.open_sync(str(tmp_path / "d"), peers={1: address}, sync=False) as log:
        log.wait_for_leader()
        first = log.append_many([b"a", b"b", b"c"])
        with Client([address]) as client:
            assert client.wait_for_leader() == 1
            for face in (log, client):
                assert [e.data for e in face.read(first[0], stop=first[2])] == [b"a", b"b"]
                assert [e.data for e in face.read(first[0], limit=1)] == [b"a"]
                assert [e.data for e in face.entries(first[1], follow=False)] == [b"b", b"c"]
            last = first[2]
            for face in (log, client):
                follow = face.entries(last)
                assert next(follow).index == last
                last = log.append(b"later")
                assert next(follow).index == last      # waited for: it committed after the follow began
                follow.close()
