"""Metrics and health of in-process nodes: /metrics names and values move with the work done, /health says
200 or 503 with the reason, several nodes in one process keep their own registries, and without
prometheus_client `--metrics` and `metrics=` fail with one line naming the extra."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftlog.client import AsyncClient
from raftlog.errors import MetricsUnavailable
from raftlog.runtime.node import Node, NodeConfig
from raftlog.runtime.stats import Histogram
from raftlog.status_check import NO_ANSWER, OK, UNHEALTHY, verdict

from support.async_wait import until
from support.nodes import CLUSTER, free_port, stop_all, wait_leader

pytestmark = pytest.mark.unit


def _prometheus_parser():
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client not installed "
                                 "(pip install 'raftlog[metrics]')")
    return parser


async def http_get(address: str, path: str) -> tuple[int, str]:
    """(status code, body) of GET http://address/path."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def scrape(node: Node) -> dict[tuple[str, tuple], float]:
    """Every sample of the node's /metrics: (name, sorted labels without `node`) -> value."""
    parser = _prometheus_parser()
    code, text = await http_get(node.metrics_server.bound, "/metrics")
    assert code == 200
    samples = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            assert s.labels.get("node") == str(node.node_id), s
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "node"))
            samples[(s.name, labels)] = s.value
    return samples


async def start_metered(tmp_path: Path, n: int, started: int | None = None, **engine: object) -> list[Node]:
    """`n` nodes with metrics on a free port each; only the first `started` (all by default) are started."""
    _prometheus_parser()
    addrs = {i: f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}
    nodes = [Node(NodeConfig(node_id=i, peers=addrs, data_dir=str(tmp_path / f"n{i}"), cluster_id=CLUSTER,
                             sync=False, metrics="127.0.0.1:0", engine_options=dict(engine))) for i in addrs]
    for node in nodes[:started if started is not None else n]:
        await node.start()
    return nodes


