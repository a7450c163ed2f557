"""Mutual TLS for peer and client connections (the standard `ssl` module).

With `--tls-cert`, `--tls-key` and `--tls-ca`, a node accepts only connections that present
a certificate signed by the CA (CERT_REQUIRED), and presents its own certificate when it
dials a peer; clients do the same towards nodes. Membership is "holds a certificate from
the cluster's CA": host names are not checked (members are addressed by IP and port), so
the CA must issue certificates only to the cluster's nodes and clients.

The TLS handshake completes (or fails, with one warning naming the remote address and the
reason: unknown CA, expired, no certificate) before the raftlog handshake is read, so no
Raft message or client request is ever read from an unauthenticated connection.
TLS 1.2 is the minimum.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: this process's certificate chain and key, and the CA that signs every member's and client's."""

    cert: str
    key: str
    ca: str

    def server_context(self) -> ssl.SSLContext:
        """The accepting side: our certificate; the other side must present one signed by the CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._common(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The dialing side (peers and clients): our certificate, and the node's must be signed by the CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False       # members are addressed by IP; the CA is the membership
        self._common(ctx)
        return ctx

    def _common(self, ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cafile=self.ca)


def tls_files(cert: Optional[str], key: Optional[str], ca: Optional[str]) -> Optional[TlsFiles]:
    """TlsFiles when all three are given, None when none are; ValueError for a partial set."""
    given = [x for x in (cert, key, ca) if x]
    if not given:
        return None
    if len(given) != 3:
        raise ValueError("TLS needs all of --tls-cert, --tls-key and --tls-ca")
    return TlsFiles(cert, key, ca)  # type: ignore[arg-type]


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed TLS handshake (the verify message when there is one)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__


def make_dev_pki(root: str, days: int = 2) -> tuple[TlsFiles, TlsFiles]:
    """A throw-away CA plus one node and one client certificate in `root` (for `raftlog bench --tls` and tests).

    Uses the `openssl` command (RuntimeError if it is missing or fails): EC P-256 keys,
    certificates valid for `days`. Not for production: the CA key sits beside the certificates.
    """
    import os
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make certificates")
    os.makedirs(root, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=root, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=raftlog dev CA", "-days", str(days))
    for name in ("node", "client"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=raftlog {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", str(days))
    p = lambda n: os.path.join(root, n)  # noqa: E731
    return (TlsFiles(p("node.pem"), p("node.key"), p("ca.pem")),
            TlsFiles(p("client.pem"), p("client.key"), p("ca.pem")))
