"""RaftLog and SyncRaftLog: raftlog as a library, a durable replicated log inside your program.

    async with raftlog.open("data/log") as log:          # one node, no network
        index = await log.append(b"hello")                 # committed and durable
        print(await log.read(1))

    async with raftlog.open("data/1", node_id=1, peers={1: "127.0.0.1:7001", 2: ..., 3: ...},
                            state_machine=MyMachine()) as log:
        await log.wait_for_leader(5)
        ...

Under it is the same runtime as `raftlog node` (runtime/node.py): the engine, LmdbStorage,
one fsynced transaction per Ready. With peers the node listens on its own entry of
`peers` and serves `raftlog` clients like `raftlog node`; without, nothing listens.
The appends made in one turn of the event loop (many coroutines appending at once) are one
request to the node: one proposal, one transaction, one commit for all of them, each
answered with its own index. A single node writes on the event loop's thread: the loop
waits for each fsync, as with sqlite3 called from a coroutine (see Node._inline).

A state machine is any object with `apply(entry) -> result`, and optionally
`snapshot() -> bytes | binary file-like` and `restore(file)`. `apply` sees each committed
data entry exactly once per process lifetime, in index order, on the event loop's thread;
what it returns is handed to the proposer on the leader, with the index (`Appended`).
Without `snapshot`/`restore` the log is compacted only by retention limits (`retain_entries`,
`retain_bytes` as bytes or '2GiB', `retain_age` as seconds or '7d'; default: keep everything;
runtime/retention.py); with them a snapshot is taken
every `snapshot_every` entries or `snapshot_bytes` bytes, the log compacted (keeping
`snapshot_tail` entries), and after a restart the machine is restored from the last
snapshot and the log tail after it is applied again.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, AsyncGenerator, BinaryIO, Callable, Iterable, Iterator, Optional, Union

from raftlog.core.messages import SnapshotMeta
from raftlog.blocking_iter import blocking_iter
from raftlog.entry import Entry
from raftlog.errors import Closed, Compacted, NotLeader, RaftlogError, Timeout
from raftlog.hot import ERR_BAD_REQUEST, ERR_NOT_LEADER, ERR_SHUTTING_DOWN, ERR_TIMEOUT, KIND_DATA, RecordBatch
from raftlog.joiner import joiner_for
from raftlog.runtime.append_groups import GROUP_BYTES, GROUP_ENTRIES
from raftlog.runtime.node import Node, NodeConfig
from raftlog.wire.addresses import parse_peers
from raftlog.runtime.retention import retention_policy
from raftlog.runtime.snapshots import DEFAULT_EVERY_BYTES, DEFAULT_EVERY_ENTRIES, DEFAULT_TAIL_ENTRIES
from raftlog.embed_events import leader_changes as _leader_changes, removed_error, security

__all__ = ["open", "open_sync", "RaftLog", "SyncRaftLog", "Appended"]

log = logging.getLogger("raftlog.embed")

READ_CHUNK = 4096          # entries read from storage per step of read() and entries()

Peers = Union[None, str, dict]


class Appended(int):
    """The index an append committed at (an int), with `.result`: what the state machine's apply returned."""

    result: Any = None

    def __new__(cls, index: int, result: Any = None) -> "Appended":
        obj = super().__new__(cls, index)
        if result is not None:
            obj.result = result
        return obj

    @property
    def index(self) -> int:
        """The committed index (the int itself)."""
        return int(self)

    def __repr__(self) -> str:
        return f"Appended({int(self)}, result={self.result!r})"

    # print(), f-strings and str() show the index, as for any int; repr() shows the result too.
    __str__ = int.__repr__
    __format__ = int.__format__


_new_appended = int.__new__     # Appended without a result, built without a Python-level call
_Future = asyncio.Future


