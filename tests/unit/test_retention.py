"""Retention of a log without a state machine (runtime/retention.py): the limits, compaction behind a
metadata-only snapshot, reads across the first index kept, and the parsers of sizes and durations."""
from __future__ import annotations

import asyncio
import time

import pytest

import raftlog
from raftlog import Compacted
from raftlog.core.sessions import SessionTable, encode_header
from raftlog.hot import KIND_DATA, KIND_SESSION, RecordBatch
from raftlog.runtime.retention import RetainedLog, RetentionPolicy, decode_mark, encode_mark, retention_policy
from raftlog.runtime.sessions import unwrap_snapshot, wrap_snapshot
from raftlog.units import format_size, parse_duration_ms, parse_size

from support.async_wait import until
from support.polling import wait_for
from support.nodes import free_port


# -- parsers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("2GiB", 2 << 30), ("500MB", 500_000_000), ("64k", 64_000), ("100", 100),
                                        ("1.5KiB", 1536), (" 3 tb ", 3 * 10**12), ("0", 0)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text,value", [("7d", 7 * 86_400_000), ("12h", 43_200_000), ("30m", 1_800_000),
                                        ("500ms", 500), ("1.5", 1500), ("2w", 14 * 86_400_000), ("10s", 10_000)])
def test_parse_duration(text: str, value: int) -> None:
    assert parse_duration_ms(text) == value


@pytest.mark.parametrize("text", ["", "x", "2 parsecs", "-1", "1e3", "GiB"])
def test_bad_sizes_and_durations_are_value_errors_naming_the_text(text: str) -> None:
    for parse in (parse_size, parse_duration_ms):
        with pytest.raises(ValueError, match="unit|number"):
            parse(text)


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 98304, 2 << 30)] == ["0B", "1023B", "1.0KiB", "96.0KiB", "2.0GiB"]


def test_retention_policy_from_user_input() -> None:
    assert retention_policy() == RetentionPolicy() and not RetentionPolicy().active
    assert retention_policy(10, "1KiB", "7d") == RetentionPolicy(10, 1024, 7 * 86_400_000)
    assert retention_policy(0, 4096, 1.5) == RetentionPolicy(0, 4096, 1500)
    assert RetentionPolicy().describe() == "keep everything"
    with pytest.raises(ValueError):
        RetentionPolicy(entries=-1)


# -- the compaction point ----------------------------------------------------------------------

def data(n: int, size: int = 10, term: int = 1) -> RecordBatch:
    return RecordBatch.encode(term, KIND_DATA, [b"x" * size] * n)


def test_entries_limit_keeps_exactly_the_newest_n() -> None:
    kept = RetainedLog(RetentionPolicy(entries=100), 0)
    kept.add(1, data(250))
    assert kept.compaction_point(250) == 150
    assert kept.compaction_point(80) == 0            # fewer than N: nothing goes


