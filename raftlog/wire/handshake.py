"""The handshake that opens every connection: how a node's is written and when one is acceptable.

docs/formats.md, Handshake: the connecting side sends its handshake first (a node dialing a peer
sends `node_handshake(...)`, a client the same frame with ROLE_CLIENT); the accepting side
checks magic, version and cluster id with `check_handshake` (runtime/listener.py adds, for a
peer, that the id is a member) and answers with its own `node_handshake`, or with an error
frame and a close. The dialer checks that answer with `check_handshake` too
(runtime/peer_transport.py). With a shared secret, the auth field carries the exchange of
wire/auth.py.
"""
from __future__ import annotations

from typing import Optional

from raftlog.hot import (
    ERR_BAD_REQUEST,
    ERR_CLUSTER_MISMATCH,
    ERR_VERSION,
    FRAME_HANDSHAKE,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_PEER,
    encode_handshake,
)

HANDSHAKE_TIMEOUT = 5.0        # seconds a new connection may take to say who it is
# The words every refusal of a replaced data dir carries: the refused node recognises the
# error frame by them (runtime/peer_transport.py) and shows it in its status.
REPLACED_DATA_DIR = "its data dir was replaced"


def replaced_reason(node_id: int, peer: int, incarnation: int, known: int) -> str:
    """The one line saying node `node_id` refuses `peer`, whose data dir was replaced, and the remedy."""
    return (f"node {node_id} refused node {peer}: {REPLACED_DATA_DIR} (incarnation {incarnation:x}, "
            f"known {known:x}); remove it with `raftlog members remove {peer}`, then start it on an empty "
            f"dir with --join")


def is_replaced_refusal(message: str) -> bool:
    """True when an error frame's `message` is a peer refusing this node's replaced data dir."""
    return REPLACED_DATA_DIR in message


def node_handshake(node_id: int, cluster_id: str, auth: bytes = b"", incarnation: int = 0) -> bytes:
    """The handshake node `node_id` sends: dialing a peer, or answering any connection it accepted.

    `incarnation` is its data dir's (raftlog.core.incarnations): a peer that knew another one refuses it.
    """
    return encode_handshake(PROTOCOL_VERSION, ROLE_PEER, node_id, cluster_id, auth, incarnation)


def check_handshake(frame: tuple, cluster_id: str) -> Optional[tuple[int, str]]:
    """None if `frame` is an acceptable handshake for `cluster_id`, else (error code, reason)."""
    if frame[0] != FRAME_HANDSHAKE:
        return ERR_BAD_REQUEST, "the first frame must be a handshake"
    _, version, role, _node_id, their_cluster, _auth, _incarnation = frame
    if version != PROTOCOL_VERSION:
        return ERR_VERSION, f"protocol version {version} is not {PROTOCOL_VERSION}"
    if their_cluster != cluster_id:
        return ERR_CLUSTER_MISMATCH, f"cluster id {their_cluster!r} is not {cluster_id!r}"
    if role not in (ROLE_PEER, ROLE_CLIENT):
        return ERR_BAD_REQUEST, f"unknown role {role}"
    return None
