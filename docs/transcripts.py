"""README's transcripts, produced by running them: every block README shows as real output comes from here.

    python docs/transcripts.py            # run every session, compare with README; exit 1 and a diff if stale
    python docs/transcripts.py --write    # run every session, rewrite the blocks whose content changed

A transcript block sits between `<!-- transcript: NAME -->` and the closing fence of the code
block after it, in README.md or in one of the docs pages listed in FILES (docs/operations.md
shows `raftlog inspect` of the quickstart's data). An example program README shows sits after
`<!-- example: FILE -->`; the sessions below run that program as README shows it, so an
example that stops working fails the check too.

What runs is what README shows, with these differences, and only these:

- Ports. README shows a cluster on 127.0.0.1:7001-7003 (`raftlog cluster -n 3`'s default).
  The script runs on free loopback ports instead (`--base-port` added to `raftlog cluster`,
  the ports substituted in commands, example programs and output), so it never meets another
  cluster on this machine.
- Paths. Everything runs in a fresh temporary dir, which is the current dir of every command;
  the dir's absolute path is shown as `.` should a command print it.
- Node numbering. Which node wins an election is random. The transcript renumbers the nodes
  (their ids, ports and data dirs together, everywhere in the session) so that the first leader
  is node 1 and the leader elected after it is killed is node 2; lines whose order follows the
  node ids (status rows, the cluster's pid lines) are put back in id order. That permutation is
  applied when the transcript is written, so README reads as one consistent run.
- The check compares after normalising what differs from run to run: times of day
  (`17:19:49,297`), process ids (numbered in order of appearance, so "the pid printed here is
  the one killed there" is still checked), and 16-digit hex ids.

Terms and indexes are not normalised: they are the point of the quickstart. An election that
needs a second round (a split vote, which the randomized timeouts make rare) gives other terms
than README's; the session is then run again, at most three times in all, and the reason is
printed; so is a run whose cluster lost a port to another program between choosing and binding
it. Any other difference is a stale README: run with --write and review the diff.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Optional

from raftlog.runtime.launcher import ports_free

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(os.path.dirname(HERE), "README.md")
FILES = [README, os.path.join(HERE, "operations.md")]      # where transcript blocks may sit
SHOWN_BASE_PORT = 7001          # the ports README shows: raftlog cluster's default --base-port
NODES = 3
DEADLINE = 30.0                 # seconds for anything that should take well under one
ATTEMPTS = 3                    # runs of a session whose elections were not the ones README shows


class TranscriptError(Exception):
    """A session could not be run as README shows it (a command failed, a wait timed out)."""


class Rerun(Exception):
    """The run was valid but not one README can show: an election needed a second round, a port was taken."""


# ---- README blocks ---------------------------------------------------------------------------

def _block_span(text: str, marker: str) -> tuple[int, int]:
    """(start, end) of the body of the first fenced code block after `marker`; TranscriptError if absent."""
    at = text.find(marker)
    if at < 0:
        raise TranscriptError(f"no {marker}")
    fence = re.compile(r"^```[^\n]*\n", re.M).search(text, at)
    if fence is None:
        raise TranscriptError(f"no code block after {marker}")
    end = text.find("\n```", fence.end() - 1)
    if end < 0:
        raise TranscriptError(f"the code block after {marker} is not closed")
    return fence.end(), end + 1


def readme_block(text: str, marker: str) -> str:
    """The body of the code block after `marker` (`<!-- transcript: NAME -->` or `<!-- example: FILE -->`)."""
    start, end = _block_span(text, marker)
    return text[start:end]


def replace_block(text: str, marker: str, body: str) -> str:
    """`text` with the body of the code block after `marker` replaced by `body`."""
    start, end = _block_span(text, marker)
    return text[:start] + body + text[end:]


def transcript_marker(name: str) -> str:
    return f"<!-- transcript: {name} -->"


def example_marker(filename: str) -> str:
    return f"<!-- example: {filename} -->"


# ---- normalisation for the comparison --------------------------------------------------------

TIME_OF_DAY = re.compile(r"\b\d\d:\d\d:\d\d[,.]\d{3}\b")
PID = re.compile(r"\b(pid|process|kill -9) (\d+)\b")
HEX_ID = re.compile(r"\b[0-9a-f]{16}\b")
SIZE = re.compile(r"\b\d+(?:\.\d+)?(?:B|KiB|MiB|GiB)$", re.M)    # a data dir's size ends status rows


def normalise(text: str) -> str:
    """`text` with what changes between two faithful runs replaced by placeholders (module doc)."""
    text = TIME_OF_DAY.sub("HH:MM:SS,mmm", text)
    pids: dict[str, str] = {}

    def pid(m: re.Match[str]) -> str:
        return f"{m.group(1)} PID{pids.setdefault(m.group(2), str(len(pids) + 1))}"
    text = PID.sub(pid, text)
    text = SIZE.sub("SIZE", text)
    return HEX_ID.sub("HEXID", text)


# ---- node renumbering ------------------------------------------------------------------------

class Renumbering:
    """A permutation of node ids applied to a transcript: ids, their ports and data dirs together.

    `real_ports[i]` is the port node i really listened on; in the shown transcript node π(i)
    listens on SHOWN_BASE_PORT + π(i) - 1.
    """

    def __init__(self, perm: dict[int, int], real_ports: dict[int, int]) -> None:
        self.perm = perm
        self.real_ports = real_ports

    def ports(self, text: str) -> str:
        """Real ports -> the shown ports of the renumbered nodes."""
        def port(m: re.Match[str]) -> str:
            for i, p in self.real_ports.items():
                if int(m.group(0)) == p:
                    return str(SHOWN_BASE_PORT + self.perm[i] - 1)
            return m.group(0)
        return re.sub(r"(?<=:)\d{2,5}\b", port, text)

    def apply(self, text: str) -> str:
        """`text` as if the nodes had been numbered by the permutation (module doc, Node numbering)."""
        text = self.ports(text)
        mark = "\x00"                      # ids are rewritten through a mark so that 1->2->3 cannot chain

        def ident(m: re.Match[str]) -> str:
            return f"{m.group(1)}{mark}{self.perm.get(int(m.group(2)), int(m.group(2)))}"
        text = re.sub(r"(\bnode |\bpeer |\bnode|--id |\bvote )(\d+)\b", ident, text)
        lines = [self._table_row(line, header) for line, header in _with_table_headers(text.split("\n"))]
        return _sort_id_runs("\n".join(lines)).replace(mark, "")

    def _table_row(self, line: str, header: Optional[str]) -> str:
        """A row of an `ID ...` table with its ID column and its LEADER column (if any) renumbered."""
        if header is None or line == header or not line[:1].isdigit():
            return line                    # an unreachable member's row has `-` for its id
        cells = [(0, len(line.split()[0]))]
        at = header.find("LEADER")
        if at >= 0 and len(line) > at and line[at:at + 1].isdigit():
            cells.append((at, at + len(line[at:].split()[0])))
        for start, end in reversed(cells):
            line = line[:start] + str(self.perm.get(int(line[start:end]), int(line[start:end]))) + line[end:]
        return line


def _with_table_headers(lines: list[str]) -> Iterator[tuple[str, Optional[str]]]:
    """Each line with the header of the `ID ...` table it belongs to (None outside a table)."""
    header: Optional[str] = None
    for line in lines:
        if line.startswith("ID "):
            header = line
        elif header is not None and not _is_row(line):
            header = None
        yield line, header


def _is_row(line: str) -> bool:
    """A row of an `ID ...` table: an id, or `-` for a member that did not answer."""
    return bool(re.match(r"(\d+|-) ", line))


def _sort_id_runs(text: str) -> str:
    """Runs of lines in node order sorted again after renumbering.

    Table rows come in --peers order, which is port order, so they are sorted by the shown
    port; the cluster's `[node N] pid` lines come in id order.
    """
    lines = text.split("\n")
    key_patterns = [re.compile(r"^(?:\d+|-) +\S+:(\d+) "), re.compile(r"^\[node \x00?(\d+)\] pid ")]
    out: list[str] = []
    i = 0
    while i < len(lines):
        pattern = next((p for p in key_patterns if p.match(lines[i])), None)
        if pattern is None:
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < len(lines) and pattern.match(lines[j]):
            j += 1
        run = lines[i:j]
        out.extend(sorted(run, key=lambda ln: int(pattern.match(ln).group(1))))  # type: ignore[union-attr]
        i = j
    return "\n".join(out)


# ---- running a shell session -----------------------------------------------------------------

def consecutive_free_ports(n: int) -> int:
    """A base port with n consecutive loopback ports free right now, of four digits like the shown ones.

    Four digits keep every column the width README shows (a status table pads its ADDRESS
    column to the longest address); the 7000s are left out, so a shown port is never a real one.
    """
    rng = random.Random()
    for _ in range(500):
        base = rng.choice([b for b in range(2000, 9990 - n) if not 7000 <= b < 7100 + n])
        if ports_free(base, n):
            return base
    raise TranscriptError(f"found no {n} consecutive free loopback ports")


class Session:
    """A shell session in a fresh temp dir: `run` shows a command and its output, `start` a background job.

    Commands are written as README shows them; `real` maps the shown ports to the ports this
    run uses. Each command runs in its own `bash -c` with the session's variables
    (`set_var`), so `$PEERS` works as in a shell. The transcript is what a reader would see
    in a terminal: `$ command` lines and what the command printed (stdout and stderr).
    """

    def __init__(self, tmp: str, base_port: int) -> None:
        self.tmp = tmp
        self.base_port = base_port
        self.lines: list[str] = []
        self.env = dict(os.environ)
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + self.env.get("PATH", "")
        for name in [n for n in self.env if n.startswith("RAFTLOG_")]:
            del self.env[name]             # the commands run as a new user's would: no RAFTLOG_PEERS, no RAFTLOG_PURE
        self.jobs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def real(self, text: str) -> str:
        """Shown ports (7001...) -> this run's ports; `raftlog cluster` gets --base-port."""
        def port(m: re.Match[str]) -> str:
            return str(self.base_port + int(m.group(1)) - SHOWN_BASE_PORT)
        text = re.sub(r"\b(70\d\d)\b", lambda m: port(m) if SHOWN_BASE_PORT <= int(m.group(1)) < SHOWN_BASE_PORT + 99
                      else m.group(0), text)
        if re.match(r"raftlog cluster\b", text) and "--base-port" not in text:
            text = text.replace("raftlog cluster", f"raftlog cluster --base-port {self.base_port}", 1)
        return text

    def shown(self, output: str) -> str:
        """Output as README shows it: this run's dir as `.`."""
        return output.replace(self.tmp + os.sep, "").replace(self.tmp, ".")

    def set_var(self, name: str, value: str) -> None:
        """`$ NAME=value`: shown, and set for the commands after it."""
        self.lines.append(f"$ {name}={value}")
        self.env[name] = self.real(value)

    def run(self, command: str, *, stdin: Optional[bytes] = None, comment: str = "", check: bool = True) -> str:
        """`$ command`: run it to the end, show it and its output; TranscriptError when it fails and `check`."""
        shown = f"$ {command}" + (f"      # {comment}" if comment else "")
        proc = subprocess.run(["bash", "-c", self.real(command)], cwd=self.tmp, env=self.env, input=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=DEADLINE)
        out = self.shown(proc.stdout.decode())
        if check and proc.returncode != 0:
            raise TranscriptError(f"`{command}` exited with status {proc.returncode}:\n{out}")
        self.lines.append(shown)
        self.lines.extend(out.rstrip("\n").split("\n") if out.strip() else [])
        return out

    def start(self, command: str) -> subprocess.Popen[bytes]:
        """`$ command &`: start it in the background (it must redirect its own output), show it."""
        self.lines.append(f"$ {command} &")
        err = open(os.path.join(self.tmp, f".job{len(self.jobs) + 1}.stderr"), "w+b")
        job = subprocess.Popen(["bash", "-c", "exec " + self.real(command)], cwd=self.tmp, env=self.env,
                               stdin=subprocess.DEVNULL, stderr=err, start_new_session=True)
        self.jobs.append((command, job, err))
        return job

    def file(self, name: str) -> str:
        """The text of a file in the session's dir ('' while it does not exist)."""
        try:
            with open(os.path.join(self.tmp, name)) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop_jobs(self) -> None:
        """SIGINT every background job this session started (by PID), SIGKILL what is left, reap all.

        What a job wrote on stderr is not part of the transcript (its output is redirected to a
        file the session shows); it is printed on this script's stderr, so nothing is hidden.
        """
        for _, job, _ in self.jobs:
            if job.poll() is None:
                job.send_signal(signal.SIGINT)
        for command, job, err in self.jobs:
            try:
                job.wait(15)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()
            err.seek(0)
            text = err.read().decode(errors="replace").strip()
            err.close()
            if text:
                print(f"transcripts: `{command} &` wrote on stderr:\n{self.shown(text)}", file=sys.stderr)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def wait_for(what: str, check: Callable[[], object], timeout: float = DEADLINE) -> object:
    """Poll `check` until it returns something truthy; TranscriptError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except (OSError, subprocess.SubprocessError, ValueError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise TranscriptError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def session() -> Iterator[Session]:
    with tempfile.TemporaryDirectory(prefix="raftlog-transcript-") as tmp:
        s = Session(os.path.realpath(tmp), consecutive_free_ports(NODES))
        try:
            yield s
        finally:
            s.stop_jobs()


# ---- the sessions ----------------------------------------------------------------------------

PEERS = ",".join(f"127.0.0.1:{SHOWN_BASE_PORT + i}" for i in range(NODES))


def _status(s: Session) -> list[dict]:
    """Every member's status, from `raftlog status --json` (not shown)."""
    proc = subprocess.run(["raftlog", "status", "--peers", s.real(PEERS), "--json"], cwd=s.tmp, env=s.env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=DEADLINE)
    return list(json.loads(proc.stdout))


