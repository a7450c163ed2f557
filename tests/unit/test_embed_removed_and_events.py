"""Embedding API, issue 15: a removed member (Removed, entries() ends, status), leader-change events,
and an embedded cluster secured with mutual TLS and a shared secret."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time

import pytest

import raftlog
from raftlog.client import AsyncClient, RequestRejected
from raftlog.hot import ERR_REMOVED, FRAME_ERROR, KIND_DATA, RecordBatch, encode_append
from raftlog.runtime.launcher import free_ports
from raftlog.wire.addresses import parse_peers

from support.async_wait import until


def _peers(n: int) -> dict[int, str]:
    ports = free_ports(n)
    return {i: f"127.0.0.1:{ports[i - 1]}" for i in range(1, n + 1)}


def test_a_removed_member_raises_removed_ends_entries_and_shows_removed(tmp_path) -> None:
    async def main() -> None:
        peers = _peers(3)
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers) for i in peers}
        for log in logs.values():
            await log.start()
        try:
            lid = await logs[1].wait_for_leader(10)
            gone = next(i for i in peers if i != lid)
            await logs[lid].append(b"before")
            seen: list[bytes] = []

            async def follow() -> None:
                async for entry in logs[gone].entries(1):
                    seen.append(entry.data)
            follower = asyncio.create_task(follow())
            await until(lambda: seen == [b"before"], f"node {gone} to follow the log", seen=lambda: seen)
            await logs[lid].remove_member(gone)
            await until(lambda: logs[gone].status()["removed"], f"node {gone} to know it was removed",
                        seen=logs[gone].status)
            assert logs[gone].status()["role"] == "removed"
            with pytest.raises(raftlog.Removed) as caught:
                await logs[gone].append(b"refused")
            rest = {i: a for i, a in peers.items() if i != gone}
            assert caught.value.members == rest and caught.value.node_id == gone
            assert f"node {gone} was removed from the cluster" in str(caught.value)
            await until(follower.done, f"node {gone}'s entries() to end", seen=lambda: seen)
            follower.result()
            # On the wire: a typed refusal naming the removed node and the members (ID=HOST:PORT,...).
            reply = await _raw_append(peers[gone])
            assert (reply[0], reply[2], reply[3]) == (FRAME_ERROR, ERR_REMOVED, gone), reply
            assert parse_peers(reply[4]) == rest
            # A client that knows only the removed node is sent on to a member (nothing was proposed there).
            async with AsyncClient([peers[gone]]) as client:
                index = await client.append(b"via the removed node")
            assert [e.data for e in await logs[lid].read(index, index + 1)] == [b"via the removed node"]
            assert not logs[lid].status()["removed"]
        finally:
            for log in logs.values():
                await log.close()

    asyncio.run(main())


async def _raw_append(address: str) -> tuple:
    """The reply frame to one plain Append sent to `address` (no redirect followed)."""
    client = AsyncClient([address], sessions=False)
    try:
        conn = await client._connection(time.monotonic() + 10)
        records = RecordBatch.encode(0, KIND_DATA, [b"raw"])
        return await asyncio.wait_for(conn.request(lambda rid: encode_append(rid, records)), 10)
    finally:
        await client.close()


def test_leader_changes_yields_the_initial_leader_and_each_change(tmp_path) -> None:
    async def main() -> None:
        peers = _peers(3)
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers) for i in peers}
        for log in logs.values():
            await log.start()
        watcher = next(iter(logs))
        events: list[tuple[int, int | None]] = []

        async def watch() -> None:
            async for event in logs[watcher].leader_changes():
                events.append(event)
        task = asyncio.create_task(watch())
        try:
            lid = await logs[watcher].wait_for_leader(10)
            await until(lambda: events and events[-1][1] == lid, "the first leader", seen=lambda: events)
            first_term = events[-1][0]
            target = next(i for i in peers if i != lid)
            await logs[target].transfer_leadership(target)
            await until(lambda: events[-1][1] == target, f"node {target} as the next leader", seen=lambda: events)
            assert events[-1][0] > first_term
            terms = [t for t, _ in events]
            assert terms == sorted(terms), events
            assert all(a != b for a, b in zip(events, events[1:])), "each event is a change"
        finally:
            for log in logs.values():
                await log.close()
        await until(task.done, "the iterator to end when the log closes", seen=lambda: events)
        task.result()

    asyncio.run(main())


def test_leader_changes_reports_no_leader_when_the_leader_stops(tmp_path) -> None:
    async def main() -> None:
        peers = _peers(3)
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers) for i in peers}
        for log in logs.values():
            await log.start()
        try:
            lid = await logs[1].wait_for_leader(10)
            watcher = next(i for i in peers if i != lid)
            events: list[tuple[int, int | None]] = []
            changes = logs[watcher].leader_changes()

            async def watch() -> None:
                async for event in changes:
                    events.append(event)
            task = asyncio.create_task(watch())
            await until(lambda: events and events[-1][1] == lid, "the current leader first", seen=lambda: events)
            logs[lid]._cfg.transfer_on_stop = False        # a crash-like stop: the others must elect
            await logs[lid].close()
            await until(lambda: events[-1][1] not in (lid, None), "a new leader", seen=lambda: events)
            assert (None in [leader for _, leader in events]), events
        finally:
            for log in logs.values():
                await log.close()
        await until(task.done, "the iterator to end", seen=lambda: events)

    asyncio.run(main())


def test_sync_on_leader_change_calls_back_with_the_current_leader(tmp_path) -> None:
    got: list[tuple[int, int | None]] = []
    with raftlog.open_sync(str(tmp_path / "one")) as log:
        unsubscribe = log.on_leader_change(lambda term, leader: got.append((term, leader)))
        assert got and got[-1][1] == 1 and got[-1][0] == log.term
        unsubscribe()
        listeners = log._get(lambda: list(log._log._live().leadership.listeners))
        assert listeners == [], "unsubscribed from another thread, the callback is still registered"


def test_sync_on_leader_change_can_unsubscribe_from_its_own_callback(tmp_path) -> None:
    """The callback runs on the log's thread: unsubscribing there must not wait for that thread."""
    box: dict = {}

    def once(term: int, leader: int | None) -> None:
        box["calls"] = box.get("calls", 0) + 1
        box["unsubscribe"]()

    with raftlog.open_sync(str(tmp_path / "one")) as log:
        box["unsubscribe"] = lambda: None                 # the first call comes before the function is returned
        box["unsubscribe"] = log.on_leader_change(once)
        watch = log._get(lambda: log._log._live().leadership)
        log._get(lambda: watch.observe(watch.term + 1, 1))         # a change, as the node reports one
        assert log._get(lambda: list(watch.listeners)) == []
        log._get(lambda: watch.observe(watch.term + 1, 1))
        assert box["calls"] == 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command makes the test certificates")
