"""`raftlog check DIR [--json]`: an offline verification of a stopped node's data dir (issue 13, item 4).

Exit 0 when every check holds; 1 with each problem listed by index and kind; the dir is
never written. The damage is done the way a disk or a careless tool would: a flipped byte in
one stored record, a deleted key, a snapshot file that changed, a hard state past the log.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import lmdb
import pytest
from click.testing import CliRunner

import raftlog
from raftlog.cli import main
from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.hot import KIND_CONF, KIND_DATA, RecordBatch, encode_record
from raftlog.storage.lmdb import LmdbStorage

from support.corruption import fingerprint

KEY = struct.Struct(">Q")
REPORT_KEYS = {"path", "ok", "identity", "format", "hard_state", "first_index", "last_index", "entries", "snapshot",
               "problems", "problems_omitted"}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real data dir: the leader's no-op at index 1, then ten appends at 2..11."""
    path = tmp_path_factory.mktemp("made") / "d"
    with raftlog.open_sync(str(path)) as log:
        for i in range(10):
            log.append(b"payload-%d" % i)
    return path


def copy(made: Path, tmp_path: Path) -> Path:
    d = tmp_path / "d"
    shutil.copytree(made, d)
    return d


def tamper(d: Path, change) -> None:
    """Change the stored log behind raftlog's back with plain py-lmdb: change(txn, log_db, meta_db)."""
    env = lmdb.open(str(d), max_dbs=4)
    with env.begin(write=True) as txn:
        change(txn, env.open_db(b"log", txn=txn, create=False), env.open_db(b"meta", txn=txn, create=False))
    env.close()


def check(d: Path, *args: str):
    before = fingerprint(d)
    result = CliRunner().invoke(main, ["check", str(d), *args])
    assert fingerprint(d) == before, "check wrote to the data dir"
    assert "Traceback" not in result.output
    return result


def problems(d: Path) -> list[tuple[str, int]]:
    result = check(d, "--json")
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS
    assert result.exit_code == (0 if report["ok"] else 1)
    return [(p["kind"], p["index"]) for p in report["problems"]]


def test_a_clean_dir_passes(made, tmp_path):
    d = copy(made, tmp_path)
    result = check(d)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "ok: every check holds"
    report = json.loads(check(d, "--json").stdout)
    assert report["ok"] is True and report["problems"] == [] and report["problems_omitted"] == 0
    assert (report["first_index"], report["last_index"], report["entries"]) == (1, 11, 11)
    assert report["identity"]["node_id"] == 1 and report["identity"]["cluster_id"] == "raftlog"
    assert report["format"] == 1 and report["hard_state"]["commit"] == 11
    # The real command in a process, as an operator runs it.
    out = subprocess.run([sys.executable, "-m", "raftlog", "check", str(d)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_a_flipped_payload_byte_is_named_by_index(made, tmp_path):
    d = copy(made, tmp_path)

    def flip(txn, log_db, meta_db) -> None:
        record = bytearray(txn.get(KEY.pack(5), db=log_db))
        record[-2] ^= 0x01                      # inside the payload: only the CRC can tell
        txn.put(KEY.pack(5), bytes(record), db=log_db)
    tamper(d, flip)
    assert problems(d) == [("crc", 5)]
    result = check(d)
    assert result.exit_code == 1
    assert "index 5: crc: corrupt log entry at index 5" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 problem"


def test_a_missing_entry_is_named_as_a_gap(made, tmp_path):
    d = copy(made, tmp_path)
    tamper(d, lambda txn, log_db, meta_db: txn.delete(KEY.pack(7), db=log_db))
    assert problems(d) == [("gap", 7)]
    assert "index 7: gap: entry 7 is missing" in check(d).stdout
    # raftlog.open_sync meets it too (the bounds check of every open), not silently.
    with pytest.raises(raftlog.CorruptLogError):
        raftlog.open_sync(str(d))


def test_several_problems_are_all_listed(made, tmp_path):
    d = copy(made, tmp_path)

    def damage(txn, log_db, meta_db) -> None:
        txn.delete(KEY.pack(3), db=log_db)
        txn.delete(KEY.pack(4), db=log_db)
        txn.put(KEY.pack(6), b"\x00" * 5, db=log_db)                        # not a record at all
        txn.put(KEY.pack(9), encode_record(1, KIND_CONF, b"not a configuration"), db=log_db)
        txn.put(KEY.pack(10), encode_record(0, KIND_DATA, b"term went back"), db=log_db)
    tamper(d, damage)
    assert problems(d) == [("gap", 3), ("crc", 6), ("conf", 9), ("term", 10)]
    assert "index 3: gap: entries 3 to 4 are missing" in check(d).stdout


def test_a_hard_state_past_the_log_is_listed(made, tmp_path):
    d = copy(made, tmp_path)
    tamper(d, lambda txn, log_db, meta_db: txn.put(b"hard_state", struct.pack(">QQQ", 1, 1, 40), db=meta_db))
    assert problems(d) == [("hard_state", None)]
    assert "-: hard_state: commit index 40 is past the last entry 11" in check(d).stdout


def test_the_snapshot_file_size_and_crc32_are_checked(tmp_path):
    d = tmp_path / "d"
    conf = ConfState((1,))
    with LmdbStorage.open(str(d), node_id=1, cluster_id="raftlog") as st:
        st.save(hard_state=HardState(1, 1, 3), first_index=1, conf_state=conf,
                records=RecordBatch.encode(1, KIND_DATA, [b"a", b"b", b"c"]))
        meta = st.save_snapshot(SnapshotMeta(3, 1, conf), b"the state at 3")
        file = Path(st.snapshot_path())
    assert meta.crc32 == zlib.crc32(b"the state at 3")
    assert problems(d) == []
    file.write_bytes(b"the state at 4")                     # same size, another crc32
    assert problems(d) == [("snapshot", 3)]
    assert "has crc32" in check(d).stdout
    file.write_bytes(b"short")
    assert problems(d) == [("snapshot", 3)]
    assert "holds 5 bytes, the record says 14" in check(d).stdout
    os.remove(file)
    assert problems(d) == [("snapshot", 3)]


def test_a_missing_dir_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["check", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "nothing").exists()
