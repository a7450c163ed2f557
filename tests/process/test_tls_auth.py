"""Mutual TLS and the shared secret: who gets in, who is refused (with which log line), and that
the cluster is unaffected by every refusal.

Certificates are made at test time with the `openssl` command (skipped if it is missing; a
failure under RAFTLOG_REQUIRE_ALL_TESTS, which CI sets):
a cluster CA, a foreign CA, node and client certificates from the cluster CA, a client
certificate from the foreign CA, and an expired one from the cluster CA.

Refusals checked, each with its log line on the node and the cluster still serving:
TLS: a client certificate from another CA, an expired one, none at all, plain TCP to a TLS
port, and a member started with a foreign certificate (refused until restarted with a good
one, then catches up). Secret: a wrong secret, no secret, the wrong cluster id, a peer with
the wrong secret (whose Raft message, sent before or with its failed proof, is never stepped:
the node's term stays below the forged one), a member started with the wrong secret (likewise).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
from typing import Optional

import pytest

from raftlog.core.messages import MessageType
from raftlog.errors import RaftlogError
from raftlog.hot import FRAME_ERROR, FRAME_HANDSHAKE, PROTOCOL_VERSION, ROLE_CLIENT, ROLE_PEER, FrameDecoder
from raftlog.hot import encode_handshake, encode_raft
from raftlog.wire.auth import ConnectorAuth
from raftlog.client import AsyncClient, RequestRejected
from raftlog.wire.tls import TlsFiles

from support.cluster import ProcCluster
from support.polling import wait_for

CID = "proc-test"


# ---- certificates -----------------------------------------------------------------------------

def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(root: str) -> dict[str, TlsFiles]:
    """Keys and certificates for the tests; returns named TlsFiles (cert, key, the CA the holder trusts)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (needed to make test certificates)")
    os.makedirs(root, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "otherca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN={ca}",
                 "-days", "2", cwd=root)

    def issue(name: str, ca: str, days: str = "2") -> None:
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=root)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", days, cwd=root)

    issue("node", "ca")
    issue("client", "ca")
    issue("foreign", "otherca")
    issue("expired", "ca", days="-1")
    p = lambda n: os.path.join(root, n)  # noqa: E731
    return {
        "node": TlsFiles(p("node.pem"), p("node.key"), p("ca.pem")),
        "client": TlsFiles(p("client.pem"), p("client.key"), p("ca.pem")),
        "foreign": TlsFiles(p("foreign.pem"), p("foreign.key"), p("ca.pem")),    # trusts our CA, not trusted by it
        "expired": TlsFiles(p("expired.pem"), p("expired.key"), p("ca.pem")),
    }


class SecuredCluster(ProcCluster):
    """ProcCluster whose nodes all get `args` (`args[i]` changes node i's), and whose clients use `security`."""

    def __init__(self, n: int, root: str, args: list[str], security: dict) -> None:
        super().__init__(n, root, cluster_id=CID, extra=args, security=security)


def logged(cluster: SecuredCluster, ids: list[int], text: str) -> bool:
    return any(text in cluster.log_of(i) for i in ids)


async def raw_attempt(address: str, ctx: Optional[ssl.SSLContext], hello: bytes) -> str:
    """Connect (TLS with `ctx` if given), send `hello`, and say what came back.

    One of 'handshake', 'error: ...' or 'closed'.
    """
    host, port = address.rsplit(":", 1)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=ctx), 5)
    except (ssl.SSLError, OSError) as exc:
        return f"closed: {exc}"
    try:
        writer.write(hello)
        dec = FrameDecoder()
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                return "closed"
            for f in dec.feed(data):
                return "handshake" if f[0] == FRAME_HANDSHAKE else f"error: {f[5]}" if f[0] == FRAME_ERROR else "?"
    except (ssl.SSLError, OSError) as exc:
        return f"closed: {exc}"
    finally:
        writer.close()


async def raft_before_authenticating(address: str, node_id: int, secret: bytes, *, with_proof: bool,
                                     forged_term: int) -> list[str]:
    """As peer 2 holding `secret`, send node `node_id` a heartbeat of `forged_term` before it admitted us.

    Without `with_proof` the heartbeat follows the challenge in the same write (no proof at all);
    with it, it follows our proof in the same write, once the node has answered the challenge.
    Returns what came back, in order: 'handshake', 'error: ...', 'raft' (any other frame, such as
    a heartbeat response), then 'closed', or 'open' if nothing more came for 5 s.
    """
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
    auth = ConnectorAuth(secret, CID, ROLE_PEER, 2)
    hello = encode_handshake(PROTOCOL_VERSION, ROLE_PEER, 2, CID, auth.hello())
    heartbeat = encode_raft(int(MessageType.HEARTBEAT), node_id, 2, forged_term, 0, 0, 0, False, 0, 0)
    names = {FRAME_HANDSHAKE: "handshake", FRAME_ERROR: "error"}
    seen: list[str] = []
    dec = FrameDecoder()
    try:
        writer.write(hello if with_proof else hello + heartbeat)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), 5)
            except asyncio.TimeoutError:
                return seen + ["open"]
            except OSError:
                data = b""
            if not data:
                return seen + ["closed"]
            for f in dec.feed(data):
                seen.append(f"error: {f[5]}" if f[0] == FRAME_ERROR else names.get(f[0], "raft"))
                if with_proof and f[0] == FRAME_HANDSHAKE:
                    proof, _ = auth.answer(f[5], f[3])
                    writer.write(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, 2, CID, proof) + heartbeat)
    finally:
        writer.close()