def test_bytes_limit_never_keeps_more_nor_much_less_than_the_limit() -> None:
    limit = 64_000
    kept = RetainedLog(RetentionPolicy(bytes=limit), 0)
    sizes: list[int] = []
    index = 1
    for k in range(400):                              # batches of 1-7 records of 27 + 17 bytes
        batch = data(1 + k % 7, 27)
        kept.add(index, batch)
        sizes += [batch.nbytes // len(batch)] * len(batch)
        index += len(batch)
        applied = index - 1
        upto = kept.compaction_point(applied)
        held = sum(sizes[upto:])
        assert held <= limit, (applied, upto, held)
        if sum(sizes) > limit:
            assert held > limit - 3 * limit // 64 - 7 * 44, (applied, upto, held)   # the checkpoint granularity
        kept.dropped(upto)
    assert len(kept.checkpoints) <= 2 * 64 + 2


def test_bytes_limit_inside_batches_larger_than_its_granularity() -> None:
    """Batches of 50-150 records of 0-200 bytes, a 10,000-byte limit: positions inside the batches, same bounds."""
    import random
    rng = random.Random(7)
    limit = 10_000
    kept = RetainedLog(RetentionPolicy(bytes=limit), 0)
    sizes: list[int] = []
    index = 1
    for _ in range(60):
        payloads = [b"y" * rng.randint(0, 200) for _ in range(rng.randint(50, 150))]
        kept.add(index, RecordBatch.encode(1, KIND_DATA, payloads))
        sizes += [17 + len(p) for p in payloads]
        index += len(payloads)
        upto = kept.compaction_point(index - 1)
        held = sum(sizes[upto:])
        assert limit - 2 * limit // 64 - 2 * 217 < held <= limit, (index - 1, upto, held)
        kept.dropped(upto)


def mark(t_ms: int) -> RecordBatch:
    return encode_mark(t_ms)


def test_age_limit_drops_through_the_last_mark_at_least_age_older_than_the_newest() -> None:
    kept = RetainedLog(RetentionPolicy(age_ms=1000), 0)
    kept.add(1, data(5))                  # 1-5
    kept.add(6, mark(10_000))             # 6
    kept.add(7, data(5))                  # 7-11
    kept.add(12, mark(10_600))            # 12
    kept.add(13, data(5))                 # 13-17
    assert kept.compaction_point(17) == 0           # the log's clock (10.6 s) is not 1 s past any mark
    kept.add(18, mark(11_000))            # 18: now 10.0 s is exactly 1 s old
    assert kept.compaction_point(18) == 6
    kept.add(19, mark(11_700))            # 19: 10.6 s is 1.1 s old
    assert kept.compaction_point(19) == 12
    kept.dropped(12)
    assert [i for i, _ in kept.marks] == [18, 19]
    assert decode_mark(mark(5).payload(0)) == 5 and decode_mark(b"") is None


def test_the_first_limit_reached_wins() -> None:
    kept = RetainedLog(RetentionPolicy(entries=50, bytes=100_000, age_ms=1000), 0)
    kept.add(1, data(100, 83))            # 100 entries of 100 bytes
    assert kept.compaction_point(100) == 50          # entries is the tightest
    kept = RetainedLog(RetentionPolicy(entries=500, bytes=2_000), 0)
    kept.add(1, data(100, 83))
    assert 80 <= kept.compaction_point(100) <= 82    # bytes is: 18-20 entries of 100 bytes fit


def test_session_table_in_a_snapshot_is_the_table_when_the_snapshot_was_taken() -> None:
    """The bytes are consumed later, on a thread, while the loop applies more: they must not see that."""
    table = SessionTable()
    table.apply_batch(1, RecordBatch.encode(1, KIND_SESSION, [encode_header(7, 1, 1, 1, 1000)]))
    before = table.to_bytes()
    pieces = wrap_snapshot(table, b"")
    table.apply_batch(2, RecordBatch.encode(1, KIND_SESSION, [encode_header(8, 1, 1, 1, 2000)]))
    import io
    image, stored = unwrap_snapshot(io.BytesIO(b"".join(pieces)))
    assert stored == before and image.read() == b""


# -- a running log -----------------------------------------------------------------------------

def settled(log: raftlog.RaftLog) -> bool:
    """No snapshot in progress and no compaction due: the log holds what the limits say (plus the slack)."""
    node = log._node
    return not node.snapshots.busy and not node.retention.due()


async def append_rounds(log: raftlog.RaftLog, rounds: int, per_round: int, size: int = 20) -> None:
    for r in range(rounds):
        await log.append_many([b"%06d" % r + b"x" * (size - 6)] * per_round)


def test_embedded_entries_limit_compacts_and_never_drops_the_newest_n(tmp_path) -> None:
    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log"), retain_entries=200, sync=False) as log:
            for _ in range(60):
                await append_rounds(log, 1, 25)
                applied = log._node.applied_index
                assert applied - log.first_index + 1 >= 200 or log.first_index == 1
            await until(lambda: log.first_index > 1200 and settled(log), "compaction", seen=lambda: log.first_index)
            applied = log._node.applied_index
            assert 200 <= applied - log.first_index + 1 <= 200 + 200 // 15 + 1
            status = log._node.status()
            assert status["first_index"] == log.first_index and status["data_dir_bytes"] > 0
            assert 0 < status["snapshot"]["size"] < 200      # metadata only: the session table
            with pytest.raises(Compacted) as info:
                await log.read(log.first_index - 1)
            assert info.value.first_index == log.first_index and info.value.index == log.first_index - 1
            got = await log.read(log.first_index)
            assert got and got[-1].index == applied
        async with raftlog.open(str(tmp_path / "log"), retain_entries=200, sync=False) as log:
            assert log.first_index > 1200                  # compaction is durable; reopened behind its snapshot
            assert [e.index for e in await log.read(applied - 9)] == list(range(applied - 9, applied + 1))

    asyncio.run(main())


def test_embedded_bytes_limit_keeps_at_most_that_many_bytes(tmp_path) -> None:
    limit = 16_000

    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log"), retain_bytes="16000B", sync=False) as log:
            storage = log._node.storage
            await append_rounds(log, 40, 20, size=100)       # 800 entries of 117 bytes
            await until(lambda: settled(log), "compaction", seen=lambda: log.first_index)
            held = storage.records(storage.first_index(), log._node.applied_index + 1).nbytes
            # At most the limit plus what waits for the next compaction (1/16 of the log held).
            assert limit // 2 < held <= limit + (held // 117 // 16 + 1) * 117

    asyncio.run(main())


def test_embedded_age_limit_drops_old_entries_and_never_younger_ones(tmp_path) -> None:
    """Entries appended less than the age ago (by the leader's clock) are always kept; older ones go."""
    age = 1.0

    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log"), retain_age=age, sync=False) as log:
            stamps: list[tuple[float, int]] = []           # (wall clock before the append, its index)
            old = await log.append_many([b"old"] * 50)
            stamps += [(time.time() - 10, int(i)) for i in old]   # (older than any bound below)

            async def younger_kept() -> bool:
                stamps.append((time.time(), int(await log.append(b"new"))))
                first = log.first_index
                now = time.time()
                young = [i for t, i in stamps if t > now - age]
                assert all(i >= first for i in young), (first, young[:3])
                return first > int(old[-1])

            await until(younger_kept, "the old entries to age out", seen=lambda: log.first_index)

    asyncio.run(main())


def test_retention_with_a_snapshotting_state_machine_is_refused(tmp_path) -> None:
    class Machine:
        def apply(self, entry):  # noqa: ANN001, ANN201
            return None

        def snapshot(self) -> bytes:
            return b""

        def restore(self, f) -> None:  # noqa: ANN001
            pass

    with pytest.raises(ValueError, match="without a state machine"):
        raftlog.open(str(tmp_path / "log"), state_machine=Machine(), retain_entries=10)


def test_client_and_cli_reads_below_the_first_index_get_compacted(tmp_path) -> None:
    from click.testing import CliRunner

    from raftlog.cli import main as cli

    address = f"127.0.0.1:{free_port()}"
    with raftlog.open_sync(str(tmp_path / "log"), node_id=1, peers={1: address}, retain_entries=20,
                           sync=False) as log:
        log.wait_for_leader(10)
        for k in range(10):
            log.append_many([b"e%d-%d" % (k, j) for j in range(10)])
        with raftlog.Client([address]) as client:
            deadline = time.monotonic() + 30
            while log.first_index == 1 and time.monotonic() < deadline:
                client.append(b"more")
            # (a compaction in flight would move the first index under the reads below)
            wait_for("a settled log", lambda: log._get(lambda: settled(log._log)))
            first = log.first_index
            assert first > 1
            with pytest.raises(Compacted) as info:
                client.read(1, consistency="stale")
            assert (info.value.index, info.value.first_index) == (1, first)
            with pytest.raises(Compacted):
                client.read(first - 1)                         # across the boundary: nothing half-served
            got = client.read(first)
            assert got and got[0].index >= first
        result = CliRunner().invoke(cli, ["read", "--peers", address, "--from", "1"])
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "compacted" in lines[0], result.output
        now_first = int(lines[0].rsplit("--from ", 1)[1].rstrip(")"))
        assert now_first >= first
        result = CliRunner().invoke(cli, ["read", "--peers", address, "--from", str(now_first), "--limit", "1"])
        assert result.exit_code == 0 and int(result.output.split("\t")[0]) >= now_first, result.output


def test_follower_restarted_behind_the_retained_prefix_catches_up_by_snapshot(tmp_path) -> None:
    """It gets the metadata snapshot (with the session table), then the log; it ends with the leader's table."""
    from raftlog.client import AsyncClient

    async def main() -> None:
        peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
        opts = dict(peers=peers, retain_entries=40, sync=False)
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, **opts) for i in (1, 2, 3)}
        for log in logs.values():
            await log.start()
        try:
            lid = await logs[1].wait_for_leader(10)
            behind = next(i for i in (1, 2, 3) if i != lid)
            async with AsyncClient(list(peers.values())) as client:      # session appends (exactly-once)
                await client.append_many([b"before-%d" % k for k in range(10)])
                await logs[behind].close()
                stopped_at = logs[behind]._node.applied_index
                async with AsyncClient(list(peers.values())) as gone:    # a session seen only while it is down
                    await gone.append(b"only-in-the-compacted-prefix")
                for k in range(30):
                    await client.append_many([b"while-%d-%d" % (k, j) for j in range(10)])
                leader = logs[lid]
                await until(lambda: leader.first_index > stopped_at + 1 and settled(leader),
                            "the leader to compact past the stopped follower", seen=lambda: leader.first_index)
                logs[behind] = raftlog.open(str(tmp_path / f"n{behind}"), node_id=behind, **opts)
                await logs[behind].start()
                follower = logs[behind]
                target = leader._node.applied_index
                await until(lambda: follower._node.applied_index >= target, "the follower to catch up",
                            seen=lambda: follower._node.status())
                assert follower._node.storage.snapshot_meta().index > stopped_at + 1      # by InstallSnapshot
                await client.append(b"after")                                              # then by the log
                last = leader._node.applied_index
                await until(lambda: follower._node.applied_index >= last, "the follower to apply the next entry")
            assert follower._node.sessions.table.to_bytes() == leader._node.sessions.table.to_bytes()
            assert gone.session_id in follower._node.sessions.table.sessions              # it came in the snapshot
            table = follower._node.sessions.table.to_bytes()
            await follower.close()                                 # restarted: the table comes from its snapshot
            logs[behind] = follower = raftlog.open(str(tmp_path / f"n{behind}"), node_id=behind, **opts)
            await follower.start()
            assert follower._node.sessions.table.to_bytes() == table
            await until(lambda: settled(leader) and settled(follower), "no compaction in flight")
            start = max(follower.first_index, leader.first_index)
            assert await follower.read(start) == await leader.read(start)
        finally:
            for log in logs.values():
                await log.close()

    asyncio.run(main())


