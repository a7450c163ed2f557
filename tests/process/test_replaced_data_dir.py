"""Real processes: a member restarted on an emptied data dir under its old id is refused, then removed and re-joined.

Issue 13 item 2. A node that lost its data dir lost its term, its vote and the entries it
acknowledged: let back in under its old id it could vote twice in one term (Raft paper §5.2)
or break the majority that committed an entry (§5.4). Every member that knew its data dir's
incarnation refuses it (raftlog.core.incarnations), says so in one log line with the remedy,
and the refused node shows who refuses it in its status. The remedy is the operator's: stop
it, `raftlog members remove N`, start it on an empty dir with `--join`. Every process is
killed by PID.
"""
from __future__ import annotations

import shutil
import threading

import pytest

from raftlog.errors import RaftlogError
from support.cluster import MemberCluster, assert_logs_agree, clusters
from support.polling import NotYet, wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def make_members(tmp_path):
    with clusters(str(tmp_path), MemberCluster) as make:
        yield make


class Load:
    """Appends from a background thread until stopped; `acked` holds every acknowledged append (index -> payload)."""

    def __init__(self, cluster: MemberCluster, ids: list[int]) -> None:
        self.cluster = cluster
        self.ids = ids
        self.acked: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.cluster.client(self.ids, timeout=5.0) as client:
            k = 0
            while not self._stop.is_set():
                payload = b"load-%d" % k
                k += 1
                try:
                    self.acked[client.append(payload)] = payload
                except RaftlogError:
                    pass            # not acknowledged: it may or may not be in the log

    def count(self) -> int:
        """How many appends were acknowledged so far."""
        return len(self.acked)

    def wait_more(self, what: str, more: int = 50) -> None:
        """Wait until `more` appends beyond those acknowledged now are acknowledged."""
        target = self.count() + more

        def enough() -> bool:
            if self.count() < target:
                raise NotYet(f"{self.count()} of {target} appends acknowledged")
            return True
        wait_for(what, enough)


def test_a_member_restarted_on_an_emptied_data_dir_is_refused_until_removed_and_rejoined(make_members):
    c = make_members(3)
    c.start_all()
    lid, term = wait_for("a leader", lambda: c.leader_of([1, 2, 3]))
    # The lowest follower: re-joined by address, it ranks below a member it must dial itself.
    wiped = min(i for i in (1, 2, 3) if i != lid)
    others = [i for i in (1, 2, 3) if i != wiped]
    with Load(c, others) as load:
        load.wait_more("appends under load")
        wait_for(f"node {wiped} to hold entries", lambda: c.statuses([wiped])[wiped]["commit"] > 10)
        c.kill(wiped)
        shutil.rmtree(c.data_dir(wiped))
        c.start(wiped)              # same id, same --peers, an empty dir: a new incarnation

        def refused() -> dict:
            status = c.statuses([wiped])[wiped]
            if status is None or set(status["refused_by"]) != {str(i) for i in others}:
                raise NotYet(f"node {wiped}'s status: {status}")
            return status
        status = wait_for(f"node {wiped} to be refused by {others}", refused)
        for i in others:
            assert "its data dir was replaced" in status["refused_by"][str(i)]
            wait_for(f"node {i} to log the refusal",
                     lambda i=i: f"node {i} refused node {wiped}: its data dir was replaced" in c.log_of(i))
        # The cluster keeps serving, under the same leader and term; the refused node never
        # becomes a candidate (its term stays 0) and its role does not move.
        held = c.statuses([wiped])[wiped]
        load.wait_more("appends while it is refused")
        assert c.leader_of(others) == (lid, term), c.statuses()
        now = c.statuses([wiped])[wiped]
        assert (now["role"], now["term"]) == (held["role"], 0) and now["role"] != "candidate", (held, now)
        assert c.statuses([wiped])[wiped]["refused_by"].keys() == {str(i) for i in others}
        # The remedy: stop it first (running, it would be met again once forgotten), remove it,
        # start it on an empty dir with --join.
        c.kill(wiped)
        out = c.cli("members", "remove", str(wiped), via=others)
        assert out.returncode == 0, out.stderr
        assert c.leader_of(others) == (lid, term), c.statuses()
        for i in others:
            line = f"node {i} refused node {wiped}: its data dir was replaced"
            text = c.log_of(i)
            assert text.count(line) == 1, f"node {i} logged the refusal {text.count(line)} times"
            assert f"remove it with `raftlog members remove {wiped}`, then start it on an empty dir with --join" \
                in text
        shutil.rmtree(c.data_dir(wiped))
        c.start_joiner(wiped, via=lid)
        wait_for(f"node {wiped} to be a voter again", lambda: c.voters(others) == {1, 2, 3}, timeout=40)
        load.wait_more("appends after the rejoin")
    assert c.statuses([wiped])[wiped]["refused_by"] == {}
    assert_logs_agree(c, [1, 2, 3], load.acked)
