"""Embedded logs in real processes: SIGKILL mid-append, three members converging, catch-up by snapshot, the kv demo.

Every process is started here and killed by its PID in a finally; members listen on
ephemeral ports on 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import raftlog
from raftlog.runtime.launcher import free_ports
from support.polling import NotYet, wait_for

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import asyncio, os, sys
    import raftlog

    async def main(path):
        async with raftlog.open(path) as log:
            os.write(1, b"ready\\n")
            k = 0
            while True:
                batch = [b"w%d" % (k + i) for i in range(1 + k % 7)]
                done = await log.append_many(batch)
                # One short write per acknowledged batch: a kill never leaves half a line.
                os.write(1, b"".join(b"%d %s\\n" % (int(i), p) for i, p in zip(done, batch)))
                k += len(batch)

    asyncio.run(main(sys.argv[1]))
""")

MEMBER = textwrap.dedent("""
    import asyncio, json, logging, sys
    import raftlog

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    class KV:
        def __init__(self):
            self.data = {}
        def apply(self, entry):
            key, value = entry.data.decode().split("=", 1)
            old = self.data.get(key)
            self.data[key] = value
            return old
        def snapshot(self):
            return json.dumps(self.data).encode()
        def restore(self, f):
            self.data = json.loads(f.read())

    async def main(node_id, path, peers):
        kv = KV()
        loop = asyncio.get_running_loop()
        async with raftlog.open(path, node_id=node_id, peers=peers, state_machine=kv, snapshot_every=200,
                                snapshot_tail=50, engine_options={"snapshot_chunk_bytes": 2048}) as log:
            while True:
                words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
                if not words or words[0] == "quit":
                    break
                out = {}
                if words[0] == "fill":
                    n, tag = int(words[1]), words[2]
                    done = await log.append_many([b"k%d=%s%d" % (i % 150, tag.encode(), i) for i in range(n)])
                    out = {"last": int(done[-1])}
                elif words[0] == "leader":
                    out = {"leader": await log.wait_for_leader(10), "role": log.role}
                elif words[0] == "dump":
                    out = {"data": kv.data, "applied": log.applied_index, "first": log.first_index,
                           "snapshot": log.status()["snapshot"]}
                print(json.dumps(out), flush=True)

    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
""")


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_sigkill_mid_append_loses_no_acknowledged_entry(tmp_path) -> None:
    path = str(tmp_path / "log")
    acked: dict[int, bytes] = {}
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, env=env())
        try:
            assert proc.stdout.readline() == b"ready\n"
            target = len(acked) + 150 + 50 * round_
            while len(acked) < target:
                line = proc.stdout.readline()
                assert line, "writer died"
                index, payload = line.split()
                acked[int(index)] = payload
        finally:
            kill(proc)            # mid-append: it never stops writing
        for line in proc.stdout.read().splitlines():     # acks written before the kill landed
            index, payload = line.split()
            acked[int(index)] = payload

        async def check() -> None:
            async with raftlog.open(path) as log:
                got = {e.index: e.data for e in await log.read(1)}
                missing = {i: p for i, p in acked.items() if got.get(i) != p}
                assert not missing, f"acknowledged entries lost after SIGKILL: {sorted(missing)[:5]}"

        import asyncio
        asyncio.run(check())


class Member:
    def __init__(self, node_id: int, root: Path, peers: str) -> None:
        self.node_id = node_id
        self.err = open(root / f"member{node_id}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", MEMBER, str(node_id), str(root / str(node_id)), peers],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env(),
                                     text=True)

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, f"member {self.node_id} died"
        return json.loads(reply)

    def stop(self) -> None:
        kill(self.proc)
        self.err.close()


def wait_applied(members: dict[int, Member], index: int, timeout: float = 120.0) -> None:
    """Poll until every member applied `index` (a generous deadline; on timeout, each member's applied index)."""
    def reached() -> bool:
        applied = {i: m.ask("dump")["applied"] for i, m in members.items()}
        if min(applied.values()) < index:
            raise NotYet(f"applied index per member {applied}")
        return True
    wait_for(f"every member to apply index {index}", reached, timeout=timeout, every=0.1)


def test_three_processes_converge_and_a_restarted_member_catches_up_by_snapshot(tmp_path) -> None:
    peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in zip((1, 2, 3), free_ports(3)))
    members = {i: Member(i, tmp_path, peers) for i in (1, 2, 3)}
    try:
        leader = members[1].ask("leader")["leader"]
        last = members[leader].ask("fill 300 a")["last"]
        wait_applied(members, last)
        dumps = {i: m.ask("dump") for i, m in members.items()}
        assert all(d["data"] == dumps[leader]["data"] and len(d["data"]) == 150 for d in dumps.values())

        victim = next(i for i in members if i != leader)
        members[victim].stop()
        for tag in "bcd":
            last = members[leader].ask(f"fill 300 {tag}")["last"]
        lead_dump = members[leader].ask("dump")
        assert lead_dump["first"] > dumps[victim]["applied"] + 1     # compacted past the victim's log
        started = time.monotonic()
        members[victim] = Member(victim, tmp_path, peers)
        wait_applied(members, last)
        print(f"\nmember {victim} caught up by snapshot in {time.monotonic() - started:.1f}s")
        again = {i: m.ask("dump") for i, m in members.items()}
        assert all(d["data"] == again[leader]["data"] for d in again.values())
        assert again[victim]["snapshot"]["index"] > dumps[victim]["applied"]
        log_text = (tmp_path / f"member{victim}.log").read_text()
        assert f"node {victim} installed snapshot" in log_text
    finally:
        for m in members.values():
            m.stop()


def test_kv_example_demo_runs_as_written_and_leaves_nothing_behind(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "kv.py"), "demo"], capture_output=True,
                         text=True, timeout=120, env={**env(), "TMPDIR": str(scratch)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "all three members hold the same state" in out.stdout
    assert list(scratch.iterdir()) == [], "the demo left its data dirs behind"


def test_work_queue_example_without_data_dir_removes_its_temp_dir(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "work_queue.py")], capture_output=True,
                         text=True, timeout=120, env={**env(), "TMPDIR": str(scratch)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "jobs open" in out.stdout
    assert list(scratch.iterdir()) == [], "the example left its temp dir behind"
