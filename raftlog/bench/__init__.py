"""`raftlog bench`: throughput, latency and CPU of a local cluster, every acknowledged append verified.

Two modes share the measured window (window.py), the counters (stats.py), the progress
shown while it runs (progress.py), the report (report.py) and the verification (verify.py):

- node processes (the default, below): real `raftlog node` processes, load over TCP;
- `--embedded` (`cfg.embedded`): the members are `raftlog.open` logs in this process, one
  without network by default or `nodes` with peers over loopback (embedded_cluster.py), and
  `clients` coroutines each await one `append` (batch 1) or `append_many(batch)` at a time
  on the leader's log (embedded_load.py). The data dirs are verified the same way once the
  members are closed. CPU is this process's (members and load together), from /proc.

What one run over node processes does (run.py):

1. starts N `raftlog node` processes on loopback ports that were free a moment before, in a
   temporary data dir (or `--data DIR`), and waits until they agree on a leader (cluster.py,
   launching them with raftlog.runtime.launcher);
2. drives load from this process: `clients` TCP connections to the leader, each keeping
   `inflight` Append requests of `batch` payloads in flight (closed loop, the default, which
   finds the throughput ceiling), or sending at `rate` entries/s on a schedule (open loop:
   latency is measured from the scheduled send time, so a stall is not hidden by the load
   backing off) (load.py);
3. reports committed entries/s, MB/s, latency percentiles (per request, from send to the
   Appended reply, which the leader sends once the entries are committed and durable),
   requests/s, the number of latency samples, errors and timeouts, elections during the run
   (terms started), CPU seconds and peak RSS of each node process and of this process (the
   load generator) over the measured window (procfs.py, report.py);
4. verifies: waits for every follower to catch up, stops the nodes, opens every data dir
   read-only and checks that the logs are byte-identical over the committed range and that
   every acknowledged request's payloads sit at the indexes its reply named (verify.py);
5. cleans up: every node process is stopped (SIGTERM, then SIGKILL) whatever happened,
   also on Ctrl-C, and the temporary data dir is removed unless `--keep`.

The settings and the error a failed run raises are in config.py.
"""
from raftlog.bench.config import BenchConfig, BenchError
from raftlog.bench.progress import IntervalLines, LiveBar, Notes, Progress
from raftlog.bench.report import JSON_KEYS, format_summary, public_json
from raftlog.bench.run import main_with_signals, run_bench

__all__ = ["BenchConfig", "BenchError", "IntervalLines", "JSON_KEYS", "LiveBar", "Notes", "Progress",
           "format_summary", "main_with_signals", "public_json", "run_bench"]
