"""Data-driven interaction tests: each tests/unit/interaction/*.txt script, replayed, prints exactly what it records.

A script is a sequence of blocks separated by blank lines. A block is optional `#` comment
lines, one command line, a `----` line, then the expected output (never blank; `ok` when a
command prints nothing). The runner executes each command on a `Network`
(tests/support/interaction.py, which documents the text form) and compares the whole
regenerated file with the stored one, so a failure shows a diff of what changed.

    RAFTLOG_REWRITE=1 python -m pytest tests/unit/test_interaction.py

rewrites every script's expected output in place from what the engine prints now. A
rewritten file is reviewed as code: its diff is the behaviour change, and it goes into the
commit only once each changed line was read and found right.

Commands (`ids` is one id or a comma-separated list; `key=value` options are listed):
    add-nodes ids voters=1,2,3 [learners=..] [log=terms] [term=N] [vote=N] [commit=N] [<config field>=..]
        start nodes; `log` preloads entries with these terms (one per entry, from index 1);
        other keys are Config fields with `-` for `_` (`pre-vote=false`, `election-ticks=10,20`)
    campaign id | propose id payload.. | propose-conf-change id op:node.. (op as in confchange)
    transfer-leadership id to | read-index id context [lease]
    tick ids [count=N] | tick-heartbeat ids | tick-election ids
        tick-heartbeat: heartbeat_ticks ticks; tick-election: election_ticks hi - 1 ticks,
        enough for any randomized election timeout to expire exactly once
    process-ready ids | deliver ids [drop] | stabilize [ids]
    isolate ids | heal | restart id
    raft-state [ids] | raft-log [ids] | progress id
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Callable

import pytest

from raftlog.core import confchange
from raftlog.core.messages import ConfState
from raftlog.errors import RaftlogError
from support.interaction import Network, preloaded_storage

SCRIPTS = Path(__file__).parent / "interaction"
REWRITE = os.environ.get("RAFTLOG_REWRITE") == "1"
SEPARATOR = "----"


class ScriptError(ValueError):
    """A script that does not parse or names an unknown command or option."""


def parse_blocks(text: str) -> list[tuple[list[str], str, list[str]]]:
    """`(comment lines, command, expected output lines)` for every block of a script."""
    blocks = []
    lines = text.splitlines()
    pos = 0
    while pos < len(lines):
        if not lines[pos].strip():
            pos += 1
            continue
        comments = []
        while pos < len(lines) and lines[pos].startswith("#"):
            comments.append(lines[pos])
            pos += 1
        if pos + 1 >= len(lines) or lines[pos + 1] != SEPARATOR:
            raise ScriptError(f"line {pos + 1}: expected a command followed by {SEPARATOR!r}")
        command = lines[pos]
        pos += 2
        output = []
        while pos < len(lines) and lines[pos].strip():
            output.append(lines[pos])
            pos += 1
        blocks.append((comments, command, output))
    return blocks


def render(blocks: list[tuple[list[str], str, list[str]]]) -> str:
    """The script text for `blocks` (the inverse of parse_blocks)."""
    parts = ["\n".join([*comments, command, SEPARATOR, *output]) for comments, command, output in blocks]
    return "\n\n".join(parts) + "\n"


def ids_of(arg: str) -> list[int]:
    """`1,2,3` -> [1, 2, 3]."""
    return [int(x) for x in arg.split(",") if x]


def config_value(text: str):
    """An option's value: a bool, an int, or a tuple of ints."""
    if text in ("true", "false"):
        return text == "true"
    if "," in text:
        return tuple(ids_of(text))
    return int(text)


