"""The engine's rules pinned one by one: one test per claim of the Raft paper (§5) and Ongaro's dissertation.

Each test drives RawNodes on MemoryStorage (tests/support/interaction.py) into the situation a
claim speaks of, usually by stepping hand-made messages, and checks the claim and nothing
else. The docstring's first line states the rule and cites where it comes from: § for the
paper ("In Search of an Understandable Consensus Algorithm", extended version), "diss." for
the dissertation ("Consensus: Bridging Theory and Practice", 2014). Most tests use the
basic algorithm (`BASIC`: no pre-vote, no check-quorum); the tests of those extensions turn
them on.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import pytest

from raftlog.core import confchange
from raftlog.core.messages import ConfState, Message, MessageType
from raftlog.core.raft import TRANSFER_CONTEXT
from raftlog.core.rawnode import RawNode, Ready, Role
from raftlog.errors import NotLeader
from raftlog.hot import KIND_DATA, RecordBatch
from support.interaction import Network, log_terms, preloaded_storage

APPEND = MessageType.APPEND
APPEND_RESP = MessageType.APPEND_RESP
VOTE = MessageType.VOTE
VOTE_RESP = MessageType.VOTE_RESP
PRE_VOTE = MessageType.PRE_VOTE
PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
HEARTBEAT = MessageType.HEARTBEAT
HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP

# The paper's algorithm: no pre-vote, no check-quorum (and so no leader lease).
BASIC = {"pre_vote": False, "check_quorum": False}
# Short timeouts so that tests tick little: election timeout drawn from [10, 20), heartbeat every 2.
SHORT = {"election_ticks": (10, 20), "heartbeat_ticks": 2}
LO, HI = SHORT["election_ticks"]


# -- building situations ------------------------------------------------------------------

def cluster(n: int, **cfg) -> Network:
    """n fresh voters 1..n."""
    net = Network()
    net.add_nodes(range(1, n + 1), voters=tuple(range(1, n + 1)), **cfg)
    return net


def elected(n: int, leader: int = 1, **cfg) -> Network:
    """n voters after `leader` won an election and every message settled."""
    net = cluster(n, **cfg)
    net.nodes[leader].campaign()
    net.stabilize()
    assert net.leader() == leader
    return net


def lone(terms: Sequence[int] = (), term: int = 0, vote: int = 0, commit: int = 0, node_id: int = 1,
         voters: Sequence[int] = (1, 2, 3), **cfg) -> tuple[Network, RawNode]:
    """One node of a `voters` cluster whose storage holds entries of `terms` and that hard state; its peers absent."""
    net = Network()
    storage = preloaded_storage(terms, term, vote, commit)
    node = net.add_node(node_id, voters=voters, storage=storage, **{**BASIC, **cfg})
    net.process_ready(node_id)
    return net, node


def msg(mtype: MessageType, frm: int, to: int, term: int, **fields) -> Message:
    """A message from `frm` to `to`."""
    return Message(mtype, to, frm, term, **fields)


def batch(first_index: int, terms: Sequence[int]) -> RecordBatch:
    """Data entries with `terms`, the first at `first_index` (payloads name index and term)."""
    return RecordBatch.concat([RecordBatch.encode(t, KIND_DATA, [b"v%d.%d" % (i, t)])
                               for i, t in enumerate(terms, start=first_index)])


def append(frm: int, to: int, term: int, prev: tuple[int, int], terms: Sequence[int] = (),
           commit: int = 0) -> Message:
    """AppendEntries after `prev` = (index, term) carrying entries of `terms`."""
    ents = batch(prev[0] + 1, terms) if terms else None
    return msg(APPEND, frm, to, term, log_term=prev[1], index=prev[0], commit=commit, entries=ents)


def out(rd: Ready, mtype: Optional[MessageType] = None) -> list[Message]:
    """Every message of `rd` (of `mtype`), sendable at once or after persistence."""
    return [m for m in rd.messages + rd.persisted_messages if mtype is None or m.type == mtype]


def step_ready(net: Network, node_id: int, *messages: Message) -> Ready:
    """Step `messages` into the node, then handle its Ready (persist, advance); the Ready."""
    for m in messages:
        net.nodes[node_id].step(m)
    rd = net.process_ready(node_id)
    assert rd is not None, f"node {node_id} had nothing to do after {messages}"
    return rd


def vote_granted(rd: Ready, to: int, mtype: MessageType = VOTE_RESP) -> bool:
    """True when `rd` grants `to` a vote (False when it refuses; AssertionError when it says nothing)."""
    answers = [m for m in out(rd, mtype) if m.to == to]
    assert len(answers) == 1, out(rd)
    return not answers[0].reject


def deliver_all(net: Network, ids: Iterable[int]) -> None:
    """Handle each node's Ready, then deliver what waits for each, once."""
    for i in ids:
        net.process_ready(i)
    for i in ids:
        net.deliver(i)


# -- §5.1: terms ----------------------------------------------------------------------------

