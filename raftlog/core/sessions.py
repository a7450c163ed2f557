"""Client sessions for exactly-once appends (dissertation 6.3), as a deterministic function of the log.

A client picks a random 64-bit session id and numbers its append requests 1, 2, 3, ...
Each request reaches the log as one KIND_SESSION header record followed by its data
records; the header names `(session, seq, count)`, the lowest seq the client still waits
for (`floor`: results below it may be forgotten) and the leader's clock when it appended
the request (`time_ms`: the log's clock).

`SessionTable.apply` runs on every node for every committed header, in log order, so every
node computes the same table: per session, the result (index of the first data record,
count) of every request at or above its floor, and its last activity in log time. A
session idle for longer than `timeout_ms` of LOG time (the largest header time applied so
far, never a local clock) is expired on every node at the same log position: expiry is
deterministic, and a table rebuilt from a snapshot plus the log after it is identical.

The leader uses the table (plus its own requests still in flight) to answer a retried
request with the ORIGINAL index instead of appending it again. Rules that make that exact:
- a leader takes session requests only after it has applied its own term's first entry,
  so the table covers every request in its log that an earlier leader appended;
- a request of a session the table does not know is accepted only while its floor is 1:
  the client has had no answer yet, so the session is new (its first requests may arrive
  pipelined, seq 2 before seq 1 is applied); a higher floor means the client was answered
  before and the table forgot the session: it expired (SessionExpired).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Optional

from raftlog.core.log import records_of_kind
from raftlog.errors import SessionExpired  # noqa: F401 - re-exported: the client raises it
from raftlog.hot import KIND_SESSION, RecordBatch

MAGIC = b"RLSS1"
_HEADER = struct.Struct(">QQQIQ")          # session, seq, floor, count, time_ms
HEADER_SIZE = len(MAGIC) + _HEADER.size
DEFAULT_TIMEOUT_MS = 10 * 60 * 1000         # a session idle 10 minutes of log time expires


def encode_header(session: int, seq: int, floor: int, count: int, time_ms: int = 0) -> bytes:
    """The payload of a KIND_SESSION header record."""
    return MAGIC + _HEADER.pack(session, seq, floor, count, time_ms)


def decode_header(payload: bytes) -> tuple[int, int, int, int, int]:
    """(session, seq, floor, count, time_ms); ValueError when it is not a header."""
    raw = bytes(payload)
    if len(raw) != HEADER_SIZE or not raw.startswith(MAGIC):
        raise ValueError("not a session header")
    return _HEADER.unpack_from(raw, len(MAGIC))


def restamp(batch: RecordBatch, term: int, time_ms: int) -> RecordBatch:
    """`batch` (header + data records) with the header's time set to time_ms, all records of `term`."""
    session, seq, floor, count, _ = decode_header(batch.payload(0))
    head = RecordBatch.encode(term, KIND_SESSION, [encode_header(session, seq, floor, count, time_ms)])
    rest = batch.slice(1, len(batch)).restamp(term)
    return RecordBatch.concat([head, rest])


def scan(batch: RecordBatch, first_index: int) -> list[tuple[int, bytes]]:
    """`(index, payload)` of the session headers in `batch`."""
    return records_of_kind(batch, first_index, KIND_SESSION)


@dataclass
class Session:
    """One client session: its results at or above `floor`, and its last activity (log time)."""

    last_ms: int = 0
    floor: int = 0
    results: dict[int, tuple[int, int]] = field(default_factory=dict)   # seq -> (first data index, count)


