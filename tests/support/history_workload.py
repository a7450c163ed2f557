"""A client workload that records a history (raftlog.sim.history), and a process-level nemesis.

The workload does not use `raftlog.Client`: that client retries a failed attempt, which
makes delivery at-least-once and hides the outcome of each attempt. Here every operation is
exactly one request on one connection, so its outcome is exact: `Appended` is ok,
`not-leader` is failed (the node refused the proposal, or the entries were replaced by
another leader's at their index), anything else (timeout, shutting down, a lost
connection, no reply in time) is unknown. Payloads are unique, so the checker can find
each one in the final log.

The nemesis runs a randomized schedule (seeded, the seed printed) of SIGKILL + restart,
SIGSTOP/SIGCONT and SIGTERM + restart against random members and the current leader,
leadership transfers and (with `membership=True`) membership changes (joins of fresh nodes,
removals of members and of the leader, replacements),
keeping at most `max_faulty` members down at once, and heals everything at the end.
"""
from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from typing import Callable, Optional

from raftlog.sim.history import History
from raftlog.hot import (
    ERR_NOT_LEADER,
    FRAME_APPENDED,
    FRAME_ENTRIES,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    KIND_DATA,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    FrameDecoder,
    RecordBatch,
    encode_append,
    encode_handshake,
    encode_read,
)

from raftlog.wire.requests import consistency_code
from support.polling import NOT_YET_ERRORS, NotYet, WaitTimeout, wait_for
from support.safety import assert_committed_prefixes_agree, entries_between

REPLY_TIMEOUT = 3.0          # seconds an operation waits for its reply before it is unknown


