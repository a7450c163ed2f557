"""A durable work queue on raftlog: producers append jobs, consumers follow `entries()`, acks are entries too.

    python examples/work_queue.py [DATA_DIR]

Without DATA_DIR the log lives in a temporary dir that is removed at the end. Run it twice
with the same DATA_DIR: the second run finds the jobs the first one left unfinished (the state
machine, restored from its snapshot plus the log tail, knows which jobs are still open)
and a consumer finishes them.
"""
import asyncio
import json
import sys
import tempfile

import raftlog


class Jobs:
    """Open jobs by index: a `job` entry opens one, a `done` entry closes it."""

    def __init__(self):
        self.open = {}

    def apply(self, entry):
        msg = json.loads(entry.data)
        if msg["type"] == "job":
            self.open[entry.index] = msg["work"]
        else:
            self.open.pop(msg["job"], None)
        return len(self.open)

    def snapshot(self):
        return json.dumps(self.open).encode()

    def restore(self, f):
        self.open = {int(k): v for k, v in json.loads(f.read()).items()}


async def consumer(name, log, jobs, limit):
    """Take open jobs in log order (from the oldest open one), work, ack with a `done` entry."""
    start = min(jobs.open, default=log.applied_index + 1)
    async for entry in log.entries(start):
        msg = json.loads(entry.data)
        if msg["type"] != "job" or entry.index not in jobs.open:
            continue                      # an ack, or a job already done
        print(f"{name} works on job {entry.index}: {msg['work']}")
        await log.append(json.dumps({"type": "done", "job": entry.index}).encode())
        limit -= 1
        if limit == 0:
            return


async def main(path):
    jobs = Jobs()
    async with raftlog.open(path, state_machine=jobs, snapshot_every=20, snapshot_tail=5) as log:
        if jobs.open:
            print(f"{len(jobs.open)} jobs left open by the last run: {sorted(jobs.open)}")
            await consumer("finisher", log, jobs, len(jobs.open))
            print("open jobs now:", sorted(jobs.open))
            return
        for k in range(12):
            await log.append(json.dumps({"type": "job", "work": f"resize image {k}"}).encode())
        await consumer("worker", log, jobs, 7)
        print(f"stopping with {len(jobs.open)} jobs open; run again with the same DATA_DIR to finish them")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="queue-") as scratch:
            asyncio.run(main(scratch + "/q"))
