"""InstallSnapshot in the engine: a chunked, flow-controlled, resumable, checksummed transfer.

A leader whose follower needs entries it has compacted (`next < first_index`) sends the
snapshot its storage holds instead, as SNAPSHOT messages of up to `snapshot_chunk_bytes`
each, at most `snapshot_window_chunks` unacknowledged at once (flow control). Fields of a
chunk: `index`/`log_term` = the snapshot's last included entry, `hint_index` = the chunk's
byte offset, `hint_term` = the snapshot's total size, `commit` = the leader's commit,
`context` = `crc32 u32 | conf_len u32 | conf JSON | data` (crc32 of the whole snapshot).

The follower hands each chunk that continues its partial snapshot to storage (Ready
`snapshot_chunks`, written and made durable before the acknowledgement goes out) and
answers SNAPSHOT_RESP with `hint_index` = the bytes it holds durably: the next offset it
wants. `reject` says a chunk left a gap (one was lost): the leader rewinds to the hint. A
follower restarted mid-transfer resumes from the bytes its storage kept (resumable), and
a leader that hears no chunk acknowledgement between two heartbeat responses resends from
the last acknowledged offset (lost chunks). When the last byte arrives the follower checks
size and crc32, then installs (Ready `snapshot`): its whole log is replaced (Raft paper
figure 13 / dissertation 5.4), unless its log already holds the snapshot's last entry, in
which case entries up to it are simply committed and the log after it kept. It answers
APPEND_RESP at the snapshot index, and the leader probes from there.

Everything here is deterministic and runs on the engine's thread: the data comes from
`storage.snapshot_chunk(index, offset, size)`, reads of a snapshot already durable.
"""
from __future__ import annotations

import json
import logging
import struct
import zlib
from typing import Optional, Protocol

from raftlog.core.messages import ConfState, Message, MessageType, SnapshotMeta
from raftlog.core.config import Config
from raftlog.core.log import RaftLog
from raftlog.core.progress import Progress, ProgressState, SnapshotSend

log = logging.getLogger("raftlog.core")

SNAPSHOT = MessageType.SNAPSHOT
SNAPSHOT_RESP = MessageType.SNAPSHOT_RESP
APPEND_RESP = MessageType.APPEND_RESP

_HEAD = struct.Struct(">II")


class SnapshotHost(Protocol):
    """The part of the engine (core/raft.py's Raft) a snapshot transfer reads and writes, and no more."""

    id: int
    term: int
    cfg: Config                                   # snapshot_chunk_bytes, snapshot_window_chunks
    log: RaftLog
    incoming: Optional["Incoming"]                # the partial snapshot being received
    snapshot_chunks: list                         # (meta, offset, data) the next Ready stores
    pending_install: Optional[SnapshotMeta]       # the snapshot the next Ready installs
    snapshot_send_hold: Optional[int]             # test hook: see hold_transfers

    def send(self, m: Message) -> None:
        """Queue a message (responses about durable state wait for persistence)."""

    def drop_acks_from(self, index: int) -> None:
        """Forget queued acknowledgements of entries at or after `index`."""

    def use_conf(self, conf: ConfState) -> None:
        """Adopt `conf` as the configuration in force."""


def encode_chunk(meta: SnapshotMeta, data: bytes) -> bytes:
    """The `context` of a SNAPSHOT message: the snapshot's crc32 and configuration, then this chunk's bytes."""
    conf = json.dumps(meta.conf_state.to_dict(), separators=(",", ":")).encode()
    return _HEAD.pack(meta.crc32, len(conf)) + conf + bytes(data)


def decode_chunk(context: bytes) -> tuple[int, ConfState, bytes]:
    """The inverse of encode_chunk: `(crc32, conf_state, data)`; ValueError when malformed."""
    if len(context) < _HEAD.size:
        raise ValueError("snapshot chunk shorter than its header")
    crc, conf_len = _HEAD.unpack_from(context, 0)
    end = _HEAD.size + conf_len
    if end > len(context):
        raise ValueError("snapshot chunk truncated inside its configuration")
    conf = ConfState.from_dict(json.loads(bytes(context[_HEAD.size:end])))
    return crc, conf, bytes(context[end:])