class OneShotConnection:
    """One client connection to one node: send a request, get the reply frame with its id."""

    def __init__(self, address: str, cluster_id: str) -> None:
        self.address = address
        self.cluster_id = cluster_id
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None
        self.waiters: dict[int, asyncio.Future] = {}
        self.next_id = 1
        self.closed = False
        self._task: Optional[asyncio.Task] = None
        self._hello: Optional[asyncio.Future] = None

    async def open(self, timeout: float = 1.0) -> None:
        """Connect and handshake; OSError/TimeoutError/ConnectionError when the node does not take us."""
        host, port = self.address.rsplit(":", 1)
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        self._hello = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        self.writer.write(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, self.cluster_id))
        frame = await asyncio.wait_for(asyncio.shield(self._hello), timeout)
        if frame[0] != FRAME_HANDSHAKE:
            self.close()
            raise ConnectionError(f"{self.address} refused the connection: {frame}")

    async def _read_loop(self) -> None:
        dec = FrameDecoder()
        assert self.reader is not None and self._hello is not None
        try:
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    break
                for frame in dec.feed(data):
                    if not self._hello.done():
                        self._hello.set_result(frame)
                        continue
                    w = self.waiters.pop(frame[1], None)
                    if w is not None and not w.done():
                        w.set_result(frame)
        except (OSError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self.closed = True
            exc = ConnectionError(f"connection to {self.address} lost")
            if not self._hello.done():
                self._hello.set_exception(exc)
            for w in self.waiters.values():
                if not w.done():
                    w.set_exception(exc)
            self.waiters.clear()

    async def request(self, build: Callable[[int], bytes], timeout: float = REPLY_TIMEOUT) -> tuple:
        """The reply frame; asyncio.TimeoutError or ConnectionError when none came."""
        if self.closed or self.writer is None:
            raise ConnectionError("closed")
        rid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiters[rid] = fut
        self.writer.write(build(rid))
        return await asyncio.wait_for(fut, timeout)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.closed = True
        if self.writer is not None:
            self.writer.close()
        if self._task is not None:
            self._task.cancel()


class Workload:
    """Appenders and readers against `addresses`, recording into `history` until `stop` is set."""

    def __init__(self, addresses: list[str], cluster_id: str, history: History, *, appenders: int = 4,
                 readers: int = 2, seed: int = 0, batch_max: int = 3) -> None:
        self.addresses = addresses
        self.cluster_id = cluster_id
        self.history = history
        self.appenders = appenders
        self.readers = readers
        self.rng = random.Random(seed)
        self.batch_max = batch_max
        self.leader_guess: Optional[str] = None
        self.high_index = 1
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._thread: Optional[threading.Thread] = None
        self.read_modes = ("linearizable", "lease", "stale")

    def start(self) -> None:
        """Run the workload on its own thread (its own event loop)."""
        self._thread = threading.Thread(target=self._run, name="history-workload", daemon=True)
        self._thread.start()

    def finish(self, timeout: float = 30.0) -> None:
        """Stop and wait: every operation in flight gets its outcome (or unknown) first."""
        self.stop.set()
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the workload did not stop"
        if self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:   # reported by finish()
            self.errors.append(exc)

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._appender(p)) for p in range(self.appenders)]
        tasks += [asyncio.create_task(self._reader(self.appenders + p)) for p in range(self.readers)]
        await asyncio.gather(*tasks)

    async def _connect(self, address: str) -> Optional[OneShotConnection]:
        conn = OneShotConnection(address, self.cluster_id)
        try:
            await conn.open()
            return conn
        except (OSError, asyncio.TimeoutError, ConnectionError):
            conn.close()
            return None

    async def _appender(self, process: int) -> None:
        conn: Optional[OneShotConnection] = None
        seq = 0
        while not self.stop.is_set():
            if conn is None or conn.closed:
                target = self.leader_guess or self.rng.choice(self.addresses)
                conn = await self._connect(target)
                if conn is None:
                    self.leader_guess = None
                    await asyncio.sleep(0.05)
                    continue
            n = self.rng.randint(1, self.batch_max)
            payloads = [b"p%d-%d" % (process, seq + k) for k in range(n)]
            seq += n
            records = RecordBatch.encode(0, KIND_DATA, payloads)
            op = self.history.begin_append(process, payloads, node=conn.address)
            try:
                reply = await conn.request(lambda rid, records=records: encode_append(rid, records))
            except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
                self.history.unknown(op, f"no reply: {type(exc).__name__}")
                conn.close()
                conn = None
                self.leader_guess = None
                continue
            if reply[0] == FRAME_APPENDED:
                self.history.ok_append(op, reply[2])
                self.leader_guess = conn.address
                self.high_index = max(self.high_index, reply[2] + n)
            elif reply[0] == FRAME_ERROR and reply[2] == ERR_NOT_LEADER:
                self.history.fail(op, reply[5])
                conn.close()
                conn = None
                self.leader_guess = reply[4] or None
                if not reply[4]:
                    await asyncio.sleep(0.05)     # an election is running
            else:
                self.history.unknown(op, f"reply {reply!r}"[:200])
                conn.close()
                conn = None
                self.leader_guess = None
                await asyncio.sleep(0.02)
        if conn is not None:
            conn.close()

    async def _reader(self, process: int) -> None:
        while not self.stop.is_set():
            address = self.rng.choice(self.addresses)
            conn = await self._connect(address)
            if conn is None:
                await asyncio.sleep(0.05)
                continue
            try:
                for _ in range(20):
                    if self.stop.is_set():
                        break
                    start = max(1, self.high_index - self.rng.randint(0, 400))
                    limit = 500
                    # ReadIndex reads (linearizable, and lease: linearizable while clocks
                    # behave) are checked as linearizable; stale reads only for what they
                    # promise (committed, no holes, nothing later lost).
                    mode = self.rng.choice(self.read_modes)
                    consistency = consistency_code(mode)
                    op = self.history.begin_read(process, start, node=address, linearizable=mode != "stale")
                    op.note = mode
                    try:
                        reply = await conn.request(lambda rid, start=start, limit=limit, consistency=consistency:
                                                 encode_read(rid, start, limit, 1 << 20, consistency))
                    except (asyncio.TimeoutError, ConnectionError, OSError):
                        self.history.fail(op, "no reply")   # a read without a reply tells nothing
                        break
                    if reply[0] != FRAME_ENTRIES:
                        self.history.fail(op, f"reply {reply[0]}")
                        break
                    _, _rid, next_index, indexes, records = reply
                    entries = [(indexes[i], records.payload(i)) for i in range(len(indexes))]
                    self.history.ok_read(op, next_index, entries, limited=next_index - start >= limit)
                    await asyncio.sleep(self.rng.uniform(0, 0.02))
            finally:
                conn.close()


