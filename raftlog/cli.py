"""The `raftlog` command line: one click group, thin commands over the library."""
from __future__ import annotations

import logging

import click

import raftlog
from raftlog.cli_shared import Duration, Milliseconds, SharedOptionsGroup


@click.group(cls=SharedOptionsGroup,
             context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "RAFTLOG"})
@click.version_option(raftlog.__version__, prog_name="raftlog",
                      message=f"%(prog)s %(version)s ({raftlog.IMPLEMENTATION} hot path)")
@click.option("-v", "--verbose", count=True, help="More log output (-v INFO, -vv DEBUG).")
def main(verbose: int) -> None:
    """raftlog: a durable replicated log (Raft, Cython hot path, LMDB storage).

    Start a local 3-node cluster and append to it:

    \b
        raftlog cluster -n 3 --base-port 7001
        raftlog append --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 hello

    The shared options --peers, --cluster-id, --timeout, --json, --tls-cert, --tls-key,
    --tls-ca and --secret-file may come before or after the subcommand, and each is read
    from its environment variable when not given:

    \b
        RAFTLOG_PEERS  RAFTLOG_CLUSTER_ID  RAFTLOG_TIMEOUT  RAFTLOG_JSON
        RAFTLOG_TLS_CERT  RAFTLOG_TLS_KEY  RAFTLOG_TLS_CA  RAFTLOG_SECRET_FILE

    Durations take a unit (500ms, 10s, 2m); a plain number keeps the option's old unit.

    \b
    Exit status: 0 ok; 1 the command failed; 2 bad usage or arguments;
                 3 no member reachable, or no leader found;
                 130 append from stdin stopped by Ctrl-C.
    Shell completion (bash; zsh and fish likewise):
        eval "$(_RAFTLOG_COMPLETE=bash_source raftlog)"
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------- runtime commands: node, cluster,
# append, read, status, inspect. Thin: argument checks here, the work in raftlog.runtime.

class BadArgument(click.ClickException):
    """A one-line error and exit status 2, raised before anything is started or written."""

    exit_code = 2


def _members(text: str, *, require_ids: bool) -> dict[int, str]:
    from raftlog.wire.addresses import PeerSpecError, parse_peers
    try:
        return parse_peers(text, require_ids=require_ids)
    except PeerSpecError as exc:
        raise BadArgument(f"--peers: {exc}") from None


def _check_data_dir(path: str) -> None:
    """Refuse a data dir that cannot be created or written, without creating anything."""
    import os
    p = os.path.abspath(path)
    if os.path.exists(p):
        if not os.path.isdir(p):
            raise BadArgument(f"--data {path}: not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise BadArgument(f"--data {path}: not writable")
        return
    parent = os.path.dirname(p)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BadArgument(f"--data {path}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadArgument(f"--data {path}: cannot be created, {parent} is not writable")


def _ms_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    to_ms = Milliseconds().convert
    try:
        lo_ms, hi_ms = to_ms(lo, None, None), to_ms(hi if sep else lo, None, None) + (0 if sep else 1)
    except click.BadParameter:
        raise BadArgument(f"--election-timeout {text!r}: expected LO-HI in milliseconds, e.g. 150-300 "
                          f"or 150ms-300ms") from None
    if not 0 < lo_ms < hi_ms:
        raise BadArgument(f"--election-timeout {text!r}: need 0 < LO < HI")
    return lo_ms, hi_ms


def _info_logging() -> None:
    """Node processes log their events at INFO unless -v/-vv asked for more."""
    logger = logging.getLogger("raftlog")
    if logger.getEffectiveLevel() > logging.DEBUG:
        # The engine logs role changes too; below -vv the runtime's line is the one event line.
        logging.getLogger("raftlog.core").setLevel(logging.WARNING)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


_PEERS_HELP = "Members as ID=HOST:PORT,... (or HOST:PORT,...)."


def _secured(f):  # noqa: ANN001, ANN201 - a click command callback
    """Add --tls-cert/--tls-key/--tls-ca/--secret-file to a command (issue 8); `_security()` returns them.

    Checked before anything starts: a partial TLS set, an unreadable or unloadable
    certificate, or a secret under 16 bytes is one error line and exit status 2.
    """
    import functools

    @functools.wraps(f)
    def wrapper(*args: object, tls_cert: str | None = None, tls_key: str | None = None, tls_ca: str | None = None,
                secret_file: str | None = None, **kwargs: object) -> object:
        import ssl

        from raftlog.wire.auth import load_secret
        from raftlog.wire.tls import tls_files
        try:
            tls = tls_files(tls_cert, tls_key, tls_ca)
            if tls is not None:
                tls.server_context()          # loads every file: fail here, not at the first connection
            secret = load_secret(secret_file) if secret_file else None
        except (ValueError, OSError, ssl.SSLError) as exc:
            raise BadArgument(f"TLS/secret: {exc}") from None
        click.get_current_context().meta["raftlog.security"] = {"tls": tls, "secret": secret}
        return f(*args, **kwargs)

    for opt in (click.option("--tls-cert", default=None, help="PEM certificate (chain) of this node or client."),
                click.option("--tls-key", default=None, help="PEM private key for --tls-cert."),
                click.option("--tls-ca", default=None,
                             help="PEM CA that signs every member's and client's certificate."),
                click.option("--secret-file", default=None,
                             help="File holding the cluster's shared secret (HMAC challenge in the handshake).")):
        wrapper = opt(wrapper)
    return wrapper


def _retained(f):  # noqa: ANN001, ANN201 - a click command callback
    """Add --retain-entries/--retain-bytes/--retain-age to a command (issue 15); `_retention()` returns them.

    A size or duration that does not parse is one error line and exit status 2.
    """
    import functools

    @functools.wraps(f)
    def wrapper(*args: object, retain_entries: int = 0, retain_bytes: str = "0", retain_age: str = "0",
                **kwargs: object) -> object:
        from raftlog.runtime.retention import retention_policy
        try:
            policy = retention_policy(retain_entries, retain_bytes, retain_age)
        except ValueError as exc:
            raise BadArgument(f"retention: {exc}") from None
        click.get_current_context().meta["raftlog.retention"] = {"retention": policy}
        return f(*args, **kwargs)

    for opt in (click.option("--retain-entries", default=0, type=click.IntRange(0), metavar="N",
                             help="Keep only the newest N entries (0, the default: no limit)."),
                click.option("--retain-bytes", default="0", metavar="SIZE",
                             help="Keep only the newest SIZE bytes of entries, e.g. 2GiB or 500MB "
                                  "(0, the default: no limit)."),
                click.option("--retain-age", default="0", metavar="DURATION",
                             help="Keep only entries younger than DURATION by the leader's clock, e.g. 7d, 12h, "
                                  "30m (0, the default: no limit). Without any --retain-* the node keeps "
                                  "everything; with several, the first limit reached wins. "
                                  "See docs/retention.md.")):
        wrapper = opt(wrapper)
    return wrapper


def _retention() -> dict:
    """{"retention": RetentionPolicy} given to the current command (empty if none)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get("raftlog.retention", {})) if ctx is not None else {}