def good_appends(cluster: SecuredCluster, acked: dict[int, bytes], tag: str, n: int = 20) -> None:
    with cluster.client() as c:
        items = [f"{tag}-{k}".encode() for k in range(n)]
        for i, p in zip(c.append_many(items), items):
            acked[i] = p


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftlog", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.process
def test_mutual_tls_admits_ca_signed_certificates_and_refuses_the_rest(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    node, client = pki["node"], pki["client"]
    node_args = ["--tls-cert", node.cert, "--tls-key", node.key, "--tls-ca", node.ca]
    cluster = SecuredCluster(3, str(tmp_path), node_args, {"tls": client})
    foreign = pki["foreign"]
    cluster.args[3] = ["--tls-cert", foreign.cert, "--tls-key", foreign.key, "--tls-ca", foreign.ca]
    try:
        cluster.start_all()
        # Node 3 holds a certificate from another CA: 1 and 2 (they dial it: lower ids dial)
        # refuse it and lead without it.
        wait_for("a leader among nodes 1 and 2", lambda: cluster.leader([1, 2]))
        for i in (1, 2):
            wait_for(f"node {i}'s refusal of node 3 in its log", lambda i=i: logged(
                cluster, [i], "TLS handshake with peer 3 at 127.0.0.1:"))
            assert "certificate verify failed: unable to get local issuer certificate" in cluster.log_of(i)
        acked: dict[int, bytes] = {}
        good_appends(cluster, acked, "tls-good")
        addr = cluster.addresses[1]
        hello = encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, CID)
        ok_ctx = client.client_context()
        assert asyncio.run(raw_attempt(addr, ok_ctx, hello)) == "handshake"
        cases = {
            "another CA": (pki["foreign"].client_context(), "certificate verify failed: unable to get local issuer"),
            "expired": (pki["expired"].client_context(), "certificate verify failed: certificate has expired"),
        }
        no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        no_cert.check_hostname = False
        no_cert.load_verify_locations(cafile=client.ca)
        cases["no client certificate"] = (no_cert, "PEER_DID_NOT_RETURN_A_CERTIFICATE")
        cases["plain TCP"] = (None, "refused a TLS connection from")
        for what, (ctx, line) in cases.items():
            before = cluster.log_of(1).count(line)
            outcome = asyncio.run(raw_attempt(addr, ctx, hello))
            assert outcome.startswith("closed"), f"{what}: {outcome}"
            wait_for(f"the log line for {what}",
                     lambda line=line, before=before: cluster.log_of(1).count(line) > before,
                     timeout=10)
            good_appends(cluster, acked, f"after-{what}", 5)         # the cluster is unaffected
        # The client commands take the same flags.
        out = cli("append", "--peers", cluster.peers, "--cluster-id", CID, "--tls-cert", client.cert,
                  "--tls-key", client.key, "--tls-ca", client.ca, "via-cli")
        assert out.returncode == 0, out.stderr
        acked[int(out.stdout.split()[0])] = b"via-cli"
        out = cli("status", "--peers", cluster.peers, "--cluster-id", CID, "--json", "--tls-cert", client.cert,
                  "--tls-key", client.key, "--tls-ca", client.ca)
        assert out.returncode == 0 and '"role": "leader"' in out.stdout, out
        out = cli("status", "--peers", f"1={addr}", "--cluster-id", CID, "--json", "--timeout", "1")
        assert '"unreachable"' in out.stdout, "a client without TLS must not get a status"
        out = cli("append", "--peers", cluster.peers, "--cluster-id", CID, "--tls-cert", client.cert, "x")
        assert out.returncode == 2 and "needs all of --tls-cert, --tls-key and --tls-ca" in out.stderr
        # Node 3 restarted with a good certificate joins and catches up.
        cluster.kill(3)
        cluster.args[3] = node_args
        cluster.start(3)
        with cluster.client([3], read_from="any") as c:
            wait_for("node 3 to catch up over TLS",
                     lambda: {e.index: e.data for e in c.read(1)}.items() >= acked.items())
        with cluster.client() as c:
            final = {e.index: e.data for e in c.read(1)}
        assert all(final.get(i) == p for i, p in acked.items())
        assert set(final.values()) <= set(acked.values()), "something not appended by a good client is in the log"
    finally:
        cluster.close()