def _in_role(role: Role) -> tuple[Network, int]:
    """A 3-node cluster and the id of a node in `role` at term 1 (candidates: node 1 alone, peers absent)."""
    if role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
        pre = role is Role.PRE_CANDIDATE
        net, node = lone(term=1 if pre else 0, pre_vote=pre)
        node.campaign()
        net.process_ready(1)
        assert node.role is role and node.term == 1
        return net, 1
    net = elected(3, **BASIC)
    return net, (1 if role is Role.LEADER else 2)


HIGHER_TERM_MESSAGES = [
    append(3, 0, 5, (0, 0)),
    msg(HEARTBEAT, 3, 0, 5),
    msg(VOTE, 3, 0, 5, log_term=9, index=9),
    msg(APPEND_RESP, 3, 0, 5, index=1),
    msg(VOTE_RESP, 3, 0, 5, reject=True),
]


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER], ids=str)
@pytest.mark.parametrize("m", HIGHER_TERM_MESSAGES, ids=lambda m: MessageType(m.type).name)
def test_higher_term_in_any_message_makes_the_node_a_follower_of_that_term(role: Role, m: Message) -> None:
    """§5.1: a server that sees a larger term in any request or response adopts it and becomes follower."""
    net, node_id = _in_role(role)
    rd = step_ready(net, node_id, m._replace(to=node_id))
    node = net.nodes[node_id]
    assert node.role is Role.FOLLOWER and node.term == 5
    assert node.leader_id == (3 if m.type in (APPEND, HEARTBEAT) else 0)
    assert rd.hard_state is not None and rd.hard_state.term == 5 and rd.must_sync


def test_stale_term_requests_are_refused_and_the_sender_told_the_term() -> None:
    """§5.1: a request with a stale term is rejected; the reply carries the current term so the sender steps down."""
    net, node = lone([1, 2], term=2, check_quorum=True)
    rd = step_ready(net, 1, append(2, 1, 1, (2, 2), [1]), msg(VOTE, 3, 1, 1, log_term=9, index=9))
    assert log_terms(node) == [1, 2] and rd.entries is None and not rd.truncate_from
    assert node.term == 2 and node.raft.vote == 0
    replies = out(rd)
    assert not any(m.type == VOTE_RESP and not m.reject for m in replies)
    told = [m for m in replies if m.to == 2]
    assert told and all(m.term == 2 for m in told), replies


# -- §5.2: leader election ------------------------------------------------------------------

@pytest.mark.parametrize("heartbeat", [False, True], ids=["append", "heartbeat"])
@pytest.mark.parametrize("role", [Role.PRE_CANDIDATE, Role.CANDIDATE], ids=str)
def test_candidate_falls_back_to_follower_on_a_leader_of_its_term(role: Role, heartbeat: bool) -> None:
    """§5.2: a candidate that hears AppendEntries from a leader whose term is at least its own becomes its follower."""
    net, node_id = _in_role(role)
    term = net.nodes[node_id].term
    m = msg(HEARTBEAT, 2, node_id, term) if heartbeat else append(2, node_id, term, (0, 0))
    step_ready(net, node_id, m)
    node = net.nodes[node_id]
    assert node.role is Role.FOLLOWER and node.leader_id == 2 and node.term == term


@pytest.mark.parametrize("heartbeat", [False, True], ids=["append", "heartbeat"])
def test_candidate_ignores_a_leader_of_an_older_term(heartbeat: bool) -> None:
    """§5.2: an AppendEntries of a term below the candidate's is rejected, and the candidate stays candidate."""
    net, node = lone(term=1)
    node.campaign()
    net.process_ready(1)
    assert node.role is Role.CANDIDATE and node.term == 2
    node.step(msg(HEARTBEAT, 2, 1, 1) if heartbeat else append(2, 1, 1, (0, 0), [1]))
    assert node.role is Role.CANDIDATE and node.term == 2 and node.last_index == 0


def test_voter_grants_at_most_one_vote_per_term() -> None:
    """§5.2: a server votes for one candidate at most per term, first come first served; retries get the same answer."""
    net, node = lone(node_id=3, **SHORT)
    assert vote_granted(step_ready(net, 3, msg(VOTE, 1, 3, 1)), 1)
    assert not vote_granted(step_ready(net, 3, msg(VOTE, 2, 3, 1)), 2)
    assert vote_granted(step_ready(net, 3, msg(VOTE, 1, 3, 1)), 1)    # a duplicate request from the same candidate
    assert node.raft.vote == 1
    # A later term is a new election: the voter may choose again.
    assert vote_granted(step_ready(net, 3, msg(VOTE, 2, 3, 2)), 2)


def test_vote_survives_a_restart() -> None:
    """§5.2, figure 2 (votedFor is persistent): after a restart the voter still refuses other candidates of the term."""
    net, _ = lone(node_id=3, **SHORT)
    rd = step_ready(net, 3, msg(VOTE, 1, 3, 1))
    assert vote_granted(rd, 1) and rd.hard_state.vote == 1 and net.storage[3].hard_state().vote == 1
    node = net.restart(3)
    assert node.term == 1 and node.raft.vote == 1
    assert not vote_granted(step_ready(net, 3, msg(VOTE, 2, 3, 1)), 2)
    assert vote_granted(step_ready(net, 3, msg(VOTE, 1, 3, 1)), 1)


