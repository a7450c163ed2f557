"""Real processes: grow a cluster by `--join`, remove originals (the leader too), transfer leadership,
SIGKILL during a change, graceful leader shutdown hands over. Every process is killed by PID.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from typing import Optional

import pytest

from support.cluster import MemberCluster, assert_logs_agree, clusters
from support.polling import wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def make_members(tmp_path):
    with clusters(str(tmp_path), MemberCluster) as make:
        yield make


def test_grow_to_five_by_joining_remove_two_originals_with_the_leader_and_transfer(make_members):
    c = make_members(3)
    c.start_all()
    lid, _ = wait_for("a leader", lambda: c.leader_of([1, 2, 3]))
    acked: dict[int, bytes] = {}
    with c.client() as client:
        for k in range(20):
            acked[client.append(b"early-%d" % k)] = b"early-%d" % k
    # Grow 3 -> 5: each new node asks node 1 to add it, catches up as a learner, is promoted.
    for i in (4, 5):
        c.add_address(i)
        c.start_joiner(i, via=1)
    wait_for("nodes 4 and 5 to be voters", lambda: c.voters([1, 2, 3]) == {1, 2, 3, 4, 5}, timeout=40)
    assert "joined the cluster as a voter" in c.log_of(4)
    table = c.cli("members", via=[1, 2, 3])
    assert table.returncode == 0 and "learner" not in table.stdout and "127.0.0.1" in table.stdout
    with c.client(list(c.addresses)) as client:
        for k in range(20):
            acked[client.append(b"grown-%d" % k)] = b"grown-%d" % k
    # Remove the leader (an original) and one more original.
    lid, _ = wait_for("a leader", lambda: c.leader_of([1, 2, 3, 4, 5]))
    if lid not in (1, 2, 3):
        assert c.cli("transfer", "--to", "1", via=[1, 2, 3, 4, 5]).returncode == 0
        lid = 1
    other = next(i for i in (1, 2, 3) if i != lid)
    out = c.cli("members", "remove", str(lid), via=[1, 2, 3, 4, 5])
    assert out.returncode == 0, out.stderr
    out = c.cli("members", "remove", str(other), via=[i for i in (1, 2, 3, 4, 5) if i != lid])
    assert out.returncode == 0, out.stderr
    rest = [i for i in (1, 2, 3, 4, 5) if i not in (lid, other)]
    wait_for("the remaining three to agree on a leader", lambda: c.leader_of(rest))
    assert c.voters(rest) == set(rest)
    # The removed ones stop: they are idle (no leader among them, no campaigning voters).
    for i in (lid, other):
        c.kill(i)
    # Transfer leadership to each remaining voter in turn.
    for target in rest:
        out = c.cli("transfer", "--to", str(target), via=rest)
        assert out.returncode == 0, out.stderr
        assert wait_for(f"node {target} to lead", lambda target=target: (c.leader_of(rest) or (0,))[0] == target)
    with c.client(rest) as client:
        for k in range(10):
            acked[client.append(b"late-%d" % k)] = b"late-%d" % k
        got = {e.index: e.data for e in client.read(1)}
    for index, payload in acked.items():
        assert got.get(index) == payload
    assert_logs_agree(c, rest, acked)


def test_sigkill_of_the_leader_during_a_membership_change(make_members):
    c = make_members(3)
    c.start_all()
    wait_for("a leader", lambda: c.leader_of([1, 2, 3]))
    acked: dict[int, bytes] = {}
    with c.client() as client:
        for k in range(200):
            acked[client.append(b"x-%d" % k)] = b"x-%d" % k
    c.add_address(4)
    c.start_joiner(4, 2, "--promote-lag", "0")
    # Kill the leader while node 4 is being added / caught up / promoted.
    wait_for("node 4 to be added", lambda: 4 in {m["id"] for m in c.members([1, 2, 3])}, timeout=40)
    lid, _ = wait_for("a leader", lambda: c.leader_of([1, 2, 3]))
    c.kill(lid)
    c.start(lid)
    wait_for("node 4 to become a voter", lambda: c.voters([1, 2, 3]) == {1, 2, 3, 4}, timeout=40)
    wait_for("every node to use the same configuration",
             lambda: len({(s or {}).get("configuration") for s in c.statuses([1, 2, 3, 4]).values()}) == 1)
    with c.client([1, 2, 3, 4]) as client:
        acked[client.append(b"after")] = b"after"
    assert_logs_agree(c, [1, 2, 3, 4], acked)


def test_graceful_shutdown_of_the_leader_transfers_leadership_first(make_members):
    """SIGTERM of the leader hands leadership to a chosen follower (TimeoutNow, diss. 3.10) before it exits."""
    c = make_members(3)
    c.start_all()
    lid, term = wait_for("a leader", lambda: c.leader_of([1, 2, 3]))
    with c.client() as client:
        client.append(b"before")
    c.signal(lid, signal.SIGTERM)
    c.procs[lid].wait(15)
    assert c.procs[lid].returncode == 0
    handed = re.search(rf"node {lid} handed leadership to node (\d+) before shutting down", c.log_of(lid))
    assert handed, f"node {lid} logged no handover"
    target = int(handed.group(1))
    rest = [i for i in (1, 2, 3) if i != lid]
    assert target in rest
    new, new_term = wait_for("a new leader", lambda: c.leader_of(rest))
    print(f"\nnode {lid} (term {term}) handed leadership to node {target}; node {new} leads in term {new_term}")
    assert new == target, f"node {lid} handed leadership to node {target}, but node {new} leads"
    assert new_term > term


def test_sigkill_of_the_leader_in_the_joint_phase_of_a_voter_change(make_members):
    """SIGKILL the leader once it is seen in the joint configuration of a voter change; the change completes.

    Adding voter 4 directly goes C_old,new = {1,2,3,4} / {1,2,3}, then C_new (diss. 4.3); a
    configuration is in force once in the log (diss. 4.1). Node 4 starts only at the end and
    one follower is SIGSTOPped first, so C_old,new cannot commit (it needs 3 of {1,2,3,4}) and
    C_new cannot be proposed: the cluster is held in the joint phase, seen in the leader's
    status, when the leader is killed. Every later decision needs all three originals.
    """
    c = make_members(3)
    c.start_all()
    lid, _ = wait_for("a leader", lambda: c.leader_of([1, 2, 3]))
    held, running = [i for i in (1, 2, 3) if i != lid]
    c.add_address(4)
    c.pause(held)
    admin = subprocess.Popen([sys.executable, "-m", "raftlog", "members", "--peers",
                              ",".join(c.addresses[i] for i in (lid, running)), "--cluster-id", "proc-test",
                              "--timeout", "60", "add", f"4={c.addresses[4]}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c.all_procs.append(admin)
    joint = "joint voters 1,2,3,4 / 1,2,3"

    def in_joint_phase() -> Optional[dict]:
        st = c.statuses([lid])[lid]
        return st if st and st["configuration"] == joint else None
    seen = wait_for(f"node {lid} to take the joint configuration", in_joint_phase)
    print(f"\nnode {lid} seen as {seen['role']} in term {seen['term']} with configuration {joint!r}; killed")
    c.kill(lid)
    c.start(lid)
    c.resume(held)
    out, err = admin.communicate(timeout=90)     # the CLI retries at whoever leads
    assert admin.returncode == 0, err
    # Node 4 is a voter of the final configuration; started by joining (already a member), it catches up.
    c.start_joiner(4, running)
    ids = [1, 2, 3, 4]
    wait_for("every node to settle on one configuration without outgoing voters",
             lambda: {(s or {}).get("configuration") for s in c.statuses(ids).values()} == {"voters 1,2,3,4"},
             timeout=40)
    assert c.voters([1, 2, 3]) == {1, 2, 3, 4}
    with c.client(ids) as client:
        index = client.append(b"after")
    assert_logs_agree(c, ids, {index: b"after"})
