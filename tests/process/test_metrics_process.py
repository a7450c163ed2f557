"""Metrics, health and `raftlog status --check` with real node processes.

`raftlog node --metrics HOST:PORT` serves /metrics and /health; `raftlog status --check` exits
0 with a leader and a quorum answering, 1 without (one member of three up), 3 when no member
answers."""
from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from raftlog.runtime.launcher import free_ports
from support.cluster import ProcCluster
from support.polling import NotYet, wait_for

pytestmark = pytest.mark.process
pytest.importorskip("prometheus_client", reason="prometheus_client not installed (pip install 'raftlog[metrics]')")


def get(url: str) -> tuple[int, str]:
    """(HTTP status, body) of GET `url`."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def status_check(cluster: ProcCluster) -> subprocess.CompletedProcess:
    """`raftlog status --check` over every member of `cluster`."""
    return subprocess.run([sys.executable, "-m", "raftlog", "status", "--check", "--peers", cluster.peers,
                           "--cluster-id", cluster.cluster_id, "--timeout", "1"],
                          capture_output=True, text=True, timeout=60)


def sample(text: str, name: str) -> float:
    """The value of the one sample `name{node="..."}` in Prometheus text."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]
    assert len(values) == 1, (name, values)
    return values[0]


def test_metrics_health_and_status_check_of_real_processes(tmp_path):
    ports = free_ports(6)      # one call: the node and metrics ports are all distinct
    cluster = ProcCluster(3, str(tmp_path), addresses={i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)})
    metrics = {i: f"127.0.0.1:{ports[i + 2]}" for i in (1, 2, 3)}
    for i in cluster.addresses:
        cluster.args[i] += ["--metrics", metrics[i]]
    try:
        cluster.start_all()
        lid, term = wait_for("a leader", lambda: cluster.leader())
        ok = wait_for("status --check to exit 0", lambda: (out := status_check(cluster)).returncode == 0 and out)
        assert ok.stdout.startswith(f"ok: leader {lid} in term "), ok.stdout

        def health(i: int) -> str:
            code, body = get(f"http://{metrics[i]}/health")
            if code != 200:
                raise NotYet(f"node {i}: {code} {body.strip()}")
            return body
        for i in cluster.addresses:
            wait_for(f"/health of node {i} to say 200", lambda i=i: health(i))

        before = get(f"http://{metrics[lid]}/metrics")[1]
        with cluster.client() as client:
            client.append_many([b"p" * 50] * 40)
        code, after = get(f"http://{metrics[lid]}/metrics")
        assert code == 200
        assert sample(after, "raftlog_proposal_entries_committed_total") - \
            sample(before, "raftlog_proposal_entries_committed_total") == 40
        assert sample(after, "raftlog_commit_index") >= sample(before, "raftlog_commit_index") + 40
        assert 'raftlog_role{node="%d",role="leader"} 1.0' % lid in after

        followers = [i for i in cluster.addresses if i != lid]
        cluster.stop(followers[:1] + [lid])       # one member of three left: no leader, no quorum
        alone = followers[1]
        out = wait_for("status --check to exit 1", lambda: (o := status_check(cluster)).returncode == 1 and o)
        assert out.stdout.startswith("no leader"), out.stdout
        code, body = wait_for("/health of the survivor to say 503",
                              lambda: (r := get(f"http://{metrics[alone]}/health"))[0] == 503 and r)
        assert len(body.strip().splitlines()) == 1, body

        cluster.stop([alone])
        out = status_check(cluster)
        assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
        assert out.stdout.strip() == "no member answers (asked 3)"
    finally:
        cluster.close()
