"""The history checker under process faults: real `raftlog node` processes, a recorded client
workload, a seeded nemesis (SIGKILL + restart, SIGSTOP/SIGCONT, SIGTERM + restart, the leader
or random members, leadership transfers, membership changes: fresh nodes joining with `--join`,
removals of members and of the leader, replacements), then every operation is checked against
the final committed log, on which the final configuration's members must agree.

The seed is printed; RAFTLOG_NEMESIS_SEED=N replays a schedule (process timing still varies).
The default suite runs 3 nodes (one faulty at a time) for 20 s and 5 nodes (up to two faulty at
once) for 20 s (RAFTLOG_HISTORY_SECONDS overrides both); `-m soak` runs the 5-node version for
10 minutes (RAFTLOG_SOAK_SECONDS overrides).
A failing run saves its history as JSON lines next to the node logs and names the file.
"""
from __future__ import annotations

import os
import random
import subprocess
from typing import Optional

import pytest

from raftlog.sim.history import check

from raftlog.runtime.launcher import free_ports
from support.cluster import MemberCluster
from support.history_workload import DurabilityProbe, ProcessNemesis, Workload, final_committed_log
from support.polling import wait_for

pytestmark = pytest.mark.process


class ChangingCluster(MemberCluster):
    """A MemberCluster whose membership the nemesis changes: `addresses` is always the current
    configuration (replaced whole, never mutated, since the probe and the nemesis read it from
    other threads); joined nodes restart with `--join` (already members, they just catch up)."""

    def __init__(self, n: int, root: str) -> None:
        super().__init__(n, root)
        self.original = set(self.addresses)
        self.ever = set(self.addresses)
        self.removed: list[int] = []

    def start(self, i: int, join: Optional[str] = None) -> subprocess.Popen:
        """Start node i; one that joined (not an original member) restarts with `--join`."""
        if join is None and i not in self.original:
            join = self.addresses[self.join_via(i)]
        return super().start(i, join)

    def join_via(self, i: int) -> int:
        """Some other member to join through (the lowest id: any member forwards the request)."""
        return min(j for j in self.addresses if j != i)

    def start_joiner(self, i: int, via: int, *extra: str) -> None:
        if i not in self.addresses:
            self.addresses = {**self.addresses, i: f"127.0.0.1:{free_ports(1)[0]}"}
            self.ever.add(i)
        super().start_joiner(i, via, *extra)

    def set_members(self, members: dict[int, str]) -> None:
        """Track the configuration `members` (id -> address); a member no longer in it is killed by PID."""
        for i in sorted(set(self.addresses) - set(members)):
            if i in self.procs and self.procs[i].poll() is None:
                self.resume(i)
                self.kill(i)
            self.procs.pop(i, None)
            self.removed.append(i)
        self.addresses = dict(members)
        self.n = len(members)


MIN_PROBE_CHECKS = 10      # leader-match <= follower-durable checks a run must make to mean anything


def seed_from_env() -> int:
    env = os.environ.get("RAFTLOG_NEMESIS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 31)


def run_checked(tmp_path, n: int, seconds: float, max_faulty: int) -> None:
    seed = seed_from_env()
    print(f"\nnemesis seed {seed} ({n} nodes, {seconds:g}s; RAFTLOG_NEMESIS_SEED={seed} replays the schedule)")
    cluster = ChangingCluster(n, str(tmp_path))
    from raftlog.sim.history import History
    history = History()
    try:
        cluster.start_all()
        wait_for("a leader", lambda: cluster.leader())
        work = Workload(list(cluster.addresses.values()), "proc-test", history, seed=seed)
        work.start()
        probe = DurabilityProbe(cluster)
        probe.start()
        def on_members(addresses: list[str]) -> None:
            work.addresses = addresses       # one assignment: the workload's threads see old or new

        nemesis = ProcessNemesis(cluster, seed, max_faulty=max_faulty, membership=True, on_members=on_members)
        try:
            nemesis.run(seconds)
            wait_for("a leader after healing", lambda: cluster.leader(), timeout=30.0)
            # A little load after healing, so the last leader commits under traffic too.
            ok_before = history.counts().get("append ok", 0)
            wait_for("appends to succeed after healing",
                     lambda: history.counts().get("append ok", 0) > ok_before + 20, timeout=30.0)
            # Under load the run's fixed time may hold fewer probe rounds: keep the healed
            # cluster under traffic until the probe has checked enough, not a count by luck.
            wait_for(f"{MIN_PROBE_CHECKS} durability checks",
                     lambda: probe.checks >= MIN_PROBE_CHECKS, timeout=120.0)
        finally:
            work.finish()
            probe.finish()
        # The end-of-run agreement is over the final configuration's members, as the cluster
        # reports it (the nemesis tracked it; they must match), not the original ones.
        with cluster.client(timeout=20.0) as client:
            final_members = {m["id"]: m["address"] for m in client.members()}
        assert final_members == cluster.addresses, f"configuration {final_members} != tracked {cluster.addresses}"
        print(f"seed {seed}: final configuration {sorted(final_members)} (removed {cluster.removed})")
        final = final_committed_log(cluster, sorted(final_members), wait_for)
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
        assert probe.checks >= MIN_PROBE_CHECKS
        assert not nemesis.membership_problems, nemesis.membership_problems
    finally:
        cluster.close()


@pytest.mark.parametrize("nodes, max_faulty, seconds_variable, default_seconds", [
    pytest.param(3, 1, "RAFTLOG_HISTORY_SECONDS", 20.0, id="3-nodes"),
    pytest.param(5, 2, "RAFTLOG_HISTORY_SECONDS", 20.0, id="5-nodes-short"),
    pytest.param(5, 2, "RAFTLOG_SOAK_SECONDS", 600.0, id="5-nodes-soak", marks=pytest.mark.soak),
])
def test_history_under_process_faults(tmp_path, nodes: int, max_faulty: int, seconds_variable: str,
                                      default_seconds: float) -> None:
    """Under the nemesis: every operation checks out against the final log, on which the members agree,
    and no follower is ever counted beyond what it holds durably."""
    run_checked(tmp_path, nodes, float(os.environ.get(seconds_variable, default_seconds)), max_faulty=max_faulty)
