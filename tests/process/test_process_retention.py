"""Real processes: `raftlog node --retain-*` compacts the plain log; a member stopped behind the retained prefix
catches up by InstallSnapshot; `raftlog status --json` reports first_index and the data dir's size;
`raftlog read` below the first index is one line and exit status 1."""
from __future__ import annotations

import json

import pytest

from support.cluster import MemberCluster
from support.polling import wait_for

pytestmark = pytest.mark.process

RETAIN = ["--retain-entries", "200", "--retain-bytes", "1MiB", "--retain-age", "1h"]


@pytest.fixture
def cluster(tmp_path):
    c = MemberCluster(3, str(tmp_path), extra=RETAIN)     # (for its cli())
    yield c
    c.close()


def test_a_member_stopped_behind_the_retained_prefix_catches_up_by_snapshot(cluster):
    c = cluster
    c.start_all()
    leader, _ = wait_for("a leader", lambda: c.leader())
    behind = next(i for i in (1, 2, 3) if i != leader)
    with c.client() as client:
        client.append_many([b"before-%d" % k for k in range(50)])
        c.stop([behind])
        stopped_last, _ = c.durable(behind)
        for k in range(20):
            client.append_many([b"while-%d-%d" % (k, j) for j in range(100)])
        leader_now, _ = wait_for("a leader", lambda: c.leader([i for i in (1, 2, 3) if i != behind]))
        wait_for("the leader to compact past the stopped member",
                 lambda: (c.statuses([leader_now])[leader_now] or {}).get("first_index", 0) > stopped_last + 1)
        c.start(behind)
        target = c.statuses([leader_now])[leader_now]["commit"]
        st = wait_for("the member to catch up", lambda: (lambda s: s if s and s["applied"] >= target else None)(
            c.statuses([behind])[behind]))
        assert st["snapshot"]["index"] > stopped_last + 1              # it installed the leader's snapshot
        assert 0 < st["snapshot"]["size"] < 4096                        # metadata only
        last = client.append(b"after")                                  # and goes on with the log
        wait_for("the member to apply the next entry",
                 lambda: c.statuses([behind])[behind]["applied"] >= last)
    assert "installed snapshot" in open(c.log_path(behind)).read()

    out = c.cli("status", "--json", via=[1, 2, 3])
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    for row in rows:
        assert {"id", "address", "role", "term", "last_index", "commit", "applied", "leader"} <= set(row)
        assert row["first_index"] > 1 and row["data_dir_bytes"] > 0, row
        if row["id"] != behind:          # (the member that installed a snapshot holds only what came after it)
            assert row["last_index"] - row["first_index"] + 1 >= 200, row     # never below the entries limit
    first = next(r for r in rows if r["id"] == behind)["first_index"]

    out = c.cli("read", "--from", "1", "--consistency", "stale", via=[behind])
    assert out.returncode == 1
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "compacted" in out.stderr and "--from" in out.stderr, out.stderr
    out = c.cli("read", "--from", str(first), "--limit", "1", "--consistency", "stale", via=[behind])
    assert out.returncode == 0 and int(out.stdout.split("\t")[0]) >= first, (out.stdout, out.stderr)