class _Failed:
    """The state machine's apply raised `exc` for an entry (the entry stays committed)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc



class _Group:
    """The local appends of one event-loop turn: one request (a Proposals open request and its Waiter).

    Every append() and append_many() joins the open group with its own future; when the
    node's next Ready pass proposes the group, `seal` encodes all its payloads as one
    RecordBatch, and one commit answers every member at its own offset. `futures[k]` is the
    future of the append() whose payload is `payloads[k]` (None under an append_many's
    entries); `many` lists the append_many() members as `(future, offset, count)`.
    """

    __slots__ = ("owner", "payloads", "futures", "many", "nbytes", "first", "last", "results")

    def __init__(self, owner: "RaftLog") -> None:
        self.owner = owner
        self.payloads: list[bytes] = []
        self.futures: list[Optional[asyncio.Future]] = []
        self.many: list[tuple[asyncio.Future, int, int]] = []
        self.nbytes = 0
        self.first = 0
        self.last = 0
        self.results: Optional[list] = None      # what apply returned per entry (with a state machine)

    def members(self) -> Iterator[tuple[asyncio.Future, int, int]]:
        """Every member as `(future, offset, count)`, count 0 for an append()."""
        for offset, fut in enumerate(self.futures):
            if fut is not None:
                yield fut, offset, 0
        yield from self.many

    def seal(self) -> RecordBatch:
        """The group's records, final: later appends open another group."""
        if self.owner._group is self:
            self.owner._group = None
        return RecordBatch.encode(0, KIND_DATA, self.payloads)

    @property
    def requests(self) -> int:
        """The append() and append_many() calls it answers."""
        return sum(fut is not None for fut in self.futures) + len(self.many)

    @property
    def gone(self) -> bool:
        """True once nobody awaits any member's future (timed out, cancelled)."""
        for fut in self.futures:
            if fut is not None and not fut.done():
                return False
        for fut, _, _ in self.many:
            if not fut.done():
                return False
        return True

    def proposed(self, first: int, term: int) -> None:
        """With a state machine, collect what its apply returns for the group's entries."""
        self.first = first
        self.last = first + len(self.payloads) - 1
        owner = self.owner
        if owner.state_machine is not None:
            self.results = [None] * len(self.payloads)
            collecting = owner._collecting
            while collecting and collecting[-1].last >= first:    # overtaken (see Proposals.track)
                collecting.pop()
            collecting.append(self)

    def appended(self, first: int, count: int) -> None:
        """Committed: each member's Appended (or list of them), or the first exception its entries' apply raised."""
        if self.results is not None:
            self._answer_with_results(first)
            return
        # The common case, one entry per append() and no state machine: one Appended each,
        # built without a Python-level call; a future already done (cancelled) is skipped.
        index = first
        for fut in self.futures:
            if fut is not None:
                try:
                    fut.set_result(_new_appended(Appended, index))
                except asyncio.InvalidStateError:
                    pass
            index += 1
        for fut, offset, n in self.many:
            if not fut.done():
                fut.set_result([_new_appended(Appended, first + k) for k in range(offset, offset + n)])

    def _answer_with_results(self, first: int) -> None:
        """Answer every member with what the state machine's apply returned for its entries."""
        results = self.results
        assert results is not None
        for fut, offset, n in self.members():
            if fut.done():
                continue
            mine = results[offset:offset + (n or 1)]
            failed = next((r for r in mine if isinstance(r, _Failed)), None)
            if failed is not None:
                fut.set_exception(failed.exc)
            elif n:
                fut.set_result([Appended(first + offset + k, r) for k, r in enumerate(mine)])
            else:
                fut.set_result(Appended(first + offset, mine[0]))

    def failed(self, code: int, message: str) -> None:
        """The group failed: every member gets the matching typed exception (NotLeader names the leader)."""
        if self.owner._group is self:
            self.owner._group = None
        for fut, _, _ in self.members():
            if not fut.done():
                fut.set_exception(self.owner._error(code, message))


class _App:
    """Adapts a user state machine to the node's Application protocol; records results for local appends."""

    def __init__(self, owner: "RaftLog", machine: Any) -> None:
        self.owner = owner
        self.machine = machine
        self.stateful = machine is not None and hasattr(machine, "snapshot") and hasattr(machine, "restore")

    def apply(self, first: int, batch: RecordBatch) -> None:
        owner = self.owner
        machine = self.machine
        if machine is not None:
            collecting = owner._collecting
            for index, term, kind, payload in batch.entries(first):
                if kind != KIND_DATA:
                    continue
                try:
                    result = machine.apply(Entry(index, term, bytes(payload)))
                except Exception as exc:
                    # The entry is committed whatever apply thinks of it; a deterministic
                    # machine raises the same on every member. The proposer gets the error.
                    log.warning("state machine apply raised at index %d: %r", index, exc)
                    result = _Failed(exc)
                while collecting and collecting[0].last < index:
                    collecting.popleft()         # every entry of it was applied
                if collecting and collecting[0].first <= index:
                    group = collecting[0]
                    group.results[index - group.first] = result      # type: ignore[index]
        owner._committed_signal()

    def snapshot(self) -> Any:
        return self.machine.snapshot()

    def restore(self, meta: SnapshotMeta, image: Optional[BinaryIO]) -> None:
        if image is not None:
            self.machine.restore(image)