def test_metrics_move_with_appends_on_leader_and_follower(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_metered(tmp_path, 3)
        try:
            leader = await wait_leader(nodes)
            follower = next(n for n in nodes if n is not leader)
            before = await scrape(leader)
            assert before[("raftlog_role", (("role", "leader"),))] == 1.0
            assert before[("raftlog_role", (("role", "follower"),))] == 0.0
            assert before[("raftlog_leader_changes_total", ())] >= 1
            client = AsyncClient([n.cfg.address for n in nodes], cluster_id=CLUSTER)
            try:
                for _ in range(4):
                    await client.append_many([b"m" * 100] * 25)
            finally:
                await client.close()
            after = await scrape(leader)
            assert after[("raftlog_proposals_committed_total", ())] - \
                before[("raftlog_proposals_committed_total", ())] == 4
            assert after[("raftlog_proposal_entries_committed_total", ())] - \
                before[("raftlog_proposal_entries_committed_total", ())] == 100
            assert after[("raftlog_append_request_seconds_count", ())] - \
                before[("raftlog_append_request_seconds_count", ())] == 4
            assert after[("raftlog_commit_index", ())] >= before[("raftlog_commit_index", ())] + 100
            assert after[("raftlog_last_index", ())] == leader.raw.last_index
            assert after[("raftlog_first_index", ())] == 1
            assert after[("raftlog_lmdb_transactions_total", ())] > before[("raftlog_lmdb_transactions_total", ())]
            assert after[("raftlog_lmdb_transaction_entries_sum", ())] >= \
                before[("raftlog_lmdb_transaction_entries_sum", ())] + 100
            assert after[("raftlog_lmdb_commit_seconds_count", ())] == after[("raftlog_lmdb_transactions_total", ())]
            assert after[("raftlog_append_entries_sent_total", ())] > before[("raftlog_append_entries_sent_total", ())]
            assert after[("raftlog_append_entries_sent_entries_sum", ())] >= 2 * 100   # to two followers
            assert after[("raftlog_client_connections", ())] == 0
            for peer in (str(f.node_id) for f in nodes if f is not leader):
                assert after[("raftlog_peer_connected", (("peer", peer),))] == 1.0
                assert ("raftlog_peer_match_lag", (("peer", peer),)) in after

            await until(lambda: follower.applied_index >= leader.applied_index, "the follower to apply")
            seen = await scrape(follower)
            assert seen[("raftlog_role", (("role", "follower"),))] == 1.0
            assert seen[("raftlog_leader_id", ())] == leader.node_id
            assert seen[("raftlog_append_entries_received_total", ())] >= 1
            assert seen[("raftlog_append_entries_received_entries_sum", ())] >= 100
            assert seen[("raftlog_append_entries_received_bytes_sum", ())] >= 100 * 100
            assert not any(name == "raftlog_peer_match_lag" for name, _ in seen)   # leader only
        finally:
            await stop_all(nodes)
    asyncio.run(main())


def test_refused_frames_are_counted_by_reason(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_metered(tmp_path, 1)
        node = nodes[0]
        try:
            host, port = node.cfg.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"\xff" * 64)         # not a frame
            await writer.drain()
            await reader.read()                # the node answers with an error and closes
            writer.close()
            samples = await until(lambda: scrape_if(node, ("raftlog_refused_total", (("reason", "bad_request"),))),
                                  "the refusal counted")
            assert samples[("raftlog_refused_total", (("reason", "bad_request"),))] == 1
        finally:
            await stop_all(nodes)
    asyncio.run(main())


async def scrape_if(node: Node, key: tuple) -> dict | None:
    """The node's samples when `key` is among them, else None."""
    samples = await scrape(node)
    return samples if key in samples else None


def test_health_200_on_leader_and_follower(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_metered(tmp_path, 3)
        try:
            leader = await wait_leader(nodes)
            code, body = await http_get(leader.metrics_server.bound, "/health")
            assert (code, body.startswith(f"leader in term {leader.raw.term}")) == (200, True), body
            follower = next(n for n in nodes if n is not leader)
            code, body = await until(lambda: healthy(follower), "the follower to hear its leader")
            assert f"of leader {leader.node_id}" in body
            assert (await scrape(follower))[("raftlog_healthy", ())] == 1.0
        finally:
            await stop_all(nodes)
    asyncio.run(main())


async def healthy(node: Node) -> tuple[int, str] | None:
    """(200, body) once /health answers 200."""
    code, body = await http_get(node.metrics_server.bound, "/health")
    return (code, body) if code == 200 else None


def test_health_503_without_a_leader(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_metered(tmp_path, 3, started=1)     # alone of three: it never wins an election
        try:
            code, body = await http_get(nodes[0].metrics_server.bound, "/health")
            assert code == 503
            assert body.startswith("no leader known"), body
            assert body.count("\n") == 1
            assert (await scrape(nodes[0]))[("raftlog_healthy", ())] == 0.0
        finally:
            await stop_all(nodes[:1])
    asyncio.run(main())


def test_health_503_on_a_leader_that_lost_its_quorum(tmp_path: Path) -> None:
    async def main() -> None:
        # check_quorum off: the leader keeps its role after losing its followers, and /health
        # (not the engine stepping down) is what must report it.
        nodes = await start_metered(tmp_path, 3, check_quorum=False)
        leader = await wait_leader(nodes)
        others = [n for n in nodes if n is not leader]
        try:
            await stop_all(others)

            async def unhealthy() -> str | None:
                code, body = await http_get(leader.metrics_server.bound, "/health")
                return body if code == 503 else None
            body = await until(unhealthy, "/health of the leader to say 503",
                               seen=lambda: http_get(leader.metrics_server.bound, "/health"))
            assert str(leader.raw.role) == "leader"
            assert "without a quorum: 1 of 3 voters" in body, body
        finally:
            await stop_all([leader])
    asyncio.run(main())


def test_unknown_path_is_404_and_nodes_in_one_process_have_their_own_registries(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_metered(tmp_path, 2)
        try:
            await wait_leader(nodes)
            code, _ = await http_get(nodes[0].metrics_server.bound, "/nope")
            assert code == 404
            for node in nodes:     # scrape() asserts each sample carries this node's label only
                assert (await scrape(node))[("raftlog_term", ())] == node.raw.term
        finally:
            await stop_all(nodes)
    asyncio.run(main())


def test_without_prometheus_client_one_line_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)     # import fails as if not installed
    from raftlog.cli import main
    out = CliRunner().invoke(main, ["node", "--id", "1", "--data", str(tmp_path / "d"), "--peers",
                                    f"1=127.0.0.1:{free_port()}", "--metrics", "127.0.0.1:0"])
    assert out.exit_code == 1, out.output
    assert out.output.strip() == "Error: metrics need prometheus_client: pip install 'raftlog[metrics]'"
    assert not (tmp_path / "d").exists()
    with pytest.raises(MetricsUnavailable, match=r"raftlog\[metrics\]"):
        Node(NodeConfig(node_id=1, peers={1: "127.0.0.1:1"}, data_dir=str(tmp_path / "e"), metrics="127.0.0.1:0"))


def test_bad_metrics_address_is_a_usage_error(tmp_path: Path) -> None:
    from raftlog.cli import main
    out = CliRunner().invoke(main, ["node", "--id", "1", "--data", str(tmp_path / "d"), "--peers",
                                    "1=127.0.0.1:7001", "--metrics", "nowhere"])
    assert out.exit_code == 2, out.output
    assert "--metrics" in out.output


def test_histogram_buckets_are_cumulative_with_inclusive_bounds() -> None:
    hist = Histogram((1, 10))
    for value in (0.5, 1, 2, 10, 11):
        hist.observe(value)
    assert hist.cumulative() == [("1.0", 2), ("10.0", 4), ("+Inf", 5)]
    assert hist.sum == 24.5


def _st(i: int, role: str, term: int, voters: tuple = ()) -> dict:
    table = [{"id": v, "voter": True} for v in voters]
    return {"id": i, "role": role, "term": term, "member_table": table}


def test_status_check_verdicts() -> None:
    three = (1, 2, 3)
    assert verdict({"a": None, "b": None})[0] == NO_ANSWER
    assert verdict({"a": _st(1, "leader", 2, three), "b": _st(2, "follower", 2), "c": None}) == \
        (OK, "ok: leader 1 in term 2; 2 of 3 voters answer")
    code, line = verdict({"a": _st(1, "leader", 2, three), "b": None, "c": None})
    assert code == UNHEALTHY and "only 1 of 3 voters" in line
    code, line = verdict({"a": _st(1, "leader", 2, three), "b": _st(2, "candidate", 3), "c": None})
    assert code == UNHEALTHY and line.startswith("no leader in term 3")      # a deposed leader does not count
    assert verdict({"a": _st(1, "follower", 4), "b": None})[0] == UNHEALTHY


def test_status_check_needs_both_majorities_of_a_joint_configuration() -> None:
    """Dissertation 4.3: while C_old,new rules, a quorum is a majority of the old voters and one of the new."""
    joint = _st(1, "leader", 2, (1, 2, 3, 4, 5)) | {"voters": [1, 4, 5], "voters_outgoing": [1, 2, 3]}
    answers = {"a": joint, "b": _st(4, "follower", 2), "c": _st(5, "follower", 2), "d": None, "e": None}
    code, line = verdict(answers)                      # 3 of the 5 answer: a plain majority, not of the old 1, 2, 3
    assert code == UNHEALTHY and "only 1 of the 3 old voters answer" in line
    answers["d"] = _st(2, "follower", 2)
    assert verdict(answers)[0] == OK


def test_health_of_a_follower_follows_when_it_last_heard_its_leader() -> None:
    from types import SimpleNamespace

    from raftlog.runtime.health import Liveness, verdict as health
    node = SimpleNamespace(node_id=1, stopping=False, cfg=SimpleNamespace(election_timeout_ms=(150, 300)),
                           raw=SimpleNamespace(role="follower", term=3, leader_id=2))
    liveness = Liveness()
    assert health(node, liveness, now=100.0) == (False, "leader 2 of term 3 last heard never (limit 300 ms)")
    liveness.heard(2, 99.9)
    assert health(node, liveness, now=100.0) == (True, "follower of leader 2 in term 3, heard 100 ms ago")
    liveness.heard(3, 100.5)      # another member's message is not the leader's
    assert health(node, liveness, now=100.5) == (False, "leader 2 of term 3 last heard 600 ms ago (limit 300 ms)")


class _Counter:
    """A tiny state machine: counts applied entries; its snapshot is that count."""

    def __init__(self) -> None:
        self.count = 0

    def apply(self, entry) -> None:
        self.count += 1

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, f) -> None:
        self.count = int(f.read() or b"0")


def test_embedded_log_serves_metrics_and_counts_its_snapshots(tmp_path: Path) -> None:
    import raftlog
    parser = _prometheus_parser()

    async def main() -> None:
        async with raftlog.open(str(tmp_path / "log"), state_machine=_Counter(), metrics="127.0.0.1:0") as log:
            address = log.metrics_address
            assert address is not None and not address.endswith(":0")
            code, body = await http_get(address, "/health")
            assert (code, body) == (200, f"leader in term {log.term}; 1 of 1 voters heard within 300 ms\n")
            await log.append_many([b"e"] * 10)
            assert await log.snapshot() is not None
            _, text = await http_get(address, "/metrics")
            samples = {s.name: s.value for f in parser.text_string_to_metric_families(text) for s in f.samples}
            assert samples["raftlog_snapshots_taken_total"] == 1
            assert samples["raftlog_snapshot_index"] == log.applied_index
            assert "raftlog_snapshot_last_seconds" in samples      # (rounded to ms: may be 0 on a fast disk)
            assert samples["raftlog_proposal_entries_committed_total"] == 10
        async with raftlog.open(str(tmp_path / "plain")) as log:
            assert log.metrics_address is None
    asyncio.run(main())


def test_snapshot_sent_and_received_are_counted(tmp_path: Path) -> None:
    import raftlog
    parser = _prometheus_parser()
    peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}

    def opened(i: int) -> raftlog.RaftLog:
        return raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers, state_machine=_Counter(), sync=False,
                            snapshot_every=0, snapshot_tail=0, metrics="127.0.0.1:0")

    async def samples(log: raftlog.RaftLog) -> dict[str, float]:
        _, text = await http_get(log.metrics_address, "/metrics")
        return {s.name: s.value for f in parser.text_string_to_metric_families(text) for s in f.samples}

    async def samples_of(log: raftlog.RaftLog, name: str) -> float:
        return (await samples(log)).get(name, 0.0)

    async def main() -> None:
        logs = [await opened(i).start() for i in (1, 2)]      # a quorum of three; node 3 comes later
        try:
            leader_id = await logs[0].wait_for_leader(30)
            leader = logs[leader_id - 1]
            await leader.append_many([b"s"] * 50)
            for log in logs:       # both compact: node 3 can only catch up by snapshot (paper section 7)
                await until(lambda log=log: log.applied_index >= leader.commit_index, "applied everywhere")
                assert await log.snapshot() is not None
            late = await opened(3).start()
            logs.append(late)
            await until(lambda: late.applied_index >= leader.commit_index, "node 3 to catch up")
            sent = await samples(leader)
            assert sent["raftlog_snapshots_sent_total"] >= 1
            assert sent["raftlog_snapshot_chunks_sent_total"] >= sent["raftlog_snapshots_sent_total"]
            await until(lambda: samples_of(leader, "raftlog_snapshot_send_seconds_count"), "the transfer's end")
            assert sent["raftlog_snapshot_take_seconds_count"] == 1           # the one snapshot it took
            got = await samples(late)
            assert got["raftlog_snapshots_installed_total"] == 1
            assert got["raftlog_snapshot_receive_seconds_count"] == 1
        finally:
            for log in logs:
                await log.close()
    asyncio.run(main())


