#!/usr/bin/env python3
"""Mutation check: every named rule-breaking change to the source must make some test fail.

Each mutation is one exact text replacement (file, old text, new text) that must match
exactly once: when the source has drifted the script stops before running anything and
says which mutation no longer applies. For each mutation the script copies the working
tree into a temporary directory, applies the change there (rebuilding the Cython extension
with `python setup.py build_ext --inplace` when a .pyx changes), runs the tests in the copy,
and reports which tests failed, how long until the first failure, and whether the mutation
was caught. The repository itself is never modified.

The tests run are the fast tiers (`-m "(unit or sim) and not soak"`) unless --full selects
the default suite (`-m "not soak"`, process tests included); `--pytest-args` narrows them. A
baseline run of the unmutated copy comes first: a test that fails there does not count as
catching anything. Exit status: 0 when every mutation was caught, 1 when one survived,
2 when a mutation does not apply or the baseline could not run.

Needs the project's test dependencies (`pip install -e '.[test]'`) and, for the .pyx
mutations or a tree without a built extension, Cython and setuptools: when the running
interpreter lacks them they are installed into a private virtual environment in the
temporary directory.

    python scripts/mutation_check.py                        # every mutation, fast tiers
    python scripts/mutation_check.py figure-8 term-update   # some of them
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --full --json table.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

log = logging.getLogger("mutation_check")

REPO = Path(__file__).resolve().parent.parent
FAST = ["-m", "(unit or sim) and not soak"]
SELF_TEST = "tests/unit/test_mutation_check.py"
FULL = ["-m", "not soak"]
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".hypothesis", ".benchmarks")
SHOWN_FAILURES = 3
PURE = os.environ.get("RAFTLOG_PURE", "") not in ("", "0")     # as raftlog._ext reads it


@dataclass(frozen=True)
class Mutation:
    """One rule broken on purpose: replace `old` (present exactly once) by `new` in `path`."""

    id: str
    path: str
    old: str
    new: str
    rule: str


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("figure-8", "raftlog/core/raft.py",
             "        if c <= lg.committed or not self.may_commit_by_counting(c):\n",
             "        if c <= lg.committed:\n",
             "§5.4.2, figure 8: a leader commits by counting replicas only entries of its own term"),
    Mutation("vote-durable-before-reply", "raftlog/core/raft.py",
             "        if m.type in AFTER_PERSIST:\n            self.msgs_after_persist.append(m)\n",
             "        if m.type in AFTER_PERSIST and m.type != VOTE_RESP:\n"
             "            self.msgs_after_persist.append(m)\n",
             "§5.1 figure 2, diss. 3.8: the vote is durable before the vote reply leaves"),
    Mutation("after-persist-constant", "raftlog/core/raft.py",
             "AFTER_PERSIST = frozenset({APPEND_RESP, VOTE_RESP, HEARTBEAT_RESP, SNAPSHOT_RESP})\n",
             "AFTER_PERSIST = frozenset({APPEND_RESP, HEARTBEAT_RESP, SNAPSHOT_RESP})\n",
             "diss. 3.8: the engine's list of replies that wait for persistence includes votes"),
    Mutation("append-ack-after-persist", "raftlog/core/raft.py",
             "        self.send(Message(APPEND_RESP, m.frm, self.id, self.term, index=last_new))\n",
             "        self.msgs.append(Message(APPEND_RESP, m.frm, self.id, self.term, index=last_new))\n",
             "§5.3, diss. 3.8: a follower acknowledges entries only once they are durable"),
    Mutation("one-vote-per-term", "raftlog/core/raft.py",
             "                    or (self.vote == 0 and self.leader_id == 0)\n",
             "                    or self.leader_id == 0\n",
             "§5.2: a server grants at most one vote per term"),
    Mutation("up-to-date-vote", "raftlog/core/raft.py",
             "        if can_vote and self.log.is_up_to_date(m.index, m.log_term):\n",
             "        if can_vote:\n",
             "§5.4.1: a vote goes only to a candidate whose log is at least as up to date"),
    Mutation("term-update", "raftlog/core/raft.py",
             "            else:\n                leader = m.frm if mtype in (APPEND, HEARTBEAT, SNAPSHOT) else 0\n",
             "            elif mtype not in (APPEND_RESP, HEARTBEAT_RESP, VOTE_RESP):\n"
             "                leader = m.frm if mtype in (APPEND, HEARTBEAT, SNAPSHOT) else 0\n",
             "§5.1: a higher term in any request or response makes the receiver adopt it and follow"),
    Mutation("candidate-steps-down", "raftlog/core/raft.py",
             "        if mtype == APPEND:\n"
             "            self.become_follower(m.term, m.frm)\n"
             "            self.handle_append(m)\n",
             "        if mtype == APPEND:\n            return\n",
             "§5.2: a candidate that hears AppendEntries from a leader of its term returns to follower"),
    Mutation("truncate-conflicts-only", "raftlog/core/raft.py",
             "            ok, truncate_from, keep = match_append(lg.index, prev, prev_term, ents.terms(), committed)\n",
             "            ok, truncate_from, keep = match_append(lg.index, prev, prev_term, ents.terms(), committed)\n"
             "            if prev < lg.last_index:\n"
             "                truncate_from, keep = prev + 1, 0\n",
             "§5.3 figure 2: a follower deletes its entries only from the first conflicting one"),
    Mutation("learners-never-vote", "raftlog/core/raft.py",
             "            c = quorum_commit([progress[v].match for v in self.voters])\n",
             "            c = quorum_commit([pr.match for pr in progress.values()])\n",
             "diss. 4.2.1: learners (non-voting members) never count in a majority"),
    Mutation("joint-majority", "raftlog/core/confchange.py",
             "        return joint_quorum_commit(incoming, [match.get(v, 0) for v in conf.voters_outgoing])\n",
             "        return quorum_commit(incoming)\n",
             "diss. 4.3: in C_old,new an entry commits on a majority of both configurations"),
    Mutation("readindex-heartbeat-round", "raftlog/core/raft.py",
             "            self.readonly.add(ctx, lg.committed if own_term else 0, frm)\n",
             "            if own_term:\n"
             "                self.emit_read(frm, ctx, lg.committed)\n"
             "                return\n"
             "            self.readonly.add(ctx, lg.committed if own_term else 0, frm)\n",
             "diss. 6.4: ReadIndex waits for a quorum to acknowledge a heartbeat round sent after the read"),
    Mutation("crc-on-read-py", "raftlog/_codec_py.py",
             "            if verify and _record_crc(mv[pos:pos + 9], mv[pos + 13:stop]) != crc:\n",
             "            if False and _record_crc(mv[pos:pos + 9], mv[pos + 13:stop]) != crc:\n",
             "records are checked against their CRC when read (pure-Python twin)"),
    Mutation("crc-on-read-pyx", "src_pyx/_codec.pyx",
             "                if _crc(prefix_crc, d + pos + 13, 4 + length) != _ld32(d + pos + 9):\n",
             "                if False and _crc(prefix_crc, d + pos + 13, 4 + length) != _ld32(d + pos + 9):\n",
             "records are checked against their CRC when read (Cython)"),
    Mutation("quorum-rule-py", "raftlog/_log_py.py",
             "    return sorted(matches, reverse=True)[n // 2]\n",
             "    return sorted(matches, reverse=True)[n // 2 - 1]\n",
             "§5.3: an index is committed once a majority (n // 2 + 1 of n) holds it (pure-Python twin)"),
    Mutation("quorum-rule-pyx", "src_pyx/_log.pyx",
             "        result = vals[n // 2]\n",
             "        result = vals[n // 2 - 1 if n > 1 else 0]\n",
             "§5.3: an index is committed once a majority (n // 2 + 1 of n) holds it (Cython)"),
)


@dataclass
class Outcome:
    """What one run of the tests showed."""

    id: str
    failed: list[str] = field(default_factory=list)      # tests that failed (and passed in the baseline)
    passed: int = 0
    first_failure_s: Optional[float] = None
    run_s: float = 0.0
    timed_out: bool = False
    exit_code: Optional[int] = None
    log_path: str = ""

    @property
    def caught(self) -> bool:
        """True when a test failed that passed in the baseline, or the run hung past the timeout."""
        return bool(self.failed) or self.timed_out


class Drifted(Exception):
    """A mutation's old text does not occur exactly once: the source changed since it was written."""


