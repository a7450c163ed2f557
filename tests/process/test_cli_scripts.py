"""Real processes: `raftlog append` streams stdin as lines arrive and reports every committed line on Ctrl-C;
with one of three members up the error names the cause and the exit status is 3.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support.cluster import ProcCluster
from support.polling import wait_for

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path):
    c = ProcCluster(3, str(tmp_path))
    c.start_all()
    wait_for("a leader", c.leader)
    yield c
    c.close()


class Lines:
    """The lines a process writes to one of its pipes, collected by a thread (readline never blocks the test)."""

    def __init__(self, pipe) -> None:
        self.seen: queue.Queue[str] = queue.Queue()
        self.all: list[str] = []
        self.pump = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.pump.start()

    def _pump(self, pipe) -> None:
        for line in pipe:
            self.seen.put(line.rstrip("\n"))

    def next(self, what: str) -> str:
        """The next line, waited for (polling.wait_for's deadline)."""
        def got() -> str | None:
            try:
                line = self.seen.get_nowait()
            except queue.Empty:
                return None
            self.all.append(line)
            return line
        return wait_for(what, got)

    def rest(self) -> list[str]:
        """Every line, once the pipe is closed (the process has exited)."""
        self.pump.join(timeout=60)
        assert not self.pump.is_alive(), "the pipe is still open"
        while not self.seen.empty():
            self.all.append(self.seen.get_nowait())
        return self.all


def append_process(cluster: ProcCluster) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAFTLOG_PEERS": cluster.peers,
           "RAFTLOG_CLUSTER_ID": cluster.cluster_id}
    return subprocess.Popen([sys.executable, "-m", "raftlog", "append"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_append_sends_each_line_as_it_arrives_on_a_pipe_that_stays_open(cluster):
    proc = append_process(cluster)
    try:
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        proc.stdin.write("first\n")
        proc.stdin.flush()
        first = int(out.next("the index of the first line, with stdin still open"))
        proc.stdin.write("second\n")
        proc.stdin.flush()
        second = int(out.next("the index of the second line, with stdin still open"))
        assert second > first
        with cluster.client() as client:
            assert [e.data for e in client.read(first, stop=second + 1)] == [b"first", b"second"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        got = subprocess.run([sys.executable, "-m", "raftlog", "--json", "--peers", cluster.peers, "read",
                              "--from", str(first), "--to", str(first), "--cluster-id", cluster.cluster_id],
                             capture_output=True, text=True, env=env, timeout=60)
        assert got.returncode == 0, got.stderr
        assert [json.loads(line)["data"] for line in got.stdout.splitlines()] == ["first"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        errors = err.rest()
        assert errors == [f"interrupted: 2 lines committed, indexes {first} to {second}"], errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_during_a_piped_append_reports_every_committed_line(cluster):
    proc = append_process(cluster)
    try:
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        lines = [f"line-{k}" for k in range(20_000)]
        feeder = threading.Thread(target=lambda: (proc.stdin.write("\n".join(lines) + "\n"), proc.stdin.flush()),
                                  daemon=True)
        feeder.start()
        out.next("a first committed index")
        proc.send_signal(signal.SIGINT)       # stdin stays open: only Ctrl-C ends it
        assert proc.wait(timeout=60) == 130
        printed = [int(x) for x in out.rest()]
        summary = err.rest()
        assert len(summary) == 1 and summary[0].startswith("interrupted: "), summary
        assert "Aborted" not in "\n".join(summary)
        with cluster.client() as client:
            entries = client.read(1)
        committed = [e.index for e in entries if e.data.startswith(b"line-")]
        assert printed == committed, (len(printed), len(committed))
        lines_word = "line" if len(committed) == 1 else "lines"
        assert summary[0].startswith(f"interrupted: {len(committed)} {lines_word} committed, "
                                     f"indexes {committed[0]} to {committed[-1]}"), summary
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_with_one_of_three_up_the_error_says_no_leader_and_how_many_are_reachable(cluster):
    cluster.kill(2)
    cluster.kill(3)
    # Node 1 knows no leader once check-quorum has deposed it (if it led): an append it had
    # taken as leader would have an unknown outcome (a Timeout, exit 1), not "no leader".
    def knows_no_leader() -> bool:
        st = cluster.statuses([1])[1]
        return st is not None and st.get("role") != "leader" and st.get("leader") is None
    wait_for("node 1 to know no leader", knows_no_leader)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "raftlog", "append", "x", "--peers", cluster.peers,
                          "--cluster-id", cluster.cluster_id, "--timeout", "3s"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 3, out
    assert "no leader: 1 of 3 members reachable" in out.stderr, out.stderr
    assert f"{cluster.addresses[2]} refused the connection" in out.stderr, out.stderr