# The voter's log ends at index 3, term 2; the candidate's last (term, index), and whether it gets the vote.
UP_TO_DATE_CASES = [
    pytest.param((1, 5), False, id="older-term-longer"),
    pytest.param((2, 2), False, id="same-term-shorter"),
    pytest.param((2, 3), True, id="identical"),
    pytest.param((2, 4), True, id="same-term-longer"),
    pytest.param((3, 1), True, id="newer-term-shorter"),
]


@pytest.mark.parametrize("mtype", [VOTE, PRE_VOTE], ids=["vote", "pre-vote"])
@pytest.mark.parametrize("last,granted", UP_TO_DATE_CASES)
def test_vote_only_for_a_log_at_least_as_up_to_date(last: tuple[int, int], granted: bool, mtype: MessageType) -> None:
    """§5.4.1: a vote goes only to a log at least as up to date: a later last term, or the same and not shorter."""
    net, node = lone([1, 1, 2], term=2, node_id=3)
    last_term, last_index = last
    rd = step_ready(net, 3, msg(mtype, 1, 3, 3, log_term=last_term, index=last_index))
    reply = VOTE_RESP if mtype == VOTE else PRE_VOTE_RESP
    assert vote_granted(rd, 1, reply) is granted
    if mtype == VOTE:
        assert node.raft.vote == (1 if granted else 0)


def test_candidate_wins_with_a_majority_and_loses_with_a_majority_of_refusals() -> None:
    """§5.2: a candidate leads once a majority of voters (itself included) granted; a majority refusing ends its bid."""
    net = cluster(5, **BASIC)
    net.nodes[1].campaign()
    net.process_ready(1)        # its own vote is durable now
    node = net.nodes[1]
    node.step(msg(VOTE_RESP, 2, 1, 1))
    assert node.role is Role.CANDIDATE, "two of five votes are not a majority"
    node.step(msg(VOTE_RESP, 3, 1, 1))
    assert node.role is Role.LEADER
    net = cluster(5, **BASIC)
    net.nodes[1].campaign()
    net.process_ready(1)
    node = net.nodes[1]
    for voter in (2, 3):
        node.step(msg(VOTE_RESP, voter, 1, 1, reject=True))
    assert node.role is Role.CANDIDATE, "it can still win with votes from 4 and 5"
    node.step(msg(VOTE_RESP, 4, 1, 1, reject=True))
    assert node.role is Role.FOLLOWER and node.term == 1


def test_vote_reply_waits_until_the_vote_is_durable() -> None:
    """§5.2 with diss. 3.8: a vote is persisted before it is granted: the reply goes after the Ready that stores it."""
    net, _ = lone(node_id=3, **SHORT)
    net.nodes[3].step(msg(VOTE, 1, 3, 1))
    net.nodes[3].step(msg(VOTE, 2, 3, 1))
    rd = net.nodes[3].ready()
    assert rd.hard_state is not None and rd.hard_state.term == 1 and rd.hard_state.vote == 1 and rd.must_sync
    assert not [m for m in rd.messages if m.type == VOTE_RESP], "a vote reply may not go before the write"
    assert sorted((m.to, m.reject) for m in rd.persisted_messages if m.type == VOTE_RESP) == [(1, False), (2, True)]


def test_candidate_counts_its_own_vote_only_once_durable() -> None:
    """diss. 3.8: the candidate's vote for itself counts only once its (term, vote) is persisted."""
    net = cluster(3, **BASIC)
    node = net.nodes[1]
    node.campaign()
    rd = node.ready()
    node.step(msg(VOTE_RESP, 2, 1, 1))
    assert node.role is Role.CANDIDATE, "one durable vote of three is not a majority"
    net.persist(1, rd)
    node.advance(rd)
    assert node.role is Role.LEADER


def test_leader_heartbeats_every_heartbeat_interval() -> None:
    """§5.2: the leader sends every follower periodic heartbeats to keep its authority (every heartbeat_ticks)."""
    net = elected(3, **BASIC, **SHORT)
    for _ in range(SHORT["heartbeat_ticks"] - 1):
        net.tick(1)
    assert net.process_ready(1) is None, "no heartbeat before the interval"
    net.tick(1)
    rd = net.process_ready(1)
    assert sorted(m.to for m in out(rd, HEARTBEAT)) == [2, 3]
    assert all(m.term == 1 for m in out(rd, HEARTBEAT))


def test_follower_that_hears_heartbeats_never_campaigns() -> None:
    """§5.2: a server remains follower as long as it receives valid RPCs from a leader."""
    net = elected(3, **BASIC, **SHORT)
    for _ in range(5 * HI):
        for i in (1, 2, 3):
            net.tick(i)
        net.stabilize()
        assert net.leader() == 1 and net.nodes[1].term == 1