def check_applies(root: Path, mutations: tuple[Mutation, ...]) -> None:
    """Drifted naming every mutation whose old text is not in its file exactly once."""
    problems = []
    for m in mutations:
        path = root / m.path
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        count = text.count(m.old)
        if count != 1:
            problems.append(f"{m.id}: the text to replace occurs {count} times in {m.path}")
    if problems:
        raise Drifted("; ".join(problems))


def apply(root: Path, m: Mutation) -> None:
    """Apply m to the copy at root (the old text occurs exactly once: check_applies ran)."""
    path = root / m.path
    path.write_text(path.read_text(encoding="utf-8").replace(m.old, m.new, 1), encoding="utf-8")
    if path.suffix == ".pyx":
        path.with_suffix(".c").unlink(missing_ok=True)      # make cythonize translate it again


def extensions_built(root: Path) -> bool:
    """True when every src_pyx/X.pyx has a raftlog/X*.so built after it."""
    for pyx in (root / "src_pyx").glob("*.pyx"):
        built = list((root / "raftlog").glob(f"{pyx.stem}.*.so"))
        if not built or max(p.stat().st_mtime for p in built) < pyx.stat().st_mtime:
            return False
    return True


class Builder:
    """Builds the Cython extension in a copy, with an interpreter that has Cython and setuptools."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.python: Optional[str] = None

    def interpreter(self) -> str:
        """A Python that imports Cython and setuptools: this one, or a private venv they are installed into."""
        if self.python is None:
            probe = subprocess.run([sys.executable, "-c", "import Cython, setuptools"], capture_output=True)
            if probe.returncode == 0:
                self.python = sys.executable
            else:
                env_dir = self.scratch / "build-env"
                log.info("Cython is not installed here: installing it into %s", env_dir)
                venv.create(env_dir, with_pip=True)
                python = str(env_dir / "bin" / "python")
                subprocess.run([python, "-m", "pip", "install", "-q", "Cython>=3", "setuptools>=64", "wheel"],
                               check=True)
                self.python = python
        return self.python

    def build(self, root: Path) -> None:
        """`python setup.py build_ext --inplace` in root; CalledProcessError with its output if it fails."""
        started = time.monotonic()
        done = subprocess.run([self.interpreter(), "setup.py", "-q", "build_ext", "--inplace"], cwd=root,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        log.info("built the extension in %s (%.0f s)", root.name, time.monotonic() - started)


def env_for_tests(root: Path, probe_out: Path) -> dict[str, str]:
    """The environment the tests run in: the copy first on the path (also for the processes tests start)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "scripts"),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MUTATION_PROBE_OUT"] = str(probe_out)
    return env


