"""Real processes: appends retried across a SIGKILL of the leader are not duplicated (client sessions)."""
from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from raftlog.client import AsyncClient
from support.cluster import ProcCluster
from support.polling import wait_for

pytestmark = pytest.mark.process

WRITERS = 3              # clients, each with its own session
STREAMS = 8              # requests in flight at once on each client's one connection
MIN_KILLS, MAX_KILLS = 2, 10   # leader kills: at least, and at most while no retry was seen answered from the table
# DEBUG line (runtime/sessions.py) of a leader answering a request from its session table: a retry
# of a request already applied, answered with the original index instead of appending it again.
ANSWERED_FROM_TABLE = "already applied at"


@pytest.fixture
def cluster(tmp_path):
    c = ProcCluster(3, str(tmp_path), verbosity=2)
    yield c
    c.close()


def test_appends_retried_across_a_sigkill_of_the_leader_are_not_duplicated(cluster):
    """Retries happen (the nodes log them answered from the session table) and no payload is appended twice."""
    c = cluster
    c.start_all()
    wait_for("a leader", lambda: c.leader())
    results: dict[bytes, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    async def write(w: int) -> None:
        # Small requests, many in flight on one connection: a SIGKILL leaves some of them
        # committed (or replicated) but unanswered, and the client resends those (same session and seq).
        async with AsyncClient(list(c.addresses.values()), cluster_id="proc-test", timeout=30.0) as client:
            # The session's first request alone: a session is known to the leader only once its
            # seq 1 is applied (see test_a_fresh_session_takes_pipelined_appends below).
            results[b"w%d-first" % w] = await client.append(b"w%d-first" % w)

            async def stream(s: int) -> None:
                k = 0
                while not stop.is_set():
                    batch = [b"w%d-%d-%d-%d" % (w, s, k, j) for j in range(5)]
                    for payload, index in zip(batch, await client.append_many(batch)):
                        results[payload] = index
                    k += 1
            await asyncio.gather(*(stream(s) for s in range(STREAMS)))

    def writer(w: int) -> None:
        try:
            asyncio.run(write(w))
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    def answered_from_table() -> int:
        return sum(c.log_of(i).count(ANSWERED_FROM_TABLE) for i in c.addresses)

    def progress(what: str) -> None:
        before = len(results)
        wait_for(what, lambda: errors or len(results) >= before + 300)
        assert not errors, errors

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    kills = 0
    try:
        progress("appends under load")
        while kills < MIN_KILLS or (kills < MAX_KILLS and not answered_from_table()):
            lid, term = wait_for("a leader", lambda: c.leader())
            c.kill(lid)
            kills += 1
            wait_for("a new leader",
                     lambda lid=lid, term=term: c.leader([i for i in c.addresses if i != lid], above_term=term))
            c.start(lid)
            progress(f"appends after SIGKILL {kills} of the leader")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    retried = answered_from_table()
    print(f"\n{kills} SIGKILLs of the leader; {retried} retried requests answered from the session table; "
          f"{len(results)} appends acknowledged")
    assert not errors, errors
    assert retried, f"no retry was answered from the session table in {kills} SIGKILLs of the leader"
    with c.client() as client:
        entries = client.read(1)
    counts = Counter(e.data for e in entries)
    dups = [p for p, n in counts.items() if n > 1]
    assert not dups, f"{len(dups)} payloads appended twice, e.g. {dups[:3]}"
    at = {e.index: e.data for e in entries}
    wrong = [(p, i) for p, i in results.items() if at.get(i) != p]
    assert not wrong, f"acknowledged indexes that do not hold their payload: {wrong[:3]}"


def test_a_fresh_session_takes_pipelined_appends(cluster):
    """A new client's first append_many of several requests (sent at once, seq 1, 2, 3, ...) is accepted."""
    c = cluster
    c.start_all()
    wait_for("a leader", lambda: c.leader())
    payloads = [b"%04d" % k + b"x" * 1000 for k in range(3000)]     # about 3 MiB: three or more requests
    with c.client() as client:
        indexes = client.append_many(payloads)
        at = {e.index: e.data for e in client.read(1)}
    assert [at.get(i) for i in indexes] == payloads
