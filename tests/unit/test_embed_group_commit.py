"""The embedded appends of one event-loop turn: one request, one transaction, every member answered at its own index.

RaftLog.append and append_many join the turn's open group (raftlog/embed.py `_Group`),
which the node's next Ready pass proposes as one request. Each member keeps its own
future: it gets exactly its entries' indexes (and state machine results), a cancelled
member leaves the others alone, and a group the leader cannot commit times out (Raft paper
5.3: the leader answers once the entry is committed; until then the outcome is unknown).
"""
from __future__ import annotations

import asyncio
import socket

import pytest

import raftlog
from raftlog import Entry

from support.async_wait import until


class Tagger:
    """A state machine whose apply returns the entry's payload and index, so results can be matched to appends."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    def apply(self, entry: Entry) -> tuple[bytes, int]:
        self.applied.append(entry.index)
        if entry.data == b"boom":
            raise ValueError("boom")
        return entry.data, entry.index


def run(coro):
    return asyncio.run(coro)


async def answered(*appends, what: str = "every append to be answered", timeout: float = 60.0) -> list:
    """The outcomes of `appends` (results or exceptions), in order; fail naming `what` if they hang."""
    try:
        return await asyncio.wait_for(asyncio.gather(*appends, return_exceptions=True), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


@pytest.mark.parametrize("with_machine", [False, True])
def test_one_turns_appends_share_one_transaction_and_each_gets_its_own_indexes(tmp_path, with_machine: bool) -> None:
    async def main() -> None:
        machine = Tagger() if with_machine else None
        async with raftlog.open(str(tmp_path / "log"), state_machine=machine) as log:
            writer = log._node.writer
            before = writer.writes
            first_index = log.last_index + 1
            singles = [log.append(b"s%d" % i) for i in range(40)]
            many = log.append_many([b"m%d" % i for i in range(5)])
            more = [log.append(b"t%d" % i) for i in range(10)]
            got = await answered(*singles, many, *more)
            assert not any(isinstance(x, BaseException) for x in got), got
            # One transaction for the turn's 55 entries; at most one more, a commit index
            # written alone by the writer's quiet-time flush of what open() committed.
            assert writer.writes - before <= 2, f"{writer.writes - before} transactions for one turn's appends"
            indexes = [int(x) for x in got[:40]] + [int(x) for x in got[40]] + [int(x) for x in got[41:]]
            assert indexes == list(range(first_index, first_index + 55))     # arrival order, no gaps
            stored = await log.read(first_index)
            payloads = ([b"s%d" % i for i in range(40)] + [b"m%d" % i for i in range(5)]
                        + [b"t%d" % i for i in range(10)])
            assert [e.data for e in stored] == payloads
            results = [a.result for a in got[:40]] + [a.result for a in got[40]] + [a.result for a in got[41:]]
            if with_machine:
                assert results == list(zip(payloads, indexes))     # each member got its own entries' results
            else:
                assert results == [None] * 55

    run(main())


def test_a_failing_apply_reaches_only_the_member_whose_entry_it_was(tmp_path) -> None:
    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log"), state_machine=Tagger()) as log:
            ok_before = log.append(b"a")
            bad = log.append_many([b"b", b"boom", b"c"])
            ok_after = log.append(b"d")
            got = await answered(ok_before, bad, ok_after)
            assert isinstance(got[1], ValueError)
            assert got[0].result == (b"a", int(got[0])) and got[2].result == (b"d", int(got[2]))
            assert int(got[2]) == int(got[0]) + 4                     # the failing entries are committed all the same

    run(main())


def test_a_cancelled_append_leaves_the_rest_of_its_group_answered(tmp_path) -> None:
    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log")) as log:
            tasks = [asyncio.create_task(log.append(b"x%d" % i)) for i in range(3)]
            await asyncio.sleep(0)          # every task has joined the group; the node's pass comes after this turn
            assert log._group is not None and len(log._group.futures) == 3
            tasks[1].cancel()
            done = await answered(*tasks, what="the group's other members to be answered")
            assert isinstance(done[1], asyncio.CancelledError)
            assert int(done[2]) == int(done[0]) + 2      # the cancelled one's entry was proposed: outcome unknown
            assert [e.data for e in await log.read(int(done[0]))] == [b"x0", b"x1", b"x2"]

    run(main())


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_group_the_leader_cannot_commit_times_out_with_the_outcome_unknown(tmp_path) -> None:
    async def main() -> None:
        peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
        # Elections slower than the request timeout: the leader is still the leader (it has
        # not stepped down for lack of a quorum, check-quorum) when the appends are proposed.
        opts = dict(peers=peers, request_timeout=0.5, election_timeout_ms=(1500, 3000), heartbeat_ms=100)
        logs = {i: raftlog.open(str(tmp_path / str(i)), node_id=i, **opts) for i in peers}
        try:
            for lg in logs.values():
                await lg.start()
            leader = await logs[1].wait_for_leader(20)
            await until(lambda: logs[leader].role == "leader", f"node {leader} to know it leads")
            assert int(await logs[leader].append(b"committed")) > 0
            for i, lg in logs.items():
                if i != leader:
                    await lg.close()        # no quorum any more: nothing new commits
            got = await answered(logs[leader].append(b"a"), logs[leader].append_many([b"b", b"c"]),
                                 what="the uncommittable appends to time out")
            assert [type(x) for x in got] == [raftlog.Timeout, raftlog.Timeout], got
            assert all("outcome is unknown" in str(x) for x in got), got
        finally:
            for lg in logs.values():
                await lg.close()

    run(main())


def test_an_append_after_the_node_stopped_on_its_own_fails_at_once(tmp_path) -> None:
    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log")) as log:
            await log.append(b"before")
            await log._node.stop()          # as a fail-stop does (a storage error), without close()
            got = await answered(log.append(b"after"), log.append_many([b"x", b"y"]),
                                 what="appends to a stopped node to fail")
            assert [type(x) for x in got] == [raftlog.Closed, raftlog.Closed], got

    run(main())
