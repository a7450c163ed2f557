"""Shared-secret authentication in the handshake: an HMAC-SHA256 challenge-response, both ways.

Without TLS, the cluster id alone keeps out only processes that do not know it. With a
shared secret (`--secret-file`), every connection proves knowledge of the secret without
sending it, and the node proves it too, in the handshake's `auth` field:

    connector -> acceptor   handshake, auth = 0x01 | nonce_c (32 random bytes)
    acceptor  -> connector  handshake, auth = 0x01 | nonce_a | mac_a
    connector -> acceptor   handshake, auth = 0x02 | mac_c

    mac_a = HMAC(secret, "raftlog acceptor" | transcript)
    mac_c = HMAC(secret, "raftlog connector" | transcript)
    transcript = nonce_c | nonce_a | cluster id | role | connector id | acceptor id

Both nonces are fresh per connection, so a recorded exchange cannot be replayed, and the
labels differ, so one side's proof is never valid as the other's. The acceptor routes the
connection (to the peer transport or the client service) only after mac_c checks out: no
Raft message or client request is read from a connection before that. A connector that finds
mac_a wrong still sends its own proof (so the acceptor logs the refusal too), then closes.

This authenticates; it does not encrypt. Use TLS (wire/tls.py) when the network is not
trusted against eavesdropping or tampering.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import struct

log = logging.getLogger("raftlog.auth")

NONCE_BYTES = 32
MAC_BYTES = 32
CHALLENGE = 0x01
PROOF = 0x02
MIN_SECRET_BYTES = 16


class AuthError(Exception):
    """Authentication failed; the message says why (for the log line)."""


def load_secret(path: str) -> bytes:
    """The secret in `path` (surrounding whitespace stripped); ValueError if shorter than 16 bytes.

    Warns when the file is readable by group or others: the secret is the cluster's key.
    """
    with open(path, "rb") as f:
        secret = f.read().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path}: the secret must be at least {MIN_SECRET_BYTES} bytes")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("secret file %s is readable by group or others (chmod 600 it)", path)
    return secret


def _transcript(nonce_c: bytes, nonce_a: bytes, cluster_id: str, role: int, connector_id: int,
                acceptor_id: int) -> bytes:
    cid = cluster_id.encode()
    return nonce_c + nonce_a + struct.pack(">H", len(cid)) + cid + struct.pack(">BQQ", role, connector_id, acceptor_id)


def _mac(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.new(secret, label + transcript, hashlib.sha256).digest()


class ConnectorAuth:
    """The connecting side's half: `hello()` for its first handshake, `answer(reply_auth)` for the third."""

    def __init__(self, secret: bytes, cluster_id: str, role: int, my_id: int) -> None:
        self.secret = secret
        self.cluster_id = cluster_id
        self.role = role
        self.my_id = my_id
        self.nonce = os.urandom(NONCE_BYTES)

    def hello(self) -> bytes:
        """The auth field of the first handshake: the challenge."""
        return bytes([CHALLENGE]) + self.nonce

    def answer(self, reply_auth: bytes, acceptor_id: int) -> tuple[bytes, bool]:
        """(auth field of the proof frame, whether the acceptor proved the secret).

        The proof is returned even when the acceptor's failed, so the acceptor learns of it.
        """
        ok = len(reply_auth) == 1 + NONCE_BYTES + MAC_BYTES and reply_auth[0] == CHALLENGE
        nonce_a = reply_auth[1:1 + NONCE_BYTES] if ok else os.urandom(NONCE_BYTES)
        t = _transcript(self.nonce, nonce_a, self.cluster_id, self.role, self.my_id, acceptor_id)
        if ok:
            ok = hmac.compare_digest(reply_auth[1 + NONCE_BYTES:], _mac(self.secret, b"raftlog acceptor", t))
        return bytes([PROOF]) + _mac(self.secret, b"raftlog connector", t), ok


class AcceptorAuth:
    """The accepting side's half.

    `reply(hello_auth, ...)` answers the challenge, `verify(proof_auth)` checks the proof.
    """

    def __init__(self, secret: bytes, cluster_id: str, my_id: int) -> None:
        self.secret = secret
        self.cluster_id = cluster_id
        self.my_id = my_id
        self.nonce = os.urandom(NONCE_BYTES)
        self._transcript = b""

    def reply(self, hello_auth: bytes, role: int, connector_id: int) -> bytes:
        """The auth field of our handshake; AuthError if the connector did not send a challenge."""
        if len(hello_auth) != 1 + NONCE_BYTES or hello_auth[0] != CHALLENGE:
            raise AuthError("no shared-secret challenge in the handshake (this cluster requires --secret-file)")
        self._transcript = _transcript(hello_auth[1:], self.nonce, self.cluster_id, role, connector_id, self.my_id)
        return bytes([CHALLENGE]) + self.nonce + _mac(self.secret, b"raftlog acceptor", self._transcript)

    def verify(self, proof_auth: bytes) -> None:
        """AuthError unless `proof_auth` proves the secret for this connection's transcript."""
        if len(proof_auth) != 1 + MAC_BYTES or proof_auth[0] != PROOF:
            raise AuthError("the shared-secret proof is missing or malformed")
        if not hmac.compare_digest(proof_auth[1:], _mac(self.secret, b"raftlog connector", self._transcript)):
            raise AuthError("wrong shared secret (the HMAC proof does not match)")
