"""A damaged, emptied or foreign data dir is refused with one line and left untouched, never silently reset (issue 13).

Each case damages a copy of a real data dir (five appends through raftlog.open_sync) the way
a disk, an operator or another program would, then meets it where a user does:
`raftlog.open_sync` (DataDirError, a RaftlogError), `raftlog inspect`, `raftlog check`,
`raftlog repair` (one line on stderr, exit status 1, no traceback) and a real
`raftlog node` process. Every file in the dir must be byte-for-byte the same afterwards and
no file may appear. Why it matters for Raft: a member that silently restarts empty has
forgotten its term and vote (it may vote twice in one term, Raft paper 5.2) and the entries
it acknowledged (a committed entry may then be lost, 5.4).
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import lmdb
import pytest
from click.testing import CliRunner

import raftlog
from raftlog.cli import main
from raftlog.core.messages import HardState
from raftlog.hot import KIND_DATA, RecordBatch
from raftlog.storage.datadir import read_data_file
from raftlog.storage.lmdb import LmdbStorage

from support.corruption import fingerprint

PAYLOADS = [b"entry-%d" % i for i in range(5)]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real data dir: node 1 of cluster 'raftlog', a no-op and five appends, closed."""
    path = tmp_path_factory.mktemp("made") / "d"
    with raftlog.open_sync(str(path)) as log:
        for p in PAYLOADS:
            log.append(p)
    assert sorted(os.listdir(path)) == ["data.mdb", "lock.mdb", "raftlog.lock"]
    return path


def flip(offset_of: Callable[[int], int]) -> Callable[[Path], None]:
    """A damage: invert the byte of data.mdb at offset_of(page size)."""
    def damage(d: Path) -> None:
        data = d / "data.mdb"
        psize = read_data_file(str(d)).meta.psize
        raw = bytearray(data.read_bytes())
        raw[offset_of(psize)] ^= 0xFF
        data.write_bytes(bytes(raw))
    return damage


def truncate(size: int) -> Callable[[Path], None]:
    return lambda d: os.truncate(d / "data.mdb", size)


def random_bytes(d: Path) -> None:
    data = d / "data.mdb"
    data.write_bytes(os.urandom(data.stat().st_size))


def foreign_env(d: Path) -> None:
    """Replace the dir by another program's LMDB environment (made with py-lmdb)."""
    shutil.rmtree(d)
    env = lmdb.open(str(d), max_dbs=2)
    with env.begin(write=True, db=env.open_db(b"theirs")) as txn:
        txn.put(b"hello", b"world")
    env.close()


# (damage, what the line must say). Truncations at or below 4 pages always cut a page LMDB
# reaches: the main, log and meta trees need three pages of their own after the two meta pages.
REFUSED = {
    "empty": (truncate(0), "data.mdb is empty (0 bytes)"),
    "truncated-100": (truncate(100), "data.mdb is truncated: it ends at 100 bytes, inside its first meta page"),
    "truncated-4096": (truncate(4096), "data.mdb is truncated: it ends at 4096 bytes, needs at least "),
    "truncated-8192": (truncate(8192), "data.mdb is truncated: it ends at 8192 bytes, needs at least "),
    "truncated-16384": (truncate(16384), "data.mdb is truncated: it ends at 16384 bytes, needs at least "),
    "random-bytes": (random_bytes, "data.mdb is not an LMDB file"),
    "flipped-meta-0-magic": (flip(lambda psize: 16), "data.mdb has a damaged meta page 0 (bad magic"),
    "flipped-meta-1-magic": (flip(lambda psize: psize + 16), "data.mdb has a damaged meta page 1 (bad magic"),
    "flipped-meta-1-txnid": (flip(lambda psize: psize + 16 + 128 + 2), "data.mdb has meta pages with transaction ids"),
    "flipped-meta-1-page-size": (flip(lambda psize: psize + 16 + 24 + 1),
                                 "data.mdb has a damaged meta page 1 (page size"),
    "data-mdb-missing": (lambda d: os.remove(d / "data.mdb"),
                         "data.mdb is missing beside raftlog.lock and lock.mdb: raftlog used this dir"),
    "another-programs-lmdb": (foreign_env,
                              "is an LMDB environment without raftlog's identity: another program's data?"),
}