def test_appends_grouped_per_connection_or_per_turn_count_as_the_requests_they_are(tmp_path: Path) -> None:
    """200 pipelined Appends on one connection become a few proposals (runtime/append_groups.py), and
    50 embedded append() calls of one turn one: the metrics still count every request answered."""
    import raftlog
    parser = _prometheus_parser()

    async def samples(address: str) -> dict[str, float]:
        _, text = await http_get(address, "/metrics")
        return {s.name: s.value for f in parser.text_string_to_metric_families(text) for s in f.samples}

    async def main() -> None:
        port = free_port()
        log = raftlog.open(str(tmp_path / "n1"), node_id=1, peers={1: f"127.0.0.1:{port}"}, metrics="127.0.0.1:0")
        await log.start()
        try:
            await log.wait_for_leader(30)
            client = AsyncClient([f"127.0.0.1:{port}"], sessions=False)
            try:
                await asyncio.gather(*(client.append(b"x%d" % i) for i in range(200)))
            finally:
                await client.close()
            await asyncio.gather(*(log.append(b"y%d" % i) for i in range(50)))
            got = await samples(log.metrics_address)
            assert got["raftlog_proposal_entries_committed_total"] == 250
            assert got["raftlog_proposals_committed_total"] == 250
            assert got["raftlog_append_request_seconds_count"] == 250
        finally:
            await log.close()
    asyncio.run(main())