def test_a_node_without_a_state_machine_compacts_only_by_its_limits(tmp_path) -> None:
    """The state machine's every-N snapshot trigger (snapshot_every, snapshot_tail) must not compact a plain log."""
    from raftlog.client import AsyncClient
    from raftlog.runtime.node import Node, NodeConfig

    async def main() -> None:
        address = f"127.0.0.1:{free_port()}"
        node = Node(NodeConfig(node_id=1, peers={1: address}, data_dir=str(tmp_path / "n1"), sync=False,
                               snapshot_every=50, snapshot_tail=5, retention=RetentionPolicy(entries=200)))
        await node.start()
        try:
            async with AsyncClient([address]) as client:
                for k in range(20):
                    await client.append_many([b"e%d-%d" % (k, j) for j in range(30)])
                    assert node.applied_index - node.raw.first_index + 1 >= 200 or node.raw.first_index == 1
            await until(lambda: not node.snapshots.busy and not node.retention.due(), "a settled node")
            assert node.raw.first_index > 1 and node.applied_index - node.raw.first_index + 1 >= 200
        finally:
            await node.stop()

    asyncio.run(main())


def test_an_explicit_snapshot_of_a_retained_log_keeps_what_the_limits_keep(tmp_path) -> None:
    """log.snapshot() on a log with retain_entries compacted to its snapshot_tail, far inside the limit."""
    import asyncio

    import raftlog

    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log"), retain_entries=1000, snapshot_tail=10) as log:
            await log.wait_for_leader(30)
            await log.append_many([b"x"] * 500)
            await log.snapshot()
            assert log.first_index == 1, f"compacted to {log.first_index - 1} under a limit of 1000 entries"
            assert len(await log.read(1)) == 500
    asyncio.run(main())
