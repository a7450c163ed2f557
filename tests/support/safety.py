"""Safety checks on what nodes hold and serve; each raises AssertionError the first time it sees a violation.

They are pure functions of `raftlog inspect --json` dumps (or of entries a node served), so
`support.polling.wait_for` can poll them until the cluster converges while a violation
seen in any one poll fails the test at once.

The rules (Raft paper §5.3 Log Matching, §5.4.3 State Machine Safety): a committed entry
never changes, so the committed prefixes of any two nodes agree wherever both hold entries;
an acknowledged append was committed at the index it was acknowledged with, so every node
whose commit index covers that index holds that payload there.
"""
from __future__ import annotations

import base64
from typing import Mapping

Entry = tuple[int, int, str, bytes]        # (index, term, kind, payload)


def entries_between(dump: dict, lo: int, hi: int) -> list[Entry]:
    """The entries of an inspect dump with lo <= index <= hi, payloads decoded."""
    return [(e["index"], e["term"], e["kind"], base64.b64decode(e["data_b64"]))
            for e in dump["entries"] if lo <= e["index"] <= hi]


def assert_committed_prefixes_agree(dumps: Mapping[int, dict], acked: Mapping[int, bytes]) -> None:
    """Every node's committed prefix equals the most advanced node's over the indexes both hold,
    and holds each acknowledged append its commit index covers; AssertionError naming the first difference.

    Dumps may be taken at different moments: committed entries never change, so comparing
    each node up to its own commit index against a node with a higher one is always valid.
    Indexes compacted into a snapshot (below `first_index`) are not compared.
    """
    ref_id = max(dumps, key=lambda i: dumps[i]["commit"])
    ref = dumps[ref_id]
    for i, dump in dumps.items():
        hi = dump["commit"]
        held = {e[0]: e for e in entries_between(dump, dump["first_index"], hi)}
        expected = {e[0]: e for e in entries_between(ref, dump["first_index"], hi)}
        both_from = max(dump["first_index"], ref["first_index"])
        differ = sorted(k for k in held.keys() | expected.keys() if k >= both_from and held.get(k) != expected.get(k))
        assert not differ, (f"node {i} disagrees with node {ref_id} below commit {hi} at index {differ[0]}: "
                            f"node {i} holds {held.get(differ[0])}, node {ref_id} holds {expected.get(differ[0])}")
        for index, payload in acked.items():
            if dump["first_index"] <= index <= hi:
                entry = held.get(index)
                assert entry is not None and entry[2] == "data" and entry[3] == payload, (
                    f"acknowledged entry {index} lost or changed on node {i} (commit {hi}): "
                    f"acknowledged {payload!r}, holds {entry}")


def holds_acked(served: Mapping[int, bytes], acked: Mapping[int, bytes], who: str) -> bool:
    """Whether `served` (index -> payload a node returned) has every acknowledged append yet;
    AssertionError at once if it has another payload at an acknowledged index."""
    wrong = sorted(i for i, p in acked.items() if i in served and served[i] != p)
    assert not wrong, (f"{who} serves other payloads at acknowledged indexes {wrong[:5]}: e.g. at {wrong[0]} "
                       f"{served[wrong[0]]!r}, acknowledged {acked[wrong[0]]!r}")
    return all(i in served for i in acked)
