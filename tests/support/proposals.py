"""The propose path on a real engine without sockets: a NodePort double over a single-voter RawNode,
a Waiter that records, and the node's Ready loop played synchronously."""
from __future__ import annotations

import random
import time

from raftlog.core.config import Config
from raftlog.core.rawnode import RawNode, Role
from raftlog.core.storage import MemoryStorage
from raftlog.hot import KIND_DATA, RecordBatch
from raftlog.runtime.proposals import Proposals


class PortDouble:
    """NodePort over a real RawNode; replies are not used by Proposals and fail loudly if called."""

    def __init__(self, voters: tuple[int, ...] = (1,)) -> None:
        self.node_id = 1
        self.storage = MemoryStorage()
        self.raw = RawNode(Config(1, voters), self.storage, random.Random(1))
        self.applied_index = 0
        self.corrupt_index = None
        self.kicks = 0
        self.budget = 1 << 30
        self.unwritten = 0
        self.stopping = False

    @property
    def leader_id(self) -> int:
        return self.raw.leader_id

    def address_of(self, node_id: int) -> str:
        return f"127.0.0.1:{7000 + node_id}"

    def kick(self) -> None:
        self.kicks += 1

    def write_budget_left(self) -> bool:
        return self.unwritten < self.budget

    def note_unwritten(self, count: int, nbytes: int) -> None:
        self.unwritten += count

    def status(self) -> dict:
        return self.raw.status()

    def reply(self, conn, frame: bytes) -> None:
        raise AssertionError("Proposals never replies to connections itself")

    def error(self, conn, request_id: int, code: int, message: str) -> None:
        raise AssertionError("Proposals never replies to connections itself")


class Recorder:
    """A Waiter that records what it was told."""

    def __init__(self) -> None:
        self.gone = False
        self.proposed_at: list[tuple[int, int]] = []
        self.outcome: list[tuple] = []

    def proposed(self, first: int, term: int) -> None:
        self.proposed_at.append((first, term))

    def appended(self, first: int, count: int) -> None:
        self.outcome.append(("appended", first, count))

    def failed(self, code: int, message: str) -> None:
        self.outcome.append(("failed", code, message))


def drive(port: PortDouble, proposals: Proposals) -> None:
    """The node's Ready loop, synchronously: flush, persist, hand committed batches over, advance."""
    for _ in range(20):
        proposals.flush()
        if not port.raw.has_ready():
            return
        rd = port.raw.ready()
        port.unwritten = 0
        port.storage.save(hard_state=rd.hard_state, truncate_from=rd.truncate_from,
                          first_index=rd.entries_index, records=rd.entries)
        for first, batch in rd.committed:
            proposals.on_committed(first, batch)
            port.applied_index = first + len(batch) - 1
        port.raw.advance(rd)
        proposals.retry()
    raise AssertionError("the engine did not settle")


def leader_port() -> PortDouble:
    port = PortDouble()
    port.raw.campaign()
    drive(port, Proposals(port))
    assert port.raw.role is Role.LEADER
    return port


def records(n: int) -> RecordBatch:
    return RecordBatch.encode(0, KIND_DATA, [b"r%d" % i for i in range(n)])


def later() -> float:
    return time.monotonic() + 60
