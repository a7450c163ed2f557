"""The runtime commands of the CLI: argument checks (one line, exit 2, nothing written), help, inspect, status."""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from raftlog.cli import main
from raftlog.core.messages import HardState
from raftlog.hot import KIND_DATA, KIND_NOOP, RecordBatch
from raftlog.wire.addresses import PeerSpecError, parse_peers
from raftlog.storage.lmdb import LmdbStorage

PEERS = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


@pytest.mark.parametrize("peers, node_id, needle", [
    ("2=127.0.0.1:7002,3=127.0.0.1:7003", "1", "does not contain this node's id 1"),
    ("1=127.0.0.1:7001,1=127.0.0.1:7002", "1", "node id 1 is given twice"),
    ("1=127.0.0.1:7001,2=127.0.0.1:7001", "1", "address 127.0.0.1:7001 is given twice"),
    ("1=127.0.0.1", "1", "not HOST:PORT"),
    ("1=127.0.0.1:99999", "1", "port outside"),
    ("127.0.0.1:7001", "1", "not ID=HOST:PORT"),
    ("x=127.0.0.1:7001", "1", "is not a number"),
])
def test_node_rejects_bad_peers_with_one_line_and_exit_2(tmp_path, peers, node_id, needle):
    data = tmp_path / "d"
    result = run("node", "--id", node_id, "--data", str(data), "--peers", peers)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.output
    assert not data.exists()


def test_node_rejects_an_unusable_data_dir_before_writing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    for target in (blocker, blocker / "sub" / "dir"):
        result = run("node", "--id", "1", "--data", str(target), "--peers", PEERS)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert blocker.read_text() == "not a dir"


@pytest.mark.parametrize("args, needle", [
    (["--election-timeout", "300-150"], "need 0 < LO < HI"),
    (["--election-timeout", "abc"], "expected LO-HI"),
    (["--heartbeat", "200"], "below the election timeout"),
])
def test_node_rejects_bad_timing(tmp_path, args, needle):
    result = run("node", "--id", "1", "--data", str(tmp_path / "d"), "--peers", PEERS, *args)
    assert result.exit_code == 2 and needle in result.output
    assert not (tmp_path / "d").exists()


def test_node_refuses_a_data_dir_of_another_node(tmp_path):
    LmdbStorage.open(str(tmp_path / "d"), node_id=2, cluster_id="raftlog").close()
    result = run("node", "--id", "1", "--data", str(tmp_path / "d"), "--peers", PEERS)
    assert result.exit_code == 2 and "belongs to another node" in result.output


@pytest.mark.parametrize("command", ["node", "cluster", "append", "read", "status", "inspect"])
def test_every_command_has_help_with_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "raftlog " + command in result.output


def test_parse_peers_accepts_both_forms():
    assert parse_peers(PEERS) == {1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}
    assert parse_peers("127.0.0.1:1,127.0.0.1:2", require_ids=False) == {-1: "127.0.0.1:1", -2: "127.0.0.1:2"}
    with pytest.raises(PeerSpecError):
        parse_peers("")


def make_dir(path: str) -> None:
    with LmdbStorage.open(path, node_id=3, cluster_id="demo") as st:
        st.save(hard_state=HardState(2, 3, 3), first_index=1,
                records=RecordBatch.encode(1, KIND_NOOP, [b""]))
        st.save(first_index=2, records=RecordBatch.encode(2, KIND_DATA, [b"hello", b"\xff\x00"]))


def test_inspect_json_and_text(tmp_path):
    path = str(tmp_path / "d")
    make_dir(path)
    result = run("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    dump = json.loads(result.output)
    assert {k: dump[k] for k in ("node_id", "cluster_id", "term", "vote", "commit", "first_index", "last_index")} == \
        {"node_id": 3, "cluster_id": "demo", "term": 2, "vote": 3, "commit": 3, "first_index": 1, "last_index": 3}
    assert dump["snapshot"] == {"index": 0, "term": 0}
    assert [(e["index"], e["term"], e["kind"], base64.b64decode(e["data_b64"])) for e in dump["entries"]] == \
        [(1, 1, "noop", b""), (2, 2, "data", b"hello"), (3, 2, "data", b"\xff\x00")]
    ranged = json.loads(run("inspect", path, "--json", "--from", "2", "--to", "2").output)
    assert [e["index"] for e in ranged["entries"]] == [2]
    text = run("inspect", path)
    assert text.exit_code == 0 and "node 3 of cluster 'demo'" in text.output and "hello" in text.output


def test_inspect_is_read_only_beside_a_writer(tmp_path):
    path = str(tmp_path / "d")
    make_dir(path)

    def inspect_in_a_process() -> dict:   # LMDB allows one environment per path per process
        out = subprocess.run([sys.executable, "-m", "raftlog", "inspect", path, "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)

    with LmdbStorage.open(path, node_id=3, cluster_id="demo") as writer:   # the "running node"
        assert inspect_in_a_process()["last_index"] == 3
        writer.save(first_index=4, records=RecordBatch.encode(2, KIND_DATA, [b"more"]))
        assert inspect_in_a_process()["last_index"] == 4
        assert writer.last_index() == 4


def test_inspect_missing_dir_is_a_one_line_error(tmp_path):
    result = run("inspect", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_status_json_marks_silent_members_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]       # bound, not listening: connections are refused
        result = run("status", "--peers", f"1=127.0.0.1:{port}", "--json", "--timeout", "0.5")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == [{"id": 1, "address": f"127.0.0.1:{port}", "role": "unreachable",
                                              "term": None, "last_index": None, "commit": None, "applied": None,
                                              "leader": None, "first_index": None, "data_dir_bytes": None}]
        table = run("status", "--peers", f"127.0.0.1:{port}", "--timeout", "0.5")
        assert table.exit_code == 0 and "unreachable" in table.output and "ROLE" in table.output


def test_client_commands_reject_bad_peers():
    for command in ("append", "read", "status"):
        result = run(command, "--peers", "nonsense")
        assert result.exit_code == 2, (command, result.output)