def test_an_embedded_cluster_with_tls_and_a_secret_refuses_a_peer_without_the_secret(tmp_path, caplog) -> None:
    from raftlog.wire.tls import make_dev_pki
    node_tls, client_tls = make_dev_pki(str(tmp_path / "pki"))
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(16).hex().encode())
    os.chmod(secret, 0o600)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(os.urandom(16).hex().encode())
    os.chmod(wrong, 0o600)
    assert raftlog.TlsFiles is type(node_tls)

    async def main() -> None:
        peers = _peers(3)
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers, tls=node_tls,
                                secret_file=str(secret if i != 3 else wrong)) for i in peers}
        for log in logs.values():
            await log.start()
        try:
            lid = await logs[1].wait_for_leader(10)
            assert lid in (1, 2)
            index = await logs[lid].append(b"secured")
            await until(lambda: logs[1].applied_index >= index and logs[2].applied_index >= index,
                        "both holders of the secret to apply the entry",
                        seen=lambda: (logs[1].status(), logs[2].status()))
            await until(lambda: "did not prove the shared secret" in caplog.text,
                        "node 1 or 2 to refuse node 3 (wrong secret)", seen=lambda: caplog.text[-2000:])
            assert logs[3].applied_index < index
            async with AsyncClient([peers[lid]], tls=client_tls, secret=secret.read_bytes()) as client:
                assert [e.data for e in await client.read(index, limit=1)] == [b"secured"]
            with pytest.raises(RequestRejected):
                async with AsyncClient([peers[lid]], tls=client_tls, timeout=5) as client:
                    await client.append(b"no secret")
        finally:
            for log in logs.values():
                await log.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())


def test_open_refuses_a_short_secret_and_a_wrong_tls_type(tmp_path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"tooshort")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        raftlog.open(str(tmp_path / "a"), secret_file=str(short))
    with pytest.raises(ValueError, match="TlsFiles"):
        raftlog.open(str(tmp_path / "b"), tls=("cert", "key", "ca"))


def test_a_client_that_knows_no_other_member_raises_removed() -> None:
    """ERR_REMOVED naming only the node itself (or nothing): nowhere to go, so Removed, not a retry."""
    class _Conn:
        address = "127.0.0.1:7003"

    client = AsyncClient(["127.0.0.1:7003"])
    for spec, members in (("", {}), ("3=127.0.0.1:7003", {3: "127.0.0.1:7003"})):
        with pytest.raises(raftlog.Removed) as caught:
            client._follow_members(_Conn(), 3, spec, "node 3 was removed from the cluster (members 1)")   # type: ignore[arg-type]
        assert caught.value.node_id == 3 and caught.value.members == members


def test_sync_on_leader_change_is_not_called_after_unsubscribe_returned(tmp_path) -> None:
    """Unsubscribing from another thread waits for a notification in progress on the log's thread."""
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    late: list = []

    def slow(term: int, leader: int | None) -> None:
        if term > 1:
            entered.set()
            release.wait(30)

    def watched(term: int, leader: int | None) -> None:
        if returned.is_set():
            late.append((term, leader))

    with raftlog.open_sync(str(tmp_path / "one")) as log:
        log.on_leader_change(slow)
        unsubscribe = log.on_leader_change(watched)
        watch = log._get(lambda: log._log._live().leadership)
        log._loop.call_soon_threadsafe(watch.observe, watch.term + 1, 1)      # the notification starts ...
        assert entered.wait(30)                                               # ... and is inside `slow`
        threading.Timer(0.2, release.set).start()     # (any delay: the new code waits for it, the old did not)
        unsubscribe()
        returned.set()
        log._get(lambda: None)                        # the notification is over
    assert late == [], "the callback ran after unsubscribe() had returned"