def check_imports_copy(root: Path, env: dict[str, str], expect_cython: bool) -> None:
    """RuntimeError unless `import raftlog` in root loads the copy (and its Cython extension when expected)."""
    code = "import raftlog, raftlog.hot as h; print(raftlog.__file__); print(h.IMPLEMENTATION)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or not Path(lines[0]).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the tests in {root} would not import the copy: {out.stdout} {out.stderr}")
    if expect_cython and lines[1] != "cython":
        raise RuntimeError(f"the copy in {root} runs the {lines[1]} hot path, not the Cython extension it mutates")


def run_tests(root: Path, name: str, pytest_args: list[str], timeout_s: float, logs: Path,
              expect_cython: bool) -> tuple[Outcome, set[str]]:
    """Run pytest in root; the outcome and the set of tests that failed."""
    probe_out = logs / f"{name}.jsonl"
    probe_out.unlink(missing_ok=True)
    log_path = logs / f"{name}.log"
    env = env_for_tests(root, probe_out)
    check_imports_copy(root, env, expect_cython)
    # The drift test checks that each mutation still applies to the unmutated source: in a mutated
    # copy it fails by construction, which would count every mutation as caught.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation_probe",
           f"--deselect={SELF_TEST}", *pytest_args]
    outcome = Outcome(name, log_path=str(log_path))
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            outcome.exit_code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            outcome.timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)      # the session this script started for pytest
            proc.wait()
    outcome.run_s = round(time.monotonic() - started, 1)
    failed: dict[str, float] = {}
    if probe_out.exists():
        for line in probe_out.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event["outcome"] == "failed":
                failed.setdefault(event["nodeid"], event["seconds"])
            else:
                outcome.passed += 1
    outcome.failed = sorted(failed, key=failed.get)
    if failed:
        outcome.first_failure_s = min(failed.values())
    return outcome, set(failed)


def check_mutation(m: Mutation, base: Path, scratch: Path, builder: Builder, pytest_args: list[str],
                   timeout_s: float, baseline_failures: set[str], keep: bool) -> Outcome:
    """Copy base, apply m, rebuild if it touches a .pyx, run the tests.

    Failures already in the baseline do not count.
    """
    root = scratch / m.id
    shutil.copytree(base, root, symlinks=True)
    try:
        apply(root, m)
        cython = m.path.endswith(".pyx")
        if cython:
            builder.build(root)
        outcome, _ = run_tests(root, m.id, pytest_args, timeout_s, scratch, expect_cython=cython)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    outcome.failed = [t for t in outcome.failed if t not in baseline_failures]
    if not outcome.failed:
        outcome.first_failure_s = None
    return outcome