def _check_cluster(s: Session, cluster: subprocess.Popen[bytes]) -> None:
    """Rerun when `raftlog cluster` lost a port to another program; TranscriptError when it stopped otherwise."""
    if cluster.poll() is None:
        return
    log = s.file("cluster.log")
    if "in use" in log:
        raise Rerun("another program took one of the cluster's ports")
    raise TranscriptError(f"raftlog cluster exited with status {cluster.returncode}:\n{log[-3000:]}")


def _leader(s: Session, cluster: subprocess.Popen[bytes], among: set[int]) -> tuple[int, int]:
    """(leader id, term) once every member of `among` answers and names the same leader, which leads."""
    def agreed() -> Optional[tuple[int, int]]:
        _check_cluster(s, cluster)
        rows = {r["id"]: r for r in _status(s) if r["id"] in among}
        leaders = {r.get("leader") for r in rows.values()}
        if len(rows) != len(among) or len(leaders) != 1:
            return None
        leader = leaders.pop()
        if not isinstance(leader, int) or leader not in rows or rows[leader]["role"] != "leader":
            return None
        return leader, int(rows[leader]["term"])
    return wait_for(f"a leader that all of nodes {sorted(among)} follow", agreed)  # type: ignore[return-value]


def _pids(cluster_log: str) -> dict[int, int]:
    return {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"^\[node (\d+)\] pid (\d+),", cluster_log, re.M)}


