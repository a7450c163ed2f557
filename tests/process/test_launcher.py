"""The node-process launcher (raftlog.runtime.launcher) on a real node: stopping one that is
paused (SIGSTOP) still shuts it down cleanly, since a stopped process cannot handle SIGTERM."""
from __future__ import annotations

import pytest

from support.cluster import ProcCluster
from support.polling import wait_for

pytestmark = pytest.mark.process


def test_stop_resumes_a_paused_node_so_that_it_shuts_down_cleanly(tmp_path):
    cluster = ProcCluster(1, str(tmp_path))
    try:
        cluster.start_all()
        wait_for("node 1 to lead", lambda: cluster.leader())
        cluster.pause(1)
        cluster.stop([1], grace=30.0)     # SIGKILL only if SIGTERM is not handled within 30 s
        status = cluster.procs[1].returncode
        assert status == 0, f"node 1 exited with status {status}, not by its clean SIGTERM shutdown"
        assert "node 1 stopped" in cluster.log_of(1)
    finally:
        cluster.close()