@pytest.mark.process
def test_shared_secret_admits_holders_and_refuses_the_rest(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(16).hex().encode())
    os.chmod(secret, 0o600)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(os.urandom(16).hex().encode())
    os.chmod(wrong, 0o600)
    good_secret = secret.read_bytes()
    cluster = SecuredCluster(3, str(tmp_path), ["--secret-file", str(secret)], {"secret": good_secret})
    cluster.args[3] = ["--secret-file", str(wrong)]
    try:
        cluster.start_all()
        wait_for("a leader among nodes 1 and 2", lambda: cluster.leader([1, 2]))
        # 1 and 2 dial node 3 (lower ids dial): each side refuses the other.
        wait_for("node 3 refusing 1 and 2", lambda: logged(cluster, [3], "authentication failed: wrong shared secret"))
        for i in (1, 2):
            wait_for(f"node {i} refusing node 3", lambda i=i: logged(cluster, [i], "peer 3 at 127.0.0.1:"))
            assert "did not prove the shared secret (wrong secret?)" in cluster.log_of(i)
            assert cluster.log_of(i).count("did not prove the shared secret") == 1, "one line, not one per attempt"
        acked: dict[int, bytes] = {}
        good_appends(cluster, acked, "secret-good")
        addrs = list(cluster.addresses.values())

        async def refused(**kw: object) -> str:
            c = AsyncClient(addrs[:1], timeout=5, **kw)
            try:
                await c.append(b"must-not-land")
                return "appended"
            except RequestRejected as exc:
                return str(exc)
            except RaftlogError as exc:
                return f"other: {exc!r}"
            finally:
                await c.close()
        before = cluster.log_of(1).count("authentication failed")
        assert "did not prove the shared secret" in asyncio.run(refused(cluster_id=CID, secret=wrong.read_bytes()))
        assert "no shared-secret challenge" in asyncio.run(refused(cluster_id=CID))
        assert "cluster id 'elsewhere' is not 'proc-test'" in asyncio.run(
            refused(cluster_id="elsewhere", secret=good_secret))
        wait_for("the refusals in node 1's log", lambda: cluster.log_of(1).count("authentication failed") >= before + 2,
                 timeout=10)
        assert "cluster id 'elsewhere' is not 'proc-test'" in cluster.log_of(1)
        # A peer with the wrong secret, by hand: refused before any Raft message is read. Its
        # heartbeat carries a term far ahead; had node 1 stepped it, node 1 would have adopted
        # that term at once (paper 5.1), before answering, so its term right after the refusal says.
        forged_term = max(st["term"] for st in cluster.statuses([1, 2]).values()) + 1000
        for with_proof, refusal in ((False, "authentication failed: expected the shared-secret proof"),
                                    (True, "authentication failed: wrong shared secret "
                                           "(the HMAC proof does not match)")):
            seen = asyncio.run(raft_before_authenticating(addrs[0], 1, wrong.read_bytes(), with_proof=with_proof,
                                                          forged_term=forged_term))
            assert seen == ["handshake", f"error: {refusal}", "closed"], seen
            terms = {i: st["term"] for i, st in cluster.statuses([1, 2]).items()}   # node 3 has the wrong secret
            assert all(t < forged_term for t in terms.values()), (
                f"a Raft message sent before authenticating was stepped: terms {terms}, forged {forged_term}")
        good_appends(cluster, acked, "secret-after", 5)
        out = cli("status", "--peers", cluster.peers, "--cluster-id", CID, "--json", "--secret-file", str(secret))
        assert out.returncode == 0 and '"role": "leader"' in out.stdout, out
        out = cli("status", "--peers", cluster.peers, "--cluster-id", CID, "--json", "--secret-file", str(wrong))
        assert '"leader"' not in out.stdout.replace('"leader": null', "")
        # Node 3 restarted with the right secret joins and catches up.
        cluster.kill(3)
        cluster.args[3] = ["--secret-file", str(secret)]
        cluster.start(3)
        with cluster.client([3], read_from="any") as cl:
            wait_for("node 3 to catch up", lambda: {e.index: e.data for e in cl.read(1)}.items() >= acked.items())
        with cluster.client() as cl:
            final = {e.index: e.data for e in cl.read(1)}
        assert all(final.get(i) == p for i, p in acked.items())
        assert b"must-not-land" not in final.values()
    finally:
        cluster.close()