class SessionTable:
    """Every live session, as applied from the log; see the module docstring."""

    def __init__(self, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.timeout_ms = timeout_ms
        self.sessions: dict[int, Session] = {}
        self.log_ms = 0               # the log's clock: the largest header time applied
        self.applied = 0              # index of the last header applied
        self.position = 0             # the last log index this table covers (headers or not)
        self.duplicates = 0           # headers applied for a request already in the table (must stay 0)
        self.expired = 0

    def apply(self, index: int, payload: bytes) -> Optional[tuple[int, int]]:
        """Apply the header at `index`; the original result if the request was already applied, else None."""
        session, seq, floor, count, t = decode_header(payload)
        self.applied = index
        if t > self.log_ms:
            self.log_ms = t
            self._expire()
        s = self.sessions.get(session)
        if s is None:
            s = self.sessions[session] = Session()
        s.last_ms = max(s.last_ms, t)
        if floor > s.floor:
            s.floor = floor
            for old in [q for q in s.results if q < floor]:
                del s.results[old]
        if seq in s.results:
            self.duplicates += 1
            return s.results[seq]
        if seq >= s.floor:
            s.results[seq] = (index + 1, count)
        return None

    def apply_batch(self, first: int, batch: RecordBatch) -> None:
        """Apply every header in a committed batch."""
        for index, payload in scan(batch, first):
            self.apply(index, payload)
        last = first + len(batch) - 1
        if last > self.position:
            self.position = last

    def _expire(self) -> None:
        cutoff = self.log_ms - self.timeout_ms
        gone = [sid for sid, s in self.sessions.items() if s.last_ms < cutoff]
        for sid in gone:
            del self.sessions[sid]
        self.expired += len(gone)

    def lookup(self, session: int, seq: int, floor: int) -> tuple[str, Optional[tuple[int, int]]]:
        """("done", result) | ("new", None) | ("expired", None) for request `seq` (with the client's `floor`)."""
        s = self.sessions.get(session)
        if s is None:
            return ("new", None) if floor <= 1 else ("expired", None)
        if seq in s.results:
            return "done", s.results[seq]
        if seq < s.floor:
            return "expired", None      # acknowledged long ago and forgotten: the client cannot be retrying it
        return "new", None

    # -- snapshots ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole table, deterministic bytes (for a snapshot taken at `applied`)."""
        d = {"timeout_ms": self.timeout_ms, "log_ms": self.log_ms, "applied": self.applied,
             "position": self.position,
             "sessions": {str(sid): [s.last_ms, s.floor, {str(q): list(r) for q, r in sorted(s.results.items())}]
                          for sid, s in sorted(self.sessions.items())}}
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SessionTable":
        """The inverse of to_bytes."""
        d = json.loads(data)
        t = cls(int(d["timeout_ms"]))
        t.log_ms = int(d["log_ms"])
        t.applied = int(d["applied"])
        t.position = int(d.get("position", t.applied))
        for sid, (last_ms, floor, results) in d["sessions"].items():
            t.sessions[int(sid)] = Session(int(last_ms), int(floor),
                                           {int(q): (int(r[0]), int(r[1])) for q, r in results.items()})
        return t


class SessionFront:
    """The leader's side: decide what to do with a session request (shared by the runtime and the simulator).

    `inflight` holds this leader's own session requests not yet applied, `(session, seq) ->
    (first data index, count, term)`; it is valid for one term only.
    """

    def __init__(self, table: SessionTable) -> None:
        self.table = table
        self.inflight: dict[tuple[int, int], tuple[int, int, int]] = {}
        self.term = 0

    def check(self, raw, session: int, seq: int, floor: int) -> tuple[str, Optional[tuple]]:
        """One of ("wait", None): the leader has not applied its term's first entry yet;
        ("done", (first, count)): already applied, answer at once; ("pending", (first, count, term)):
        in flight, answer when it commits; ("expired", None); ("propose", None).

        PRECONDITION: raw (a RawNode) is the leader and its table is applied up to raw.applied_index.
        """
        if raw.term != self.term:
            self.term = raw.term
            self.inflight.clear()
        r = raw.raft
        if r.log.term_at(raw.applied_index) != raw.term:
            return "wait", None
        state, result = self.table.lookup(session, seq, floor)
        if state == "done":
            return state, result
        pending = self.inflight.get((session, seq))
        if pending is not None:
            if pending[0] - 1 <= r.log.last_index and r.log.term_at(pending[0] - 1) == pending[2]:
                return "pending", pending
            del self.inflight[(session, seq)]
        if state == "expired":
            return state, None
        return "propose", None

    def proposed(self, session: int, seq: int, header_index: int, count: int, term: int) -> None:
        """A request was appended at header_index (its data from header_index + 1)."""
        if term != self.term:
            self.term = term
            self.inflight.clear()
        self.inflight[(session, seq)] = (header_index + 1, count, term)

    def applied_to(self, index: int) -> None:
        """Forget in-flight requests the table now covers."""
        if self.inflight:
            for key in [k for k, v in self.inflight.items() if v[0] - 1 <= index]:
                del self.inflight[key]