class ProcessNemesis:
    """A seeded schedule of process faults on a ProcCluster (support/cluster.py)."""

    ACTIONS = ("kill", "kill-leader", "stop", "stop-leader", "term", "kill-two", "transfer")
    # With a cluster that can change membership (start_joiner/retire, see tests/process/test_history_process.py):
    # one "membership" step is, by the seeded schedule, a join (a fresh node id on a fresh data
    # dir, `--join`: a learner promoted once caught up), the removal of a member (the leader or
    # not) when the cluster has more voters than it started with, or a replacement (remove a
    # member, the leader or not, then join a fresh node). Voters never drop below the original
    # size minus one, and only while no other fault is in progress, so a majority of live voters
    # of the original size always remains.
    MEMBERSHIP_ACTIONS = ("membership", "membership", "membership")

    def __init__(self, cluster, seed: int, *, max_faulty: int = 1, say: Callable[[str], None] = print,  # noqa: ANN001
                 membership: bool = False, on_members: Optional[Callable[[list[str]], None]] = None) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.max_faulty = max_faulty
        self.say = say
        self.faults: dict[str, int] = {}
        self.t0 = time.monotonic()
        self.membership = membership
        self.on_members = on_members
        self.original_size = len(cluster.addresses)
        self.actions = self.ACTIONS + (self.MEMBERSHIP_ACTIONS if membership else ())
        self.membership_problems: list[str] = []

    def _leader(self) -> Optional[int]:
        found = self.cluster.leader()
        return found[0] if found else None

    def _note(self, kind: str, what: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.say(f"  nemesis {time.monotonic() - self.t0:7.2f}s {what}")

    def run(self, duration: float) -> None:
        """Inject faults for `duration` seconds, then heal every member (all running, none stopped)."""
        c = self.cluster
        end = time.monotonic() + duration
        while time.monotonic() < end:
            action = self.rng.choice(self.actions)
            if action == "kill-two" and self.max_faulty < 2:
                action = "kill"
            if action == "membership":
                self._membership_change()
                time.sleep(self.rng.uniform(0.2, 1.5))
                continue
            if action == "transfer":
                self._transfer()
                time.sleep(self.rng.uniform(0.2, 1.5))
                continue
            leader = self._leader() if action.endswith("leader") else None
            if action.endswith("leader") and leader is None:
                action = action.split("-")[0]
            victims = [leader] if leader is not None else self.rng.sample(sorted(c.addresses),
                                                                          2 if action == "kill-two" else 1)
            hold = self.rng.uniform(0.2, 2.0)
            for v in victims:
                if action.startswith("kill"):
                    c.kill(v)
                elif action.startswith("stop"):
                    c.pause(v)
                else:
                    c.signal(v, signal.SIGTERM)
                    c.wait(v, 20)
                kind = {"kill": "SIGKILL+restart", "stop": "SIGSTOP/SIGCONT", "term": "SIGTERM+restart"}[
                    action.split("-")[0]]
                self._note(kind + (" of the leader" if leader is not None else ""),
                           f"{action.split('-')[0]} node {v}" + (" (the leader)" if leader is not None else "")
                           + f" for {hold:.2f}s")
            time.sleep(hold)
            for v in victims:
                if action.startswith("stop"):
                    c.resume(v)
                else:
                    c.start(v)
            time.sleep(self.rng.uniform(0.2, 1.5))
        self.heal()

    def _transfer(self) -> None:
        """Ask the leader to hand leadership to a random other member (TimeoutNow); failure is fine, it is a fault."""
        leader = self._leader()
        if leader is None:
            return
        to = self.rng.choice([i for i in sorted(self.cluster.addresses) if i != leader])
        self._note("leadership transfer", f"transfer leadership {leader} -> {to}")
        try:
            with self.cluster.client(timeout=5.0) as c:
                c.transfer_leadership(to)
        except Exception as exc:   # a transfer may time out under load; the history check is what matters
            self.say(f"  nemesis transfer {leader} -> {to} did not complete: {exc!r}"[:200])

    def _membership_change(self) -> None:
        """One seeded membership step: join, remove (when above the original size) or replace."""
        c = self.cluster
        voters = len(c.addresses)
        if voters > self.original_size:
            kind = "remove"
        else:
            kind = self.rng.choice(("join", "replace"))
        if kind in ("remove", "replace"):
            of_leader = self.rng.random() < 0.4
            victim_pick = self.rng.choice(sorted(c.addresses))
        fresh = max(c.ever) + 1
        # Every step starts from a cluster that has a leader and all of whose members answer
        # (the previous fault has been healed, restarted nodes are up).
        try:
            wait_for("a leader and every member up before a membership change",
                     lambda: self._leader() is not None and all(s is not None for s in c.statuses().values()),
                     timeout=30.0, every=0.1)
        except WaitTimeout as exc:
            self.say(f"  nemesis membership step skipped: {exc}")
            return
        if kind in ("remove", "replace"):
            leader = self._leader() if of_leader else None
            victim = leader if leader is not None else victim_pick
            if not self._remove(victim, leader is not None, kind):
                return
        if kind in ("join", "replace"):
            self._join(fresh, kind)

    def _configuration(self) -> Optional[dict[int, dict]]:
        """The leader's member table once every member listed uses the same non-joint configuration."""
        c = self.cluster
        with c.client(timeout=5.0) as client:
            table = {m["id"]: m for m in client.members()}
        sts = c.statuses(sorted(table))
        confs = {(s or {}).get("configuration") for s in sts.values()}
        if len(confs) != 1 or None in confs or "joint" in next(iter(confs)):
            return None
        return table

    def _remove(self, victim: int, is_leader: bool, kind: str) -> bool:
        c = self.cluster
        what = "remove node" if kind == "remove" else "replace: remove node"
        self._note("membership: remove the leader" if is_leader else "membership: remove a member",
                   f"{what} {victim}" + (" (the leader)" if is_leader else ""))
        try:
            with c.client(timeout=20.0) as client:
                client.remove_member(victim)
        except Exception as exc:   # the outcome is read back from the configuration below
            self.say(f"  nemesis remove {victim} returned {exc!r}"[:200])
        return self._reconcile(f"node {victim} removed", lambda t: victim not in t)

    def _join(self, i: int, kind: str) -> bool:
        c = self.cluster
        via = self.rng.choice(sorted(c.addresses))
        c.start_joiner(i, via)
        self._note("membership: join a fresh node", f"{'replace: ' if kind == 'replace' else ''}start node {i} "
                   f"(fresh data dir) with --join node {via}")
        return self._reconcile(f"node {i} a voter", lambda t: i in t and t[i]["voter"], timeout=40.0)

    def _reconcile(self, what: str, want: Callable[[dict], bool], timeout: float = 30.0) -> bool:
        """Wait for the configuration to settle as wanted, then track what it really is."""
        c = self.cluster
        table: Optional[dict] = None
        try:
            table = wait_for(what, lambda: (lambda t: t if t is not None and want(t) else None)(self._configuration()),
                             timeout=timeout, every=0.1)
        except WaitTimeout as exc:
            self.membership_problems.append(str(exc))
            self.say(f"  nemesis membership: {exc}")
            try:
                table = wait_for("a settled configuration", self._configuration, timeout=30.0, every=0.1)
            except WaitTimeout:
                return False
        c.set_members({i: m["address"] for i, m in table.items()})
        if self.on_members is not None:
            self.on_members([m["address"] for _, m in sorted(table.items())])
        self.say(f"  nemesis {time.monotonic() - self.t0:7.2f}s configuration now "
                 + ", ".join(f"{i}{'' if m['voter'] else ' (learner)'}" for i, m in sorted(table.items())))
        return want(table)

    def heal(self) -> None:
        """Every member running and not stopped."""
        c = self.cluster
        for i in sorted(c.addresses):
            if i in c.paused:
                c.resume(i)
            if c.procs[i].poll() is not None:
                c.start(i)

    def total(self) -> int:
        """Faults injected so far."""
        return sum(self.faults.values())


def final_committed_log(cluster, ids: list[int], wait_for: Callable) -> dict[int, bytes]:  # noqa: ANN001
    """The committed data entries once every node agrees: identical up to a common commit index.

    Every poll checks the committed prefixes seen so far (support/safety.py): a disagreement
    below a commit index fails at once, even if a later poll would agree. `wait_for` is
    support.polling.wait_for, which never retries past such an AssertionError.
    """
    state: dict[str, dict[int, bytes]] = {}

    def settled() -> bool:
        dumps = {i: cluster.inspect(i) for i in ids}
        assert_committed_prefixes_agree(dumps, {})
        bounds = {i: (d["commit"], d["last_index"]) for i, d in dumps.items()}
        # Settled: one commit index everywhere and nothing uncommitted left anywhere (the new
        # leader's no-op commits whatever it kept; followers dropped whatever it did not).
        if len({b for pair in bounds.values() for b in pair}) > 1:
            raise NotYet(f"(commit, last index) per node {bounds}")
        ref = dumps[ids[0]]
        state["log"] = {index: payload for index, _term, kind, payload in entries_between(ref, 1, ref["commit"])
                        if kind == "data"}
        return True
    wait_for("every node to agree up to a common commit index", settled, timeout=60.0)
    return state["log"]


class DurabilityProbe:
    """While running: the leader's match index for each follower never exceeds what that follower holds durably.

    Each round reads the leader's member table first, then each follower's data dir
    (`raftlog inspect`, read-only); durable state only grows within a term, so the check
    is conservative. It is skipped for a follower whose stored term moved past the
    leader's (a newer leader may have truncated entries the old one had counted).
    """

    def __init__(self, cluster, every: float = 0.5) -> None:  # noqa: ANN001
        self.cluster = cluster
        self.every = every
        self.checks = 0
        self.violations: list[str] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="durability-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Stop; AssertionError listing what was seen acknowledged beyond durable."""
        self.stop.set()
        self._thread.join(60)
        assert not self.violations, "acknowledged before durable:\n  " + "\n  ".join(self.violations[:10])

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            for lid, st in self.cluster.statuses().items():
                if not st or st.get("role") != "leader":
                    continue
                for row in st.get("member_table") or []:
                    fid = row["id"]
                    if fid == lid:
                        continue
                    try:
                        last, term = self.cluster.durable(fid)
                    except NOT_YET_ERRORS:
                        continue          # a restart holds the lock for a moment or the dir is new
                    if term > st["term"]:
                        continue
                    self.checks += 1
                    if row["match"] > last:
                        self.violations.append(f"leader {lid} (term {st['term']}) counts node {fid} at "
                                               f"{row['match']}, node {fid} holds {last} durably")