def test_follower_campaigns_after_a_randomized_election_timeout() -> None:
    """§5.2: a follower that hears nothing campaigns after an election timeout drawn at random from a fixed range."""
    waited = []
    for node_id in range(1, 41):
        net = Network()
        node = net.add_node(node_id, voters=(node_id, 100, 101), **BASIC, **SHORT)
        ticks = 0
        while node.role is Role.FOLLOWER and ticks < 10 * HI:
            node.tick()
            ticks += 1
        assert node.role is Role.CANDIDATE and node.term == 1
        waited.append(ticks)
    assert all(LO <= t < HI for t in waited), waited
    assert len(set(waited)) >= (HI - LO) // 2, f"timeouts are not spread over [{LO}, {HI}): {sorted(waited)}"


def test_candidate_without_a_result_starts_a_new_election_at_the_next_term() -> None:
    """§5.2: a candidate whose election times out (a split vote) increments its term and starts another election."""
    net = cluster(3, **BASIC, **SHORT)
    net.nodes[1].campaign()
    net.process_ready(1)
    net.tick(1, HI - 1)           # any timeout from [LO, HI) expires, and only once
    rd = net.process_ready(1)
    assert net.nodes[1].role is Role.CANDIDATE and net.nodes[1].term == 2
    assert sorted(m.to for m in out(rd, VOTE) if m.term == 2) == [2, 3]


# -- §5.3: log replication ------------------------------------------------------------------

def test_leader_commits_once_a_majority_stores_the_entry() -> None:
    """§5.3: an entry is committed once the leader has replicated it on a majority; it then applies it."""
    net = elected(5, **BASIC)
    index, _ = net.nodes[1].propose([b"x"])
    net.process_ready(1)
    for follower in (2, 3):
        assert net.nodes[1].commit_index < index, "fewer than three of five hold it"
        net.deliver(follower)
        net.process_ready(follower)
        net.deliver(1)
    assert net.nodes[1].commit_index == index
    net.process_ready(1)
    assert (index, b"x") in [(i, p) for i, _t, _k, p in net.applied[1]]


def test_follower_learns_commit_only_up_to_what_it_has_verified() -> None:
    """§5.3, figure 2 receiver rule 5: a follower sets commit to min(leaderCommit, index of the last new entry)."""
    net, node = lone([1, 1, 1], term=1, node_id=2)
    # The new leader (term 2) committed up to 3, but its entries 2 and 3 are not this node's.
    step_ready(net, 2, append(1, 2, 2, (1, 1), commit=3))
    assert node.commit_index == 1
    step_ready(net, 2, append(1, 2, 2, (1, 1), [2], commit=3))
    assert node.commit_index == 2 and log_terms(node) == [1, 2]


def test_heartbeat_never_carries_a_commit_beyond_the_followers_match() -> None:
    """§5.3: a follower learns commit only for entries it holds: the leader's heartbeat sends min(commit, match)."""
    net = elected(3, **BASIC, **SHORT)
    index, _ = net.nodes[1].propose([b"x"])
    net.process_ready(1)
    net.drop(3)
    net.deliver(2)
    net.process_ready(2)
    net.deliver(1)
    assert net.nodes[1].commit_index == index
    net.process_ready(1)
    net.drop(2)
    net.drop(3)
    net.tick(1, SHORT["heartbeat_ticks"])
    beats = {m.to: m.commit for m in out(net.process_ready(1), HEARTBEAT)}
    assert beats[2] == index and beats[3] == index - 1, beats


# A follower's log 1@1 2@1 3@1, committed up to 1.
TRUNCATE_CASES = [
    # prev (index, term), the entries' terms, the log after, where it was truncated (0: nowhere)
    pytest.param((1, 1), [1], [1, 1, 1], 0, id="duplicate"),
    pytest.param((0, 0), [1, 1], [1, 1, 1], 0, id="reordered-older"),
    pytest.param((2, 1), [], [1, 1, 1], 0, id="empty-probe"),
    pytest.param((1, 1), [2], [1, 2], 2, id="conflict-at-2"),
    pytest.param((1, 1), [1, 2, 2], [1, 1, 2, 2], 3, id="match-2-conflict-at-3"),
]


@pytest.mark.parametrize("prev,terms,after,truncated", TRUNCATE_CASES)
def test_follower_deletes_only_a_conflicting_suffix(prev: tuple[int, int], terms: list[int],
                                                    after: list[int], truncated: int) -> None:
    """§5.3, figure 2 receiver rule 3: only a conflicting entry (same index, other term) and those after it go."""
    net, node = lone([1, 1, 1], term=1, commit=1, node_id=2)
    rd = step_ready(net, 2, append(1, 2, max([1, *terms]), prev, terms))
    assert log_terms(node) == after
    assert rd.truncate_from == truncated
    acks = out(rd, APPEND_RESP)
    assert len(acks) == 1 and not acks[0].reject and acks[0].index == prev[0] + len(terms)


@pytest.mark.parametrize("prev", [pytest.param((3, 2), id="term-differs"), pytest.param((5, 1), id="beyond-last"),
                                  pytest.param((2, 3), id="term-differs-earlier")])