def table(outcomes: list[Outcome]) -> str:
    """The report: mutation, caught, tests that failed (count and the first few), time to the first failure."""
    rows = [("mutation", "caught", "failed", "first failure", "run", "first failing tests")]
    for o in outcomes:
        first = "-" if o.first_failure_s is None else f"{o.first_failure_s:.1f} s"
        caught = ("yes" if o.failed else "timeout") if o.caught else "NO"
        names = ", ".join(o.failed[:SHOWN_FAILURES]) + (f" (+{len(o.failed) - SHOWN_FAILURES})"
                                                          if len(o.failed) > SHOWN_FAILURES else "")
        rows.append((o.id, caught, str(len(o.failed)), first, f"{o.run_s:.0f} s", names or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Mutations: " + ", ".join(m.id for m in MUTATIONS))
    p.add_argument("mutations", nargs="*", metavar="MUTATION", help="ids to check (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the mutations and the rules they break, then exit")
    p.add_argument("--full", action="store_true",
                   help='run the default suite (-m "not soak", process tests included) instead of the fast tiers')
    p.add_argument("--pytest-args", default="", metavar="ARGS",
                   help='more pytest arguments in one string, e.g. "tests/sim/test_sim_random.py -k seeds"')
    p.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated copy")
    p.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                   help="stop a test run after this long and count the mutation as caught (a hang); default 3600")
    p.add_argument("--json", metavar="FILE", help="also write the outcomes as JSON to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies and logs (their path is printed)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:28} {m.path:28} {m.rule}")
        return 0
    known = {m.id: m for m in MUTATIONS}
    unknown = [i for i in args.mutations if i not in known]
    if unknown:
        log.error("unknown mutations %s; see --list", ", ".join(unknown))
        return 2
    chosen = tuple(known[i] for i in args.mutations) or MUTATIONS
    if PURE and any(m.path.endswith(".pyx") for m in chosen):
        log.error("RAFTLOG_PURE is set: the tests would not load the Cython extension the .pyx mutations change")
        return 2
    try:
        check_applies(REPO, chosen)
    except Drifted as exc:
        log.error("the source drifted, fix the mutation list: %s", exc)
        return 2
    pytest_args = (FULL if args.full else FAST) + shlex.split(args.pytest_args)
    scratch = Path(tempfile.mkdtemp(prefix="raftlog-mutation-"))
    log.info("scratch copies and logs in %s; tests: pytest %s", scratch, " ".join(pytest_args))
    builder = Builder(scratch)
    base = scratch / "base"
    shutil.copytree(REPO, base, ignore=COPY_IGNORE, symlinks=True)
    try:
        if not extensions_built(base):
            builder.build(base)
        baseline_failures: set[str] = set()
        if not args.no_baseline:
            baseline, baseline_failures = run_tests(base, "baseline", pytest_args, args.timeout, scratch,
                                                    expect_cython=not PURE)
            if baseline.timed_out or baseline.exit_code not in (0, 1) or not baseline.passed:
                log.error("the baseline run did not complete (exit %s); see %s", baseline.exit_code, baseline.log_path)
                return 2
            log.info("baseline: %d passed, %d failed%s (%.0f s)", baseline.passed, len(baseline_failures),
                     ": " + ", ".join(sorted(baseline_failures)) if baseline_failures else "", baseline.run_s)
        outcomes = []
        for k, m in enumerate(chosen, 1):
            o = check_mutation(m, base, scratch, builder, pytest_args, args.timeout, baseline_failures, args.keep)
            outcomes.append(o)
            if not o.caught and o.exit_code not in (0, 1):
                log.warning("%s: pytest exited with %s and reported no failing test; see %s (--keep)",
                            m.id, o.exit_code, o.log_path)
            verdict = "caught" if o.caught else "SURVIVED"
            log.info("[%d/%d] %s: %s, %d tests failed (%.0f s)", k, len(chosen), m.id, verdict, len(o.failed), o.run_s)
        print()
        print(table(outcomes))
        if args.json:
            Path(args.json).write_text(json.dumps([{**asdict(o), "caught": o.caught} for o in outcomes], indent=1))
        survivors = [o.id for o in outcomes if not o.caught]
        if survivors:
            log.info("survived: %s", ", ".join(survivors))
        return 1 if survivors else 0
    finally:
        if args.keep:
            log.info("kept %s", scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