def _security() -> dict:
    """{"tls": TlsFiles or None, "secret": bytes or None} given to the current command (empty if none)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get("raftlog.security", {})) if ctx is not None else {}


@main.command()
@click.option("--id", "node_id", type=int, required=True, help="This node's id (a key of --peers).")
@click.option("--data", "data_dir", required=True, help="Data dir (created if missing).")
@click.option("--peers", default=None, help="Every member as ID=HOST:PORT,...; the node listens on its own entry. "
              "Bootstraps a new cluster; once the node has a log, the log's configuration is the truth.")
@click.option("--listen", default=None, help="HOST:PORT to listen on (with --join, instead of --peers).")
@click.option("--join", "join", default=None, help="HOST:PORT of a member: ask the cluster to add this node.")
@click.option("--no-promote", is_flag=True, help="With --join: stay a learner (never vote).")
@click.option("--promote-lag", default=64, show_default=True, type=click.IntRange(0),
              help="With --join: promote to voter once within this many entries of the leader.")
@click.option("--cluster-id", default="raftlog", show_default=True, help="Name every member and client must present.")
@click.option("--no-sync", is_flag=True,
              help="Do not fsync each write (faster; a power loss may lose the last writes).")
@click.option("--election-timeout", default="150-300", show_default=True,
              help="Randomized election timeout LO-HI: 150ms-300ms, or milliseconds.")
@click.option("--heartbeat", default=50, show_default=True, type=Milliseconds(),
              help="Leader heartbeat interval: 50ms, 0.05s, or milliseconds.")
@click.option("--metrics", default=None, metavar="HOST:PORT",
              help="Serve Prometheus text at http://HOST:PORT/metrics and a health check at /health (200, or 503 "
                   "and one line: no leader heard within an election timeout, or a leader without a quorum). "
                   "Port 0 picks a free port (logged). Needs pip install 'raftlog[metrics]'.")
@click.option("--stay", is_flag=True,
              help="Once removed from the cluster, keep running (answering status, refusing requests) "
                   "instead of exiting 0.")
@_secured
@_retained
def node(node_id: int, data_dir: str, peers: str | None, listen: str | None, join: str | None, no_promote: bool,
         promote_lag: int, cluster_id: str, no_sync: bool, election_timeout: str, heartbeat: int,
         metrics: str | None, stay: bool = False) -> None:
    """Run one cluster member in the foreground; SIGTERM or Ctrl-C stops it cleanly.

    Example, node 2 of three:

    \b
        raftlog node --id 2 --data /var/lib/raftlog/2 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003

    A new member joins a running cluster as a learner and is promoted once caught up:

    \b
        raftlog node --id 4 --data /var/lib/raftlog/4 --listen 127.0.0.1:7004 --join 127.0.0.1:7001

    --peers bootstraps a new cluster only. Once the node has a log, the configuration in
    its log is the truth: the members and their addresses come from it, and a --peers that
    differs is reported in one WARNING line (change members with `raftlog members`).

    --data must be the node's own data dir, or missing, or empty (then it is created). A
    damaged or emptied data dir, or one that is not raftlog's, is refused with one line
    saying what is wrong and what to do; nothing in it is changed.

    Once a committed configuration leaves this node out (`raftlog members remove`), it logs
    `node 3 was removed from the cluster (members 1, 2, 4); exiting` and exits 0; with
    --stay it keeps running, shows `removed` in `raftlog status` and refuses requests.
    """
    import asyncio

    if join is not None:
        from raftlog.wire.addresses import PeerSpecError, format_address, parse_address
        if listen is None:
            raise BadArgument("--join needs --listen HOST:PORT (the address the cluster will know this node by)")
        try:
            parse_address(join)
            members = {node_id: format_address(*parse_address(listen))}
        except PeerSpecError as exc:
            raise BadArgument(str(exc)) from None
    elif peers is None:
        raise BadArgument("give --peers (every member) or --listen with --join")
    else:
        members = _members(peers, require_ids=True)
        if listen is not None:
            raise BadArgument("--listen goes with --join; with --peers the node listens on its own entry")
    if node_id not in members:
        raise BadArgument(f"--peers does not contain this node's id {node_id}")
    lo, hi = _ms_range(election_timeout)
    if not 0 < heartbeat < lo:
        raise BadArgument(f"--heartbeat {heartbeat}: must be above 0 and below the election timeout ({lo} ms)")
    _check_data_dir(data_dir)
    if not cluster_id or len(cluster_id.encode()) > 255:
        raise BadArgument("--cluster-id: 1 to 255 bytes")
    if metrics is not None:
        _check_metrics(metrics)
    _info_logging()
    from raftlog.errors import CorruptLogError, IdentityMismatch, RaftlogError
    from raftlog.joiner import joiner_for
    from raftlog.runtime.node import NodeConfig, run_node
    cfg = NodeConfig(node_id=node_id, peers=members, data_dir=data_dir, cluster_id=cluster_id, sync=not no_sync,
                     election_timeout_ms=(lo, hi), heartbeat_ms=heartbeat, join=join, promote=not no_promote,
                     promote_lag=promote_lag, metrics=metrics, exit_when_removed=not stay, **_security(),
                     **_retention())
    try:
        status = asyncio.run(run_node(cfg, joiner_for(cfg) if cfg.join else None))
    except IdentityMismatch as exc:
        raise BadArgument(str(exc)) from None
    except CorruptLogError as exc:
        raise click.ClickException(f"{exc}; the node will not serve or replicate it: run "
                                   f"`raftlog repair {data_dir} --peers <the other members>`, "
                                   f"then start it again") from None
    except (RaftlogError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(status)


def _check_metrics(address: str) -> None:
    """--metrics: a HOST:PORT, and prometheus_client installed; one line otherwise."""
    from raftlog.errors import MetricsUnavailable
    from raftlog.runtime.metrics import require_prometheus
    from raftlog.runtime.metrics_http import metrics_address
    from raftlog.wire.addresses import PeerSpecError
    try:
        metrics_address(address)
    except PeerSpecError as exc:
        raise BadArgument(f"--metrics: {exc}") from None
    try:
        require_prometheus()
    except MetricsUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("-n", "--nodes", "nodes", default=3, show_default=True, type=click.IntRange(1, 99),
              help="Number of nodes.")
@click.option("--data", "data_dir", default="raftlog-cluster", show_default=True,
              help="Parent dir of the nodes' data dirs (DIR/node1, DIR/node2, ...); reused if present.")
@click.option("--base-port", default=7001, show_default=True, type=click.IntRange(1, 65535),
              help="Node i listens on BASE_PORT + i - 1.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the nodes listen on.")
@click.option("--cluster-id", default="raftlog", show_default=True, help="The cluster's name.")
@click.option("--no-sync", is_flag=True, help="Run the nodes without fsync.")
def cluster(nodes: int, data_dir: str, base_port: int, host: str, cluster_id: str, no_sync: bool) -> None:
    """Run N local node processes and stream their events (who leads, who follows); Ctrl-C stops them all.

    A node killed from outside (kill -9 PID, to watch a failover) is reported and the others
    keep running; a node that fails on its own (port in use, bad data dir) stops the cluster.
    --data made for another number of nodes is refused (the sizes named).

    Example, then append from another terminal:

    \b
        raftlog cluster -n 3 --base-port 7001

        raftlog append --peers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 hello
    """
    import signal

    if base_port + nodes - 1 > 65535:
        raise BadArgument("--base-port: the last node's port would exceed 65535")
    _check_data_dir(data_dir)
    from raftlog.runtime.cluster import LocalCluster
    try:
        sup = LocalCluster(nodes, base_port, data_dir, host=host, cluster_id=cluster_id, sync=not no_sync)
    except ValueError as exc:
        raise BadArgument(str(exc)) from None
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(f"starting {nodes} nodes: --peers {sup.peers}", err=True)
    sup.start()
    try:
        exited = sup.wait(lambda: stop["now"])
    finally:
        sup.stop()
    if exited:
        raise click.ClickException(f"node {exited} exited (status {sup.procs[exited].returncode}); stopped the others")
    click.echo("all nodes stopped", err=True)


def _client(peers: str, cluster_id: str, timeout: float, **kw: object) -> "raftlog.Client":
    from raftlog.client import Client
    return Client(list(_members(peers, require_ids=False).values()), cluster_id=cluster_id, timeout=timeout,
                  fail_fast=True, **{**_security(), **kw})


@main.command()
@click.option("--peers", required=True, help=_PEERS_HELP)
@click.option("--cluster-id", default="raftlog", show_default=True)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for each commit.")
@click.option("--json", "as_json", is_flag=True, help='Print each index as {"index": N}, one a line.')
@click.argument("data", nargs=-1)
@_secured
def append(peers: str, cluster_id: str, timeout: float, as_json: bool, data: tuple[str, ...]) -> None:
    """Append each DATA argument (or each line of stdin) and print its committed index.

    Lines from stdin are sent as they arrive (`tail -f app.log | raftlog append` appends
    each line as it is written); at EOF or Ctrl-C a last line on stderr says how many
    lines committed and their first and last index. Example:

    \b
        raftlog append --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 hello world
    """
    import json

    from raftlog.cli_append import append_stdin
    from raftlog.errors import RaftlogError
    with _client(peers, cluster_id, timeout) as client:
        if not data:
            append_stdin(client, as_json)
            return
        try:
            indexes = client.append_many([d.encode() for d in data])
        except RaftlogError as exc:
            raise click.ClickException(str(exc)) from None
        for index in indexes:
            click.echo(json.dumps({"index": index}) if as_json else index)


@main.command()
@click.option("--peers", required=True, help=_PEERS_HELP)
@click.option("--cluster-id", default="raftlog", show_default=True)
@click.option("--from", "start", default=1, show_default=True, type=click.IntRange(1), help="First index.")
@click.option("--to", "stop", default=None, type=click.IntRange(1), help="Last index (inclusive).")
@click.option("--limit", default=None, type=click.IntRange(1), help="At most this many entries.")
@click.option("--follow", is_flag=True, help="Keep printing new entries as they commit (Ctrl-C stops).")
@click.option("--timeout", default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help='Print each entry as {"index", "term", "data", "data_b64"}, one a line.')
@_secured
@click.option("--consistency", type=click.Choice(["linearizable", "lease", "stale"]), default="linearizable",
              show_default=True, help="linearizable: sees every append acknowledged before it (ReadIndex); "
                                      "lease: the leader may skip the quorum round; stale: the node's state at once.")
def read(peers: str, cluster_id: str, start: int, stop: int | None, limit: int | None, follow: bool, timeout: float,
         as_json: bool, consistency: str) -> None:
    """Print committed data entries as INDEX<TAB>DATA, one a line.

    Example, everything from index 1, then keep watching:

    \b
        raftlog read --peers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --follow
    """
    import base64
    import json
    import time

    from raftlog.errors import Compacted, RaftlogError

    def show(entries: list) -> None:
        for e in entries:
            text = e.data.decode('utf-8', 'backslashreplace')
            click.echo(json.dumps({"index": e.index, "term": e.term, "data": text,
                                   "data_b64": base64.b64encode(e.data).decode()}) if as_json else f"{e.index}\t{text}")

    with _client(peers, cluster_id, timeout) as client:
        try:
            printed = 0
            while True:
                want = None if limit is None else limit - printed
                entries = client.read(start, limit=want, consistency=consistency)
                past = stop is not None and bool(entries) and entries[-1].index >= stop
                entries = [e for e in entries if stop is None or e.index <= stop]
                show(entries)
                printed += len(entries)
                if entries:
                    start = entries[-1].index + 1
                if not follow or past or (limit is not None and printed >= limit):
                    return
                if not entries:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return
        except Compacted as exc:
            raise click.ClickException(f"{exc} (read with --from {exc.first_index})") from None
        except RaftlogError as exc:
            raise click.ClickException(str(exc)) from None


STATUS_FIELDS = ("id", "address", "role", "term", "last_index", "commit", "applied", "leader")
STATUS_EXTRA = ("first_index", "data_dir_bytes")    # added by issue 15: FIRST and DISK in the table


@main.command()
@click.option("--peers", required=True, help=_PEERS_HELP)
@click.option("--cluster-id", default="raftlog", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, address, role, term, ...}.")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for each member.")
@click.option("--check", is_flag=True,
              help="Print one verdict line instead of the table; exit 0 when there is a leader and a quorum of "
                   "voters answers, 1 when not, 3 when no member answers.")
@_secured
def status(peers: str, cluster_id: str, as_json: bool, timeout: float, check: bool) -> None:
    """Ask every member for its state; one that does not answer is `unreachable`.

    Example:

    \b
        raftlog status --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --json

    For scripts and probes, --check prints one line and exits with:

    \b
        0  a leader (in the highest term answered) and a quorum of voters answer
        1  members answer, but without a leader or without a quorum
        2  usage error (bad options)
        3  no member answers

    List every member in --peers: the quorum is counted over the leader's voters.
    """
    import asyncio
    import json

    from raftlog.client import query_status
    members = _members(peers, require_ids=False)

    async def ask_all() -> list:
        return await asyncio.gather(*(query_status(a, cluster_id=cluster_id, timeout=timeout, **_security())
                                      for a in members.values()))

    answers = asyncio.run(ask_all())
    if check:
        from raftlog.status_check import verdict
        code, line = verdict(dict(zip(members.values(), answers)))
        click.echo(line)
        raise SystemExit(code)
    rows = []
    for (ident, address), st in zip(members.items(), answers):
        if st is None:
            row = dict.fromkeys(STATUS_FIELDS + STATUS_EXTRA)
            row.update(id=ident if ident > 0 else None, address=address, role="unreachable")
        else:
            row = {k: st.get(k) for k in STATUS_FIELDS + STATUS_EXTRA}
            row["address"] = address
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows))
        return
    from raftlog.units import format_size
    header = ("ID", "ADDRESS", "ROLE", "TERM", "LAST", "COMMIT", "APPLIED", "LEADER", "FIRST", "DISK")
    table = [header] + [tuple("-" if r[k] is None else str(r[k]) for k in STATUS_FIELDS)
                        + ("-" if r["first_index"] is None else str(r["first_index"]),
                           "-" if r["data_dir_bytes"] is None else format_size(r["data_dir_bytes"]))
                        for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


@main.command()
@click.argument("data_dir")
@click.option("--peers", default=None, help="The other members (ID=HOST:PORT,...); without it, only scan.")
@click.option("--cluster-id", default="raftlog", show_default=True)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for each read from the cluster.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object: {"ok", "corrupt": [index], "repaired": [index], "unrepairable": {index: why}}.')
@_secured
def repair(data_dir: str, peers: str | None, cluster_id: str, timeout: float, as_json: bool) -> None:
    """Rewrite entries of a STOPPED node's data dir that fail their CRC, from the cluster's committed copy.

    The node reports a corrupt entry (its log and `status` name the index, reads of it
    fail). Stop the node, run this with the other members, start the node again. Entries
    are rewritten in place, never truncated (the node may be part of the majority that
    committed them). A corrupt no-op or configuration entry cannot be rebuilt from a client
    read: then replace the member (members remove, wipe, node --join). Exits 1 if anything
    is left unrepaired.

    \b
        raftlog repair /var/lib/raftlog/3 --peers 1=10.0.0.1:7001,2=10.0.0.2:7001
    """
    from raftlog.errors import DataDirError, RaftlogError
    from raftlog.runtime.repair import repair as run_repair
    try:
        if peers is None:
            report = run_repair(data_dir, None, dry_run=True)
        else:
            with _client(peers, cluster_id, timeout, read_from="leader") as client:
                report = run_repair(data_dir, client)
    except DataDirError as exc:
        raise click.ClickException(str(exc)) from None
    except (RaftlogError, OSError) as exc:
        raise click.ClickException(f"{data_dir}: {exc}") from None
    if as_json:
        import json
        click.echo(json.dumps({"ok": report.ok, "corrupt": report.corrupt, "repaired": report.repaired,
                               "unrepairable": {str(i): why for i, why in sorted(report.unrepairable.items())}}))
        if not report.ok:
            raise SystemExit(1)
        return
    click.echo(f"corrupt entries: {report.corrupt or 'none'}")
    if report.repaired:
        click.echo(f"repaired from the cluster: {report.repaired}")
    for index, why in sorted(report.unrepairable.items()):
        click.echo(f"index {index}: {why}", err=True)
    if not report.ok:
        raise SystemExit(1)


@main.command()
@click.argument("data_dir")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (entries with data_b64).")
@click.option("--from", "start", default=None, type=click.IntRange(1), help="First index to list.")
@click.option("--to", "stop", default=None, type=click.IntRange(1), help="Last index to list (inclusive).")
@click.option("--limit", default=None, type=click.IntRange(1), help="List at most this many entries.")
def inspect(data_dir: str, as_json: bool, start: int | None, stop: int | None, limit: int | None) -> None:
    """Dump a data dir: identity, hard state, bounds, snapshot, entries. Read-only: safe on a running node.

    Example:

    \b
        raftlog inspect raftlog-cluster/node1 --from 1 --to 20
    """
    import json

    from raftlog.errors import RaftlogError
    from raftlog.runtime.inspect import format_text, inspect_dir
    if limit is not None:
        stop = min(stop or (1 << 62), (start or 1) + limit - 1)
    try:
        dump = inspect_dir(data_dir, start, stop)
    except FileNotFoundError as exc:
        raise BadArgument(str(exc)) from None
    except RaftlogError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(dump) if as_json else format_text(dump))


@main.command()
@click.argument("data_dir")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object: {"path", "ok", "identity", "format", "hard_state", "first_index", '
                   '"last_index", "entries", "snapshot", "problems": [{"kind", "index", "detail"}], '
                   '"problems_omitted"}.')
def check(data_dir: str, as_json: bool) -> None:
    """Verify a STOPPED node's data dir offline; exit 0 when every check holds, 1 listing each problem.

    Checks LMDB's meta pages and page tree, raftlog's format and identity, the hard state
    against the log, every record's CRC, indexes contiguous from the first, terms in order,
    every configuration entry, and the snapshot file's size and crc32. Writes nothing. A
    problem line is `index N: KIND: DETAIL` (kinds: datadir, meta, bounds, gap, crc, term,
    conf, hard_state, snapshot). Example:

    \b
        raftlog check /var/lib/raftlog/3
    """
    import json

    from raftlog.storage.check import check_data_dir, format_text
    try:
        report = check_data_dir(data_dir)
    except FileNotFoundError as exc:
        raise BadArgument(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_json()))
    if report.refusal is not None:
        raise click.ClickException(report.refusal)
    if not as_json:
        click.echo(format_text(report))
    if not report.ok:
        raise SystemExit(1)


@main.command()
@click.option("-n", "--nodes", default=None, type=click.IntRange(1, 15),
              help="Cluster size.  [default: 3; 1 with --embedded]")
@click.option("--payload", default=100, show_default=True, type=click.IntRange(0, 1 << 22), help="Bytes per entry.")
@click.option("--duration", default=10.0, show_default=True, type=Duration(minimum=0.1),
              help="How long to measure, e.g. 3s, 2m, or seconds (after a 1 s warm-up).")
@click.option("--count", default=None, type=click.IntRange(1),
              help="Measure until this many entries committed instead.")
@click.option("--clients", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Client connections; with --embedded, concurrent appenders.")
@click.option("--inflight", default=4, show_default=True, type=click.IntRange(1, 4096),
              help="Requests in flight per client (closed loop; --embedded: 1, each appender awaits its call).")
@click.option("--batch", default=512, show_default=True, type=click.IntRange(1, 1 << 16),
              help="Payloads per request (--embedded: 1 calls append, more append_many).")
@click.option("--rate", default=None, type=click.FloatRange(1),
              help="Open loop: offered entries/s (ignores --inflight).")
@click.option("--sync/--no-sync", default=True, show_default=True, help="fsync every write on the nodes.")
@click.option("--impl", type=click.Choice(["cython", "python"]), default=None,
              help="The node processes' hot path (python: RAFTLOG_PURE=1).  [default: cython; with --embedded, "
                   "this process's]")
@click.option("--data", "data_dir", default=None,
              help="Put the nodes' data dirs here (empty or new) instead of a temp dir.")
@click.option("--keep", is_flag=True, help="Keep the data dirs and node logs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@click.option("--tls", is_flag=True,
              help="Mutual TLS on every connection (certificates made for the run; needs openssl).")
@click.option("--embedded", is_flag=True,
              help="Run the members in this process with raftlog.open (peers over loopback with --nodes > 1) "
                   "and append through the embedding API instead of node processes and connections.")
@click.option("--interval", default=None, type=click.FloatRange(0.01),
              help="Print a progress line every S seconds of the measured window to stderr (like pgbench -P).")
@click.pass_context
def bench(ctx: click.Context, nodes: int | None, payload: int, duration: float, count: int | None, clients: int,
          inflight: int, batch: int, rate: float | None, sync: bool, impl: str | None, data_dir: str | None,
          keep: bool, as_json: bool, tls: bool, embedded: bool, interval: float | None) -> None:
    """Benchmark a local cluster: throughput, latency, CPU, verification of every acknowledged append.

    With no options: 3 `raftlog node` processes on loopback in a temp dir, fsync on,
    100-byte payloads, a closed-loop load deep enough to find the throughput ceiling, 10 s.
    With --embedded: the embedding API (raftlog.open) in this process, one member unless
    --nodes, --clients coroutines each awaiting one append (--batch 1) or append_many at a
    time. Exits 1 when the logs do not verify. Examples:

    \b
        raftlog bench --rate 50000 --batch 16 --clients 2      # latency at a given load
        raftlog bench --embedded --batch 1 --clients 256       # group commit of one-entry appends
        raftlog bench --embedded --nodes 3 --batch 1 --clients 1 --interval 1
    """
    import json
    import sys

    from raftlog.bench import (BenchConfig, BenchError, IntervalLines, LiveBar, Notes, Progress, format_summary,
                               main_with_signals, public_json, run_bench)
    from raftlog.hot import IMPLEMENTATION
    if embedded:
        for name in ("inflight", "rate", "tls"):
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                raise click.UsageError(f"--{name} applies to node processes, not to --embedded")
    if data_dir is not None:
        _check_data_dir(data_dir)
    cfg = BenchConfig(nodes=nodes or (1 if embedded else 3), payload=payload, duration=duration, count=count,
                      clients=clients, inflight=1 if embedded else inflight, batch=batch, rate=rate, sync=sync,
                      impl=impl or (IMPLEMENTATION if embedded else "cython"), data=data_dir, keep=keep, tls=tls,
                      embedded=embedded)
    progress: Progress
    if as_json and interval is None:
        progress = Progress()
    elif interval is not None:
        progress = IntervalLines(sys.stderr, interval)
    elif sys.stderr.isatty():
        progress = LiveBar(sys.stderr, duration, count)
    else:
        progress = Notes(sys.stderr)
    try:
        result = main_with_signals(lambda: run_bench(cfg, progress=progress))
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; every " + ("member was closed" if embedded else
                                                             "node process was stopped")) from None
    except (BenchError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(public_json(result)))
    else:
        click.echo(format_summary(result))
    if not result["verified"]:
        click.echo(f"verification failed: {result.get('detail')}", err=True)
        raise SystemExit(1)


@main.command()
@click.option("-n", "--nodes", default=5, show_default=True, type=click.IntRange(1, 15), help="Cluster size.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed: the same seed prints the same run.")
@click.option("--duration", default="10s", show_default=True,
              help="Simulated time with faults (30s, 500ms), then heal.")
@click.option("--faults", default="partition,crash,drop,dup,delay", show_default=True,
              help="Comma-separated: partition, crash, drop, dup, delay ('' for none).")
@click.option("--trace", is_flag=True, help="Print role changes and faults in simulated time.")
@click.option("--spares", default=0, show_default=True, type=click.IntRange(0, 10),
              help="Also change membership: --nodes voters plus this many nodes that join, with transfers and reads.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object instead of the report: {"ok", "violation", "replay", "stats", ...}.')
def sim(nodes: int, seed: int, duration: str, faults: str, trace: bool, spares: int, as_json: bool) -> None:
    """Simulate a cluster in simulated time with faults and check Raft's invariants.

    Deterministic: the same seed prints the same output. Exits 1 when an invariant breaks.
    """
    from raftlog.sim.simulation import parse_duration_ms, simulate_report
    if as_json and trace:
        raise click.UsageError("--trace and --json do not go together (the trace is text)")
    chosen = tuple(f for f in (x.strip() for x in faults.split(",")) if f)
    try:
        if spares:
            from raftlog.sim.membership import simulate_conf_report
            status = simulate_conf_report(nodes, spares, seed, parse_duration_ms(duration), chosen, trace, click.echo,
                                          as_json=as_json)
        else:
            status = simulate_report(nodes, seed, parse_duration_ms(duration), chosen, trace, click.echo,
                                     as_json=as_json)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    raise SystemExit(status)




# ---------------------------------------------------------------- membership and leadership (issue 7)

MEMBER_FIELDS = ("id", "address", "voter", "match")


def _admin(peers: str, cluster_id: str, timeout: float, what: str, call) -> object:
    """Run one admin call with a client; errors become one line and exit status 1."""
    from raftlog.errors import RaftlogError
    with _client(peers, cluster_id, timeout) as client:
        try:
            return call(client)
        except RaftlogError as exc:
            raise click.ClickException(f"{what}: {exc}") from None


def _member_spec(text: str) -> tuple[int, str]:
    from raftlog.wire.addresses import PeerSpecError, parse_peers
    try:
        (ident, address), = parse_peers(text).items()
    except (PeerSpecError, ValueError) as exc:
        raise BadArgument(f"{text!r}: expected ID=HOST:PORT ({exc})") from None
    return ident, address


@main.group(invoke_without_command=True)
@click.option("--peers", required=True, help=_PEERS_HELP)
@click.option("--cluster-id", default="raftlog", show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print a JSON list of {"id", "address", "voter", "match"}.')
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the change to complete.")
@click.pass_context
@_secured
def members(ctx: click.Context, peers: str, cluster_id: str, as_json: bool, timeout: float) -> None:
    """List the members (as the leader sees them), or change them.

    A change is one configuration entry (voters change through joint consensus); the
    command returns once it is committed and complete.

    \b
        raftlog members --peers 127.0.0.1:7001,127.0.0.1:7002
        raftlog members --peers 127.0.0.1:7001 add 4=127.0.0.1:7004 --learner
        raftlog members --peers 127.0.0.1:7001 promote 4
        raftlog members --peers 127.0.0.1:7001 remove 1
    """
    ctx.obj = (peers, cluster_id, timeout)
    ctx.meta["raftlog.json"] = as_json
    if ctx.invoked_subcommand is not None:
        return
    import json
    rows = _admin(peers, cluster_id, timeout, "members", lambda c: c.members())
    rows = [{k: r.get(k) for k in MEMBER_FIELDS} for r in rows]   # type: ignore[union-attr]
    if as_json:
        click.echo(json.dumps(rows))
        return
    header = ("ID", "ADDRESS", "ROLE", "MATCH")
    table = [header] + [(str(r["id"]), r["address"] or "-", "voter" if r["voter"] else "learner",
                         "-" if r["match"] is None else str(r["match"])) for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


@members.command("add")
@click.argument("member")
@click.option("--learner", is_flag=True, help="Add a non-voting member (receives the log; promote it later).")
@click.pass_obj
def members_add(obj: tuple, member: str, learner: bool) -> None:
    """Add MEMBER (ID=HOST:PORT) as a voter, or as a learner; prints the configuration entry's index."""
    ident, address = _member_spec(member)
    peers, cluster_id, timeout = obj
    _echo_index(_admin(peers, cluster_id, timeout, f"add {ident}",
                       lambda c: c.add_member(ident, address, learner=learner)))


