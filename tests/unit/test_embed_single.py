"""The embedding API on one node and on three nodes in one event loop.

Append, read, entries, state machines, snapshots, open_sync.
"""
from __future__ import annotations

import asyncio
import json
import threading

import pytest

import raftlog
from raftlog import Compacted, Entry, NotLeader
from raftlog.core.messages import MessageType
from raftlog.core.snapshot import hold_transfers

from support.async_wait import until
from support.nodes import free_port


class KV:
    """A tiny key-value state machine: `key=value` sets, `-key` deletes; apply returns the previous value."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.applied: list[int] = []
        self.restored_from: list[int] = []

    def apply(self, entry: Entry):
        self.applied.append(entry.index)
        text = entry.data.decode()
        if text.startswith("-"):
            return self.data.pop(text[1:], None)
        key, value = text.split("=", 1)
        old = self.data.get(key)
        self.data[key] = value
        return old

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def restore(self, f) -> None:
        self.data = json.loads(f.read())
        self.restored_from.append(len(self.data))


def run(coro):
    return asyncio.run(coro)


def test_append_read_close_reopen_everything_intact(tmp_path) -> None:
    path = str(tmp_path / "log")

    async def first() -> list[int]:
        async with raftlog.open(path) as log:
            assert log.role == "leader" and log.leader_id == 1
            a = await log.append(b"one")
            many = await log.append_many([b"two", b"three", b"four"])
            assert [int(x) for x in many] == [a + 1, a + 2, a + 3]
            assert log.commit_index >= a + 3 and log.applied_index >= a + 3
            got = await log.read(a)
            assert [(e.index, e.data) for e in got] == [(a, b"one"), (a + 1, b"two"), (a + 2, b"three"),
                                                      (a + 3, b"four")]
            assert [e.data for e in await log.read(a + 1, a + 3)] == [b"two", b"three"]    # [start, stop)
            return [int(a)] + [int(x) for x in many]

    indexes = run(first())

    async def second() -> None:
        async with raftlog.open(path) as log:
            got = await log.read(1)
            assert [(e.index, e.data) for e in got] == list(zip(indexes, [b"one", b"two", b"three", b"four"]))
            again = await log.append(b"five")
            assert again > indexes[-1]
            assert all(isinstance(e, Entry) and e.term >= 1 for e in got)

    run(second())


def test_state_machine_results_go_to_the_proposer(tmp_path) -> None:
    async def main() -> None:
        kv = KV()
        async with raftlog.open(str(tmp_path / "kv"), state_machine=kv) as log:
            r1 = await log.append(b"a=1")
            r2 = await log.append(b"a=2")
            r3 = await log.append(b"-a")
            assert (r1.result, r2.result, r3.result) == (None, "1", "2")
            assert r2.index == int(r2) == r1 + 1
            assert kv.data == {} and kv.applied == [r1, r2, r3]      # data entries only, in order, once

    run(main())


def test_entries_follow_yields_new_commits_and_resumes(tmp_path) -> None:
    async def main() -> None:
        async with raftlog.open(str(tmp_path / "q")) as log:
            first = await log.append(b"job-0")
            seen: list[Entry] = []

            async def consume() -> None:
                async for e in log.entries(first):
                    seen.append(e)
                    if len(seen) == 5:
                        return

            task = asyncio.create_task(consume())
            # Once it yielded the one entry there is, the consumer is following: the rest are new commits.
            await until(lambda: len(seen) == 1 or task.done(), "the consumer to yield job-0", seen=lambda: seen)
            assert not task.done(), "entries(follow=True) stopped at the end of the log"
            assert [e.data for e in seen] == [b"job-0"]
            for k in range(1, 5):
                await log.append(b"job-%d" % k)
            await asyncio.wait_for(task, 5)
            assert [e.data for e in seen] == [b"job-%d" % k for k in range(5)]
            rest = [e.data async for e in log.entries(seen[2].index + 1, follow=False)]
            assert rest == [b"job-3", b"job-4"]

    run(main())


def test_snapshots_compact_the_log_and_reopen_restores_snapshot_plus_tail(tmp_path) -> None:
    path = str(tmp_path / "snap")

    async def first() -> tuple[dict, int, int]:
        kv = KV()
        async with raftlog.open(path, state_machine=kv, snapshot_every=100, snapshot_tail=20) as log:
            for k in range(5):
                await log.append_many([b"k%d=%d" % (i, k) for i in range(60)])
            await until(lambda: log.status()["snapshot"]["taken"] >= 2 and not log._node.snapshots.busy,
                        "two snapshots taken and none in progress", seen=lambda: log.status()["snapshot"])
            st = log.status()
            snap_index = st["snapshot"]["index"]
            assert snap_index >= 200
            assert log.first_index == snap_index - 20 + 1     # the retained tail
            await log.append_many([b"tail%d=%d" % (i, i) for i in range(10)])   # not in the snapshot
            tail = [e.index for e in await log.read(snap_index + 1)]
            assert len(tail) >= 10
            with pytest.raises(Compacted):
                await log.read(1)
            return dict(kv.data), snap_index, log.applied_index, tail

    data, snap_index, applied, tail = run(first())

    async def second() -> None:
        kv = KV()
        async with raftlog.open(path, state_machine=kv, snapshot_every=100, snapshot_tail=20) as log:
            await until(lambda: log.applied_index >= applied, f"the reopened log to apply up to {applied}",
                        seen=lambda: log.applied_index)
            assert kv.restored_from                      # restored from the snapshot...
            assert kv.applied == tail                    # ...then exactly the entries after it, once
            assert kv.data == data                       # snapshot + replayed tail = the state before
            assert await log.append(b"k0=new")

    run(second())


def test_open_sync_from_plain_threads(tmp_path) -> None:
    kv = KV()
    with raftlog.open_sync(str(tmp_path / "sync"), state_machine=kv) as log:
        assert log.role == "leader"
        out: dict[int, list] = {}

        def writer(t: int) -> None:
            out[t] = [log.append(b"t%d-%d=%d" % (t, i, i)) for i in range(20)]

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        indexes = sorted(int(i) for v in out.values() for i in v)
        assert len(set(indexes)) == 80
        got = log.read(indexes[0])
        assert len(got) == 80 and [e.index for e in got] == indexes
        assert len(kv.data) == 80
        stream = log.entries(indexes[0], follow=False)
        assert sum(1 for _ in stream) == 80
        assert log.append_many([b"x=1", b"y=2"])[1].result is None
    with pytest.raises(raftlog.Closed):
        log.append(b"late")


async def compacted_past(log, index: int) -> None:
    """Wait until `log` compacted past `index` and no snapshot of its own is being written."""
    await until(lambda: log.first_index > index and not log._node.snapshots.busy,
                f"node {log.node_id} to compact past {index}",
                seen=lambda: (log.first_index, log._node.snapshots.busy))


async def caught_up(member, leader) -> None:
    """Wait for `member` to apply what `leader` has applied; same state machine data."""
    target = leader.applied_index
    await until(lambda: member.applied_index >= target, f"node {member.node_id} to apply up to {target}",
                seen=lambda: member.applied_index)
    assert member.state_machine.data == leader.state_machine.data


def test_three_members_in_one_loop_follower_refuses_and_a_restarted_member_catches_up_by_snapshot(tmp_path) -> None:
    async def main() -> None:
        peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
        opts = dict(peers=peers, snapshot_every=200, snapshot_tail=50, engine_options={"snapshot_chunk_bytes": 1024})
        logs = {i: raftlog.open(str(tmp_path / str(i)), node_id=i, state_machine=KV(), **opts) for i in (1, 2, 3)}
        for lg in logs.values():
            await lg.start()
        try:
            leader = await logs[1].wait_for_leader(30)
            follower = next(i for i in logs if i != leader)
            # The follower's hint names the leader once it has heard from it (it may not have yet).
            await until(lambda: logs[follower].leader_id == leader, f"node {follower} to hear from leader {leader}",
                        seen=lambda: logs[follower].leader_id)
            with pytest.raises(NotLeader) as err:
                await logs[follower].append(b"x=1")
            assert err.value.leader_id == leader and err.value.leader_address == peers[leader]
            await logs[follower].close()
            for k in range(6):
                await logs[leader].append_many([b"k%d=%d" % (i, k) for i in range(100)])
            await compacted_past(logs[leader], 100)          # past what the follower had
            logs[follower] = raftlog.open(str(tmp_path / str(follower)), node_id=follower, state_machine=KV(), **opts)
            await logs[follower].start()
            await caught_up(logs[follower], logs[leader])
            assert logs[follower].status()["snapshot"]["index"] > 0          # installed a snapshot
        finally:
            for lg in logs.values():
                await lg.close()

    run(main())


class Blob(KV):
    """A KV whose snapshot is large (padding), so that a transfer takes many chunks."""

    def snapshot(self) -> bytes:
        return json.dumps({"data": self.data, "pad": "x" * (1 << 20)}).encode()

    def restore(self, f) -> None:
        self.data = json.loads(f.read())["data"]
        self.restored_from.append(len(self.data))


CHUNK = 16384         # snapshot_chunk_bytes of the transfer tests: the Blob snapshot is ~64 chunks


async def three_with_a_follower_behind_a_snapshot(tmp_path, logs: dict) -> tuple[int, int, dict]:
    """Three Blob members in `logs`; one follower closed while the leader takes 300 entries and
    compacts past them, so it can only catch up by snapshot. (leader id, follower id, open options)."""
    peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    opts = dict(peers=peers, snapshot_every=100, snapshot_tail=10, engine_options={"snapshot_chunk_bytes": CHUNK})
    logs.update({i: raftlog.open(str(tmp_path / str(i)), node_id=i, state_machine=Blob(), **opts) for i in (1, 2, 3)})
    for lg in logs.values():
        await lg.start()
    leader = await logs[1].wait_for_leader(5)
    f = next(i for i in logs if i != leader)
    await logs[f].close()
    await logs[leader].append_many([b"k%d=%d" % (i, i) for i in range(300)])
    await compacted_past(logs[leader], 100)
    return leader, f, opts


class HeldTransfer:
    """The leader's snapshot transfer to `follower`, held in flight after `chunks` chunks (the engine's
    test hook core/snapshot.hold_transfers), with the byte offset of every chunk sent to it recorded."""

    def __init__(self, leader, follower: int, chunks: int) -> None:
        self.raft = leader._node.raw.raft
        self.follower = follower
        self.at = chunks * CHUNK
        self.offsets: list[int] = []
        self.reached_at = 0
        peers_out = leader._node.peers
        send = peers_out.send

        def spy(msg):
            if msg.type == MessageType.SNAPSHOT and msg.to == follower:
                self.offsets.append(msg.hint_index)
            return send(msg)

        peers_out.send = spy
        hold_transfers(self.raft, self.at)

    def progress(self) -> object:
        """The transfer's {index, size, sent, acked}, or what the leader's progress says instead."""
        pr = self.raft.progress[self.follower]
        return pr.snap.to_dict() if pr.snap is not None else f"no transfer: progress {pr.state}, match {pr.match}"

    async def reached(self) -> None:
        """Wait until the follower acknowledged (holds durably) exactly the held prefix, nothing more in flight."""
        await until(lambda: isinstance(p := self.progress(), dict) and p["acked"] == p["sent"] == self.at,
                    f"the transfer to node {self.follower} to stop at byte {self.at}", seen=self.progress)
        assert self.at < self.progress()["size"], "held past the end: not in the middle of the transfer"
        self.reached_at = len(self.offsets)

    def release(self) -> None:
        """Let the transfer go on."""
        hold_transfers(self.raft, None)

    def check_resumed(self) -> None:
        """Every chunk sent since reached() starts at or past the held prefix: nothing the follower held was resent."""
        since = self.offsets[self.reached_at:]
        assert since, "no chunk was sent after the transfer was held"
        assert min(since) >= self.at, f"resent from byte {min(since)}, not from the {self.at} the follower held"


def test_a_member_restarted_mid_transfer_resumes_the_snapshot_from_its_stored_bytes(tmp_path) -> None:
    async def main() -> None:
        logs: dict = {}
        try:
            leader, f, opts = await three_with_a_follower_behind_a_snapshot(tmp_path, logs)
            transfer = HeldTransfer(logs[leader], f, chunks=3)
            logs[f] = raftlog.open(str(tmp_path / str(f)), node_id=f, state_machine=Blob(), **opts)
            await logs[f].start()
            await transfer.reached()
            held = logs[f]._node.storage.incoming_snapshot()
            assert held is not None and held[1] == transfer.at          # durable before it was acknowledged
            await logs[f].close()                      # cut off mid-transfer
            logs[f] = raftlog.open(str(tmp_path / str(f)), node_id=f, state_machine=Blob(), **opts)
            await logs[f].start()
            resumed = logs[f]._node.raw.raft.incoming
            assert resumed is not None and resumed.received == transfer.at     # kept what it had
            transfer.release()
            await caught_up(logs[f], logs[leader])
            transfer.check_resumed()
        finally:
            for lg in logs.values():
                await lg.close()

    run(main())


def test_an_apply_that_raises_reaches_the_proposer_and_the_log_goes_on(tmp_path) -> None:
    async def main() -> None:
        kv = KV()
        async with raftlog.open(str(tmp_path / "bad"), state_machine=kv) as log:
            with pytest.raises(ValueError):
                await log.append(b"no equals sign")          # KV.apply cannot split it
            ok = await log.append(b"a=1")
            assert ok.result is None and kv.data == {"a": "1"}
            assert [e.data for e in await log.read(1)] == [b"no equals sign", b"a=1"]   # still committed

    run(main())


def test_a_transfer_cut_by_a_dropped_connection_resumes_where_it_was(tmp_path) -> None:
    async def main() -> None:
        logs: dict = {}
        try:
            leader, f, opts = await three_with_a_follower_behind_a_snapshot(tmp_path, logs)
            transfer = HeldTransfer(logs[leader], f, chunks=3)
            logs[f] = raftlog.open(str(tmp_path / str(f)), node_id=f, state_machine=Blob(), **opts)
            await logs[f].start()
            await transfer.reached()
            conn = logs[leader]._node.peers.conns.get(f)
            assert conn is not None
            conn.abort()                                   # the connection drops mid-transfer
            transfer.release()
            await caught_up(logs[f], logs[leader])
            transfer.check_resumed()
        finally:
            for lg in logs.values():
                await lg.close()

    run(main())
