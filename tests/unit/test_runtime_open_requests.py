"""Open requests on the one propose path (Proposals.submit_open): records gathered until the Ready pass proposes them.

An open request is how the embedded appends of one event-loop turn become one request
(raftlog/embed.py): it takes records until it is sealed, then is proposed, tracked and
answered like any other request. The engine is a single-voter RawNode on MemoryStorage,
driven as in test_runtime_proposals.
"""
from __future__ import annotations

import pytest

from raftlog.hot import ERR_BAD_REQUEST, ERR_SHUTTING_DOWN, KIND_DATA, RecordBatch
from raftlog.runtime.proposals import Proposals

from support.proposals import Recorder, drive, later, leader_port, records


class Open(Recorder):
    """An open request: payloads join until seal(); sealing twice, or joining after it, is a bug."""

    def __init__(self, *payloads: bytes) -> None:
        super().__init__()
        self.payloads = list(payloads)
        self.sealed = False

    def join(self, payload: bytes) -> None:
        assert not self.sealed, "a record joined after the request was sealed"
        self.payloads.append(payload)

    def seal(self) -> RecordBatch:
        assert not self.sealed, "sealed twice"
        self.sealed = True
        return RecordBatch.encode(0, KIND_DATA, self.payloads)


def test_an_open_request_takes_records_until_the_ready_pass_and_is_answered_with_all_of_them() -> None:
    port = leader_port()
    proposals = Proposals(port)
    base = port.raw.last_index
    before = Recorder()
    proposals.submit(records(2), later(), before)
    group = Open(b"a")
    proposals.submit_open(group, later())
    group.join(b"b")                  # the same turn: still open
    group.join(b"c")
    assert not group.sealed and not group.proposed_at
    drive(port, proposals)
    assert group.sealed
    assert before.outcome == [("appended", base + 1, 2)]
    assert group.outcome == [("appended", base + 3, 3)]           # one request, in arrival order
    stored = port.storage.records(base + 3, base + 6)
    assert [stored.payload(i) for i in range(3)] == [b"a", b"b", b"c"]


def test_an_open_request_over_the_write_budget_stays_open_in_the_backlog_and_is_sealed_when_proposed() -> None:
    port = leader_port()
    signals: list[bool] = []
    proposals = Proposals(port, on_backlog=signals.append)
    port.budget = port.unwritten                  # the next transaction is full
    group = Open(b"a")
    proposals.submit_open(group, later())
    assert signals == [True]
    proposals.flush()
    assert not group.sealed                       # waiting for budget: nothing counted yet
    group.join(b"b")
    port.budget = 1 << 30
    proposals.retry()                             # as the node does after every fresh write budget
    assert group.sealed
    drive(port, proposals)
    assert group.outcome[0][0] == "appended" and group.outcome[0][2] == 2
    assert signals[-1] is False


def test_an_open_request_that_cannot_be_encoded_fails_alone() -> None:
    port = leader_port()
    proposals = Proposals(port)

    class Broken(Open):
        def seal(self) -> RecordBatch:
            raise OverflowError("payload too large for one record")
    broken, fine = Broken(b"x"), Open(b"y")
    proposals.submit_open(broken, later())
    proposals.submit_open(fine, later())
    drive(port, proposals)
    assert broken.outcome == [
        ("failed", ERR_BAD_REQUEST, "cannot encode the request: payload too large for one record")]
    assert fine.outcome[0][0] == "appended"
    assert port.raw.last_index == fine.outcome[0][1]           # nothing of the broken one was proposed


@pytest.mark.parametrize("when", ["staged", "backlogged"])
def test_shutdown_answers_an_open_request_it_never_sealed(when: str) -> None:
    port = leader_port()
    proposals = Proposals(port)
    if when == "backlogged":
        port.budget = port.unwritten
    group = Open(b"a")
    proposals.submit_open(group, later())
    proposals.shutdown()
    assert not group.sealed
    assert group.outcome == [("failed", ERR_SHUTTING_DOWN, "the node is shutting down")]
    late = Open(b"b")
    proposals.submit_open(late, later())
    assert late.outcome[0][:2] == ("failed", ERR_SHUTTING_DOWN)
