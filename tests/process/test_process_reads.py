"""Real processes: a linearizable read never misses an acknowledged append, also one sent to a follower
while it is stopped and behind (ReadIndex, diss. 6.4); a leader without a quorum serves no linearizable read.
"""
from __future__ import annotations

import socket

import pytest

from raftlog.errors import RaftlogError
from raftlog.hot import (
    FRAME_ENTRIES,
    FRAME_HANDSHAKE,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    FrameDecoder,
    encode_handshake,
    encode_read,
)
from raftlog.client import Client
from raftlog.wire.requests import consistency_code
from support.cluster import ProcCluster
from support.polling import wait_for
from support.safety import holds_acked

pytestmark = pytest.mark.process


@pytest.fixture
def cluster(tmp_path):
    c = ProcCluster(3, str(tmp_path))
    yield c
    c.close()


def send_read(address: str, start: int) -> socket.socket:
    """Connect and send a handshake and a linearizable Read at once (no reply awaited: the node may be stopped)."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, "proc-test")
                 + encode_read(1, start, 100_000, 64 << 20, consistency_code("linearizable")))
    return sock


def read_reply(sock: socket.socket) -> dict[int, bytes]:
    """The entries (index -> payload) of the Read's reply on `sock`, after the handshake's."""
    dec = FrameDecoder()
    frames: list = []
    while len(frames) < 2:
        chunk = sock.recv(1 << 20)
        assert chunk, f"the connection closed after {frames}"
        frames += dec.feed(chunk)
    assert frames[0][0] == FRAME_HANDSHAKE, frames[0]
    assert frames[1][0] == FRAME_ENTRIES, frames[1]
    _, _rid, _next, indexes, records = frames[1]
    return {indexes[k]: records.payload(k) for k in range(len(indexes))}


def test_a_linearizable_read_sent_to_a_follower_while_it_is_behind_misses_nothing(cluster):
    """The follower is SIGSTOPped, appends are acknowledged without it, its stored log is seen to end
    before them, and the read reaches its socket before it resumes: the answer holds them all."""
    c = cluster
    c.start_all()
    lid, _ = wait_for("a leader", lambda: c.leader())
    f = next(i for i in c.addresses if i != lid)
    acked: dict[int, bytes] = {}
    with c.client() as client:
        for k in range(5):
            acked[client.append(b"before-%d" % k)] = b"before-%d" % k
        for rnd in range(3):
            c.pause(f)          # cut off: it misses what follows
            this_round: dict[int, bytes] = {}
            for k in range(30):
                payload = b"r%d-%d" % (rnd, k)
                this_round[client.append(payload)] = payload
            acked.update(this_round)
            # Stopped, it can neither store nor hold in memory any entry proposed after the stop.
            stored = c.inspect(f)
            assert stored["last_index"] < min(this_round), (stored["last_index"], min(this_round))
            with send_read(c.addresses[f], 1) as sock:
                c.resume(f)
                got = read_reply(sock)
            print(f"\nround {rnd}: node {f} had stored up to {stored['last_index']} (commit {stored['commit']}) "
                  f"when the read was sent; acknowledged up to {max(acked)}; it answered up to {max(got)}")
            assert holds_acked(got, acked, f"a linearizable read at node {f}"), \
                f"round {rnd}: a linearizable read at node {f} missed {sorted(set(acked) - set(got))[:5]}"
        # And through the leader, every consistency level that promises it.
        for consistency in ("linearizable", "lease"):
            got = {e.index: e.data for e in client.read(1, consistency=consistency)}
            assert holds_acked(got, acked, f"a {consistency} read through the leader"), consistency


def test_a_leader_cut_off_from_its_quorum_serves_no_linearizable_read(cluster):
    c = cluster
    c.start_all()
    lid, _ = wait_for("a leader", lambda: c.leader())
    with c.client() as client:
        client.append(b"x")
    others = [i for i in c.addresses if i != lid]
    for i in others:
        c.pause(i)
    try:
        with Client([c.addresses[lid]], cluster_id="proc-test", read_from="any", timeout=2.0) as at_leader:
            stale = at_leader.read(1, consistency="stale")
            assert [e.data for e in stale] == [b"x"]          # its own state, at once
            with pytest.raises(RaftlogError):
                at_leader.read(1)                            # linearizable: no quorum, no answer
    finally:
        for i in others:
            c.resume(i)
    with c.client() as client:
        assert [e.data for e in client.read(1)] == [b"x"]
