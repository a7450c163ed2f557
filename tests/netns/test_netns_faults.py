"""Nodes in separate network namespaces under real network faults (tests/support/netns.py), with the
recorded client workload running in its own namespace throughout.

Faults: random loss of 3-10% of every node's outgoing TCP packets (nftables), a bandwidth
limit with queueing delay on every node (tc tbf), the leader's link down, the leader alone in
a minority, a bridge node (two sides that reach only it), one-way cuts (blackhole routes from
the leader to a follower and from another follower to the leader), and partitions that heal
and re-split every few seconds. After each one heals, a leader agreed on by a majority must
come back (within a generous deadline; the time it took is printed, measured by a watcher
polling every member every 100 ms); at the end every operation of the history is checked
(raftlog.sim.history) against the final log, which must be identical on every node up to the
commit index.

Every fault runs in the default suite, a few seconds each: loss, the leader's link and
flapping partitions on 3 nodes, bandwidth, leader minority, bridge and one-way cuts on 5
(a minority of two, two sides of two). `-m soak` runs all seven on 5 nodes, 30 s per fault.
RAFTLOG_NETNS_SECONDS overrides the seconds per fault. Skips, with the reason, when not root
or without iproute2/nftables/tc (a failure under RAFTLOG_REQUIRE_ALL_TESTS, which CI sets).
The seed is printed; RAFTLOG_NETNS_SEED replays the choices.
"""
from __future__ import annotations

import os
import random
import sys
import time

import pytest

from raftlog.sim.history import History, check

from support.history_workload import final_committed_log
from support.netns import NetnsCluster, leader_at, netns_unavailable, read_jsonl, wait_leader_since
from support.polling import wait_for


RECOVERY_DEADLINE = 30.0   # seconds from healing to a leader agreed on by a majority
ALL_FAULTS = ["loss", "bandwidth", "leader-link-down", "leader-minority", "bridge", "one-way", "flapping"]


@pytest.fixture
def netns_cluster(tmp_path):
    why = netns_unavailable()
    if why:
        pytest.skip(why)
    made: list[NetnsCluster] = []

    def make(n: int) -> NetnsCluster:
        c = NetnsCluster(n, str(tmp_path))
        made.append(c)
        c.setup()
        return c
    yield make
    for c in made:
        c.teardown()


def current_leader(leaders_path: str, n: int) -> int:
    def found() -> int | None:
        samples = read_jsonl(leaders_path)
        return leader_at(samples[-1], n) if samples else None
    return wait_for("a leader in the watcher's samples", found, timeout=30, every=0.1)


