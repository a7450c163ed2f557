"""`raftlog repair` when the cluster compacted the corrupt entry: that entry is unrepairable, the rest goes on."""
from __future__ import annotations

import raftlog
from raftlog.errors import Compacted
from raftlog.runtime.repair import repair

from support.corruption import flip_byte_of


class CompactedCluster:
    """A client of a cluster whose log starts at 100: every read below it is Compacted."""

    def read(self, start: int, stop=None, *, limit=None, consistency="linearizable"):
        raise Compacted(start, 100)


def test_a_corrupt_entry_the_cluster_compacted_is_reported_not_a_crash(tmp_path) -> None:
    path = str(tmp_path / "node")
    with raftlog.open_sync(path) as log:
        log.append_many([b"entry-%03d-payload" % i for i in range(10)])
    flip_byte_of(path + "/data.mdb", b"entry-004-payload")
    report = repair(path, CompactedCluster())
    assert report.repaired == []
    (index, why), = report.unrepairable.items()
    assert "compacted" in why and "starts at 100" in why