@members.command("remove")
@click.argument("node_id", type=click.IntRange(1))
@click.pass_obj
def members_remove(obj: tuple, node_id: int) -> None:
    """Remove member NODE_ID (the leader too: it steps down once the change is committed)."""
    peers, cluster_id, timeout = obj
    _echo_index(_admin(peers, cluster_id, timeout, f"remove {node_id}", lambda c: c.remove_member(node_id)))


@members.command("promote")
@click.argument("node_id", type=click.IntRange(1))
@click.pass_obj
def members_promote(obj: tuple, node_id: int) -> None:
    """Make learner NODE_ID a voter."""
    peers, cluster_id, timeout = obj
    _echo_index(_admin(peers, cluster_id, timeout, f"promote {node_id}", lambda c: c.promote(node_id)))


def _echo_index(index: object) -> None:
    """A configuration entry's index: as it is, or {"index": N} with the members group's --json."""
    import json
    as_json = click.get_current_context().meta.get("raftlog.json", False)
    click.echo(json.dumps({"index": index}) if as_json else index)


@main.command()
@click.option("--peers", required=True, help=_PEERS_HELP)
@click.option("--to", "to_id", required=True, type=click.IntRange(1), help="The voter that should lead.")
@click.option("--cluster-id", default="raftlog", show_default=True)
@click.option("--timeout", default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"leader": ID} once it leads.')
@_secured
def transfer(peers: str, to_id: int, cluster_id: str, timeout: float, as_json: bool) -> None:
    """Hand leadership to voter --to (TimeoutNow); returns once it leads.

    \b
        raftlog transfer --peers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --to 2
    """
    _admin(peers, cluster_id, timeout, f"transfer to {to_id}", lambda c: c.transfer_leadership(to_id))
    click.echo(f'{{"leader": {to_id}}}' if as_json else f"node {to_id} leads")