def split_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and `key=value` options."""
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    return positional, options


class Runner:
    """Executes script commands against one Network; each command returns its output lines."""

    def __init__(self) -> None:
        self.trace: list[str] = []
        self.net = Network(self.trace)
        self.commands: dict[str, Callable[[list[str]], list[str]]] = {
            "add-nodes": self.add_nodes, "campaign": self.campaign, "propose": self.propose,
            "propose-conf-change": self.propose_conf_change,
            "transfer-leadership": self.transfer_leadership, "read-index": self.read_index,
            "tick": self.tick, "tick-heartbeat": self.tick_heartbeat, "tick-election": self.tick_election,
            "process-ready": self.process_ready, "deliver": self.deliver, "stabilize": self.stabilize,
            "isolate": self.isolate, "heal": self.heal, "restart": self.restart,
            "raft-state": self.raft_state, "raft-log": self.raft_log, "progress": self.progress,
        }

    def run(self, command: str) -> list[str]:
        """The output of one command line: what it returned, then what the network traced meanwhile."""
        name, *args = command.split()
        if name not in self.commands:
            raise ScriptError(f"unknown command {name!r}")
        try:
            out = self.commands[name](args)
        except (RaftlogError, confchange.ConfChangeError) as exc:
            out = [f"error: {type(exc).__name__}: {exc}"]
        out = out + self.trace
        self.trace.clear()
        return out or ["ok"]

    def add_nodes(self, args: list[str]) -> list[str]:
        (ids,), opts = split_args(args)
        kw = {"voters": ids_of(opts.pop("voters")), "learners": ids_of(opts.pop("learners", ""))}
        log = ids_of(opts.pop("log", ""))
        hard = {k: int(opts.pop(k)) for k in ("term", "vote", "commit") if k in opts}
        cfg = {k.replace("-", "_"): config_value(v) for k, v in opts.items()}
        for i in ids_of(ids):
            storage = None
            if log or hard:
                conf = ConfState(tuple(kw["voters"]), tuple(kw["learners"]))
                storage = preloaded_storage(log, conf=conf, **hard)
            self.net.add_node(i, storage=storage, **kw, **cfg)
        return self.net.state_lines(ids_of(ids))

    def campaign(self, args: list[str]) -> list[str]:
        self.net.nodes[int(args[0])].campaign()
        return []

    def propose(self, args: list[str]) -> list[str]:
        index, term = self.net.nodes[int(args[0])].propose([a.encode() for a in args[1:]])
        return [f"index={index} term={term}"]

    def propose_conf_change(self, args: list[str]) -> list[str]:
        changes = [confchange.change(op, int(nid)) for op, nid in (a.split(":") for a in args[1:])]
        index, term = self.net.nodes[int(args[0])].propose_conf_change(changes)
        return [f"index={index} term={term}"]

    def transfer_leadership(self, args: list[str]) -> list[str]:
        self.net.nodes[int(args[0])].transfer_leadership(int(args[1]))
        return []

    def read_index(self, args: list[str]) -> list[str]:
        self.net.nodes[int(args[0])].read_index(args[1].encode(), lease=args[2:] == ["lease"])
        return []

    def tick(self, args: list[str]) -> list[str]:
        (ids,), opts = split_args(args)
        for i in ids_of(ids):
            self.net.tick(i, int(opts.get("count", "1")))
        return []

    def tick_heartbeat(self, args: list[str]) -> list[str]:
        for i in ids_of(args[0]):
            self.net.tick(i, self.net.configs[i].heartbeat_ticks)
        return []

    def tick_election(self, args: list[str]) -> list[str]:
        for i in ids_of(args[0]):
            self.net.tick(i, self.net.configs[i].election_ticks[1] - 1)
        return []

    def process_ready(self, args: list[str]) -> list[str]:
        for i in ids_of(args[0]):
            self.net.process_ready(i)
        return []

    def deliver(self, args: list[str]) -> list[str]:
        for i in ids_of(args[0]):
            if args[1:] == ["drop"]:
                self.net.drop(i)
            else:
                self.net.deliver(i)
        return []

    def stabilize(self, args: list[str]) -> list[str]:
        self.net.stabilize(ids_of(args[0]) if args else None)
        return []

    def isolate(self, args: list[str]) -> list[str]:
        self.net.isolated.update(ids_of(args[0]))
        return []

    def heal(self, args: list[str]) -> list[str]:
        self.net.isolated.clear()
        return []

    def restart(self, args: list[str]) -> list[str]:
        self.net.restart(int(args[0]))
        return self.net.state_lines([int(args[0])])

    def raft_state(self, args: list[str]) -> list[str]:
        return self.net.state_lines(ids_of(args[0]) if args else None)

    def raft_log(self, args: list[str]) -> list[str]:
        return self.net.log_lines(ids_of(args[0]) if args else None)

    def progress(self, args: list[str]) -> list[str]:
        return self.net.progress_lines(int(args[0]))


def replay(text: str) -> str:
    """The script `text` with every command's output regenerated from the engine."""
    runner = Runner()
    return render([(comments, command, runner.run(command)) for comments, command, _ in parse_blocks(text)])


SCRIPT_PATHS = sorted(SCRIPTS.glob("*.txt"))


def test_scripts_exist() -> None:
    """The directory holds the scripts (a bad path must not turn into zero silent tests)."""
    assert len(SCRIPT_PATHS) >= 6, SCRIPT_PATHS


@pytest.mark.parametrize("path", SCRIPT_PATHS, ids=[p.stem for p in SCRIPT_PATHS])
def test_script(path: Path) -> None:
    """The engine prints exactly what the script records (RAFTLOG_REWRITE=1 records what it prints now)."""
    stored = path.read_text()
    actual = replay(stored)
    if REWRITE:
        if actual != stored:
            path.write_text(actual)
        return
    diff = "".join(difflib.unified_diff(stored.splitlines(True), actual.splitlines(True),
                                        f"{path.name} (stored)", f"{path.name} (engine now)"))
    assert actual == stored, f"{path.name} differs (RAFTLOG_REWRITE=1 rewrites it):\n{diff}"


def test_parse_render_round_trip() -> None:
    """render(parse_blocks(text)) == text for a well-formed script, so a rewrite keeps comments and commands."""
    text = "# a comment\ncampaign 1\n----\nok\n\nraft-state\n----\n1: leader\n2: follower\n"
    assert render(parse_blocks(text)) == text
    with pytest.raises(ScriptError):
        parse_blocks("campaign 1\nok\n")