def damaged_copy(made: Path, tmp_path: Path, case: str) -> Path:
    d = tmp_path / case
    shutil.copytree(made, d)
    REFUSED[case][0](d)
    return d


def assert_one_line(text: str, needle: str, d: Path) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert needle in lines[0] and f"data dir {d}" in lines[0], text
    assert "Traceback" not in text


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_damaged_dir_is_refused_everywhere_and_left_untouched(made, tmp_path, case):
    d = damaged_copy(made, tmp_path, case)
    needle = REFUSED[case][1]
    before = fingerprint(d)

    with pytest.raises(raftlog.DataDirError) as err:
        raftlog.open_sync(str(d))
    assert isinstance(err.value, raftlog.RaftlogError)
    assert needle in str(err.value) and "\n" not in str(err.value)
    remedy = "give raftlog an empty or missing dir" if case == "another-programs-lmdb" else \
        "`raftlog members remove 1`, then start it on an empty dir with `raftlog node --join`"
    assert remedy in str(err.value)
    assert fingerprint(d) == before

    for args in (["inspect", str(d)], ["check", str(d)], ["repair", str(d)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert_one_line(result.stderr, needle, d)
        assert result.stdout == "", (args, result.stdout)
        assert fingerprint(d) == before, args

    checked = CliRunner().invoke(main, ["check", str(d), "--json"])
    assert checked.exit_code == 1
    report = json.loads(checked.stdout)
    assert report["ok"] is False and [p["kind"] for p in report["problems"]] == ["datadir"]
    assert needle in report["problems"][0]["detail"]

    node = subprocess.run([sys.executable, "-m", "raftlog", "node", "--id", "1", "--data", str(d),
                           "--peers", "1=127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert node.returncode == (2 if case == "another-programs-lmdb" else 1), node.stderr
    assert_one_line(node.stderr, needle, d)
    assert fingerprint(d) == before


def test_a_missing_lock_mdb_is_fine_and_readers_create_nothing(made, tmp_path):
    """lock.mdb is LMDB's reader table, not data: a copied or mdb_copy'd data.mdb (a backup) comes without it."""
    d = tmp_path / "no-lock-mdb"
    shutil.copytree(made, d)
    os.remove(d / "lock.mdb")
    before = fingerprint(d)
    inspected = CliRunner().invoke(main, ["inspect", str(d), "--json"])
    assert inspected.exit_code == 0, inspected.output
    assert [e["data_b64"] for e in json.loads(inspected.stdout)["entries"]][1:] == \
        [base64.b64encode(p).decode() for p in PAYLOADS]
    assert CliRunner().invoke(main, ["check", str(d)]).exit_code == 0
    assert CliRunner().invoke(main, ["repair", str(d)]).exit_code == 0
    assert fingerprint(d) == before                  # readonly opens ran without LMDB's lock file
    with raftlog.open_sync(str(d)) as log:          # a writer recreates it
        assert [e.data for e in log.read(2)] == PAYLOADS
    assert (d / "lock.mdb").exists()


def test_only_a_missing_or_empty_dir_is_new(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with raftlog.open_sync(str(empty)) as log:
        assert log.append(b"x") >= 1
    with raftlog.open_sync(str(tmp_path / "missing")) as log:
        assert log.append(b"x") >= 1

    lock_only = tmp_path / "lock-only"
    lock_only.mkdir()
    (lock_only / "raftlog.lock").write_bytes(b"")
    with pytest.raises(raftlog.DataDirError, match="data.mdb is missing beside raftlog.lock: raftlog used this dir"):
        raftlog.open_sync(str(lock_only))
    assert os.listdir(lock_only) == ["raftlog.lock"]

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(raftlog.DataDirError, match="holds notes.txt but no data.mdb: not a raftlog data dir"):
        raftlog.open_sync(str(other))
    assert os.listdir(other) == ["notes.txt"]


def test_a_file_cut_short_of_unused_pages_only_is_accepted(tmp_path):
    """LMDB leaves pages freed at the end of its file unwritten or unused, so a file shorter than its
    meta's last page can be whole: the check walks the trees and refuses only a cut into a page they reach."""
    d = tmp_path / "d"
    with LmdbStorage.open(str(d), node_id=1, cluster_id="raftlog") as st:
        st.save(hard_state=HardState(1, 1, 1), first_index=1,
                records=RecordBatch.encode(1, KIND_DATA, [b"keep"]))
        st.save(first_index=2, records=RecordBatch.encode(1, KIND_DATA, [b"big" * 20000, b"big" * 20000]))
        st.save(truncate_from=2, first_index=2, records=RecordBatch.encode(1, KIND_DATA, [b"small"]))
        st.save(hard_state=HardState(2, 1, 1))      # two more transactions: the new pages are taken
        st.save(hard_state=HardState(3, 1, 1))      # from the front, the freed overflow pages stay at the end
    size = (d / "data.mdb").stat().st_size
    psize = read_data_file(str(d)).meta.psize
    shortest = size
    while shortest > psize:
        trial = tmp_path / f"cut-{shortest - psize}"
        shutil.copytree(d, trial)
        os.truncate(trial / "data.mdb", shortest - psize)
        try:
            read_data_file(str(trial))              # plain reads only: safe in this process
        except raftlog.DataDirError:
            break
        shortest -= psize
    assert shortest < size, "the freed overflow pages at the end should be cuttable"
    for cut, accepted in ((shortest, True), (shortest - psize, False)):
        trial = tmp_path / f"run-{cut}"
        shutil.copytree(d, trial)
        os.truncate(trial / "data.mdb", cut)
        # A separate process: were the check wrong, LMDB would die of SIGBUS, not this test run.
        out = subprocess.run([sys.executable, "-m", "raftlog", "inspect", str(trial), "--json"],
                             capture_output=True, text=True, timeout=60)
        if accepted:
            assert out.returncode == 0, out.stderr
            assert [e["index"] for e in json.loads(out.stdout)["entries"]] == [1, 2]
        else:
            assert out.returncode == 1 and f"it ends at {cut} bytes" in out.stderr, out.stderr


def test_a_hard_state_past_the_log_is_refused_on_open(made, tmp_path):
    """The commit index is saved with the entries; one past the last entry means acknowledged entries are gone."""
    d = tmp_path / "d"
    shutil.copytree(made, d)
    env = lmdb.open(str(d), max_dbs=4)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"hard_state", struct.pack(">QQQ", 1, 1, 99))       # term 1, vote 1, commit 99
    env.close()
    before = fingerprint(d)
    with pytest.raises(raftlog.DataDirError, match="commit index 99 is past the last entry 6"):
        raftlog.open_sync(str(d))
    assert fingerprint(d) == before


CREATE = """
import os, sys
from raftlog.storage.lmdb import LmdbStorage
os.write(1, b"ready\\n")
LmdbStorage.open(sys.argv[1], node_id=1, cluster_id="c").close()
os.write(1, b"created\\n")
"""
INTERRUPTED_CREATIONS = 5         # kills that must land inside a creation (creating.tmp/ left behind)


def test_a_creation_killed_at_any_moment_is_created_again(tmp_path):
    """SIGKILL at random moments of creating a dir: the next open creates or opens it, never refuses it."""
    rng = random.Random(13)
    interrupted = 0
    for attempt in range(40 * INTERRUPTED_CREATIONS):
        if interrupted >= INTERRUPTED_CREATIONS:
            break
        path = tmp_path / f"node-{attempt}"
        child = subprocess.Popen([sys.executable, "-c", CREATE, str(path)], stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0, 0.02))
            child.send_signal(signal.SIGKILL)
            child.wait()
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        interrupted += path.exists() and "data.mdb" not in os.listdir(path) and os.listdir(path) != []
        with LmdbStorage.open(str(path), node_id=1, cluster_id="c") as s:
            assert s.last_index() == 0
        assert sorted(os.listdir(path)) == ["data.mdb", "lock.mdb", "raftlog.lock"]
    assert interrupted >= INTERRUPTED_CREATIONS, f"only {interrupted} kills landed inside a creation"