class RaftLog:
    """A durable, replicated, ordered log. Use `async with raftlog.open(...) as log`; see the module docstring."""

    def __init__(self, path: str, *, node_id: int = 1, peers: Peers = None, state_machine: Any = None,
                 sync: bool = True, cluster_id: str = "raftlog", snapshot_every: Optional[int] = None,
                 snapshot_bytes: Optional[int] = None, snapshot_tail: int = DEFAULT_TAIL_ENTRIES,
                 election_timeout_ms: tuple[int, int] = (150, 300), heartbeat_ms: int = 50,
                 request_timeout: float = 10.0, engine_options: Optional[dict] = None,
                 join: Optional[str] = None, metrics: Optional[str] = None, tls: Any = None,
                 secret_file: Optional[str] = None, retain_entries: int = 0,
                 retain_bytes: Union[int, str] = 0, retain_age: Union[float, str] = 0) -> None:
        if isinstance(peers, str):
            peers = parse_peers(peers)
        members = {int(k): str(v) for k, v in (peers or {}).items()}
        if members and node_id not in members:
            raise ValueError(f"peers must name this node ({node_id}) too: {sorted(members)}")
        if join is not None and set(members) != {node_id}:
            # Issue 7: a new member names only itself (its listen address) and asks `join`
            # (any member's HOST:PORT) to be added; it learns the rest from the log.
            raise ValueError("with join=, peers names only this node: {node_id: 'HOST:PORT'}")
        self.path = str(path)
        self.single = not members
        self._app = _App(self, state_machine)
        stateful = self._app.stateful
        self._cfg = NodeConfig(
            node_id=node_id, peers=members or {node_id: "127.0.0.1:0"}, data_dir=self.path, cluster_id=cluster_id,
            sync=sync, election_timeout_ms=election_timeout_ms, heartbeat_ms=heartbeat_ms,
            request_timeout=request_timeout, engine_options=dict(engine_options or {}),
            snapshot_every=(DEFAULT_EVERY_ENTRIES if snapshot_every is None else snapshot_every) if stateful else 0,
            snapshot_bytes=(DEFAULT_EVERY_BYTES if snapshot_bytes is None else snapshot_bytes) if stateful else 0,
            snapshot_tail=snapshot_tail, listen=bool(members), transfer_on_stop=bool(members), join=join,
            metrics=metrics, **security(tls, secret_file),
            retention=retention_policy(retain_entries, retain_bytes, retain_age))
        if stateful and self._cfg.retention.active:
            raise ValueError("retain_entries/retain_bytes/retain_age are for a log without a state machine; "
                             "with snapshot() and restore(), use snapshot_every/snapshot_bytes/snapshot_tail")
        self.request_timeout = request_timeout
        self.state_machine = state_machine
        self._node: Optional[Node] = None
        self._group: Optional[_Group] = None           # the open group: this turn's appends (see _Group)
        self._collecting: deque[_Group] = deque()       # proposed groups collecting apply results, by index
        self._signal: Optional[asyncio.Future] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None     # the loop the log runs on (set by start)
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> "RaftLog":
        """Open storage, restore the state machine, start the node (and listen, with peers)."""
        if self._node is not None:
            return self
        self._loop = asyncio.get_running_loop()
        node = Node(self._cfg, app=self._app, joiner=joiner_for(self._cfg) if self._cfg.join else None)
        await node.start()
        self._node = node
        if self.single and node.raw.role.value != "leader":
            node.raw.campaign()         # the only voter: no need to wait for an election timeout
            node.kick()
        if self.single:
            await self.wait_for_leader(10.0)     # its own vote only has to be durable
            # What was acknowledged before a crash may sit above the stored commit index (it
            # is persisted lazily); the new term's no-op commits it. Wait for that, so a read
            # right after open sees every acknowledged append.
            await self._wait_applied(node.raw.last_index, 10.0)
        log.info("raftlog %s opened: node %d, %s, last index %d", self.path, node.node_id,
                 "single node" if self.single else f"{len(self._cfg.peers)} members", node.raw.last_index)
        return self

    async def close(self) -> None:
        """Stop the node cleanly (a leader hands over first); pending appends fail with Closed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        node = self._node
        if node is not None:
            await node.stop()        # fails every pending append with Closed
        self._collecting.clear()
        self._committed_signal()

    async def __aenter__(self) -> "RaftLog":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- state ----------------------------------------------------------------------------

    def _live(self) -> Node:
        if self._closed or self._node is None:
            raise Closed("the log is closed" if self._closed else "the log is not started: use `async with`")
        return self._node

    @property
    def node_id(self) -> int:
        """This node's id."""
        return self._cfg.node_id

    @property
    def role(self) -> str:
        """"leader", "follower", "candidate" or "pre-candidate"."""
        return str(self._live().raw.role)

    @property
    def term(self) -> int:
        """The node's current term."""
        return self._live().raw.term

    @property
    def leader_id(self) -> int:
        """The leader this node knows of (0 when none)."""
        return self._live().raw.leader_id

    @property
    def commit_index(self) -> int:
        """The highest index this node knows committed."""
        return self._live().raw.commit_index

    @property
    def applied_index(self) -> int:
        """The highest index applied to the state machine (what read() and entries() see)."""
        return self._live().applied_index

    @property
    def first_index(self) -> int:
        """The first index still in the log (entries before it are in the snapshot)."""
        return self._live().raw.first_index

    @property
    def last_index(self) -> int:
        """The last index in this node's log (committed or not)."""
        return self._live().raw.last_index

    def status(self) -> dict:
        """The node's status (the same fields as `raftlog status --json`, and snapshot details)."""
        return self._live().status()

    @property
    def metrics_address(self) -> Optional[str]:
        """HOST:PORT serving /metrics and /health (the real port when metrics= asked for port 0); None without."""
        server = self._live().metrics_server
        return server.bound if server is not None else None

    async def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The leader's id once one is known; Timeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            node = self._live()
            if node.raw.leader_id:
                return node.raw.leader_id
            if time.monotonic() >= deadline:
                raise Timeout(f"no leader within {timeout} s")
            await asyncio.sleep(0.01)

    # -- writing --------------------------------------------------------------------------

    async def append(self, data: bytes) -> Appended:
        """Append one entry; return its index (an int, with `.result` from the state machine) once
        committed and durable.

        NotLeader (with the leader's id and address) on a follower; Timeout when not
        committed within request_timeout (the outcome is then unknown); Closed. If the
        state machine's apply raised for it, that exception (the entry is still committed).
        """
        if type(data) is not bytes:
            data = bytes(data)
        group = self._group
        if group is None or group.nbytes >= GROUP_BYTES or len(group.payloads) >= GROUP_ENTRIES:
            group = self._open_group()
        fut: asyncio.Future = _Future(loop=self._loop)
        group.payloads.append(data)
        group.futures.append(fut)
        group.nbytes += len(data)
        return await fut

    async def append_many(self, items: Iterable[bytes]) -> list[Appended]:
        """Append entries as one batch (consecutive indexes); return each one's Appended once all are committed.

        The batch takes the node's one propose path (runtime/proposals.py), as a client's
        Append does: appends made in one event-loop turn become one proposal and share one
        transaction.
        """
        payloads = [x if type(x) is bytes else bytes(x) for x in items]
        if not payloads:
            return []
        group = self._group
        if group is None or group.nbytes >= GROUP_BYTES or len(group.payloads) >= GROUP_ENTRIES:
            group = self._open_group()
        fut: asyncio.Future = _Future(loop=self._loop)
        group.many.append((fut, len(group.payloads), len(payloads)))
        group.payloads.extend(payloads)
        group.futures.extend([None] * len(payloads))
        group.nbytes += sum(map(len, payloads))
        return await fut

    def _open_group(self) -> _Group:
        """A new open group for this turn's appends (the last one is full), submitted to the node's proposals.

        The group is one request, sealed when the node's next Ready pass proposes it; its
        deadline is its first append's. No task and no timer per append: the node answers a
        group that is not committed by its deadline with a timeout (Proposals.expire). While
        a group is open the log is open: closing fails it (Proposals.shutdown) and so closes it.
        """
        node = self._live()
        if node.removal.removed:
            raise removed_error(node)
        if node.stopping:            # (the proposals would fail the group before its first append joined)
            raise self._error(ERR_SHUTTING_DOWN, "the node is shutting down")
        group = self._group = _Group(self)
        node.proposals.submit_open(group, time.monotonic() + self.request_timeout)
        return group

    def _error(self, code: int, message: str) -> BaseException:
        """The exception an append meets for ERR_* `code` (NotLeader names the leader)."""
        if code == ERR_NOT_LEADER:
            node = self._node
            if node is not None and node.removal.removed:
                return removed_error(node)
            leader = node.leader_id if node is not None else 0
            return NotLeader(leader, (node.address_of(leader) or None) if node is not None else None)
        if code == ERR_TIMEOUT:
            return Timeout(f"{message} (request timeout {self.request_timeout} s)")
        if code == ERR_SHUTTING_DOWN:
            return Closed("the log was closed; the outcome is unknown")
        if code == ERR_BAD_REQUEST:
            return ValueError(message)
        return RaftlogError(message)

    def _committed_signal(self) -> None:
        sig = self._signal
        if sig is not None and not sig.done():
            sig.set_result(None)
        self._signal = None

    async def _wait_committed(self, timeout: Optional[float]) -> None:
        if self._signal is None:
            self._signal = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._signal), timeout)
        except asyncio.TimeoutError:
            pass

    async def _wait_applied(self, index: int, timeout: float) -> None:
        """Return once `index` is applied; Timeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._live().applied_index < index:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"index {index} not applied within {timeout} s")
            await self._wait_committed(min(left, 0.05))

    # -- reading --------------------------------------------------------------------------

    async def read(self, start: int = 1, stop: Optional[int] = None, *, limit: Optional[int] = None) -> list[Entry]:
        """Committed (applied) data entries with indexes in `[start, stop)` (stop None: up to the applied index),
        at most `limit` of them (None: no bound). The same call as Client.read.

        Compacted when `start` is before the log's first index (read the state machine instead).
        """
        out: list[Entry] = []
        pos = max(1, start)
        node = self._live()
        hi = node.applied_index if stop is None else min(stop - 1, node.applied_index)
        while pos <= hi and (limit is None or len(out) < limit):
            got, pos = self._read_some(pos, hi)
            out.extend(got if limit is None else got[:limit - len(out)])
            if pos <= hi:
                await asyncio.sleep(0)        # let the loop breathe between chunks of a long read
        return out

    def _read_some(self, pos: int, hi: int) -> tuple[list[Entry], int]:
        """Data entries of `[pos, min(hi, pos + READ_CHUNK - 1)]` and the next position."""
        node = self._live()
        storage = node.storage
        first = storage.first_index()
        if pos < first:
            raise Compacted(pos, first)
        end = min(hi, pos + READ_CHUNK - 1)
        try:
            batch = storage.records(pos, end + 1)
        except IndexError:
            raise Compacted(pos, storage.first_index()) from None
        got = [Entry(i, t, bytes(p)) for i, t, k, p in batch.entries(pos) if k == KIND_DATA]
        return got, pos + len(batch)

    async def entries(self, start: int = 1, follow: bool = True) -> AsyncGenerator[Entry, None]:
        """Yield committed data entries from `start` in order; with follow, wait for new ones forever.

        Resume after a stop with `entries(last.index + 1)`. Compacted when `start` is
        before the log's first index.
        """
        pos = max(1, start)
        while True:
            node = self._live()
            hi = node.applied_index
            if pos > hi:
                if not follow or node.removal.removed:
                    return
                await self._wait_committed(1.0)
                continue
            got, pos = self._read_some(pos, hi)
            for e in got:
                yield e

    def leader_changes(self) -> AsyncGenerator[tuple[int, Optional[int]], None]:
        """Yield `(term, leader_id)` now, then each time this node sees the leader change (None: no leader known).

        A change is another leader, no leader (an election under way), or the same node
        leading again in a new term. Changes are queued per iterator, none is skipped; the
        iterator ends when the log closes. See raftlog/embed_events.py.
        """
        return _leader_changes(self._live(), lambda: self._closed)

    # -- membership and leadership (issue 7): admin requests go to the leader, as a Client's do --
    def _admin_client(self) -> Any:
        from raftlog.client import AsyncClient
        node = self._live()
        addrs = [node.cfg.address] + [a for i, a in sorted(node.cfg.peers.items()) if i != node.node_id]
        return AsyncClient(addrs, cluster_id=node.cfg.cluster_id, timeout=node.cfg.request_timeout,
                           tls=node.cfg.tls, secret=node.cfg.secret)

    async def _admin(self, call: Any) -> Any:
        client = self._admin_client()
        try:
            return await call(client)
        finally:
            await client.close()

    async def members(self) -> list[dict]:
        """Every member `{"id", "address", "voter", "match"}` (match as the leader knows it)."""
        node = self._live()
        if str(node.raw.role) == "leader":
            return node.raw.members()
        return await self._admin(lambda c: c.members())

    async def add_member(self, node_id: int, address: str, learner: bool = False) -> int:
        """Add a member (a learner first is the gentle way); see Client.add_member."""
        return await self._admin(lambda c: c.add_member(node_id, address, learner))

    async def remove_member(self, node_id: int) -> int:
        """Remove a member (the leader too); see Client.remove_member."""
        return await self._admin(lambda c: c.remove_member(node_id))

    async def promote(self, node_id: int, max_lag: Optional[int] = None) -> int:
        """Make a learner a voter (with max_lag: once within that many entries of the leader); see Client.promote."""
        return await self._admin(lambda c: c.promote(node_id, max_lag))

    async def transfer_leadership(self, to_id: int) -> None:
        """Make voter `to_id` the leader (TimeoutNow); returns once it leads."""
        await self._admin(lambda c: c.transfer_leadership(to_id))

    async def snapshot(self) -> Optional[dict]:
        """Take a snapshot now (with a state machine that supports it, or retention's); its {index, size,
        seconds, compacted_to}. With retain_* set, the log is compacted only as far as the limits allow."""
        node = self._live()
        retention = node.retention
        fut = node.snapshots.take_now(compact_to=None if retention is None else retention.due())
        if fut is None:
            return None
        return await fut


def open(path: str, *, node_id: int = 1, peers: Peers = None, state_machine: Any = None, sync: bool = True,
         **options: Any) -> RaftLog:
    """A RaftLog at `path` (created if new); use it with `async with`. See RaftLog for the options.

    `peers`: None for a single-node log (no network), or every member as
    `{id: "HOST:PORT"}` or "1=HOST:PORT,2=..." (this node listens on its own entry).
    `sync=False` skips fsync (faster; an OS crash may lose the last commits).
    `metrics="HOST:PORT"` serves Prometheus /metrics and /health there (`metrics_address` tells
    the port when 0 was given); it needs `pip install 'raftlog[metrics]'`, else
    MetricsUnavailable. `join="HOST:PORT"` (any member) with `peers={node_id: "MY_HOST:PORT"}`: a new member that
    asks to be added as a learner, catches up (by snapshot if the log was compacted) and is
    promoted to voter once close to the leader.
    `tls=raftlog.TlsFiles(cert, key, ca)`: mutual TLS on every connection, and
    `secret_file=PATH`: the cluster's shared secret proved in every handshake, as
    `raftlog node --tls-cert/--tls-key/--tls-ca/--secret-file` (ValueError for a file that
    cannot be used). Once a committed configuration leaves this node out, appends raise
    raftlog.Removed and `entries()` iterators end.
    Without a state machine that snapshots, `retain_entries=N`, `retain_bytes=2 << 30` (or
    "2GiB") and `retain_age=7 * 86400` (or "7d", log time) keep only the newest part of the
    log (the first limit reached wins; default: keep everything); a read below the first
    index kept raises Compacted. See docs/retention.md.
    """
    return RaftLog(path, node_id=node_id, peers=peers, state_machine=state_machine, sync=sync, **options)


class SyncRaftLog:
    """RaftLog for code without asyncio: the log runs on its own event loop in a background thread.

    Every method blocks until done and may be called from any thread. The state machine's
    methods run on that background thread: guard state you also read elsewhere with a lock.
    """

    def __init__(self, path: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftlog-embed", daemon=True)
        self._thread.start()
        self._log = RaftLog(path, **options)
        try:
            self._run(self._log.start())
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False

    def _run(self, coro: Any, timeout: Optional[float] = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _get(self, fn: Any) -> Any:
        async def call() -> Any:
            return fn()
        return self._run(call())

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        """Stop the log and its thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._log.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> "SyncRaftLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check(self) -> None:
        if self._closed:
            raise Closed("the log is closed")

    def append(self, data: bytes) -> Appended:
        """Append one entry; its index once committed and durable (see RaftLog.append)."""
        self._check()
        return self._run(self._log.append(data))

    def append_many(self, items: Iterable[bytes]) -> list[Appended]:
        """Append entries as one batch; each one's index once all are committed (see RaftLog.append_many)."""
        self._check()
        return self._run(self._log.append_many(list(items)))

    def read(self, start: int = 1, stop: Optional[int] = None, *, limit: Optional[int] = None) -> list[Entry]:
        """Committed data entries in `[start, stop)`, at most `limit` (see RaftLog.read)."""
        self._check()
        return self._run(self._log.read(start, stop, limit=limit))

    def entries(self, start: int = 1, follow: bool = True) -> Iterator[Entry]:
        """Like RaftLog.entries, as a blocking generator."""
        self._check()
        yield from blocking_iter(self._run, self._log.entries(start, follow), lambda: not self._closed)

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The leader's id once one is known; Timeout after `timeout` seconds (see RaftLog.wait_for_leader)."""
        self._check()
        return self._run(self._log.wait_for_leader(timeout))

    def snapshot(self) -> Optional[dict]:
        """Take a snapshot now; its {index, size, seconds, compacted_to}, None without one (see RaftLog.snapshot)."""
        self._check()
        return self._run(self._log.snapshot())

    def members(self) -> list[dict]:
        """Every member `{"id", "address", "voter", "match"}` (see RaftLog.members)."""
        self._check()
        return self._run(self._log.members())

    def add_member(self, node_id: int, address: str, learner: bool = False) -> int:
        """Add a member; the index of its configuration entry once complete (see Client.add_member)."""
        self._check()
        return self._run(self._log.add_member(node_id, address, learner))

    def remove_member(self, node_id: int) -> int:
        """Remove a member (the leader too); see Client.remove_member."""
        self._check()
        return self._run(self._log.remove_member(node_id))

    def promote(self, node_id: int, max_lag: Optional[int] = None) -> int:
        """Make a learner a voter (with max_lag: once within that many entries of the leader); see Client.promote."""
        self._check()
        return self._run(self._log.promote(node_id, max_lag))

    def transfer_leadership(self, to_id: int) -> None:
        """Make voter `to_id` the leader (TimeoutNow); returns once it leads."""
        self._check()
        self._run(self._log.transfer_leadership(to_id))

    def status(self) -> dict:
        """The node's status (the same fields as `raftlog status --json`, and snapshot details)."""
        return self._get(self._log.status)

    def on_leader_change(self, callback: Callable[[int, Optional[int]], None]) -> Callable[[], None]:
        """Call `callback(term, leader_id)` now and at each leader change (see RaftLog.leader_changes); returns
        a function that unsubscribes.

        The callback runs on the log's background thread, between Ready passes: keep it short
        (hand the event to your own thread or queue), and do not call this log's blocking
        methods from it (they wait for that thread). An exception it raises is logged. The
        function returned may be called from any thread, the callback included; once it has
        returned, the callback is not called again.
        """
        self._check()
        unsubscribe = self._get(lambda: self._log._live().leadership.subscribe(callback, now=True))

        def unsubscribe_on_the_log_thread() -> None:
            if threading.current_thread() is self._thread:
                unsubscribe()                  # from the callback itself
            elif not self._closed:
                self._get(unsubscribe)
        return unsubscribe_on_the_log_thread

    @property
    def state_machine(self) -> Any:
        """The state machine given to open (its methods run on the log's thread)."""
        return self._log.state_machine

    role = property(lambda self: self._get(lambda: self._log.role), doc=RaftLog.role.__doc__)
    term = property(lambda self: self._get(lambda: self._log.term), doc=RaftLog.term.__doc__)
    leader_id = property(lambda self: self._get(lambda: self._log.leader_id), doc=RaftLog.leader_id.__doc__)
    commit_index = property(lambda self: self._get(lambda: self._log.commit_index), doc=RaftLog.commit_index.__doc__)
    applied_index = property(lambda self: self._get(lambda: self._log.applied_index),
                             doc=RaftLog.applied_index.__doc__)
    first_index = property(lambda self: self._get(lambda: self._log.first_index), doc=RaftLog.first_index.__doc__)
    last_index = property(lambda self: self._get(lambda: self._log.last_index), doc=RaftLog.last_index.__doc__)
    metrics_address = property(lambda self: self._get(lambda: self._log.metrics_address),
                               doc=RaftLog.metrics_address.__doc__)


def open_sync(path: str, **options: Any) -> SyncRaftLog:
    """A started SyncRaftLog (the same options as open); use it with `with` or call close()."""
    return SyncRaftLog(path, **options)