def test_follower_refuses_entries_that_do_not_follow_a_matching_entry(prev: tuple[int, int]) -> None:
    """§5.3 (consistency check): AppendEntries is refused unless the log holds prevLogIndex with prevLogTerm."""
    net, node = lone([1, 1, 1], term=3, node_id=2)
    rd = step_ready(net, 2, append(1, 2, 3, prev, [3]))
    assert log_terms(node) == [1, 1, 1] and rd.entries is None and not rd.truncate_from
    acks = out(rd, APPEND_RESP)
    assert len(acks) == 1 and acks[0].reject


def _conflicting_cluster() -> Network:
    """Node 1 (log 1,1,3 at term 3) is to lead; node 2 led term 2 and holds 1,2,2,2; node 3 holds 1,1,3."""
    net = Network()
    for i, terms in ((1, [1, 1, 3]), (2, [1, 2, 2, 2]), (3, [1, 1, 3])):
        net.add_node(i, voters=(1, 2, 3), storage=preloaded_storage(terms, max(terms)), **BASIC)
    return net


def test_leader_backs_off_until_the_logs_match_then_repairs_the_follower() -> None:
    """§5.3: on a rejection the leader lowers nextIndex and retries; once they match, the logs become equal."""
    net = _conflicting_cluster()
    net.nodes[1].campaign()
    net.stabilize()
    assert net.leader() == 1
    probes = [m.index for m in net.sent if m.type == APPEND and m.to == 2]
    assert any(m.type == APPEND_RESP and m.reject and m.frm == 2 for m in net.sent), \
        "node 2's log conflicts: the first AppendEntries must be refused"
    assert probes[0] == 3 and min(probes) == 1, f"prev indexes sent to node 2: {probes}"
    assert log_terms(net.nodes[2]) == log_terms(net.nodes[1]) == [1, 1, 3, 4]
    assert net.nodes[2].commit_index == 4


def test_leader_never_overwrites_or_deletes_its_own_entries() -> None:
    """§5.3 (Leader Append-Only, figure 3): a leader only appends; nothing it receives removes or replaces entries."""
    net = _conflicting_cluster()
    net.nodes[1].campaign()
    net.stabilize()
    leader = net.nodes[1]
    before = log_terms(leader)
    # An AppendEntries of the leader's own term from another node (which only a broken peer
    # could send): the leader must not take its entries.
    leader.step(append(2, 1, leader.term, (1, 1), [leader.term] * 5, commit=1))
    rd = net.process_ready(1)
    assert log_terms(leader) == before
    assert rd is None or (rd.entries is None and not rd.truncate_from)
    assert leader.role is Role.LEADER
    leader.propose([b"z"])
    net.stabilize()
    assert log_terms(leader)[:len(before)] == before


# -- §5.4.2: committing entries from previous terms (figure 8) ----------------------------

def _figure8() -> Network:
    """Figure 8 (c): S1 leads term 4 with 1@1 2@2 3@4; 2@2 is on S1, S2 and S3, a majority of five, 3@4 only on S1.

    Built from stored logs: S1 and S2 hold 1@1 2@2, S3 and S4 hold 1@1, S5 holds 1@1 2@3
    (it led term 3); everyone is at term 3 and has committed 1. S1 wins term 4 with votes of
    S2, S3 and S4; its AppendEntries to S2 and S3 are cut so they carry 2@2 but not 3@4.
    """
    net = Network()
    for i, terms in ((1, [1, 2]), (2, [1, 2]), (3, [1]), (4, [1]), (5, [1, 3])):
        net.add_node(i, voters=(1, 2, 3, 4, 5), storage=preloaded_storage(terms, 3, commit=1), **BASIC, **SHORT)
    s1 = net.nodes[1]
    s1.campaign()
    deliver_all(net, [1, 2, 3, 4, 5])
    deliver_all(net, [2, 3, 4, 5, 1])
    assert s1.role is Role.LEADER and s1.term == 4
    def no_new_entry(m: Message) -> Message:
        return m._replace(entries=m.entries.slice(0, max(0, 2 - m.index)) if m.entries else None)

    for _ in range(4):
        net.process_ready(1)
        for i in (2, 3):
            net.deliver(i, rewrite=no_new_entry)
            net.process_ready(i)
        for i in (4, 5):
            net.drop(i)
        net.deliver(1)
    assert [log_terms(net.nodes[i]) for i in (1, 2, 3)] == [[1, 2, 4], [1, 2], [1, 2]]
    assert s1.status()["progress"]["3"]["match"] == 2
    return net


def test_figure8_old_term_entry_on_a_majority_is_not_committed_by_counting() -> None:
    """§5.4.2, figure 8: a leader never commits an older term's entry by counting replicas; S5 may still replace it."""
    net = _figure8()
    assert net.nodes[1].commit_index == 1, "2@2 is on a majority but is not of the leader's term"
    # Figure 8 (d): S1 crashes; S5 (last entry 2@3) wins term 5 with S2, S3 and S4 and replaces 2@2 everywhere.
    net.isolated.add(1)
    s5 = net.nodes[5]
    s5.campaign()
    net.stabilize([2, 3, 4, 5])
    assert s5.role is Role.LEADER and s5.term == 5
    assert [log_terms(net.nodes[i]) for i in (2, 3, 4, 5)] == [[1, 3, 5]] * 4


