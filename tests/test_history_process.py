"""The history checker under process faults: real `raftlog node` processes, a recorded client
workload, a seeded nemesis (SIGKILL + restart, SIGSTOP/SIGCONT, SIGTERM + restart, the leader
or random members), then every operation is checked against the final committed log.

The seed is printed; RAFTLOG_NEMESIS_SEED=N replays a schedule (process timing still varies).
The default run is short; `-m soak` runs the 10-minute version (RAFTLOG_SOAK_SECONDS overrides).
A failing run saves its history as JSON lines next to the node logs and names the file.
"""
from __future__ import annotations

import os
import random

import pytest

from raftlog.history import check

from history_workload import DurabilityProbe, ProcessNemesis, Workload, final_committed_log
from test_process_cluster import ProcCluster, wait_for

pytestmark = pytest.mark.process


def seed_from_env() -> int:
    env = os.environ.get("RAFTLOG_NEMESIS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 31)


def run_checked(tmp_path, n: int, seconds: float, max_faulty: int) -> None:
    seed = seed_from_env()
    print(f"\nnemesis seed {seed} ({n} nodes, {seconds:g}s; RAFTLOG_NEMESIS_SEED={seed} replays the schedule)")
    cluster = ProcCluster(n, str(tmp_path))
    from raftlog.history import History
    history = History()
    try:
        cluster.start_all()
        wait_for("a leader", lambda: cluster.leader())
        work = Workload(list(cluster.addresses.values()), "proc-test", history, seed=seed)
        work.start()
        probe = DurabilityProbe(cluster)
        probe.start()
        nemesis = ProcessNemesis(cluster, seed, max_faulty=max_faulty)
        try:
            nemesis.run(seconds)
            wait_for("a leader after healing", lambda: cluster.leader(), timeout=30.0)
            # A little load after healing, so the last leader commits under traffic too.
            ok_before = history.counts().get("append ok", 0)
            wait_for("appends to succeed after healing",
                     lambda: history.counts().get("append ok", 0) > ok_before + 20, timeout=30.0)
        finally:
            work.finish()
            probe.finish()
        final = final_committed_log(cluster, sorted(cluster.addresses), wait_for)
        report = check(history.ops, final)
        print(f"seed {seed}: {nemesis.total()} faults {nemesis.faults}")
        print(f"seed {seed}: {report.summary()}; {probe.checks} leader-match <= follower-durable checks")
        if not report.ok:
            path = str(tmp_path / f"history-{seed}.jsonl")
            history.save(path)
            print(f"history saved to {path}")
        report.assert_ok()
        assert report.appends_ok >= 100, "too little got through to say anything"
        assert report.reads_ok >= 20
        assert nemesis.total() >= max(3, int(seconds / 4))
        assert probe.checks >= 10
    finally:
        cluster.close()


def test_history_under_process_faults_three_nodes(tmp_path):
    run_checked(tmp_path, 3, float(os.environ.get("RAFTLOG_HISTORY_SECONDS", "20")), max_faulty=1)


@pytest.mark.soak
def test_history_soak_five_nodes(tmp_path):
    run_checked(tmp_path, 5, float(os.environ.get("RAFTLOG_SOAK_SECONDS", "600")), max_faulty=2)
