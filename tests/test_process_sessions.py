"""Real processes: appends retried across a SIGKILL of the leader are not duplicated (client sessions)."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from raftlog.runtime.client import Client
from test_process_cluster import ProcCluster, wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def cluster(tmp_path):
    c = ProcCluster(3, str(tmp_path))
    yield c
    c.close()


def test_appends_retried_across_a_sigkill_of_the_leader_are_not_duplicated(cluster):
    c = cluster
    c.start_all()
    wait_for("a leader", lambda: c.leader())
    results: dict[bytes, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        # Small requests, many in flight on one connection: a SIGKILL leaves some of them
        # committed but unanswered, and the client resends those (same session and seq).
        with Client(list(c.addresses.values()), cluster_id="proc-test", timeout=30.0) as client:
            k = 0
            while not stop.is_set():
                batch = [b"w%d-%d-%d" % (w, k, j) for j in range(20)]
                try:
                    for payload, index in zip(batch, client.append_many(batch)):
                        results[payload] = index
                except BaseException as exc:   # noqa: BLE001 - reported below
                    errors.append(exc)
                    return
                k += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            time.sleep(1.0)
            lid, term = wait_for("a leader", lambda: c.leader())
            c.kill(lid)
            wait_for("a new leader", lambda: c.leader([i for i in c.addresses if i != lid], above_term=term))
            c.start(lid)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert len(results) > 200
    with c.client() as client:
        entries = client.read(1)
    counts = Counter(e.data for e in entries)
    dups = [p for p, n in counts.items() if n > 1]
    assert not dups, f"{len(dups)} payloads appended twice, e.g. {dups[:3]}"
    at = {e.index: e.data for e in entries}
    wrong = [(p, i) for p, i in results.items() if at.get(i) != p]
    assert not wrong, f"acknowledged indexes that do not hold their payload: {wrong[:3]}"