def apply_fault(c: NetnsCluster, name: str, leader: int, rng: random.Random) -> str:
    """Inject fault `name`; a one-line description."""
    ids = sorted(c.ns)
    others = [i for i in ids if i != leader]
    if name == "loss":
        pcts = {i: rng.randint(3, 10) for i in ids}
        for i, p in pcts.items():
            c.loss(i, p)
        return f"loss {pcts}"
    if name == "bandwidth":
        for i in ids:
            c.bandwidth(i, "2mbit")
        return "2 mbit/s tbf on every node"
    if name == "leader-link-down":
        c.link(leader, False)
        return f"node {leader} (leader) link down"
    if name == "leader-minority":
        minority = [leader] + others[:max(0, (len(ids) - 1) // 2 - 1)]
        majority = [i for i in ids if i not in minority]
        c.split(minority, majority)
        return f"split {minority} | {majority}"
    if name == "bridge":
        bridge = rng.choice(ids)
        rest = [i for i in ids if i != bridge]
        a, b = rest[:len(rest) // 2], rest[len(rest) // 2:]
        c.split(a, b)
        return f"{a} and {b} reach each other only through node {bridge}"
    if name == "one-way":
        f1, f2 = rng.sample(others, 2) if len(others) >= 2 else (others[0], others[0])
        c.cut(leader, f1)
        c.cut(f2, leader)
        return f"one-way: {leader} -x-> {f1}, {f2} -x-> {leader}"
    raise ValueError(name)


def run_netns(c: NetnsCluster, out: str, seconds: float, seed: int, scenarios: list[str]) -> None:
    rng = random.Random(seed)
    print(f"\nnetns seed {seed}: {c.n} nodes, {seconds:g}s per fault, RAFTLOG_NETNS_SEED={seed} replays the choices")
    c.start_all()
    client_log = open(os.path.join(out, "client.log"), "ab")
    here = os.path.dirname(os.path.abspath(__file__))
    client = c.in_client_ns(sys.executable, os.path.join(here, "netns_client.py"), "--peers", c.peers,
                            "--out", out, "--seed", str(seed), stdout=client_log, stderr=client_log,
                            cwd=os.path.dirname(os.path.dirname(here)))
    leaders = os.path.join(out, "leaders.jsonl")
    recoveries: list[tuple[str, float]] = []
    faults = 0
    try:
        for name in scenarios:
            leader = current_leader(leaders, c.n)
            began = time.monotonic()
            if name == "flapping":
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    ids = sorted(c.ns)
                    rng.shuffle(ids)
                    k = rng.randint(1, len(ids) // 2)
                    c.split(ids[:k], ids[k:])
                    faults += 1
                    print(f"  flap: split {ids[:k]} | {ids[k:]}")
                    time.sleep(rng.uniform(1.0, 3.0))
                    c.heal()
                    time.sleep(rng.uniform(0.5, 1.5))
                what = "flapping partitions"
            else:
                what = apply_fault(c, name, leader, rng)
                faults += 1
                print(f"  fault: {what}")
                time.sleep(seconds)
                c.heal()
            healed = time.monotonic()
            during = sorted({lid for s in read_jsonl(leaders)
                             if began <= s["t"] < healed and (lid := leader_at(s, c.n)) is not None})
            print(f"  leaders agreed on by a majority during the fault: {during or 'none'}")
            took = wait_leader_since(leaders, c.n, healed, timeout=RECOVERY_DEADLINE)
            assert took is not None, (f"no leader agreed on by a majority within {RECOVERY_DEADLINE:g}s of healing "
                                      f"{what}; last watcher samples: {read_jsonl(leaders)[-3:]}")
            recoveries.append((name, took))
            print(f"  healed {name}: leader back after {took:.2f}s")
            time.sleep(0.5)
        open(os.path.join(out, "stop"), "w").close()
        assert client.wait(90) == 0, f"the client failed (see {out}/client.log)"
    finally:
        c.heal()
    history = History.load(os.path.join(out, "history.jsonl"))
    final = final_committed_log(c, sorted(c.ns), wait_for)
    report = check(history.ops, final)
    print(f"netns seed {seed}: {faults} faults; recovery {[(n, round(t, 2)) for n, t in recoveries]}")
    print(f"netns seed {seed}: {report.summary()}")
    report.assert_ok()
    assert report.appends_ok >= 50


def seed() -> int:
    env = os.environ.get("RAFTLOG_NETNS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 31)


# (nodes, seconds per fault, faults): every fault has a short run in the default suite.
RUNS = [
    pytest.param(3, 3.0, ["loss", "leader-link-down", "flapping"], id="3-nodes-short"),
    pytest.param(5, 3.0, ["bandwidth", "leader-minority", "bridge", "one-way"], id="5-nodes-short"),
    pytest.param(5, 30.0, ALL_FAULTS, id="5-nodes-soak", marks=pytest.mark.soak),
]


def test_every_fault_has_a_short_run_in_the_default_suite() -> None:
    short = {fault for run in RUNS if not any(m.name == "soak" for m in run.marks) for fault in run.values[2]}
    assert short == set(ALL_FAULTS), f"faults with no run outside -m soak: {set(ALL_FAULTS) - short}"


@pytest.mark.parametrize("nodes, seconds_per_fault, faults", RUNS)
def test_netns_faults(netns_cluster, tmp_path, nodes: int, seconds_per_fault: float, faults: list[str]) -> None:
    """Under each fault in turn, then healed: a leader comes back, the history checks out, the logs agree."""
    c = netns_cluster(nodes)
    seconds = float(os.environ.get("RAFTLOG_NETNS_SECONDS", seconds_per_fault))
    run_netns(c, str(tmp_path), seconds, seed(), faults)