def test_figure8_entry_of_the_leaders_term_commits_the_earlier_ones_with_it() -> None:
    """§5.4.2: once an entry of the current term is on a majority, it and every entry before it are committed."""
    net = _figure8()
    net.tick(1, SHORT["heartbeat_ticks"])     # the heartbeat's answers show S2 and S3 lack 3@4: it is sent again
    net.stabilize([1, 2, 3])
    s1 = net.nodes[1]
    assert s1.commit_index == 3
    assert [(i, t) for i, t, _k, _p in net.applied[1]] == [(1, 1), (2, 2), (3, 4)]


# -- durability of acknowledgements (diss. 3.8, 10.2.1) ---------------------------------

def test_follower_acknowledges_entries_only_after_persisting_them() -> None:
    """diss. 3.8: a follower acknowledges entries only once they are on stable storage (after the Ready's write)."""
    net, _ = lone([1], term=1, node_id=2)
    net.nodes[2].step(append(1, 2, 1, (1, 1), [1, 1]))
    rd = net.nodes[2].ready()
    assert rd.entries_index == 2 and len(rd.entries) == 2 and rd.must_sync
    assert not [m for m in rd.messages if m.type == APPEND_RESP], "an ack may not go before the write"
    assert [(m.type, m.index) for m in rd.persisted_messages] == [(APPEND_RESP, 3)]


def test_queued_ack_is_withdrawn_when_its_entries_are_truncated_before_the_write() -> None:
    """§5.3 with diss. 3.8: an acknowledgement never claims entries the follower no longer holds."""
    net, _ = lone([1], term=1, node_id=2)
    node = net.nodes[2]
    node.step(append(1, 2, 1, (1, 1), [1, 1]))        # ack for index 3 of term 1 is queued
    node.step(append(3, 2, 2, (1, 1), [2]))           # the new leader of term 2 cuts it at 2
    rd = node.ready()
    acks = [(m.to, m.term, m.index) for m in out(rd, APPEND_RESP)]
    assert (1, 1, 3) not in acks, acks
    assert (3, 2, 2) in acks and log_terms(node) == [1, 2]


# -- pre-vote (diss. 9.6) and check-quorum (diss. 6.2) -----------------------------------

def test_pre_vote_changes_no_term_anywhere() -> None:
    """diss. 9.6: a pre-vote asks for term + 1 while nobody, the asker included, moves to it or records a vote."""
    net = cluster(3, pre_vote=True, check_quorum=False)
    net.nodes[1].campaign()
    rd = net.process_ready(1)
    assert net.nodes[1].role is Role.PRE_CANDIDATE and net.nodes[1].term == 0
    assert rd.hard_state is None or rd.hard_state.term == 0
    assert sorted((m.to, m.term) for m in out(rd, PRE_VOTE)) == [(2, 1), (3, 1)]
    for i in (2, 3):
        net.deliver(i)
        rd = net.process_ready(i)
        assert vote_granted(rd, 1, PRE_VOTE_RESP)
        assert net.nodes[i].term == 0 and net.nodes[i].raft.vote == 0
        assert rd.hard_state is None or (rd.hard_state.term, rd.hard_state.vote) == (0, 0)


def test_partitioned_node_with_pre_vote_never_raises_its_term() -> None:
    """diss. 9.6: a server cut off from the majority fails pre-votes; its term stays, and its return disrupts no one."""
    net = elected(3, pre_vote=True, check_quorum=True, **SHORT)
    net.isolated.add(3)
    for _ in range(5):
        net.tick(3, HI)
        net.stabilize()
    assert net.nodes[3].term == 1
    net.isolated.clear()
    net.tick(1, SHORT["heartbeat_ticks"])
    net.stabilize()
    assert net.leader() == 1 and [net.nodes[i].term for i in (1, 2, 3)] == [1, 1, 1]


def test_leader_without_a_quorum_steps_down_and_one_with_it_stays() -> None:
    """diss. 6.2 (check-quorum): a leader that has not heard from a majority within an election timeout steps down."""
    net = elected(3, pre_vote=True, check_quorum=True, **SHORT)
    for _ in range(4 * LO):
        net.tick(1)
        net.stabilize()
    assert net.leader() == 1, "answers from a majority keep it leader"
    net.isolated.update({2, 3})
    for _ in range(2 * LO):
        net.tick(1)
        net.stabilize()
    assert net.nodes[1].role is Role.FOLLOWER and net.nodes[1].term == 1