class Incoming:
    """A follower's partial snapshot: which one, how many bytes are held, their running crc32."""

    __slots__ = ("meta", "received", "crc")

    def __init__(self, meta: SnapshotMeta, received: int = 0, crc: int = 0) -> None:
        self.meta = meta
        self.received = received
        self.crc = crc


# -- leader side ---------------------------------------------------------------------------

def maybe_send_snapshot(r: SnapshotHost, to: int, pr: Progress) -> bool:
    """Start (or keep going) a transfer to `to`, which needs compacted entries; True when a chunk went out.

    Waits (returns False) while storage has no snapshot covering the compacted prefix yet:
    the runtime records the snapshot before it compacts, but the two may be a moment apart.
    """
    meta = r.log.storage.snapshot_meta()
    if meta.index < r.log.first_index - 1:
        return False
    if pr.state is not ProgressState.SNAPSHOT or pr.snap is None:
        pr.become_snapshot(SnapshotSend(meta))
        log.info("%d sends snapshot %d/%d (%d bytes) to %d", r.id, meta.index, meta.term, meta.size, to)
    return send_chunks(r, to, pr)


def send_chunks(r: SnapshotHost, to: int, pr: Progress) -> bool:
    """Send chunks from `sent` while the window allows; True when at least one went out."""
    snd = pr.snap
    assert snd is not None, "send_chunks runs only for a transfer in progress (state SNAPSHOT)"
    meta = snd.meta
    chunk = r.cfg.snapshot_chunk_bytes
    window = chunk * r.cfg.snapshot_window_chunks
    storage = r.log.storage
    out = False
    while True:
        if meta.size == 0:
            if snd.empty_out or snd.acked:
                break
            data = b""
            snd.empty_out = True
        else:
            if snd.sent >= meta.size or snd.sent - snd.acked >= window:
                break
            if r.snapshot_send_hold is not None and snd.sent >= r.snapshot_send_hold:
                break                        # held in flight by a test (see hold_transfers)
            try:
                data = storage.snapshot_chunk(meta.index, snd.sent, min(chunk, meta.size - snd.sent))
            except LookupError:
                # Storage moved on to a newer snapshot and dropped this one: start that one.
                newer = storage.snapshot_meta()
                log.info("%d restarts the snapshot transfer to %d: %d replaced %d", r.id, to, newer.index, meta.index)
                pr.become_snapshot(SnapshotSend(newer))
                return send_chunks(r, to, pr) or out
        r.send(Message(SNAPSHOT, to, r.id, r.term, meta.term, meta.index, r.log.committed,
                       hint_index=snd.sent, hint_term=meta.size, context=encode_chunk(meta, data)))
        snd.sent += len(data)
        out = True
    return out


def hold_transfers(r: SnapshotHost, offset: Optional[int]) -> None:
    """Test hook: from now on the leader `r` starts no chunk of a snapshot at or past byte `offset`.

    Transfers stay in flight at that offset (what was sent is still acknowledged, nothing
    more goes out) until `hold_transfers(r, None)` releases them: sending then resumes at
    the next heartbeat response. Tests use it to act on a transfer deterministically in
    the middle (cut the connection, restart the follower) instead of polling to catch it.
    Unused, it costs one comparison per chunk sent.
    """
    r.snapshot_send_hold = offset


def handle_snapshot_resp(r: SnapshotHost, m: Message, pr: Progress) -> None:
    """A follower acknowledged chunks (or reported a gap): slide the window, rewind if asked, send more."""
    snd = pr.snap
    if pr.state is not ProgressState.SNAPSHOT or snd is None or m.index != snd.meta.index \
            or m.log_term != snd.meta.term:
        return                               # about another (older) transfer
    held = min(m.hint_index, snd.meta.size)
    snd.heard = True
    if held > snd.acked:
        snd.acked = held
    if m.reject:
        if held < snd.sent and held != snd.rewound:
            snd.sent = held                  # a chunk was lost (or the follower restarted): resend from there
            snd.rewound = held
            if held < snd.acked:
                snd.acked = held
            snd.empty_out = False
    if snd.sent < snd.acked:
        snd.sent = snd.acked
    send_chunks(r, m.frm, pr)


