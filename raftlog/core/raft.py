"""Raft: roles, elections, replication and commit as a pure state machine (no I/O, no clock).

Inputs are `step(msg)`, `tick()` and `propose(batch)`; outputs accumulate in `msgs` (may be
sent at once) and `msgs_after_persist` (only after the entries and hard state produced with
them are durable), plus the log's unstable suffix and the commit index. RawNode turns them
into Ready. Section numbers cite the Raft paper (§) and Ongaro's dissertation (diss.).
"""
from __future__ import annotations

import logging
import random
from collections import deque
from enum import Enum
from typing import Optional

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.log import RaftLog
from raftlog.core.messages import ConfState, Message, MessageType, SnapshotMeta
from raftlog.core.progress import Progress, ProgressState
from raftlog.core import snapshot as snap
from raftlog.core.quorum import VoteResult
from raftlog.core.readonly import ReadOnly, ReadState, decode_round
from raftlog.core.storage import Storage
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import KIND_CONF, KIND_NOOP, RecordBatch, match_append, quorum_commit

log = logging.getLogger("raftlog.core")

APPEND = MessageType.APPEND
APPEND_RESP = MessageType.APPEND_RESP
VOTE = MessageType.VOTE
VOTE_RESP = MessageType.VOTE_RESP
PRE_VOTE = MessageType.PRE_VOTE
PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
HEARTBEAT = MessageType.HEARTBEAT
HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
SNAPSHOT = MessageType.SNAPSHOT
SNAPSHOT_RESP = MessageType.SNAPSHOT_RESP
TIMEOUT_NOW = MessageType.TIMEOUT_NOW
READ_INDEX = MessageType.READ_INDEX
READ_INDEX_RESP = MessageType.READ_INDEX_RESP

# Responses whose content (term, vote, log position) must be durable before anyone hears it.
AFTER_PERSIST = frozenset({APPEND_RESP, VOTE_RESP, HEARTBEAT_RESP, SNAPSHOT_RESP})

NO_ENTRIES_MAX = 1 << 62
# Context of a RequestVote sent on a leader's TimeoutNow: voters let it through their leader
# lease, because the leader itself asked for the election (diss. 3.10).
TRANSFER_CONTEXT = b"transfer"


