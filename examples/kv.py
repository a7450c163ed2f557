"""A replicated key-value store on raftlog's embedding API. `python examples/kv.py demo`: three member
processes, writes, a SIGKILL, catch-up by snapshot, agreement. `kv.py member ID DIR PEERS`: one member,
commands on stdin (set KEY VALUE | del KEY | get KEY | dump | role | wait INDEX | quit), JSON on stdout."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import raftlog


class KV:
    """The state machine: entries are JSON commands; apply returns the key's previous value."""

    def __init__(self):
        self.data = {}

    def apply(self, entry):
        cmd = json.loads(entry.data)
        old = self.data.pop(cmd["key"], None)
        if cmd["op"] == "set":
            self.data[cmd["key"]] = cmd["value"]
        return old

    def snapshot(self):  # copy on the event loop (fast), serialize on the snapshot thread
        items = list(self.data.items())
        return (json.dumps(items[i:i + 4096]).encode() + b"\n" for i in range(0, len(items), 4096))

    def restore(self, f):
        self.data = {key: value for line in f for key, value in json.loads(line)}


async def member(node_id, data_dir, peers):
    kv, loop = KV(), asyncio.get_running_loop()
    async with raftlog.open(data_dir, node_id=node_id, peers=peers, state_machine=kv,
                            snapshot_every=500, snapshot_tail=100) as log:
        while (line := (await loop.run_in_executor(None, sys.stdin.readline)).split()) != ["quit"]:
            op, args, out = line[0], line[1:], {}
            try:
                if op in ("set", "del"):
                    record = {"op": op, "key": args[0], "value": " ".join(args[1:])}
                    done = await log.append(json.dumps(record).encode())
                    out = {"index": int(done), "previous": done.result}
                elif op == "get":
                    out = {"value": kv.data.get(args[0])}
                elif op == "dump":
                    out = {"data": kv.data, "applied": log.applied_index, "snapshot": log.status()["snapshot"]}
                elif op == "role":
                    out = {"role": log.role, "leader": await log.wait_for_leader(10)}
                elif op == "wait":
                    while log.applied_index < int(args[0]):
                        await asyncio.sleep(0.01)
            except raftlog.NotLeader as exc:
                out = {"error": "not-leader", "leader": exc.leader_id}
            print(json.dumps(out), flush=True)


def start(i, root, peers):
    return subprocess.Popen([sys.executable, __file__, "member", str(i), f"{root}/{i}", peers],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def ask(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def demo():
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]    # three free ports
    peers = ",".join(f"{i}=127.0.0.1:{s.getsockname()[1]}" for i, s in zip((1, 2, 3), socks))
    list(map(socket.socket.close, socks))
    root = tempfile.mkdtemp(prefix="kv-demo-")
    procs = {}
    try:
        procs.update({i: start(i, root, peers) for i in (1, 2, 3)})
        leader = ask(procs[1], "role")["leader"]

        def write(line):  # at the leader; a busy machine may elect another one meanwhile: follow it
            nonlocal leader
            while "error" in (out := ask(procs[leader], line)):
                leader = out["leader"] or ask(procs[leader], "role")["leader"]
            return out

        victim = next(i for i in procs if i != leader)
        print(f"leader is node {leader}; writing 1000 keys")
        for k in range(1000):
            write(f"set key{k % 300} value{k}")
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait()
        print(f"SIGKILLed node {victim}; 1500 more writes (the log is compacted past it)")
        for k in range(1000, 2500):
            last = write(f"set key{k % 300} value{k}")
        print("deleted key0, its value was", write("del key0")["previous"])
        started = time.monotonic()
        procs[victim] = start(victim, root, peers)
        ask(procs[victim], f"wait {last['index'] + 1}")
        print(f"node {victim} restarted and caught up in {time.monotonic() - started:.2f} s")
        dumps = {i: ask(p, "dump") for i, p in procs.items()}
        for i, d in dumps.items():
            print(f"node {i}: {len(d['data'])} keys, applied {d['applied']}, snapshot {d['snapshot']}")
        assert all(d["data"] == dumps[leader]["data"] for d in dumps.values()), "members disagree"
        print("all three members hold the same state")
        for p in procs.values():
            p.communicate("quit\n", timeout=10)
    finally:  # leave nothing behind, also when the demo fails: no member process, no data dir
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["member"]:
        asyncio.run(member(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
    else:
        demo()
