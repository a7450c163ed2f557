"""A node's Prometheus metrics: one CollectorRegistry per node, filled at scrape time.

Nothing is updated per entry: gauges (role, term, indexes, per-peer match lag and connection
state, client connections) are read from the state the node keeps anyway, and counters and
histograms from the node's `NodeStats` (runtime/stats.py), which its hooks update once per
batch. Several nodes in one process each have their own registry; nothing is registered in
prometheus_client's global one.

prometheus_client is an optional dependency (`pip install 'raftlog[metrics]'`); without it,
`require_prometheus` raises MetricsUnavailable with that one line.
"""
from __future__ import annotations

from typing import Any, Iterator

from raftlog.core.raft import Role
from raftlog.errors import MetricsUnavailable
from raftlog.runtime.health import Liveness, verdict
from raftlog.runtime.stats import Histogram, NodeStats

INSTALL_HINT = "metrics need prometheus_client: pip install 'raftlog[metrics]'"


def require_prometheus() -> None:
    """Raise MetricsUnavailable (one line naming the extra to install) unless prometheus_client imports."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailable(INSTALL_HINT) from None


class NodeCollector:
    """A prometheus_client collector of one node: every family is built from the node when scraped.

    `collect` runs on the node's event-loop thread (runtime/metrics_http.py serves it there),
    so it reads the engine's state without racing the Ready loop.
    """

    def __init__(self, node: Any, stats: NodeStats, liveness: Liveness) -> None:
        self.node = node
        self.stats = stats
        self.liveness = liveness

    def collect(self) -> Iterator[Any]:
        """Yield every metric family of the node (prometheus_client's Collector protocol)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        node, stats = self.node, self.stats
        raw = node.raw
        labels = {"node": str(node.node_id)}

        def gauge(name: str, doc: str, value: float) -> Any:
            return _one(GaugeMetricFamily(name, doc, labels=list(labels)), labels, value)

        def counter(name: str, doc: str, value: float) -> Any:
            return _one(CounterMetricFamily(name, doc, labels=list(labels)), labels, value)

        if raw is not None:
            role = GaugeMetricFamily("raftlog_role", "1 for this node's current Raft role, 0 for the others",
                                     labels=["node", "role"])
            for r in Role:
                role.add_metric([labels["node"], r.value], 1.0 if raw.role is r else 0.0)
            yield role
            yield gauge("raftlog_term", "Current Raft term", raw.term)
            yield gauge("raftlog_leader_id", "Id of the leader this node knows of (0: none)", raw.leader_id)
            yield gauge("raftlog_commit_index", "Highest log index known committed", raw.commit_index)
            yield gauge("raftlog_applied_index", "Highest log index applied (answered, handed to the application)",
                        node.applied_index)
            yield gauge("raftlog_first_index", "First index still in the log (older ones are compacted)",
                        raw.first_index)
            yield gauge("raftlog_last_index", "Last index in this node's log", raw.last_index)
            yield from self._peers(raw)
        yield gauge("raftlog_healthy", "1 when /health answers 200 (a leader heard lately; on the leader, "
                    "a quorum heard lately)", 1.0 if verdict(node, self.liveness).ok else 0.0)
        yield counter("raftlog_leader_changes", "Times the leader this node knows of changed (to another or none)",
                      stats.leader_changes)
        yield counter("raftlog_proposals_committed", "Append requests answered appended (committed and durable)",
                      stats.requests_committed)
        yield counter("raftlog_proposal_entries_committed", "Entries of the append requests answered appended",
                      stats.entries_committed)
        yield _by_label(CounterMetricFamily("raftlog_proposals_failed",
                                            "Append requests answered with an error, by reason",
                                            labels=["node", "reason"]), labels["node"], stats.requests_failed)
        yield _histogram("raftlog_append_request_seconds", "Append request latency: arrival to the appended answer",
                         labels, stats.request_seconds)
        writer = node.writer
        yield counter("raftlog_lmdb_transactions", "LMDB write transactions committed",
                      writer.writes if writer is not None else 0)
        yield _histogram("raftlog_lmdb_transaction_seconds", "Duration of one Ready's LMDB write transaction",
                         labels, stats.transaction_seconds)
        yield _histogram("raftlog_lmdb_commit_seconds", "Duration of the LMDB commit of a log transaction: its "
                         "page writes and fsync (no fsync with --no-sync)", labels, stats.commit_seconds)
        yield _histogram("raftlog_lmdb_transaction_entries", "Log entries written by one LMDB transaction",
                         labels, stats.transaction_entries)
        yield counter("raftlog_storage_errors", "Failed storage writes (disk full: each failed attempt)",
                      stats.storage_errors)
        yield gauge("raftlog_storage_error", "1 while writes fail for lack of space",
                    1.0 if writer is not None and writer.storage_error else 0.0)
        for way, count, entries, nbytes in (
                ("sent", stats.appends_sent, stats.appends_sent_entries, stats.appends_sent_bytes),
                ("received", stats.appends_received, stats.appends_received_entries, stats.appends_received_bytes)):
            yield counter(f"raftlog_append_entries_{way}", f"AppendEntries messages carrying entries, {way}", count)
            yield _histogram(f"raftlog_append_entries_{way}_entries", f"Entries per AppendEntries message {way}",
                             labels, entries)
            yield _histogram(f"raftlog_append_entries_{way}_bytes", f"Entry bytes per AppendEntries message {way}",
                             labels, nbytes)
        yield counter("raftlog_snapshots_sent", "Snapshot transfers to followers started (InstallSnapshot, "
                      "paper section 7)", stats.snapshots_sent)
        yield counter("raftlog_snapshot_chunks_sent", "InstallSnapshot messages sent", stats.snapshot_chunks_sent)
        yield counter("raftlog_snapshots_installed", "Snapshots received from a leader and installed",
                      stats.snapshots_installed)
        yield _histogram("raftlog_snapshot_receive_seconds", "A received snapshot's first chunk to its install",
                         labels, stats.snapshot_receive_seconds)
        snapshots = node.snapshots
        yield counter("raftlog_snapshots_taken", "Snapshots this node took of its state machine", snapshots.taken)
        yield gauge("raftlog_snapshot_last_seconds", "Duration of the last snapshot taken (0: none yet)",
                    (snapshots.last or {}).get("seconds", 0.0))
        yield _histogram("raftlog_snapshot_take_seconds", "Each snapshot taken: capture, durable write, compaction",
                         labels, snapshots.seconds)
        yield _histogram("raftlog_snapshot_send_seconds", "A snapshot transfer to a follower: first chunk sent to "
                         "the acknowledgement of its last byte or of its install", labels, stats.snapshot_send_seconds)
        if node.storage is not None:
            yield gauge("raftlog_snapshot_index", "Index of the latest snapshot (0: none)",
                        node.storage.snapshot_meta().index)
        listener = node.listener
        yield gauge("raftlog_client_connections", "Open client connections",
                    len(listener.clients) if listener is not None else 0)
        yield gauge("raftlog_pending_requests", "Append requests proposed and not yet answered", len(node.proposals))
        refused = dict(stats.refused)
        if listener is not None and listener.refused:
            refused["connection_limit"] = listener.refused
        yield _by_label(CounterMetricFamily("raftlog_refused", "Connections and frames refused, by reason",
                                            labels=["node", "reason"]), labels["node"], refused)

    def _peers(self, raw: Any) -> Iterator[Any]:
        """Per-peer families: connection state, messages dropped, and on the leader the match lag."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        node = self.node
        me = str(node.node_id)
        transport = node.peers
        connected = GaugeMetricFamily("raftlog_peer_connected", "1 while the connection to the peer is up",
                                      labels=["node", "peer"])
        dropped = CounterMetricFamily("raftlog_peer_dropped_messages",
                                      "Messages to the peer dropped (no connection, or its queue full)",
                                      labels=["node", "peer"])
        if transport is not None:
            for peer in sorted(p for p in node.cfg.peers if p != node.node_id):
                connected.add_metric([me, str(peer)], 1.0 if transport.connected(peer) else 0.0)
                dropped.add_metric([me, str(peer)], transport.dropped.get(peer, 0))
        yield connected
        yield dropped
        lag = GaugeMetricFamily("raftlog_peer_match_lag", "Leader only: entries the peer's log is known to lack "
                                "(last index - match)", labels=["node", "peer"])
        if raw.role is Role.LEADER:
            last = raw.last_index
            for peer, progress in sorted(raw.raft.progress.items()):
                if peer != node.node_id:
                    lag.add_metric([me, str(peer)], max(0, last - progress.match))
        yield lag


def _one(family: Any, labels: dict, value: float) -> Any:
    """`family` with one sample labelled `labels`."""
    family.add_metric(list(labels.values()), value)
    return family


def _by_label(family: Any, node_label: str, counts: dict) -> Any:
    """`family` with one sample per (reason, count) in `counts`."""
    for reason, count in sorted(counts.items()):
        family.add_metric([node_label, reason], count)
    return family


def _histogram(name: str, doc: str, labels: dict, hist: Histogram) -> Any:
    """A HistogramMetricFamily from a stats Histogram."""
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), hist.cumulative(), hist.sum)
    return family


def make_registry(node: Any, stats: NodeStats, liveness: Liveness) -> Any:
    """A new CollectorRegistry holding only `node`'s collector."""
    require_prometheus()
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, stats, liveness))    # type: ignore[arg-type]
    return registry


async def serve_metrics(node: Any, address: str) -> Any:
    """Start counting for `node` (a runtime Node, starting: engine and listener made) and serve /metrics, /health.

    Sets the node's `stats` and `liveness` and hands `stats` to its proposals and listener (the
    node hands it to its write path); returns the started MetricsServer (closed when the node stops).
    """
    from raftlog.runtime.metrics_http import MetricsServer
    from raftlog.runtime.stats import error_name

    stats = NodeStats(node.cfg.request_timeout)
    liveness = Liveness()
    node.stats, node.liveness = stats, liveness
    node.proposals.stats = stats
    if node.listener is not None:
        node.listener.on_refuse = lambda code: stats.refused.update((error_name(code),))
    server = MetricsServer(address, make_registry(node, stats, liveness), lambda: verdict(node, liveness))
    await server.start()
    return server
