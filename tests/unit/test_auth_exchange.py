"""The shared-secret exchange (wire/auth.py) without sockets: who proves the secret, and what a proof is bound to."""
from __future__ import annotations

import os

import pytest

from raftlog.hot import ROLE_CLIENT, ROLE_PEER
from raftlog.wire.auth import AcceptorAuth, AuthError, ConnectorAuth, load_secret

CID = "proc-test"


def test_hmac_exchange_accepts_the_secret_and_nothing_else():
    secret = b"s" * 32

    def exchange(c_secret: bytes, a_secret: bytes, tamper=None):  # noqa: ANN001, ANN202
        c = ConnectorAuth(c_secret, CID, ROLE_PEER, 2)
        a = AcceptorAuth(a_secret, CID, 1)
        reply = a.reply(c.hello(), ROLE_PEER, 2)
        proof, ok = c.answer(reply if tamper is None else tamper(reply), 1)
        try:
            a.verify(proof)
            return ok, True
        except AuthError:
            return ok, False

    assert exchange(secret, secret) == (True, True)
    assert exchange(secret, b"x" * 32) == (False, False)             # both sides notice
    assert exchange(secret, secret, lambda r: r[:-1] + bytes([r[-1] ^ 1]))[0] is False
    # A proof is bound to its connection's nonces: a replayed one fails on a new connection.
    c = ConnectorAuth(secret, CID, ROLE_CLIENT, 0)
    a1 = AcceptorAuth(secret, CID, 1)
    proof, _ = c.answer(a1.reply(c.hello(), ROLE_CLIENT, 0), 1)
    a1.verify(proof)
    a2 = AcceptorAuth(secret, CID, 1)
    a2.reply(c.hello(), ROLE_CLIENT, 0)
    with pytest.raises(AuthError, match="wrong shared secret"):
        a2.verify(proof)
    # Bound to the role and ids too: the same secret but another claimed id fails.
    c = ConnectorAuth(secret, CID, ROLE_PEER, 3)
    a = AcceptorAuth(secret, CID, 1)
    reply = a.reply(c.hello(), ROLE_PEER, 2)
    proof, ok = c.answer(reply, 1)
    assert not ok
    with pytest.raises(AuthError):
        a.verify(proof)
    with pytest.raises(AuthError, match="no shared-secret challenge"):
        AcceptorAuth(secret, CID, 1).reply(b"", ROLE_CLIENT, 0)


def test_load_secret_refuses_short_secrets(tmp_path):
    p = tmp_path / "s"
    p.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_secret(str(p))
    p.write_bytes(b"  0123456789abcdef0123  \n")
    os.chmod(p, 0o600)
    assert load_secret(str(p)) == b"0123456789abcdef0123"