@main.command()
@click.option("--peers", required=True, help=_PEERS_HELP)
@click.option("--from", "from_id", default=None, type=click.IntRange(1),
              help="Copy this member's data (an id of --peers); default: the leader's.")
@click.option("--cluster-id", default="raftlog", show_default=True)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for each piece of the copy.")
@click.option("--json", "as_json", is_flag=True, help="Print the backup's header as one JSON object.")
@click.argument("file")
@_secured
def backup(peers: str, from_id: int | None, cluster_id: str, timeout: float, as_json: bool, file: str) -> None:
    """Save a consistent copy of one member's log to FILE, taken live (etcd: `etcdctl snapshot save`).

    The member copies its data dir from one LMDB read transaction (compacted) and streams it;
    FILE.tmp is written, fsynced and renamed to FILE. The header holds the backup's index
    (the member's durable commit index: every entry acknowledged up to it is in FILE), its
    term and the data's crc32. Make a new cluster from it with `raftlog restore`.

    \b
        raftlog backup --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 log.backup
    """
    import json

    from raftlog.errors import RaftlogError
    members = _members(peers, require_ids=from_id is not None)
    if from_id is not None and from_id not in members:
        raise BadArgument(f"--from {from_id}: not an id of --peers")
    chosen = f"{from_id}={members[from_id]}" if from_id is not None else peers
    try:
        with _client(chosen, cluster_id, timeout, read_from="any" if from_id is not None else "leader") as client:
            header = client.backup(file)
    except (RaftlogError, OSError) as exc:
        raise click.ClickException(f"backup: {exc}") from None
    if as_json:
        click.echo(json.dumps(header.to_dict()))
    else:
        click.echo(f"backup of node {header.node_id} at index {header.index} term {header.term}: {file} "
                   f"({header.data_size} bytes, crc32 {header.data_crc32:08x})"
                   + (f", entries from {header.first_index} behind the snapshot file {header.snapshot_file} "
                      f"({header.snapshot_size} bytes)" if header.snapshot_file else ""))