def test_learners_do_not_keep_a_leader_in_power() -> None:
    """diss. 6.2 with 4.2.1: only voters count for check-quorum; answers from learners alone do not keep a leader."""
    net = Network()
    net.add_nodes([1, 2, 3, 4, 5], voters=(1, 2, 3), learners=(4, 5), pre_vote=True, check_quorum=True, **SHORT)
    net.nodes[1].campaign()
    net.stabilize()
    net.isolated.update({2, 3})
    for _ in range(2 * LO):
        net.tick(1)
        net.stabilize()
    assert net.nodes[1].role is Role.FOLLOWER


def test_voter_that_hears_from_a_leader_ignores_vote_requests_except_a_transfer() -> None:
    """diss. 4.2.3 (disruptive servers): within the minimum election timeout of hearing from its leader a voter ignores
    RequestVote, unless the leader itself asked for the election (diss. 3.10, TimeoutNow)."""
    net = elected(3, pre_vote=True, check_quorum=True, **SHORT)
    node = net.nodes[2]
    node.step(msg(VOTE, 3, 2, 2, log_term=9, index=9))
    assert node.term == 1 and node.raft.vote == 1 and net.process_ready(2) is None
    node.step(msg(VOTE, 3, 2, 2, log_term=9, index=9, context=TRANSFER_CONTEXT))
    assert node.term == 2 and vote_granted(net.process_ready(2), 3)
    net = elected(3, pre_vote=True, check_quorum=True, **SHORT)
    node = net.nodes[2]
    net.tick(2, LO)                     # its lease ran out (its own timeout is at least LO: it may campaign)
    net.process_ready(2)
    node.step(msg(VOTE, 3, 2, 2, log_term=9, index=9))
    assert node.term == 2 and vote_granted(net.process_ready(2), 3)


# -- learners (diss. 4.2.1) -----------------------------------------------------------------

def _with_learners(**cfg) -> Network:
    """Voters 1, 2, 3 and learners 4, 5."""
    net = Network()
    net.add_nodes([1, 2, 3, 4, 5], voters=(1, 2, 3), learners=(4, 5), **{**BASIC, **SHORT, **cfg})
    return net


def test_learner_never_campaigns() -> None:
    """diss. 4.2.1: a learner (non-voting member) never starts an election, however long it hears nothing."""
    net = _with_learners()
    learner = net.nodes[4]
    learner.campaign()
    net.tick(4, 10 * HI)
    rd = net.process_ready(4)
    assert rd is None or not out(rd)
    assert learner.role is Role.FOLLOWER and learner.term == 0


def test_learners_are_not_asked_for_votes_and_their_votes_do_not_count() -> None:
    """diss. 4.2.1: votes are requested from and counted among voters only."""
    net = _with_learners()
    node = net.nodes[1]
    node.campaign()
    rd = net.process_ready(1)
    assert sorted(m.to for m in out(rd, VOTE)) == [2, 3]
    node.step(msg(VOTE_RESP, 4, 1, 1))
    node.step(msg(VOTE_RESP, 5, 1, 1))
    assert node.role is Role.CANDIDATE, "learners' votes made a majority"
    node.step(msg(VOTE_RESP, 2, 1, 1))
    assert node.role is Role.LEADER


def test_learners_do_not_count_toward_commit() -> None:
    """diss. 4.2.1: an entry stored on the leader and every learner but no other voter is not committed."""
    net = _with_learners()
    net.nodes[1].campaign()
    net.stabilize()
    index, _ = net.nodes[1].propose([b"x"])
    net.isolated.update({2, 3})
    net.stabilize()
    assert net.nodes[4].last_index == net.nodes[5].last_index == index
    assert net.nodes[1].commit_index < index
    net.isolated.clear()
    net.tick(1, SHORT["heartbeat_ticks"])
    net.stabilize()
    assert net.nodes[1].commit_index == index


# -- joint consensus (diss. 4.3) ------------------------------------------------------------

JOINT = ConfState(voters=(1, 4, 5), voters_outgoing=(1, 2, 3))
# Who answers besides node 1 (in both sets), and whether that is a majority of both.
JOINT_CASES = [pytest.param((2, 3), False, id="old-majority-only"), pytest.param((4, 5), False, id="new-majority-only"),
               pytest.param((2, 4), True, id="both-2-4"), pytest.param((3, 5), True, id="both-3-5")]


def _joint() -> Network:
    """Five nodes in C_old,new: C_old = {1, 2, 3}, C_new = {1, 4, 5}."""
    net = Network()
    for i in range(1, 6):
        net.add_node(i, storage=preloaded_storage([], conf=JOINT), **BASIC)
    return net


@pytest.mark.parametrize("granted,wins", JOINT_CASES)
def test_joint_election_needs_a_majority_of_both_configurations(granted: tuple[int, int], wins: bool) -> None:
    """diss. 4.3: in C_old,new, an election needs a separate majority of C_old and of C_new."""
    net = _joint()
    node = net.nodes[1]
    node.campaign()
    rd = net.process_ready(1)
    assert sorted(m.to for m in out(rd, VOTE)) == [2, 3, 4, 5]
    for voter in granted:
        node.step(msg(VOTE_RESP, voter, 1, 1))
    assert (node.role is Role.LEADER) is wins


