"""docs/transcripts.py's renumbering and normalisation: what they change, and that they change nothing else."""
from __future__ import annotations

import importlib.util
import os

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "transcripts.py")
_spec = importlib.util.spec_from_file_location("transcripts", SCRIPT)
assert _spec is not None and _spec.loader is not None
transcripts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(transcripts)

# A run where node 3 led first (term 1), node 3 was killed and node 1 led next, on ports 4301-4303.
RAW = """\
$ raftlog status --peers $PEERS
ID  ADDRESS         ROLE      TERM  LAST  COMMIT  APPLIED  LEADER
1   127.0.0.1:4301  follower  1     7     7       7        3
2   127.0.0.1:4302  follower  1     7     7       7        3
3   127.0.0.1:4303  leader    1     7     7       7        3
$ grep ' pid ' cluster.log
[node 1] pid 101, 127.0.0.1:4301, raftlog-cluster/node1
[node 2] pid 102, 127.0.0.1:4302, raftlog-cluster/node2
[node 3] pid 103, 127.0.0.1:4303, raftlog-cluster/node3
$ kill -9 103
$ raftlog status --peers $PEERS
ID  ADDRESS         ROLE         TERM  LAST  COMMIT  APPLIED  LEADER
1   127.0.0.1:4301  leader       2     10    10      10       1
2   127.0.0.1:4302  follower     2     10    10      10       1
-   127.0.0.1:4303  unreachable  -     -     -       -        -
$ grep 'became leader\\|killed' cluster.log
[node 3] 17:24:41,811 INFO raftlog.node: node 3 became leader for term 1
[node 3] process 103 killed by SIGKILL
[node 1] 17:24:47,376 INFO raftlog.node: node 1 following node 3 in term 1; node 1 became leader for term 2
"""

SHOWN = """\
$ raftlog status --peers $PEERS
ID  ADDRESS         ROLE      TERM  LAST  COMMIT  APPLIED  LEADER
1   127.0.0.1:7001  leader    1     7     7       7        1
2   127.0.0.1:7002  follower  1     7     7       7        1
3   127.0.0.1:7003  follower  1     7     7       7        1
$ grep ' pid ' cluster.log
[node 1] pid 103, 127.0.0.1:7001, raftlog-cluster/node1
[node 2] pid 101, 127.0.0.1:7002, raftlog-cluster/node2
[node 3] pid 102, 127.0.0.1:7003, raftlog-cluster/node3
$ kill -9 103
$ raftlog status --peers $PEERS
ID  ADDRESS         ROLE         TERM  LAST  COMMIT  APPLIED  LEADER
-   127.0.0.1:7001  unreachable  -     -     -       -        -
2   127.0.0.1:7002  leader       2     10    10      10       2
3   127.0.0.1:7003  follower     2     10    10      10       2
$ grep 'became leader\\|killed' cluster.log
[node 1] 17:24:41,811 INFO raftlog.node: node 1 became leader for term 1
[node 1] process 103 killed by SIGKILL
[node 2] 17:24:47,376 INFO raftlog.node: node 2 following node 1 in term 1; node 2 became leader for term 2
"""


def test_renumbering_makes_the_first_leader_node_1_and_the_next_node_2_everywhere():
    renumber = transcripts.Renumbering({3: 1, 1: 2, 2: 3}, {1: 4301, 2: 4302, 3: 4303})
    assert renumber.apply(RAW) == SHOWN


def test_the_identity_renumbering_changes_nothing_but_ports():
    renumber = transcripts.Renumbering({1: 1, 2: 2, 3: 3}, {1: 4301, 2: 4302, 3: 4303})
    assert renumber.apply(RAW) == RAW.replace(":430", ":700")


def test_normalise_keeps_terms_indexes_and_which_pid_is_killed():
    same_run_other_pids = SHOWN.replace("103", "7777").replace("101", "55").replace("17:24:4", "09:01:0")
    assert transcripts.normalise(SHOWN) == transcripts.normalise(same_run_other_pids)
    killed_the_wrong_one = SHOWN.replace("kill -9 103", "kill -9 101")
    assert transcripts.normalise(SHOWN) != transcripts.normalise(killed_the_wrong_one)
    other_term = SHOWN.replace("became leader for term 2", "became leader for term 3")
    assert transcripts.normalise(SHOWN) != transcripts.normalise(other_term)


def test_blocks_are_found_and_replaced_after_their_marker():
    text = "intro\n<!-- transcript: a -->\n```\nold\n```\nafter\n<!-- example: b.py -->\n```python\nprint(1)\n```\n"
    assert transcripts.readme_block(text, "<!-- transcript: a -->") == "old\n"
    assert transcripts.readme_block(text, "<!-- example: b.py -->") == "print(1)\n"
    new = transcripts.replace_block(text, "<!-- transcript: a -->", "new\nlines\n")
    assert new == text.replace("old\n", "new\nlines\n")


def test_normalise_ignores_a_data_dir_size_ending_a_status_row_and_nothing_else():
    row = "2   127.0.0.1:7002  leader       2     10    10      10       2       1      %s\n"
    assert transcripts.normalise(row % "52.0KiB") == transcripts.normalise(row % "60.0KiB")
    assert transcripts.normalise(row % "512B") == transcripts.normalise(row % "1.0MiB")
    assert transcripts.normalise("append 52.0KiB of data\n") == "append 52.0KiB of data\n"
