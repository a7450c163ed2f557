"""`raftlog check`: an offline verification of a stopped node's data dir, every problem found listed by kind and index.

What holds in a good data dir, and the problem `kind` when it does not:

- `datadir`: the dir can be opened at all: both LMDB meta pages, every page reachable from
  LMDB's trees inside the file, raftlog's format and identity (raftlog.storage.datadir). A
  dir refused here is not read further; `detail` is the refusal's one line with its remedy.
- `meta`: the meta records (hard_state, conf_state, snapshot, log_start) decode.
- `bounds`: every `log` key is an 8-byte index above the compaction point (`log_start`, at
  or below the snapshot's index).
- `gap`: the indexes are contiguous from first_index (`log_start` + 1) to the last one;
  `index` is the first missing one.
- `crc`: every record passes its CRC and holds exactly one entry.
- `term`: the entries' terms never decrease.
- `conf`: every configuration entry decodes.
- `hard_state`: a hard state is saved beside a non-empty log, its commit index is not past
  the last entry, its term not below the last entry's (raftlog.storage.lmdb.hard_state_problems).
- `snapshot`: the recorded snapshot file exists with the recorded size and crc32, and an
  entry kept at the snapshot's index has the snapshot's term.

`raftlog.open` and `raftlog node` run the cheap part of this on every start (the meta pages,
the format and identity, the hard state's commit and term against the last entry), not the
CRC scan of every record, which the node does as it reads them.

JSON (`CheckReport.to_json`, what `raftlog check --json` prints):

    {"path": str, "ok": bool,
     "identity": {"cluster_id": str, "node_id": int, "created_at": str} | null,
     "format": int | null,
     "hard_state": {"term": int, "vote": int, "commit": int} | null,
     "first_index": int | null, "last_index": int | null, "entries": int,
     "snapshot": {"index": int, "term": int, "file": str | null, "size": int, "crc32": int} | null,
     "problems": [{"kind": str, "index": int | null, "detail": str}, ...],
     "problems_omitted": int}

`entries` counts the records read; `problems` lists at most `max_problems` (1000), the
rest are counted in `problems_omitted`. null: not known (the dir was refused before it).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from raftlog.core import confchange
from raftlog.core.log import records_of_kind
from raftlog.core.messages import HardState, SnapshotMeta
from raftlog.core.storage import verified
from raftlog.errors import CorruptLogError, DataDirError
from raftlog.hot import KIND_CONF, RecordBatch
from raftlog.storage.datadir import (FORMAT_VERSION, LOG_DB, META_DB, SNAPSHOT_DIR, last_txnid, open_environment,
                                     validate_data_dir)
from raftlog.storage.lmdb import (CONF_STATE_KEY, DEFAULT_MAP_SIZE, HARD_STATE_KEY, LOG_START_KEY, SNAPSHOT_KEY,
                                  decode_meta_record, hard_state_problems, index_of_key)
from raftlog.storage.snapshot_files import file_size_crc32

__all__ = ["Problem", "CheckReport", "check_data_dir", "format_text"]

_CHUNK = 4096                 # records verified per batch; a batch that fails is verified one record at a time


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its kind (see the module docstring), the entry index it is about (None: none), what."""

    kind: str
    index: Optional[int]
    detail: str