class Role(str, Enum):
    """A node's role; the value is what status() and log lines print."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"

    def __str__(self) -> str:
        return self.value


class Raft:
    """One node's Raft state. Driven by RawNode; see the module docstring."""

    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        config.validate()
        self.id = config.node_id
        self.cfg = config
        self.rng = rng
        conf = storage.conf_state()
        if conf is None:
            conf = ConfState(voters=tuple(config.voters),
                             addresses=tuple(sorted((int(i), a) for i, a in config.addresses)))
        if not conf.voters and not config.join:
            raise ValueError("no voters: give Config.voters or a storage with a conf_state")
        self.role: Role = Role.FOLLOWER
        self.progress: dict[int, Progress] = {}
        # The latest configuration entry in the log (0 = none known) and the voters before it:
        # a voter being removed by a change not yet known committed may still campaign.
        self.conf_index = 0
        self.conf_prev_voters: frozenset[int] = frozenset()
        self.use_conf(conf)
        self.log = RaftLog(storage, config.max_cache_bytes)
        hs = storage.hard_state()
        self.term: int = hs.term
        self.vote: int = hs.vote
        if hs.commit:
            self.log.committed = min(hs.commit, self.log.last_index)
        # A snapshot holds committed entries only: its index counts as committed even when
        # the hard state's commit (written lazily by the runtime) lags behind it.
        snap_index = storage.snapshot_meta().index
        if snap_index > self.log.committed:
            self.log.committed = min(snap_index, self.log.last_index)
        partial = storage.incoming_snapshot()
        # A partial InstallSnapshot kept by storage: the transfer resumes from its last byte.
        self.incoming: Optional[snap.Incoming] = snap.Incoming(*partial) if partial is not None else None
        self.snapshot_chunks: list = []       # (meta, offset, data) the next Ready stores
        self.pending_install: Optional[SnapshotMeta] = None   # the snapshot the next Ready installs
        # Test hook (core/snapshot.py, hold_transfers): a byte offset at which this leader holds
        # its snapshot transfers in flight; None (the default) holds nothing.
        self.snapshot_send_hold: Optional[int] = None
        # (term, vote) last made durable: a candidate counts its own vote only once it is.
        self.durable_term_vote: tuple[int, int] = (hs.term, hs.vote)
        found = confchange.scan_log(self.log, self.log.committed + 1, self.log.last_index + 1)
        if found:
            self.conf_index = found[-1][0]
            self.conf_prev_voters = confchange.voters_of(confchange.decode_entry(found[-1][1])[1])
        self.leader_id = 0
        # The highest commit index a leader's AppendEntries carried: a node whose commit index is
        # below it is behind and does not trust its log's configuration yet (core/removal.py).
        self.leader_commit = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.uncommitted: deque[tuple[int, int]] = deque()   # (last index, bytes) per proposal
        self.uncommitted_bytes = 0
        self.pending_bcast = False          # new entries to send at the next Ready
        self.pending_bcast_commit = False   # the commit index moved: tell followers
        self.lead_transferee = 0            # leadership transfer target (diss. 3.10), 0 = none
        self.readonly = ReadOnly()          # ReadIndex / lease reads (core/readonly.py)
        self.read_states: list[ReadState] = []   # released local reads, for the next Ready
        self.pending_read_round = False     # a read waits for a heartbeat round: send one at flush
        self.ticks = 0                      # ticks since start (the lease's clock)
        # Index of this leader's last configuration entry (its no-op right after election,
        # so a new leader commits an entry of its own term before it accepts a change).
        self.pending_conf_index = 0
        self.elections = 0
        self.become_follower(self.term, 0)

    # -- helpers -------------------------------------------------------------------------

    @property
    def promotable(self) -> bool:
        """True when this node may campaign: it is a voter (incoming or outgoing) of its configuration.

        Also while it was a voter before the latest configuration entry and that entry is not
        known to be committed. Otherwise a leader that appended C_new without itself and
        then failed leaves a deadlock (found by the simulator, seed 116 of 3+3 nodes): the
        other C_old servers hold C_new too, so they do not campaign, and they refuse their
        votes to the C_new voters whose logs lack C_new. Votes are counted in the
        candidate's latest configuration, where its own does not count: this is safe, and
        the winner commits C_new and steps down (maybe_finish_conf).
        """
        if self.id in self.all_voters:
            return True
        return self.id in self.conf_prev_voters and self.conf_index > self.log.committed

    def use_conf(self, conf: ConfState) -> None:
        """Take `conf` into use at once: the latest configuration in the log rules (diss. 4.1).

        A leader starts replicating to new members; members that left keep their progress
        (lingering) until the change is committed, so that they learn they were removed.
        """
        self.conf = conf
        self.voters: tuple[int, ...] = tuple(conf.voters)                  # incoming voters
        self.all_voters: tuple[int, ...] = tuple(sorted(confchange.voters_of(conf)))
        self.voter_peers: tuple[int, ...] = tuple(v for v in self.all_voters if v != self.id)
        everyone = confchange.members(conf)
        self.peers: tuple[int, ...] = tuple(sorted(v for v in everyone if v != self.id))
        if self.role is Role.LEADER:
            last = self.log.last_index
            cfg = self.cfg
            for p in everyone:
                if p not in self.progress:
                    pr = Progress(last + 1, 0, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
                    pr.recent_active = True     # give a new member one check-quorum period
                    self.progress[p] = pr
        log.info("%d uses configuration %s", self.id, confchange.describe(conf))

    def conf_entries_appended(self, first: int, batch: RecordBatch) -> None:
        """Entries just entered the log at `first`: the last configuration entry among them rules now."""
        found = confchange.scan(batch, first)
        if found:
            conf, prev, _ = confchange.decode_entry(found[-1][1])
            self.conf_index = found[-1][0]
            self.conf_prev_voters = confchange.voters_of(prev)
            self.use_conf(conf)

    def conf_before_truncate(self, index: int) -> None:
        """Entries from `index` are about to be removed: restore the configuration in force before them.

        The first configuration entry among the removed ones carries that configuration.
        """
        lg = self.log
        if index > lg.last_index:
            return
        found = confchange.scan_log(lg, index, lg.last_index + 1)
        if found:
            _, prev, _ = confchange.decode_entry(found[0][1])
            log.info("%d reverts its configuration: entry %d was truncated", self.id, found[0][0])
            self.conf_index = 0
            self.conf_prev_voters = frozenset()
            self.use_conf(prev)

    def send(self, m: Message) -> None:
        """Queue m; responses that reveal term, vote or log position wait for persistence."""
        if m.type in AFTER_PERSIST:
            self.msgs_after_persist.append(m)
        else:
            self.msgs.append(m)

    def reset(self, term: int) -> None:
        """Common part of every role change: a new term forgets the vote (§5.1)."""
        if term != self.term:
            self.term = term
            self.vote = 0
        self.leader_id = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        lo, hi = self.cfg.election_ticks
        self.randomized_timeout = self.rng.randrange(lo, hi)
        self.votes = {}
        self.lead_transferee = 0
        self.readonly.reset()
        self.pending_read_round = False
        self.pending_bcast = False
        self.pending_bcast_commit = False

    def become_follower(self, term: int, leader_id: int) -> None:
        """Follow `leader_id` (0 = unknown) at `term`."""
        self.reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.progress = {}
        self.uncommitted.clear()
        self.uncommitted_bytes = 0
        log.debug("%d became follower at term %d", self.id, term)

    def become_pre_candidate(self) -> None:
        """Ask for pre-votes without touching the term (diss. 9.6)."""
        if self.role is Role.LEADER:
            raise RuntimeError("leader cannot become pre-candidate")
        self.votes = {}
        self.leader_id = 0
        self.role = Role.PRE_CANDIDATE
        # The election timer keeps running: a failed pre-vote retries after a new timeout.
        self.election_elapsed = 0
        lo, hi = self.cfg.election_ticks
        self.randomized_timeout = self.rng.randrange(lo, hi)
        log.debug("%d became pre-candidate at term %d", self.id, self.term)

    def become_candidate(self) -> None:
        """Start a real election: next term, vote for self (§5.2)."""
        if self.role is Role.LEADER:
            raise RuntimeError("leader cannot become candidate")
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.elections += 1
        log.debug("%d became candidate at term %d", self.id, self.term)

    def become_leader(self) -> None:
        """Take over at the current term: reset progress, append the term's no-op (§5.4.2, §8)."""
        if self.role is Role.FOLLOWER:
            raise RuntimeError("follower cannot become leader")
        self.reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index
        cfg = self.cfg
        self.progress = {v: Progress(last + 1, 0, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
                         for v in confchange.members(self.conf) | {self.id}}
        me = self.progress[self.id]
        me.match = self.log.stable
        me.become_replicate()
        me.recent_active = True
        self.uncommitted.clear()
        self.uncommitted_bytes = 0
        noop = RecordBatch.encode(self.term, KIND_NOOP, [b""])
        self.log.append(last + 1, noop, self.term)
        me.next = last + 2
        # No configuration change until this no-op commits (the single-server change bug fix).
        self.pending_conf_index = last + 1
        self.pending_bcast = True
        log.info("%d became leader at term %d", self.id, self.term)

    # -- time ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.ticks += 1
        if self.role is Role.LEADER:
            self.tick_heartbeat()
        else:
            self.tick_election()

    def tick_election(self) -> None:
        """Follower/candidate: campaign when the randomized election timeout passes (§5.2)."""
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout and self.promotable:
            self.election_elapsed = 0
            self.hup()

    def tick_heartbeat(self) -> None:
        """Leader: heartbeat every heartbeat_ticks; check quorum every election timeout (diss. 6.2)."""
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks[0]:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self.maybe_keep_quorum():
                log.info("%d stepped down at term %d: lost quorum", self.id, self.term)
                self.become_follower(self.term, 0)
                return
            if self.lead_transferee:
                log.info("%d abandoned the leadership transfer to %d at term %d", self.id, self.lead_transferee,
                         self.term)
                self.lead_transferee = 0
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.bcast_heartbeat()

    def maybe_keep_quorum(self) -> bool:
        """True when a majority (self included) was heard from since the last check; resets the marks."""
        active = {}
        for v in self.all_voters:
            pr = self.progress.get(v)
            active[v] = v == self.id or (pr is not None and pr.recent_active)
        for p, pr in self.progress.items():
            if p != self.id:
                pr.recent_active = False
        return confchange.election_result(self.conf, active) is VoteResult.WON

    # -- elections -----------------------------------------------------------------------

    def hup(self) -> None:
        """Start an election now (pre-vote first when configured)."""
        if self.role is Role.LEADER or not self.promotable:
            return
        if self.cfg.pre_vote:
            self.campaign_pre()
        else:
            self.campaign()

    def campaign_pre(self) -> None:
        """Pre-vote round at term + 1 (diss. 9.6): nobody changes term unless a majority would elect us."""
        self.become_pre_candidate()
        self.votes[self.id] = True
        if confchange.election_result(self.conf, self.votes) is VoteResult.WON:
            self.campaign()
            return
        for p in self.voter_peers:
            self.send(Message(PRE_VOTE, p, self.id, self.term + 1, self.log.last_term, self.log.last_index))

    def campaign(self, transfer: bool = False) -> None:
        """Real election (§5.2). Our own vote counts once (term, vote) is durable: see on_persisted."""
        self.become_candidate()
        ctx = TRANSFER_CONTEXT if transfer else b""
        for p in self.voter_peers:
            self.send(Message(VOTE, p, self.id, self.term, self.log.last_term, self.log.last_index, context=ctx))
        self.maybe_count_self_vote()

    def maybe_count_self_vote(self) -> None:
        """Count our own vote once it is durable, and win if that makes a majority."""
        if self.role is Role.CANDIDATE and self.durable_term_vote == (self.term, self.id) \
                and self.id not in self.votes:
            self.votes[self.id] = True
            self.check_votes()

    def check_votes(self) -> None:
        """Act on the votes counted so far: lead, fall back to follower, or keep waiting."""
        result = confchange.election_result(self.conf, self.votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self.campaign()
            else:
                self.become_leader()
        elif result is VoteResult.LOST:
            self.become_follower(self.term, 0)

    # -- messages ------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message addressed to this node. Stale, misaddressed and unknown messages are ignored."""
        if m.to != self.id or m.term == 0:
            return
        mtype = m.type
        if m.term > self.term:
            if mtype == VOTE or mtype == PRE_VOTE:
                # Leader lease (diss. 4.2.3): a node that heard from a live leader within the
                # minimum election timeout ignores a disruptive candidate.
                if self.cfg.check_quorum and self.leader_id != 0 \
                        and self.election_elapsed < self.cfg.election_ticks[0] \
                        and m.context != TRANSFER_CONTEXT:
                    return
            if mtype == PRE_VOTE:
                pass                          # a pre-vote never changes our term
            elif mtype == PRE_VOTE_RESP and not m.reject:
                pass                          # granted pre-votes carry the term we asked for
            else:
                leader = m.frm if mtype in (APPEND, HEARTBEAT, SNAPSHOT) else 0
                log.debug("%d saw term %d from %d (type %d) at term %d", self.id, m.term, m.frm, mtype, self.term)
                self.become_follower(m.term, leader)      # §5.1: step down on any higher term
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and mtype in (APPEND, HEARTBEAT, SNAPSHOT):
                # A stale leader may be cut off from the new term's traffic: tell it (diss. 9.6).
                self.send(Message(APPEND_RESP, m.frm, self.id, self.term))
            elif mtype == PRE_VOTE:
                self.send(Message(PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return

        if mtype == VOTE or mtype == PRE_VOTE:
            self.handle_vote_request(m)
            return
        role = self.role
        if role is Role.LEADER:
            self.step_leader(m)
        elif role is Role.FOLLOWER:
            self.step_follower(m)
        else:
            self.step_candidate(m)

    def handle_vote_request(self, m: Message) -> None:
        """RequestVote / pre-vote receiver rules (§5.2, §5.4.1, diss. 9.6)."""
        pre = m.type == PRE_VOTE
        can_vote = (self.vote == m.frm
                    or (self.vote == 0 and self.leader_id == 0)
                    or (pre and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            if pre:
                self.send(Message(PRE_VOTE_RESP, m.frm, self.id, m.term))
            else:
                self.election_elapsed = 0
                self.vote = m.frm
                log.debug("%d voted for %d at term %d", self.id, m.frm, self.term)
                self.send(Message(VOTE_RESP, m.frm, self.id, self.term))
        else:
            self.send(Message(PRE_VOTE_RESP if pre else VOTE_RESP, m.frm, self.id, self.term, reject=True))

    def step_follower(self, m: Message) -> None:
        """Follower: accept the leader's AppendEntries and heartbeats."""
        mtype = m.type
        if mtype == APPEND:
            self.election_elapsed = 0
            self.leader_id = m.frm
            self.handle_append(m)
        elif mtype == HEARTBEAT:
            self.election_elapsed = 0
            self.leader_id = m.frm
            self.handle_heartbeat(m)
        elif mtype == SNAPSHOT:
            self.election_elapsed = 0
            self.leader_id = m.frm
            snap.handle_snapshot(self, m)
        elif mtype == READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif mtype == TIMEOUT_NOW:
            # Leadership transfer (diss. 3.10): our leader asks us to campaign at once, skipping
            # pre-vote; its own vote and the others' leases let the election through.
            if self.promotable:
                log.info("%d campaigns at once: TimeoutNow from %d at term %d", self.id, m.frm, self.term)
                self.campaign(transfer=True)

    def step_candidate(self, m: Message) -> None:
        """Pre-candidate and candidate: count votes; a leader of this term makes us follow (§5.2)."""
        mtype = m.type
        if mtype == APPEND:
            self.become_follower(m.term, m.frm)
            self.handle_append(m)
        elif mtype == HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self.handle_heartbeat(m)
        elif mtype == SNAPSHOT:
            self.become_follower(m.term, m.frm)
            snap.handle_snapshot(self, m)
        elif (mtype == PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or \
                (mtype == VOTE_RESP and self.role is Role.CANDIDATE):
            if self.role is Role.PRE_CANDIDATE and m.term != self.term + 1 and not m.reject:
                return
            self.votes.setdefault(m.frm, not m.reject)
            self.check_votes()

    def step_leader(self, m: Message) -> None:
        """Leader: replication responses and heartbeats."""
        mtype = m.type
        if mtype == READ_INDEX:
            self.read_index(m.context, m.frm, lease=False)
            return
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        if mtype == APPEND_RESP:
            pr.recent_active = True
            if m.reject:
                self.handle_append_reject(m, pr)
            else:
                self.handle_append_ack(m, pr)
        elif mtype == SNAPSHOT_RESP:
            pr.recent_active = True
            snap.handle_snapshot_resp(self, m, pr)
        elif mtype == HEARTBEAT_RESP and pr.state is ProgressState.SNAPSHOT:
            pr.recent_active = True
            snap.on_heartbeat_resp(self, m.frm, pr)
        elif mtype == HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            rnd = decode_round(m.context)
            if rnd > self.readonly.acked.get(m.frm, 0):
                self.readonly.acked[m.frm] = rnd
                self.update_read_quorum()
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index:
                self.send_append_all(m.frm, True)

    def handle_append_ack(self, m: Message, pr: Progress) -> None:
        """An AppendEntries success: raise match (never lower it), commit, send more."""
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        else:
            snap.snapshot_installed(pr, self.log.first_index)
        if self.maybe_commit():
            self.pending_bcast_commit = True
        if m.frm == self.lead_transferee and pr.match == self.log.last_index:
            self.send_timeout_now(m.frm)
        if was_paused or pr.next <= self.log.last_index:
            self.send_append_all(m.frm, False)

    def send_timeout_now(self, to: int) -> None:
        """Tell `to` (whose log is complete) to campaign now."""
        log.info("%d sends TimeoutNow to %d at term %d", self.id, to, self.term)
        self.send(Message(TIMEOUT_NOW, to, self.id, self.term))

    def transfer_leadership(self, to: int) -> None:
        """Leader: hand leadership to voter `to` (diss. 3.10).

        Proposals are refused from now on; `to` is brought up to date, then told to campaign
        (TimeoutNow). The attempt is abandoned after one election timeout (see tick_heartbeat).
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if to == self.id:
            return
        if to not in self.all_voters or to not in self.progress:
            raise ValueError(f"node {to} is not a voter")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        log.info("%d transfers leadership to %d at term %d", self.id, to, self.term)
        if self.progress[to].match == self.log.last_index:
            self.send_timeout_now(to)
        else:
            self.send_append(to, True)

    def report_unreachable(self, peer: int) -> None:
        """Leader: the transport lost `peer`; stop pipelining to it and probe from its match again.

        AppendEntries pipelined to a peer whose connection broke were most likely lost: in
        replicate state the leader would otherwise wait for its inflight window to drain by
        timeouts. Probing resends from match + 1 once the peer answers (etcd's ReportUnreachable).
        """
        pr = self.progress.get(peer)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def handle_append_reject(self, m: Message, pr: Progress) -> None:
        """An AppendEntries rejection: back next off by whole terms using the hint (diss. 5.3)."""
        hint = m.hint_index
        if m.hint_term:
            hint = self.log.index.find_conflict_by_term(m.hint_index, m.hint_term)
        if pr.maybe_decr_to(m.index, hint):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            self.send_append(m.frm, True)

    def handle_append(self, m: Message) -> None:
        """AppendEntries receiver (§5.3, figure 2): match, truncate a conflicting suffix, append, learn commit."""
        lg = self.log
        prev = m.index
        prev_term = m.log_term
        ents = m.entries
        n = len(ents) if ents is not None else 0
        committed = lg.committed
        if m.commit > self.leader_commit:
            self.leader_commit = m.commit
        if prev < committed:
            # Entries up to our commit index are committed and so equal the leader's (§5.4.3):
            # only what lies beyond can be new. This also makes a stale request harmless.
            skip = committed - prev
            if skip >= n:
                self.send(Message(APPEND_RESP, m.frm, self.id, self.term, index=committed))
                return
            assert ents is not None, "skip < n: the message carries entries"
            ents = ents.slice(skip, n)
            n -= skip
            prev = committed
            prev_term = lg.term_at(prev)
        if prev > lg.last_index or lg.term_at(prev) != prev_term:
            hint = lg.index.find_conflict_by_term(min(prev, lg.last_index), prev_term)
            log.debug("%d rejected append at %d/%d from %d, hint %d", self.id, prev, prev_term, m.frm, hint)
            self.send(Message(APPEND_RESP, m.frm, self.id, self.term, index=m.index, reject=True,
                              hint_index=hint, hint_term=lg.term_at(hint)))
            return
        if n:
            assert ents is not None, "n > 0: the message carries entries"
            ok, truncate_from, keep = match_append(lg.index, prev, prev_term, ents.terms(), committed)
            if truncate_from:
                log.debug("%d truncated its log from %d", self.id, truncate_from)
                self.conf_before_truncate(truncate_from)
                lg.truncate(truncate_from)
                self.drop_acks_from(truncate_from)
            if keep < n:
                fresh = ents.slice(keep, n) if keep else ents
                lg.append(prev + 1 + keep, fresh)
                self.conf_entries_appended(prev + 1 + keep, fresh)
        last_new = prev + n
        lg.commit_to(min(m.commit, last_new))
        self.send(Message(APPEND_RESP, m.frm, self.id, self.term, index=last_new))

    def drop_acks_from(self, index: int) -> None:
        """Withdraw queued acks that claim entries at or after `index`: they were just truncated.

        An ack waits in msgs_after_persist for the next Ready; if a new leader's entries cut
        the log below it first, sending it after that Ready would claim entries this node no
        longer has, and the old leader could count a false majority. (Found by the
        simulator: seed 58, 5 nodes.)
        """
        q = self.msgs_after_persist
        if q:
            self.msgs_after_persist = [m for m in q if m.type != APPEND_RESP or m.reject or m.index < index]

    def handle_heartbeat(self, m: Message) -> None:
        """Heartbeat receiver: learn the commit index (the leader sends at most our match)."""
        self.log.commit_to(m.commit)
        self.send(Message(HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context))

    # -- replication ---------------------------------------------------------------------

    def send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send `to` one AppendEntries from its next index, if its progress allows; True when sent."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        lg = self.log
        if pr.next < lg.first_index:
            # The entries it needs are compacted: send the snapshot instead (paper section 7).
            return snap.maybe_send_snapshot(self, to, pr)
        prev = pr.next - 1
        last = lg.last_index
        ents = None
        if pr.next <= last:
            ents = lg.slice(pr.next, last + 1, self.cfg.max_msg_bytes)
        elif not send_if_empty:
            return False
        self.msgs.append(Message(APPEND, to, self.id, self.term, lg.term_at(prev), prev, lg.committed,
                                 entries=ents))
        if ents is not None:
            n = len(ents)
            if pr.state is ProgressState.REPLICATE:
                pr.next = prev + n + 1
                pr.inflights.add(prev + n, ents.nbytes)
            else:
                pr.probe_sent = True
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def send_append_all(self, to: int, send_if_empty: bool) -> None:
        """Send `to` as many AppendEntries as its window allows (one while probing)."""
        if not self.send_append(to, send_if_empty):
            return
        pr = self.progress[to]
        while pr.state is ProgressState.REPLICATE and pr.next <= self.log.last_index:
            if not self.send_append(to, False):
                break

    def bcast_append(self, send_if_empty: bool) -> None:
        """Replicate to every member and lingering ex-member (called once per Ready, so proposals batch)."""
        me = self.id
        for p in list(self.progress):
            if p != me:
                self.send_append_all(p, send_if_empty)

    def bcast_heartbeat(self, context: bytes = b"") -> None:
        """Heartbeat every peer; the commit carried is at most the peer's match (it may lack later entries)."""
        committed = self.log.committed
        me = self.id
        # Every broadcast is a numbered round (readonly.py): the echoes confirm leadership for reads.
        context = self.readonly.next_round(self.ticks)
        self.update_read_quorum()
        for p, pr in self.progress.items():
            if p == me:
                continue
            self.msgs.append(Message(HEARTBEAT, p, self.id, self.term, commit=min(pr.match, committed),
                                     context=context))

    # -- reads (diss. 6.4; core/readonly.py) ---------------------------------------------

    def read_index(self, ctx: bytes, frm: int = 0, lease: bool = False) -> None:
        """Ask for a linearizable read tagged `ctx`; its ReadState (index, ctx) appears in a later Ready.

        On the leader it waits for a quorum heartbeat round sent after now (or, with `lease`,
        is answered at once while the leader lease holds); a follower forwards it to the
        leader. NotLeader when no leader is known. A read may be lost (leader change, a
        dropped message): the caller times out and retries.
        """
        frm = frm or self.id
        if self.role is Role.LEADER:
            lg = self.log
            own_term = lg.term_at(lg.committed) == self.term
            if lease and own_term and self.cfg.check_quorum:
                lo = self.cfg.election_ticks[0]
                if self.ticks < self.readonly.lease_until(lo, max(1, lo // 10)):
                    self.emit_read(frm, ctx, lg.committed)
                    return
            self.readonly.add(ctx, lg.committed if own_term else 0, frm)
            self.pending_read_round = True
            return
        if self.leader_id == 0 or frm != self.id:
            raise NotLeader(self.leader_id)
        self.send(Message(READ_INDEX, self.leader_id, self.id, self.term, context=ctx))

    def emit_read(self, frm: int, ctx: bytes, index: int) -> None:
        """A read is released at `index`: locally as a ReadState, or back to the follower that asked."""
        if frm == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self.send(Message(READ_INDEX_RESP, frm, self.id, self.term, index=index, context=ctx))

    def update_read_quorum(self) -> None:
        """Recompute the highest heartbeat round a quorum acknowledged (we ack our own), release reads."""
        ro = self.readonly
        acked = {v: (ro.round if v == self.id else ro.acked.get(v, 0)) for v in self.all_voters}
        q = confchange.committed_index(self.conf, acked)
        if q > ro.quorum_round:
            ro.quorum_round = q
            self.release_reads()

    def release_reads(self) -> None:
        """Emit every pending read whose round a quorum acknowledged, once this term has a commit."""
        lg = self.log
        for p in self.readonly.release(lg.term_at(lg.committed) == self.term):
            self.emit_read(p.frm, p.ctx, p.index or lg.committed)

    def flush(self) -> None:
        """Send what proposals and commit changes since the last Ready call for."""
        if self.role is Role.LEADER:
            self.maybe_finish_conf()
        if self.role is Role.LEADER and self.pending_read_round:
            self.bcast_heartbeat()
        self.pending_read_round = False
        if self.role is Role.LEADER and (self.pending_bcast or self.pending_bcast_commit):
            self.bcast_append(self.pending_bcast_commit)
        self.pending_bcast = False
        self.pending_bcast_commit = False

    def maybe_finish_conf(self) -> None:
        """Leader: once its last configuration entry is committed, finish the change.

        C_old,new committed -> append C_new (diss. 4.3); ex-members get one last append (with
        the commit index, so they learn they are out; sent past their flow-control window,
        not while a snapshot is on its way) and are forgotten; a leader that is no
        longer a voter steps down (diss. 4.2.2), handing leadership to the most up-to-date voter.
        """
        lg = self.log
        if lg.committed < self.pending_conf_index:
            return
        everyone = confchange.members(self.conf)
        gone = [p for p in self.progress if p not in everyone and p != self.id]
        for p in gone:
            pr = self.progress[p]
            if pr.state is not ProgressState.SNAPSHOT:
                # Its last word goes out even with its window full: probing from its match
                # resends what may be in flight (harmless: §5.3, the log already holds it).
                pr.become_probe()
            self.send_append(p, True)
            del self.progress[p]
        if confchange.is_joint(self.conf):
            if self.conf.auto_leave:
                self.append_conf(confchange.leave_joint(self.conf), [{"op": confchange.LEAVE_JOINT}])
            return
        if self.id not in self.all_voters:
            self.bcast_append(True)
            target = self.best_transferee()
            if target:
                self.send(Message(TIMEOUT_NOW, target, self.id, self.term))
            log.info("%d stepped down at term %d: removed from the configuration", self.id, self.term)
            self.become_follower(self.term, 0)

    def best_transferee(self) -> int:
        """The voter (not this node) with the highest match that holds the whole log, or 0."""
        best, best_match = 0, -1
        last = self.log.last_index
        for v in self.all_voters:
            pr = self.progress.get(v)
            if v != self.id and pr is not None and pr.match > best_match:
                best, best_match = v, pr.match
        return best if best_match == last else 0

    def append_conf(self, conf: ConfState, changes: list) -> int:
        """Leader: append the entry that changes the configuration to `conf`, and use it at once; its index."""
        payload = confchange.encode_entry(conf, self.conf, changes)
        index = self.log.last_index + 1
        batch = RecordBatch.encode(self.term, KIND_CONF, [payload])
        self.log.append(index, batch, self.term)
        self.uncommitted.append((index, batch.nbytes))
        self.uncommitted_bytes += batch.nbytes
        self.progress[self.id].next = index + 1
        self.pending_conf_index = index
        self.pending_bcast = True
        log.info("%d proposed configuration %s at index %d", self.id, confchange.describe(conf), index)
        self.conf_index = index
        self.conf_prev_voters = confchange.voters_of(self.conf)
        self.use_conf(conf)
        return index

    def propose_conf_change(self, changes: list) -> tuple[int, int]:
        """Leader: start a membership change; `(index, term)` of its entry.

        Refused (ProposalDropped) while another change is in flight: the last configuration
        entry is uncommitted, the configuration is joint, or this leader has not yet
        committed its own no-op. ConfChangeError when the change does not fit the configuration.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
        if self.pending_conf_index > self.log.committed or confchange.is_joint(self.conf):
            raise ProposalDropped("a configuration change is in progress")
        conf = confchange.apply_changes(self.conf, changes)
        return self.append_conf(conf, list(changes)), self.term

    def may_commit_by_counting(self, index: int) -> bool:
        """True only when the entry at `index` is of the leader's current term (§5.4.2, figure 8).

        A leader commits by counting replicas only entries of its own term; older entries
        are committed indirectly, by the Log Matching Property, once one of its own is.
        """
        return self.log.term_at(index) == self.term

    def maybe_commit(self) -> bool:
        """Advance commit to the majority match if that entry may be committed by counting (§5.4.2, figure 8)."""
        lg = self.log
        progress = self.progress
        if self.conf.voters_outgoing:
            c = confchange.committed_index(self.conf, {v: progress[v].match for v in self.all_voters})
        else:
            c = quorum_commit([progress[v].match for v in self.voters])
        if c <= lg.committed or not self.may_commit_by_counting(c):
            return False
        lg.commit_to(c)
        q = self.uncommitted
        while q and q[0][0] <= c:
            self.uncommitted_bytes -= q.popleft()[1]
        if self.readonly.pending:
            self.release_reads()      # the term's first commit may be what they waited for
        return True

    # -- proposals and persistence -------------------------------------------------------

    def propose(self, batch: RecordBatch) -> tuple[int, int]:
        """Append `batch` (already stamped with our term) as the leader; return (first index, term)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
        nbytes = batch.nbytes
        if self.uncommitted_bytes and self.uncommitted_bytes + nbytes > self.cfg.max_uncommitted_bytes:
            raise ProposalDropped(f"{self.uncommitted_bytes} uncommitted bytes: over the budget of "
                                  f"{self.cfg.max_uncommitted_bytes}")
        first = self.log.last_index + 1
        self.log.append(first, batch, self.term)
        self.uncommitted.append((first + len(batch) - 1, nbytes))
        self.uncommitted_bytes += nbytes
        self.progress[self.id].next = self.log.last_index + 1
        self.pending_bcast = True
        return first, self.term

    def on_persisted(self, term_vote: Optional[tuple[int, int]]) -> None:
        """Storage made a Ready durable: count our own vote, or our own match as leader."""
        if term_vote is not None:
            self.durable_term_vote = term_vote
        if self.role is Role.CANDIDATE:
            self.maybe_count_self_vote()
        elif self.role is Role.LEADER:
            me = self.progress.get(self.id)
            if me is not None and me.maybe_update(self.log.stable):
                if self.maybe_commit():
                    self.pending_bcast_commit = True