@main.command()
@click.argument("file")
@click.option("--data", "data_dir", required=True, help="The new data dir (missing or empty).")
@click.option("--id", "node_id", type=click.IntRange(1), required=True, help="This member's id (a key of --peers).")
@click.option("--peers", required=True, help="Every member of the new cluster as ID=HOST:PORT,...")
@click.option("--cluster-id", default=None,
              help="The new cluster's id; default: derived from FILE and --peers (restored-<12 hex>).")
def restore(file: str, data_dir: str, node_id: int, peers: str, cluster_id: str | None) -> None:
    """Make a data dir for a NEW cluster from a backup FILE (etcd: `etcdutl snapshot restore`).

    Run it once per member, with the same FILE and --peers, then start each member with
    `raftlog node` and the printed --cluster-id. Every entry up to the backup's index is kept;
    the configuration is --peers (one configuration entry after the backup's index), and
    each dir gets a new identity. A damaged or truncated FILE, or a --data that is not
    empty, is refused with one line and nothing is created.

    \b
        raftlog restore log.backup --data /srv/rl/1 --id 1 --peers 1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001
    """
    from raftlog.errors import RaftlogError
    from raftlog.storage.restore import restore as restore_backup
    members = _members(peers, require_ids=True)
    if node_id not in members:
        raise BadArgument(f"--peers does not contain this node's id {node_id}")
    if cluster_id is not None and not 0 < len(cluster_id.encode()) <= 255:
        raise BadArgument("--cluster-id: 1 to 255 bytes")
    _check_data_dir(data_dir)
    try:
        done = restore_backup(file, data_dir, node_id, members, cluster_id)
    except (RaftlogError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    behind = f" (from {done.backup.first_index}, behind its snapshot file)" if done.backup.snapshot_file else ""
    click.echo(f"restored node {node_id} of cluster {done.cluster_id} in {data_dir}: entries up to "
               f"{done.index}{behind} from the backup of node {done.backup.node_id}, the configuration at "
               f"{done.conf_index}")
    click.echo(f"start it with: raftlog node --id {node_id} --data {data_dir} --peers {peers} "
               f"--cluster-id {done.cluster_id}")


if __name__ == "__main__":   # keep last: `python -m raftlog.cli` needs every command defined
    main()