def quickstart(readme: str) -> dict[str, str]:
    """The quickstart (3 nodes, appends, a follower, the leader killed), then inspect and the Client example."""
    with session() as s:
        cluster = s.start("raftlog cluster -n 3 > cluster.log 2>&1")

        def pid_lines() -> bool:
            _check_cluster(s, cluster)
            return len(_pids(s.file("cluster.log"))) == NODES
        wait_for("the cluster's pid lines", pid_lines)
        first, first_term = _leader(s, cluster, set(range(1, NODES + 1)))
        if first_term != 1:
            raise Rerun(f"the first election took {first_term} terms")
        s.set_var("PEERS", PEERS)
        s.run("raftlog append --peers $PEERS hello world")
        s.run("printf 'line one\\nline two\\n' | raftlog append --peers $PEERS")
        s.start("raftlog read --peers $PEERS --follow > follow.txt")
        s.run("raftlog status --peers $PEERS")
        s.run("grep ' pid ' cluster.log")
        pid = _pids(s.file("cluster.log"))[first]
        s.run(f"kill -9 {pid}", comment="the leader's pid")
        wait_for("the cluster to report the kill", lambda: "killed by SIGKILL" in s.file("cluster.log"))
        survivors = set(range(1, NODES + 1)) - {first}
        second, second_term = _leader(s, cluster, survivors)
        if second_term != 2:
            raise Rerun(f"the election after the kill ended in term {second_term}, not 2")
        out = s.run("raftlog append --peers $PEERS after-failover")
        last = int(re.findall(r"^(\d+)$", out, re.M)[-1])      # the index line, whatever else append prints
        s.run("raftlog status --peers $PEERS")
        wait_for("read --follow to print the last append", lambda: f"{last}\tafter-failover" in s.file("follow.txt"))
        s.run("cat follow.txt")
        s.run("grep 'became leader\\|killed' cluster.log")
        stop_at = len(s.lines)
        (other,) = survivors - {second}
        renumber = Renumbering({first: 1, second: 2, other: 3},
                               {i: s.base_port + i - 1 for i in range(1, NODES + 1)})
        s.run(f"raftlog inspect raftlog-cluster/node{second} --from 3 --to 4")
        transcripts = {"quickstart": renumber.apply("\n".join(s.lines[:stop_at]) + "\n"),
                       "inspect": renumber.apply("\n".join(s.lines[stop_at:]) + "\n")}

        s.lines = []
        with open(os.path.join(s.tmp, "client_example.py"), "w") as f:
            f.write(s.real(readme_block(readme, example_marker("client_example.py"))))
        s.run(f"{shlex.quote(sys.executable)} client_example.py", check=True)
        transcripts["client"] = renumber.apply(s.text().replace(shlex.quote(sys.executable), "python", 1))
        return transcripts