@pytest.mark.parametrize("acked,commits", JOINT_CASES)
def test_joint_commit_needs_a_majority_of_both_configurations(acked: tuple[int, int], commits: bool) -> None:
    """diss. 4.3: in C_old,new, an entry is committed only once stored on a majority of C_old and of C_new."""
    net = _joint()
    net.nodes[1].campaign()
    net.stabilize()
    assert net.leader() == 1 and confchange.is_joint(net.nodes[1].conf_state)
    index, _ = net.nodes[1].propose([b"x"])
    net.isolated.update(set(range(2, 6)) - set(acked))
    net.stabilize()
    assert (net.nodes[1].commit_index >= index) is commits


# -- reads (diss. 6.4) ------------------------------------------------------------------------

def _leader_with_round_answers_held() -> tuple[Network, list[Message]]:
    """A leader with its no-op committed that sent a heartbeat round whose answers are still in flight."""
    net = elected(3, **SHORT)
    net.tick(1, SHORT["heartbeat_ticks"])
    net.process_ready(1)
    for i in (2, 3):
        net.deliver(i)
        net.process_ready(i)
    held = net.inbox[1]
    net.inbox[1] = []
    assert [m.type for m in held] == [HEARTBEAT_RESP] * 2
    return net, held


def test_read_index_waits_for_a_heartbeat_round_sent_after_the_read() -> None:
    """diss. 6.4 step 3: a read is served only after a quorum answered a heartbeat round sent after the read arrived."""
    net, old_answers = _leader_with_round_answers_held()
    leader = net.nodes[1]
    commit = leader.commit_index
    leader.read_index(b"r")
    rd = net.process_ready(1)
    assert not rd.read_states and sorted(m.to for m in out(rd, HEARTBEAT)) == [2, 3]
    for m in old_answers:
        leader.step(m)
    net.process_ready(1)
    assert not net.read_states[1], "answers to a round sent before the read released it"
    net.deliver(2)
    net.process_ready(2)
    net.deliver(1)
    net.process_ready(1)
    assert [(s.index, s.ctx) for s in net.read_states[1]] == [(commit, b"r")]


def test_read_index_waits_until_the_leader_committed_an_entry_of_its_term() -> None:
    """diss. 6.4 step 1: a new leader serves a read only once its own no-op is committed; the read index covers it."""
    net = cluster(3, **SHORT)
    leader = net.nodes[1]
    leader.campaign()
    for _ in range(4):
        deliver_all(net, [1, 2, 3])
    assert leader.role is Role.LEADER
    net.process_ready(1)
    net.drop(2)
    net.drop(3)
    noop = leader.last_index
    assert leader.commit_index < noop
    leader.read_index(b"r")
    net.process_ready(1)
    for i in (2, 3):
        net.deliver(i, keep=lambda m: m.type == HEARTBEAT)
        net.process_ready(i)
    net.deliver(1)
    net.process_ready(1)
    assert leader.raft.readonly.quorum_round == leader.raft.readonly.round, "a quorum answered the read's round"
    assert not net.read_states[1] and leader.commit_index < noop
    net.stabilize()
    assert leader.commit_index == noop
    assert [(s.index, s.ctx) for s in net.read_states[1]] == [(noop, b"r")]


def test_lease_read_is_served_at_once_only_within_the_lease() -> None:
    """diss. 6.4.1: a lease read is served without a round only within an election timeout of a round a quorum answered.

    Past that (here: cut off from the others for an election timeout), it waits for a new round.
    """
    net = elected(3, pre_vote=True, check_quorum=True, **SHORT)
    leader = net.nodes[1]
    leader.read_index(b"a")
    net.stabilize()                       # a round answered by a quorum at tick 0
    leader.read_index(b"fresh", lease=True)
    rd = net.process_ready(1)
    assert [s.ctx for s in rd.read_states] == [b"fresh"] and not out(rd, HEARTBEAT)
    net.isolated.update({2, 3})
    net.tick(1, LO)
    net.stabilize()
    assert leader.role is Role.LEADER
    leader.read_index(b"stale", lease=True)
    rd = net.process_ready(1)
    assert not rd.read_states and out(rd, HEARTBEAT), "served from a lease older than the election timeout"


def test_lease_read_needs_check_quorum() -> None:
    """diss. 6.4.1: the lease relies on check-quorum (voters ignore candidates); without it a lease read waits."""
    net = elected(3, **BASIC, **SHORT)
    leader = net.nodes[1]
    leader.read_index(b"a")
    net.stabilize()
    leader.read_index(b"b", lease=True)
    rd = net.process_ready(1)
    assert not rd.read_states and out(rd, HEARTBEAT)


def test_read_index_on_a_node_without_a_leader_is_refused() -> None:
    """diss. 6.4: a server that knows no leader cannot get a read index; the client retries elsewhere."""
    net = elected(3, pre_vote=True, check_quorum=True, **SHORT)
    net.isolated.update({2, 3})
    for _ in range(2 * LO):
        net.tick(1)
        net.stabilize()
    assert net.nodes[1].role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        net.nodes[1].read_index(b"r", lease=True)
