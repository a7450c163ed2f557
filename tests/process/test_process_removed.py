"""Real processes: a member removed from the cluster logs one line and exits 0 (the leader too, after
it steps down); with --stay it keeps running, `raftlog status` shows it `removed`, and a client
that knows only it is sent on to a member. Every process is started and killed by PID."""
from __future__ import annotations

import json
import re

import pytest

from support.cluster import MemberCluster, clusters
from support.polling import wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def make_members(tmp_path):
    with clusters(str(tmp_path), MemberCluster) as make:
        yield make


def _removal_lines(c: MemberCluster, i: int) -> list[str]:
    return re.findall(rf"node {i} was removed from the cluster \(members [0-9, ]+\); [^\n]*", c.log_of(i))


def test_removed_members_exit_0_and_one_that_stays_shows_removed(make_members):
    c = make_members(3)
    c.start_all()
    lid, _ = wait_for("a leader", lambda: c.leader_of([1, 2, 3]))
    follower = next(i for i in (1, 2, 3) if i != lid)
    out = c.cli("members", "remove", str(follower), via=[1, 2, 3])
    assert out.returncode == 0, out.stderr
    assert c.wait(follower, timeout=60) == 0, c.log_of(follower)
    rest = [i for i in (1, 2, 3) if i != follower]
    assert _removal_lines(c, follower) == [
        f"node {follower} was removed from the cluster (members {', '.join(map(str, rest))}); exiting"]

    # Started again with --stay over its data dir: it knows it from its log, serves status only.
    c.args[follower] = ["--stay"]
    c.start(follower)
    rows = wait_for("status to show the removed member",
                    lambda: (lambda r: r if r[follower - 1]["role"] == "removed" else None)(
                        json.loads(c.cli("status", "--json", via=[1, 2, 3]).stdout)))
    assert {r["id"]: r["role"] for r in rows}[follower] == "removed"
    assert _removal_lines(c, follower)[-1].endswith("; staying; requests are refused")
    with c.client([follower]) as client:         # refused there with the member list: goes to a member
        index = client.append(b"sent to the removed member")
    with c.client(rest) as client:
        assert [e.data for e in client.read(index, limit=1)] == [b"sent to the removed member"]

    # The leader removes itself: it commits C_new, steps down (dissertation 4.2.2) and exits 0.
    lid, _ = wait_for("a leader of the two", lambda: c.leader_of(rest))
    out = c.cli("members", "remove", str(lid), via=rest)
    assert out.returncode == 0, out.stderr
    assert c.wait(lid, timeout=60) == 0, c.log_of(lid)
    last = next(i for i in rest if i != lid)
    assert _removal_lines(c, lid) == [f"node {lid} was removed from the cluster (members {last}); exiting"]
    wait_for("the last member to lead", lambda: c.leader_of([last]))