@dataclass
class CheckReport:
    """What check_data_dir found: the dir's state as far as it could be read, and every problem."""

    path: str
    identity: Optional[dict] = None
    format: Optional[int] = None
    hard_state: Optional[dict] = None
    first_index: Optional[int] = None
    last_index: Optional[int] = None
    entries: int = 0
    snapshot: Optional[dict] = None
    problems: list[Problem] = field(default_factory=list)
    problems_omitted: int = 0
    max_problems: int = 1000

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    @property
    def refusal(self) -> Optional[str]:
        """The one line (dir, what is wrong, remedy) when the dir was refused before it could be read."""
        return next((p.detail for p in self.problems if p.kind == "datadir"), None)

    def add(self, kind: str, index: Optional[int], detail: str) -> None:
        """Record a problem (counted only, past max_problems)."""
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(kind, index, detail))
        else:
            self.problems_omitted += 1

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape (module docstring)."""
        out = {k: v for k, v in asdict(self).items() if k != "max_problems"}
        out["ok"] = self.ok
        return out


def check_data_dir(path: str, *, max_problems: int = 1000) -> CheckReport:
    """Verify the data dir at `path`, writing nothing, not even LMDB's lock file; FileNotFoundError if nothing is there.

    Meant for a stopped node: everything is read in one LMDB read transaction that no writer
    knows of, so when the data changed meanwhile (more than one commit: a running node)
    the report is replaced by one `datadir` problem saying so.
    """
    report = CheckReport(os.fspath(path), max_problems=max_problems)
    try:
        if validate_data_dir(report.path, walk=True) is None:
            raise FileNotFoundError(f"no raftlog data dir at {report.path}")
        env, identity, _ = open_environment(report.path, node_id=None, cluster_id=None, readonly=True, create=False,
                                            sync=False, map_size=DEFAULT_MAP_SIZE, reader_lock=False)
        try:
            with env.begin() as txn:
                seen = txn.id()
                _check_contents(report, env, txn)
        finally:
            env.close()
        if last_txnid(report.path) > seen + 1:
            raise DataDirError(report.path, "changed while it was checked (is its node running?)",
                               "stop the node and check again")
    except DataDirError as exc:
        checked = CheckReport(report.path, max_problems=max_problems)
        checked.add("datadir", None, str(exc))
        return checked
    report.identity = asdict(identity)
    report.format = FORMAT_VERSION
    return report


def _check_contents(report: CheckReport, env: Any, txn: Any) -> None:
    """The meta records, every log record, the hard state and the snapshot file, into `report`."""
    meta_db = env.open_db(META_DB, txn=txn, create=False)
    log_db = env.open_db(LOG_DB, txn=txn, create=False)

    def meta(key: bytes, default: Any) -> Any:
        try:
            value = decode_meta_record(key, txn.get(key, db=meta_db))
        except ValueError as exc:
            report.add("meta", None, f"meta record {exc}")
            return default
        return default if value is None else value

    hard: Optional[HardState] = meta(HARD_STATE_KEY, None)
    meta(CONF_STATE_KEY, None)
    snapshot, file = meta(SNAPSHOT_KEY, (SnapshotMeta(), None))
    start = meta(LOG_START_KEY, (snapshot.index, snapshot.term))
    scan = _LogScan(report, start, snapshot.index)
    for key, value in txn.cursor(log_db).iternext():
        scan.add(key, value)
    scan.flush()
    last = max(scan.last_key, start[0], snapshot.index)
    report.first_index, report.last_index = start[0] + 1, last
    if hard is not None:
        report.hard_state = {"term": hard.term, "vote": hard.vote, "commit": hard.commit}
        last_term = scan.last_term if scan.last_key and last == scan.last_key else None
        for wrong in hard_state_problems(hard, last, last_term or 0):
            report.add("hard_state", None, wrong)
    elif report.entries:
        report.add("hard_state", None, f"no hard state saved beside {report.entries} entries: "
                                       "the node's term and vote are gone")
    if snapshot.index:
        report.snapshot = {"index": snapshot.index, "term": snapshot.term, "file": file,
                           "size": snapshot.size, "crc32": snapshot.crc32}
        if start[0] > snapshot.index:
            report.add("bounds", start[0], f"compaction point {start[0]} is past the snapshot's index {snapshot.index}")
        if scan.snapshot_term is not None and scan.snapshot_term != snapshot.term:
            report.add("snapshot", snapshot.index, f"the entry at the snapshot's index has term {scan.snapshot_term}, "
                                                   f"the snapshot term {snapshot.term}")
        if file is not None:
            _check_snapshot_file(report, os.path.join(report.path, SNAPSHOT_DIR, file), snapshot)


class _LogScan:
    """Walks the `log` records in key order: bounds, gaps, then CRC, terms and configurations a chunk at a time."""

    def __init__(self, report: CheckReport, start: tuple[int, int], snapshot_index: int) -> None:
        self.report = report
        self.start = start[0]
        self.expected = start[0] + 1          # the next index the log should hold
        self.last_key = 0                     # the last index held (0: none)
        self.last_term: Optional[int] = start[1]   # the last entry's term (None: its record is corrupt)
        self.snapshot_index = snapshot_index
        self.snapshot_term: Optional[int] = None
        self.chunk_first = self.expected
        self.chunk: list[bytes] = []

    def add(self, key: bytes, value: bytes) -> None:
        """One `log` record, in key order."""
        try:
            index = index_of_key(key)
        except ValueError as exc:
            self.report.add("bounds", None, str(exc))
            return
        if index <= self.start:
            self.report.add("bounds", index, f"entry {index} is at or below the compaction point {self.start}")
            return
        if index > self.expected:
            self.flush()
            missing = f"entry {self.expected} is" if index == self.expected + 1 else \
                f"entries {self.expected} to {index - 1} are"
            self.report.add("gap", self.expected, f"{missing} missing")
            self.expected = self.chunk_first = index
        self.chunk.append(value)
        self.expected += 1
        self.last_key = index
        if len(self.chunk) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        """Verify the records collected since the last flush."""
        lo, values = self.chunk_first, self.chunk
        self.chunk, self.chunk_first = [], self.expected
        if not values:
            return
        self.report.entries += len(values)
        try:
            batch = verified(lo, b"".join(values))
            whole = len(batch) == len(values)
        except CorruptLogError:
            whole = False
        if whole:
            self._entries(lo, batch)
            return
        # One record at a time: a corrupt length field misparses the joined chunk elsewhere.
        for i, value in enumerate(values):
            try:
                one = verified(lo + i, value)
                if len(one) != 1:
                    raise CorruptLogError(lo + i, f"the stored value holds {len(one)} records, not one")
            except CorruptLogError as exc:
                self.report.add("crc", exc.index, str(exc))
                self.last_term = None
                continue
            self._entries(lo + i, one)

    def _entries(self, lo: int, batch: RecordBatch) -> None:
        """Terms and configuration entries of verified records from index lo."""
        terms = batch.terms()
        previous = self.last_term
        for i, term in enumerate(terms):
            if previous is not None and term < previous:
                self.report.add("term", lo + i, f"term {term} after term {previous}")
            previous = term
        self.last_term = previous
        if lo <= self.snapshot_index < lo + len(terms):
            self.snapshot_term = terms[self.snapshot_index - lo]
        for index, payload in records_of_kind(batch, lo, KIND_CONF):
            try:
                confchange.decode_entry(payload)
            except (ValueError, KeyError, TypeError) as exc:
                self.report.add("conf", index, f"configuration entry does not decode: {exc}")


def _check_snapshot_file(report: CheckReport, path: str, snapshot: SnapshotMeta) -> None:
    """The snapshot file at `path` exists with the snapshot's size and crc32."""
    try:
        size, crc = file_size_crc32(path)
    except OSError as exc:
        report.add("snapshot", snapshot.index, f"snapshot file {path}: {exc.strerror}")
        return
    if size != snapshot.size:
        report.add("snapshot", snapshot.index,
                   f"snapshot file {path} holds {size} bytes, the record says {snapshot.size}")
    elif crc != snapshot.crc32:
        report.add("snapshot", snapshot.index, f"snapshot file {path} has crc32 {crc:#010x}, "
                                               f"the record says {snapshot.crc32:#010x}")


def format_text(report: CheckReport) -> str:
    """The human form: a summary line, then one line per problem (`index N: kind: detail`)."""
    ident = report.identity or {}
    lines = [f"data dir {report.path}: node {ident.get('node_id')} of cluster {ident.get('cluster_id')!r}, "
             f"entries [{report.first_index}, {report.last_index}] ({report.entries} records read), "
             f"commit {(report.hard_state or {}).get('commit')}, "
             f"snapshot {(report.snapshot or {}).get('index', 0)}"]
    for p in report.problems:
        lines.append(f"{'index ' + str(p.index) if p.index is not None else '-'}: {p.kind}: {p.detail}")
    if report.problems_omitted:
        lines.append(f"... and {report.problems_omitted} more problems")
    total = len(report.problems) + report.problems_omitted
    lines.append("ok: every check holds" if report.ok else f"{total} problem{'s' if total != 1 else ''}")
    return "\n".join(lines)