def on_heartbeat_resp(r: SnapshotHost, to: int, pr: Progress) -> None:
    """A heartbeat round trip passed: if no chunk was acknowledged meanwhile, resend from the last ack."""
    snd = pr.snap
    if snd is None:
        return
    if not snd.heard:
        snd.sent = snd.acked
        snd.rewound = -1
        snd.empty_out = False
    snd.heard = False
    send_chunks(r, to, pr)


def snapshot_installed(pr: Progress, first_index: int) -> None:
    """An acknowledgement raised match: once the follower holds the snapshot (or what we still have), probe again.

    If we compacted past the snapshot meanwhile, probing finds next < first_index and
    starts a transfer of the newer one.
    """
    if pr.state is ProgressState.SNAPSHOT and (pr.match + 1 >= first_index
                                               or (pr.snap is not None and pr.match >= pr.snap.meta.index)):
        pr.become_probe()


# -- follower side -------------------------------------------------------------------------

def handle_snapshot(r: SnapshotHost, m: Message) -> None:
    """One SNAPSHOT chunk from the current leader: store it if it continues our partial snapshot, install when whole."""
    lg = r.log
    index, term, offset, total = m.index, m.log_term, m.hint_index, m.hint_term
    if index <= lg.committed:
        # We already hold (committed) everything the snapshot covers.
        r.send(Message(APPEND_RESP, m.frm, r.id, r.term, index=lg.committed))
        return
    if offset == 0 and lg.match_term(index, term):
        # Our log holds the snapshot's last entry: it and all before it equal the leader's (log
        # matching, paper 5.3) and are committed there, so commit them; no transfer needed.
        lg.commit_to(index)
        r.send(Message(APPEND_RESP, m.frm, r.id, r.term, index=index))
        return
    try:
        crc, conf, data = decode_chunk(m.context)
    except ValueError as exc:
        log.warning("%d dropped a malformed snapshot chunk from %d: %s", r.id, m.frm, exc)
        return
    inc = r.incoming
    if inc is None or (inc.meta.index, inc.meta.term, inc.meta.size, inc.meta.crc32) != (index, term, total, crc):
        if offset != 0:
            r.send(Message(SNAPSHOT_RESP, m.frm, r.id, r.term, term, index, hint_index=0, reject=True))
            return
        inc = Incoming(SnapshotMeta(index, term, conf, total, crc))
        r.incoming = inc
        log.info("%d receives snapshot %d/%d (%d bytes) from %d", r.id, index, term, total, m.frm)
    if offset != inc.received or inc.received + len(data) > total:
        # A duplicate (offset below) is acknowledged as is; a gap (offset above) asks for a rewind.
        r.send(Message(SNAPSHOT_RESP, m.frm, r.id, r.term, term, index, hint_index=inc.received,
                       reject=offset > inc.received))
        return
    r.snapshot_chunks.append((inc.meta, offset, data))
    inc.received += len(data)
    inc.crc = zlib.crc32(data, inc.crc)
    if inc.received < total:
        r.send(Message(SNAPSHOT_RESP, m.frm, r.id, r.term, term, index, hint_index=inc.received))
        return
    r.incoming = None
    if inc.crc != crc:
        log.warning("%d discarded snapshot %d/%d from %d: crc32 %08x, expected %08x", r.id, index, term,
                    m.frm, inc.crc, crc)
        r.send(Message(SNAPSHOT_RESP, m.frm, r.id, r.term, term, index, hint_index=0, reject=True))
        return
    if lg.match_term(index, term):
        lg.commit_to(index)
    else:
        restore(r, inc.meta)
    r.send(Message(APPEND_RESP, m.frm, r.id, r.term, index=index))


def restore(r: SnapshotHost, meta: SnapshotMeta) -> None:
    """Replace the log by the snapshot (paper figure 13, step 7): the runtime installs it with the next Ready."""
    log.info("%d installs snapshot %d/%d, discarding its log [%d, %d]", r.id, meta.index, meta.term,
             r.log.first_index, r.log.last_index)
    r.log.restore(meta.index, meta.term)
    # Acknowledgements still queued for entries we just discarded would claim what we no
    # longer hold (the same hazard as a truncation: see Raft.drop_acks_from).
    r.drop_acks_from(meta.index + 1)
    r.pending_install = meta
    if meta.conf_state.voters:
        r.use_conf(meta.conf_state)
