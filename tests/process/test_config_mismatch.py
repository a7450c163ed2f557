"""Configuration mismatches (issue 13, item 3): the log's configuration is the truth, not the command line.

A server uses the latest configuration in its log (Ongaro's dissertation, 4.1); --peers only
bootstraps a new cluster. A restarted node whose --peers disagree starts from its log and
says what differs in one WARNING line; `raftlog cluster -n K` over a dir made for another
size is refused with both sizes named, before anything starts.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import raftlog
from raftlog.runtime.launcher import free_ports
from raftlog.cli import main
from raftlog.core.config import Config
from raftlog.core.messages import ConfState
from raftlog.core.rawnode import RawNode
from raftlog.core.storage import MemoryStorage
from raftlog.runtime.cluster import check_cluster_size
from raftlog.runtime.peer_check import peer_differences, peers_from_log
from raftlog.storage.lmdb import LmdbStorage

from support.polling import wait_for

LOGGED = ConfState(voters=(1, 2, 3), addresses=((1, "h:1"), (2, "h:2"), (3, "h:3")))


# ---------------------------------------------------------------- the comparison (pure)

def test_peers_that_match_the_log_say_nothing():
    given = {1: "h:1", 2: "h:2", 3: "h:3"}
    assert peer_differences(1, given, LOGGED) is None
    assert peers_from_log(1, given, LOGGED) == given


def test_each_kind_of_difference_is_named_in_one_line():
    given = {1: "h:1", 2: "h:20", 4: "h:4"}
    line = peer_differences(1, given, LOGGED)
    assert line is not None and "\n" not in line
    assert "--peers names member 4, not members in the log" in line
    assert "--peers lacks member 3, members in the log" in line
    assert "--peers puts 2 at h:20 (the log: h:2)" in line
    assert "starting from the log's configuration (voters 1,2,3): the log is the truth" in line
    # The node dials the log's members at the log's addresses; it listens on its own given one.
    assert peers_from_log(1, given, LOGGED) == {1: "h:1", 2: "h:2", 3: "h:3"}
    assert peers_from_log(1, {1: "h:10", 2: "h:2", 3: "h:3"}, LOGGED)[1] == "h:10"
    assert "--peers puts 1 at h:10 (the log: h:1; it listens at the first, the other members dial the second)" in \
        peer_differences(1, {1: "h:10", 2: "h:2", 3: "h:3"}, LOGGED)


def test_a_new_joiners_empty_configuration_keeps_the_given_peers():
    assert peer_differences(4, {4: "h:4"}, ConfState()) is None
    assert peers_from_log(4, {4: "h:4"}, ConfState()) == {4: "h:4"}


def test_a_member_without_an_address_in_the_log_keeps_the_given_one():
    conf = ConfState(voters=(1, 2), addresses=((1, "h:1"),))
    assert peers_from_log(1, {1: "h:1", 2: "h:2"}, conf) == {1: "h:1", 2: "h:2"}
    assert peer_differences(1, {1: "h:1", 2: "h:2"}, conf) is None


def test_a_bootstrapped_nodes_first_ready_stores_its_configuration():
    """Dissertation 4.1 (a server uses the latest configuration in its log): the bootstrap one must be in it too,
    or every restart would take --peers for the configuration again."""
    storage = MemoryStorage()
    raw = RawNode(Config(1, (1, 2, 3), addresses=((1, "h:1"), (2, "h:2"), (3, "h:3"))), storage, random.Random(1))
    ready = raw.ready()
    assert ready.conf_state == LOGGED
    storage.save(hard_state=ready.hard_state, conf_state=ready.conf_state)
    raw.advance(ready)
    assert storage.conf_state() == LOGGED
    restarted = RawNode(Config(1, (1, 2, 3, 4)), storage, random.Random(1))
    assert restarted.conf_state == LOGGED                  # the stored configuration, not Config's four voters


# ---------------------------------------------------------------- where a user meets it

@pytest.fixture
def single_node_dir(tmp_path: Path) -> Path:
    """A log whose configuration is one voter: node 1 (raftlog.open_sync without peers)."""
    path = tmp_path / "d"
    with raftlog.open_sync(str(path)) as log:
        log.append(b"before")
    return path


def test_the_embedded_log_starts_from_its_configuration_and_warns(single_node_dir, caplog):
    p1, p2, p3 = free_ports(3)
    peers = {1: f"127.0.0.1:{p1}", 2: f"127.0.0.1:{p2}", 3: f"127.0.0.1:{p3}"}
    with caplog.at_level(logging.WARNING, logger="raftlog.node"):
        with raftlog.open_sync(str(single_node_dir), peers=peers) as log:
            # With --peers' three voters, two of them absent, it could never win an election.
            wait_for("node 1 to lead by the log's configuration", lambda: log.role == "leader")
            assert log.append(b"after") > 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "raftlog.node"]
    assert len(warnings) == 1, warnings
    assert "--peers names members 2,3, not members in the log" in warnings[0]


@pytest.mark.process
def test_raftlog_node_warns_once_and_leads_by_its_log(single_node_dir):
    p1, p2, p3 = free_ports(3)
    peers = f"1=127.0.0.1:{p1},2=127.0.0.1:{p2},3=127.0.0.1:{p3}"
    proc = subprocess.Popen([sys.executable, "-m", "raftlog", "node", "--id", "1", "--data", str(single_node_dir),
                             "--peers", peers], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for("node 1 to lead", lambda: any("node 1 became leader" in line for line in lines))
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(30)
        reader.join(10)
    assert status == 0, "".join(lines)
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) == 1, lines
    assert "node 1: --peers names members 2,3, not members in the log" in warnings[0]
    assert "the log is the truth" in warnings[0]
    assert "Traceback" not in "".join(lines)


def test_node_help_says_the_log_is_the_truth():
    result = CliRunner().invoke(main, ["node", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "Once the node has a log, the configuration in its log is the truth" in text


# ---------------------------------------------------------------- raftlog cluster -n K

def make_cluster_dir(root: Path, n: int) -> None:
    for i in range(1, n + 1):
        LmdbStorage.open(str(root / f"node{i}"), node_id=i, cluster_id="raftlog").close()


@pytest.mark.parametrize("made_for, asked", [(3, 5), (5, 3)])
def test_cluster_over_a_dir_made_for_another_size_is_refused(tmp_path, made_for, asked):
    make_cluster_dir(tmp_path, made_for)
    before = sorted(os.listdir(tmp_path))
    # A process with a deadline: were the dir accepted, the supervisor would run its nodes until killed
    # (they die with it, PR_SET_PDEATHSIG), and this test would fail on the timeout instead of hanging.
    result = subprocess.run([sys.executable, "-m", "raftlog", "cluster", "-n", str(asked), "--data", str(tmp_path),
                             "--base-port", str(free_ports(1)[0])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == "", result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"was made for {made_for} nodes (node1..node{made_for}), not {asked}" in lines[0]
    assert f"run `raftlog cluster -n {made_for}` over it" in lines[0]
    assert sorted(os.listdir(tmp_path)) == before


def test_cluster_dir_with_a_hole_is_refused_and_the_same_size_accepted(tmp_path):
    make_cluster_dir(tmp_path, 3)
    check_cluster_size(str(tmp_path), 3)               # the size it was made for
    check_cluster_size(str(tmp_path / "new"), 7)       # nothing there yet
    os.rename(tmp_path / "node2", tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="holds node1, node3, not the 3 nodes node1..node3"):
        check_cluster_size(str(tmp_path), 3)