def embedding(readme: str) -> dict[str, str]:
    """The embedding example, run as README shows it, in a fresh dir."""
    with session() as s:
        with open(os.path.join(s.tmp, "counter.py"), "w") as f:
            f.write(readme_block(readme, example_marker("counter.py")))
        s.run(f"{shlex.quote(sys.executable)} counter.py")
        return {"counter": s.text().replace(shlex.quote(sys.executable), "python", 1)}


SESSIONS: list[Callable[[str], dict[str, str]]] = [quickstart, embedding]


def run_sessions(readme: str, log: Callable[[str], None]) -> dict[str, str]:
    """Every transcript by name; a session is run again (ATTEMPTS in all) while its run is not one README can show."""
    out: dict[str, str] = {}
    for run in SESSIONS:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                out.update(run(readme))
                break
            except Rerun as why:
                log(f"{run.__name__}: {why}; running it again ({attempt} of {ATTEMPTS})")
                last = why
        else:
            raise TranscriptError(f"{run.__name__}: none of {ATTEMPTS} runs was one README can show (last: {last})")
    return out


def _holder(texts: dict[str, str], name: str) -> str:
    """The file of FILES that holds transcript `name`'s marker; TranscriptError if none does."""
    for path, text in texts.items():
        if transcript_marker(name) in text:
            return path
    raise TranscriptError(f"no file of {', '.join(map(os.path.relpath, texts))} has {transcript_marker(name)}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the transcripts instead of checking them")
    args = parser.parse_args(argv)
    texts = {}
    for path in FILES:
        with open(path) as f:
            texts[path] = f.read()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)
    try:
        fresh = run_sessions(texts[README], log)
        holders = {name: _holder(texts, name) for name in fresh}
    except TranscriptError as exc:
        print(f"transcripts: {exc}", file=sys.stderr)
        return 1
    if args.write:
        # A block that differs only in what normalise() hides (times, pids) is left as it is,
        # so rewriting after a merge changes only the transcripts whose content changed.
        changed = [name for name, body in fresh.items()
                   if normalise(readme_block(texts[holders[name]], transcript_marker(name))) != normalise(body)]
        for name in changed:
            texts[holders[name]] = replace_block(texts[holders[name]], transcript_marker(name), fresh[name])
        for path in {holders[name] for name in changed}:
            with open(path, "w") as f:
                f.write(texts[path])
        print(f"rewrote {len(changed)} of {len(fresh)} transcripts: {', '.join(changed) or 'none changed'}")
        return 0
    stale = 0
    for name, body in fresh.items():
        old = readme_block(texts[holders[name]], transcript_marker(name))
        if normalise(old) != normalise(body):
            stale += 1
            where = f"{os.path.relpath(holders[name])} ({name})"
            diff = difflib.unified_diff(normalise(old).splitlines(), normalise(body).splitlines(),
                                        where, "what the commands print now", lineterm="")
            print("\n".join(diff))
    if stale:
        print(f"{stale} of {len(fresh)} transcripts are stale: run python docs/transcripts.py --write", file=sys.stderr)
        return 1
    print(f"{len(fresh)} transcripts match: {', '.join(fresh)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
