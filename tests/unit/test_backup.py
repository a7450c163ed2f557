"""The backup file format and its refusals, the live copy's state, and restore's rules (raftlog/storage/backup_*.py,
restore.py), in one process: the copy runs on a closed data dir here, live in tests/process/test_backup_process.py."""
from __future__ import annotations

import json
import os
import struct
import zlib

import pytest

from raftlog.core import confchange
from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.errors import DataDirError, RaftlogError
from raftlog.hot import KIND_CONF, KIND_DATA, RecordBatch
from raftlog.storage.backup_copy import LENGTH, CopyState, copy_to
from raftlog.storage.backup_file import HEADER_SIZE, BackupFileError, BackupHeader, BackupWriter, read_backup
from raftlog.storage.check import check_data_dir
from raftlog.storage.lmdb import LmdbStorage
from raftlog.storage.restore import derived_cluster_id, restore
from raftlog.storage.snapshot_files import SnapshotFiles

from support.async_wait import until

OLD = ConfState(voters=(1, 2, 3), addresses=((1, "127.0.0.1:1"), (2, "127.0.0.1:2"), (3, "127.0.0.1:3")))
NEW_PEERS = {1: "127.0.0.1:11", 2: "127.0.0.1:12", 3: "127.0.0.1:13"}


def make_source(path: str, *, entries: int = 20, commit: int = 15, term: int = 4, compact_to: int = 0) -> None:
    """A closed data dir of node 2: `entries` data entries (terms 1 and `term`), commit `commit`, term `term`."""
    with LmdbStorage.open(path, node_id=2, cluster_id="old") as s:
        half = entries // 2
        s.save(hard_state=HardState(term, 2, commit), first_index=1, conf_state=OLD,
               records=RecordBatch.concat([RecordBatch.encode(1, KIND_DATA, [b"a%d" % i for i in range(1, half + 1)]),
                                           RecordBatch.encode(term, KIND_DATA,
                                                              [b"a%d" % i for i in range(half + 1, entries + 1)])]))
        if compact_to:
            s.compact(SnapshotMeta(compact_to, 1, OLD))
        s.save_incarnations({1: 11, 3: 33})


def make_backup(source: str, path: str) -> BackupHeader:
    """A backup file of the closed data dir `source`, written as the node streams it and the client writes it."""
    raw_path = path + ".raw"
    with open(raw_path, "wb") as f:
        state = copy_to(source, f.fileno())
    with open(raw_path, "rb") as f:
        raw = f.read()
    os.remove(raw_path)
    (length,) = LENGTH.unpack_from(raw)
    assert CopyState(**json.loads(raw[LENGTH.size:LENGTH.size + length])) == state
    body = raw[LENGTH.size + length:]
    snapshot, data = body[:state.snapshot_size], body[state.snapshot_size:]
    sent = {**state.__dict__, "data_size": len(data), "data_crc32": zlib.crc32(data)}
    if state.snapshot_file is None:
        del sent["snapshot_file"], sent["snapshot_size"]
    else:
        sent["snapshot_crc32"] = zlib.crc32(snapshot)
    header = BackupHeader.received(sent)
    with BackupWriter(path) as writer:
        for k in range(0, len(body), 4096):
            writer.write(body[k:k + 4096])
        writer.finish(header)
    return header


@pytest.fixture
def backup(tmp_path) -> tuple[str, BackupHeader]:
    make_source(str(tmp_path / "src"))
    path = str(tmp_path / "log.backup")
    return path, make_backup(str(tmp_path / "src"), path)


# ---------------------------------------------------------------- the copy and the file

def test_copy_state_is_the_durable_commit_and_its_term(tmp_path, backup):
    _, header = backup
    assert (header.index, header.term, header.hard_term) == (15, 4, 4)
    assert (header.node_id, header.cluster_id, header.first_index, header.last_index) == (2, "old", 1, 20)


SNAPSHOT_BYTES = b"the state at 12" * 100


def make_snapshotted_source(path: str, *, snapshot_at: int = 12, compact_to: int = 10, commit: int = 15) -> None:
    """make_source's dir compacted to `compact_to` behind a snapshot FILE at `snapshot_at` (as retention leaves it)."""
    make_source(path, commit=commit)
    with LmdbStorage.open(path, node_id=2, cluster_id="old") as s:
        s.save_snapshot(SnapshotMeta(snapshot_at, 4 if snapshot_at > 10 else 1, OLD), SNAPSHOT_BYTES)
        s.compact_log(compact_to)


def test_backup_of_a_log_compacted_behind_a_snapshot_file_carries_the_file(tmp_path):
    make_snapshotted_source(str(tmp_path / "src"))
    path = str(tmp_path / "log.backup")
    header = make_backup(str(tmp_path / "src"), path)
    assert header.snapshot_file == SnapshotFiles.name_for(12, 4) and header.version == 2
    assert (header.snapshot_size, header.snapshot_crc32) == (len(SNAPSHOT_BYTES), zlib.crc32(SNAPSHOT_BYTES))
    assert (header.index, header.term, header.first_index, header.last_index) == (15, 4, 11, 20)
    assert read_backup(path) == header
    assert os.path.getsize(path) == HEADER_SIZE + len(SNAPSHOT_BYTES) + header.data_size
    with open(path, "rb") as f:
        assert struct.unpack_from(">I", f.read(HEADER_SIZE), 8)[0] == 2
        assert f.read(len(SNAPSHOT_BYTES)) == SNAPSHOT_BYTES


def test_the_backup_index_is_at_least_the_snapshots(tmp_path):
    """A snapshot covers applied entries: committed even when the durable commit index has not caught up yet."""
    make_snapshotted_source(str(tmp_path / "src"), snapshot_at=18, compact_to=16, commit=15)
    header = make_backup(str(tmp_path / "src"), str(tmp_path / "log.backup"))
    assert (header.index, header.term) == (18, 4)


def test_a_backup_without_a_snapshot_file_is_still_version_1_byte_for_byte(backup):
    path, header = backup
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    magic, version, length = struct.unpack_from(">8sII", head)
    assert (magic, version, header.version) == (b"RLOGBKUP", 1, 1)
    assert sorted(json.loads(head[16:16 + length])) == sorted(
        ["index", "term", "hard_term", "cluster_id", "node_id", "first_index", "last_index", "data_size",
         "data_crc32", "created_at", "raftlog"])


def test_a_copy_whose_snapshot_file_is_not_the_recorded_one_is_refused(tmp_path):
    src = str(tmp_path / "src")
    make_snapshotted_source(src)
    name = SnapshotFiles.name_for(12, 4)
    with open(os.path.join(src, "snapshots", name), "r+b") as f:
        f.write(b"X")
    with pytest.raises(RaftlogError, match="is not the one its record describes"), \
            open(os.devnull, "wb") as sink:
        copy_to(src, sink.fileno())


def test_backup_file_round_trips_and_leaves_no_temporary_file(tmp_path, backup):
    path, header = backup
    assert read_backup(path) == header
    assert os.path.getsize(path) == HEADER_SIZE + header.data_size
    assert not os.path.exists(path + ".tmp")


def test_writer_refuses_a_body_that_is_not_the_members_and_leaves_nothing(tmp_path, backup):
    _, header = backup
    path = str(tmp_path / "other.backup")
    with pytest.raises(BackupFileError, match="received 3 bytes"):
        with BackupWriter(path) as writer:
            writer.write(b"abc")
            writer.finish(header)
    assert not os.path.exists(path) and not os.path.exists(path + ".tmp")


def damaged(path: str, how: str) -> None:
    """Damage the backup file at `path`: truncate it, extend it, flip a body byte or a header byte, or the magic."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "truncated":
            f.truncate(size - 100)
        elif how == "too long":
            f.seek(0, 2)
            f.write(b"\0")
        elif how == "header only":
            f.truncate(100)
        else:
            snapshot_size = BackupHeader.from_bytes(f.read(HEADER_SIZE), path).snapshot_size if size > 100 else 0
            at = {"body": HEADER_SIZE + snapshot_size + 200, "snapshot": HEADER_SIZE + 2, "header": 20, "magic": 0}[how]
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("how, message", [
    ("truncated", "is truncated"), ("too long", "is too long"), ("header only", "shorter than the 4096-byte header"),
    ("body", "is damaged: its data has crc32"), ("header", "damaged header"), ("magic", "not a raftlog backup"),
])
@pytest.mark.parametrize("with_snapshot", [False, True])
def test_a_damaged_backup_is_refused_in_one_line(tmp_path, backup, how, message, with_snapshot):
    path, _ = backup
    if with_snapshot:
        make_snapshotted_source(str(tmp_path / "snap-src"))
        path = str(tmp_path / "snap.backup")
        make_backup(str(tmp_path / "snap-src"), path)
    damaged(path, how)
    with pytest.raises(BackupFileError, match=message) as refused:
        read_backup(path)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(f"backup file {path}: ")


def test_a_damaged_snapshot_part_is_refused_by_the_file_and_the_restore(tmp_path):
    make_snapshotted_source(str(tmp_path / "src"))
    path = str(tmp_path / "log.backup")
    make_backup(str(tmp_path / "src"), path)
    damaged(path, "snapshot")
    with pytest.raises(BackupFileError, match="is damaged: its snapshot file has crc32") as refused:
        read_backup(path)
    assert "\n" not in str(refused.value)
    with pytest.raises(BackupFileError, match="its snapshot file has crc32"):
        restore(path, str(tmp_path / "r1"), 1, NEW_PEERS)
    assert not os.path.exists(tmp_path / "r1")


def set_version(path: str, version: int) -> None:
    """Rewrite the backup's format version (the header's crc32 made to match)."""
    with open(path, "r+b") as f:
        head = bytearray(f.read(HEADER_SIZE))
        struct.pack_into(">I", head, 8, version)
        struct.pack_into(">I", head, HEADER_SIZE - 4, zlib.crc32(bytes(head[:HEADER_SIZE - 4])))
        f.seek(0)
        f.write(head)


def test_an_unknown_version_is_refused(backup):
    path, _ = backup
    set_version(path, 3)
    with pytest.raises(BackupFileError, match="format version 3; this raftlog reads versions 1 and 2"):
        read_backup(path)


def test_a_version_that_does_not_fit_its_header_is_refused(tmp_path, backup):
    path, _ = backup
    set_version(path, 2)                   # a version 2 header without the snapshot fields
    with pytest.raises(BackupFileError, match="does not decode"):
        read_backup(path)
    make_snapshotted_source(str(tmp_path / "snap-src"))
    snap = str(tmp_path / "snap.backup")
    make_backup(str(tmp_path / "snap-src"), snap)
    set_version(snap, 1)                   # an older reader's version on a backup with a snapshot part
    with pytest.raises(BackupFileError, match="format version 1 and a header of version 2"):
        read_backup(snap)


# ---------------------------------------------------------------- restore

def test_restore_keeps_the_entries_up_to_the_index_and_appends_the_new_configuration(tmp_path, backup):
    path, header = backup
    target = str(tmp_path / "r1")
    done = restore(path, target, 1, NEW_PEERS)
    assert done.cluster_id == derived_cluster_id(header, NEW_PEERS)
    with LmdbStorage.open(target, node_id=1, cluster_id=done.cluster_id) as s:
        assert (s.first_index(), s.last_index()) == (1, 16)
        kept = s.records(1, 16)
        assert [kept.payload(i) for i in range(15)] == [b"a%d" % i for i in range(1, 16)]
        assert [kept.term(i) for i in range(15)] == [1] * 10 + [4] * 5
        conf_entry = s.records(16, 17)
        assert (conf_entry.kind(0), conf_entry.term(0)) == (KIND_CONF, 4)
        conf, prev, _ = confchange.decode_entry(conf_entry.payload(0))
        new = ConfState(voters=(1, 2, 3), addresses=tuple(sorted(NEW_PEERS.items())))
        assert (conf, prev) == (new, OLD)
        assert s.conf_state() == new
        assert s.hard_state() == HardState(4, 0, 16)
        assert s.incarnations() == {}
        assert s.identity().node_id == 1 and s.identity().incarnation != 0
    report = check_data_dir(target)
    assert report.ok, report.problems


def test_every_member_restored_alike_gets_the_same_cluster_id_and_its_own_incarnation(tmp_path, backup):
    path, _ = backup
    made = [restore(path, str(tmp_path / f"r{i}"), i, NEW_PEERS) for i in NEW_PEERS]
    assert len({m.cluster_id for m in made}) == 1
    incarnations = set()
    for m in made:
        with LmdbStorage.open(m.path, node_id=m.node_id, cluster_id=m.cluster_id) as s:
            incarnations.add(s.identity().incarnation)
    assert len(incarnations) == 3
    other_peers = {**NEW_PEERS, 3: "127.0.0.1:99"}
    assert restore(path, str(tmp_path / "x"), 1, other_peers).cluster_id != made[0].cluster_id
    assert restore(path, str(tmp_path / "y"), 1, NEW_PEERS, "given").cluster_id == "given"


def test_restore_rewrites_a_compaction_points_configuration(tmp_path):
    make_source(str(tmp_path / "src"), compact_to=6)
    path = str(tmp_path / "log.backup")
    make_backup(str(tmp_path / "src"), path)
    done = restore(path, str(tmp_path / "r1"), 1, NEW_PEERS)
    with LmdbStorage.open(done.path, node_id=1, cluster_id=done.cluster_id) as s:
        assert s.first_index() == 7 and s.snapshot_meta().conf_state.voters == (1, 2, 3)
        assert s.snapshot_meta().conf_state.addresses == tuple(sorted(NEW_PEERS.items()))


def test_restore_refuses_a_non_empty_target_and_changes_nothing(tmp_path, backup):
    path, _ = backup
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(DataDirError, match="is not empty") as refused:
        restore(path, str(target), 1, NEW_PEERS)
    assert "\n" not in str(refused.value)
    assert sorted(os.listdir(target)) == ["notes.txt"]


def test_restore_refuses_a_damaged_backup_and_creates_nothing(tmp_path, backup):
    path, _ = backup
    damaged(path, "body")
    with pytest.raises(BackupFileError):
        restore(path, str(tmp_path / "r1"), 1, NEW_PEERS)
    assert not os.path.exists(tmp_path / "r1")


def test_restore_needs_the_node_among_the_peers(tmp_path, backup):
    path, _ = backup
    with pytest.raises(ValueError, match="not one of the peers"):
        restore(path, str(tmp_path / "r9"), 9, NEW_PEERS)


def test_an_interrupted_restore_leaves_no_data_dir_and_can_be_run_again(tmp_path, backup, monkeypatch):
    path, header = backup
    target = str(tmp_path / "r1")
    import raftlog.storage.restore as restore_module

    def copy_then_die(src: str, dest) -> None:
        dest.write(b"half a copy")
        raise KeyboardInterrupt("killed while copying")
    monkeypatch.setattr(restore_module, "copy_body", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        restore(path, target, 1, NEW_PEERS)
    assert "data.mdb" not in os.listdir(target)
    with pytest.raises(FileNotFoundError):
        check_data_dir(target)
    monkeypatch.undo()
    done = restore(path, target, 1, NEW_PEERS)
    assert done.index == header.index and check_data_dir(target).ok


# ---------------------------------------------------------------- restore behind a snapshot file

def test_restore_of_a_log_behind_a_snapshot_file_writes_the_file_with_the_new_configuration(tmp_path):
    make_snapshotted_source(str(tmp_path / "src"))
    path = str(tmp_path / "log.backup")
    header = make_backup(str(tmp_path / "src"), path)
    done = restore(path, str(tmp_path / "r1"), 1, NEW_PEERS)
    new = ConfState(voters=(1, 2, 3), addresses=tuple(sorted(NEW_PEERS.items())))
    with LmdbStorage.open(done.path, node_id=1, cluster_id=done.cluster_id) as s:
        meta = s.snapshot_meta()
        assert (meta.index, meta.term) == (12, 4)
        assert (meta.size, meta.crc32) == (len(SNAPSHOT_BYTES), zlib.crc32(SNAPSHOT_BYTES))
        assert meta.conf_state == new and s.conf_state() == new
        assert s.snapshot_file() == header.snapshot_file and s.snapshot_data() == SNAPSHOT_BYTES
        assert (s.first_index(), s.last_index(), s.hard_state().commit) == (11, 16, 16)
        assert [s.records(11, 16).payload(i) for i in range(5)] == [b"a%d" % i for i in range(11, 16)]
    assert os.listdir(os.path.join(done.path, "snapshots")) == [header.snapshot_file]
    report = check_data_dir(done.path)
    assert report.ok and report.snapshot["file"] == header.snapshot_file, report.problems


def test_restore_refuses_a_backup_whose_snapshot_part_is_missing(tmp_path):
    make_snapshotted_source(str(tmp_path / "src"))
    path = str(tmp_path / "log.backup")
    header = make_backup(str(tmp_path / "src"), path)
    stripped = str(tmp_path / "stripped.backup")
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE + header.snapshot_size)
        data = f.read()
    with BackupWriter(stripped) as writer:        # the same data, without its snapshot part (a version 1 file)
        writer.write(data)
        writer.finish(BackupHeader(**{**header.__dict__, "snapshot_file": None, "snapshot_size": 0,
                                      "snapshot_crc32": 0}))
    with pytest.raises(BackupFileError, match="records the snapshot file of snapshot 12 but carries none"):
        restore(stripped, str(tmp_path / "r1"), 1, NEW_PEERS)
    assert not os.path.exists(tmp_path / "r1" / "data.mdb")


def test_a_restore_killed_after_placing_its_snapshots_can_be_run_again(tmp_path, monkeypatch):
    make_snapshotted_source(str(tmp_path / "src"))
    path = str(tmp_path / "log.backup")
    make_backup(str(tmp_path / "src"), path)
    target = tmp_path / "r1"
    import raftlog.storage.datadir as datadir_module
    real_rename = os.rename

    def die_before_data(src: str, dst: str) -> None:
        if dst.endswith("data.mdb"):
            raise KeyboardInterrupt("killed between the renames")
        real_rename(src, dst)
    monkeypatch.setattr(datadir_module.os, "rename", die_before_data)
    with pytest.raises(KeyboardInterrupt):
        restore(path, str(target), 1, NEW_PEERS)
    monkeypatch.undo()
    assert sorted(os.listdir(target)) == ["creating.tmp", "raftlog.lock", "snapshots"]
    (target / "snapshots" / "snap-0000000000000001-1.bin").write_bytes(b"stray")
    done = restore(path, str(target), 1, NEW_PEERS)
    assert sorted(os.listdir(target / "snapshots")) == [done.backup.snapshot_file]
    assert check_data_dir(str(target)).ok


def test_an_embedded_retained_log_restored_serves_from_its_first_index_and_takes_appends(tmp_path):
    import asyncio

    import raftlog

    async def main() -> None:
        async with raftlog.open(str(tmp_path / "old"), retain_entries=200, sync=False) as log:
            for r in range(40):
                await log.append_many([b"r%02d-%02d" % (r, k) for k in range(25)])
            node = log._node
            await until(lambda: log.first_index > 600 and not node.snapshots.busy and not node.retention.due(),
                        "compaction", seen=lambda: log.first_index)
            first, applied = log.first_index, node.applied_index
            old = [(e.index, e.data) for e in await log.read(first)]
        header = make_backup(str(tmp_path / "old"), str(tmp_path / "log.backup"))
        assert header.snapshot_file is not None and header.index == applied and header.first_index == first
        done = restore(str(tmp_path / "log.backup"), str(tmp_path / "new"), 1, {1: "127.0.0.1:0"})
        assert check_data_dir(done.path).ok
        async with raftlog.open(done.path, cluster_id=done.cluster_id, retain_entries=200, sync=False) as log:
            assert log.first_index == first
            with pytest.raises(raftlog.Compacted):
                await log.read(first - 1)
            got = [(e.index, e.data) for e in await log.read(first) if e.index <= applied]
            assert got == old and got[-1][0] == applied
            index = await log.append(b"after the restore")
            assert index > done.conf_index
            assert (await log.read(index))[0].data == b"after the restore"

    asyncio.run(main())


@pytest.mark.parametrize("snapshot_at, compact_to", [(18, 16), (20, 20)])
def test_restore_behind_a_snapshot_past_the_durable_commit_keeps_what_the_snapshot_covers(tmp_path, snapshot_at,
                                                                                          compact_to):
    """(20, 20): the whole log compacted, as after installing a leader's snapshot: no entry left beside the file."""
    make_snapshotted_source(str(tmp_path / "src"), snapshot_at=snapshot_at, compact_to=compact_to, commit=15)
    path = str(tmp_path / "log.backup")
    header = make_backup(str(tmp_path / "src"), path)
    assert (header.index, header.term) == (snapshot_at, 4)
    done = restore(path, str(tmp_path / "r1"), 1, NEW_PEERS)
    with LmdbStorage.open(done.path, node_id=1, cluster_id=done.cluster_id) as s:
        assert (s.first_index(), s.last_index()) == (compact_to + 1, snapshot_at + 1)
        assert s.hard_state() == HardState(4, 0, snapshot_at + 1)
        assert s.records(snapshot_at + 1, snapshot_at + 2).kind(0) == KIND_CONF
    assert check_data_dir(done.path).ok


def test_the_copy_begins_a_new_transaction_when_its_snapshot_file_was_pruned(tmp_path, monkeypatch):
    src = str(tmp_path / "src")
    make_snapshotted_source(src)
    import raftlog.storage.backup_copy as copy_module
    real_open = copy_module._open_snapshot
    opened: list[bool] = []

    def pruned_once(path, state):
        f = real_open(path, state) if opened else None      # the first transaction's file: gone
        opened.append(f is not None)
        return f
    monkeypatch.setattr(copy_module, "_open_snapshot", pruned_once)
    header = make_backup(src, str(tmp_path / "log.backup"))
    assert opened == [False, True] and header.snapshot_size == len(SNAPSHOT_BYTES)


def test_the_copy_is_refused_when_its_snapshot_file_stays_missing(tmp_path):
    src = str(tmp_path / "src")
    make_snapshotted_source(src)
    os.remove(os.path.join(src, "snapshots", SnapshotFiles.name_for(12, 4)))
    with pytest.raises(RaftlogError, match="snapshot files were replaced 5 times") as refused, \
            open(os.devnull, "wb") as sink:
        copy_to(src, sink.fileno())
    assert "\n" not in str(refused.value)


class Counter:
    """A state machine that snapshots: the sum and count of the numbers appended."""

    def __init__(self) -> None:
        self.total, self.count, self.restored = 0, 0, False

    def apply(self, entry) -> None:
        self.total += int(entry.data)
        self.count += 1

    def snapshot(self) -> bytes:
        return json.dumps([self.total, self.count]).encode()

    def restore(self, f) -> None:
        self.total, self.count = json.loads(f.read())
        self.restored = True


def test_an_embedded_state_machine_restored_from_a_backup_resumes_from_its_snapshot(tmp_path):
    import asyncio

    import raftlog

    opts = dict(snapshot_every=100, snapshot_tail=20, sync=False)

    async def main() -> None:
        machine = Counter()
        async with raftlog.open(str(tmp_path / "old"), state_machine=machine, **opts) as log:
            for r in range(6):
                await log.append_many([b"%d" % (r * 100 + k) for k in range(60)])
            await until(lambda: log.status()["snapshot"]["taken"] >= 2 and not log._node.snapshots.busy,
                        "two snapshots", seen=lambda: log.status()["snapshot"])
            state, first = (machine.total, machine.count), log.first_index
        header = make_backup(str(tmp_path / "old"), str(tmp_path / "log.backup"))
        assert header.snapshot_file is not None and header.first_index == first > 1
        done = restore(str(tmp_path / "log.backup"), str(tmp_path / "new"), 1, {1: "127.0.0.1:0"})
        machine = Counter()
        async with raftlog.open(done.path, state_machine=machine, cluster_id=done.cluster_id, **opts) as log:
            await until(lambda: log.applied_index >= done.conf_index, "the restored log applied",
                        seen=lambda: log.applied_index)
            assert machine.restored and (machine.total, machine.count) == state
            await log.append(b"1000000")
            assert machine.total == state[0] + 1000000

    asyncio.run(main())


def test_a_header_with_fields_this_raftlog_does_not_know_is_refused_in_one_line(backup):
    _, header = backup
    sent = {k: v for k, v in header.to_dict().items() if k not in ("created_at", "raftlog")}
    with pytest.raises(RaftlogError, match="sent a backup with wal_file, which this raftlog does not know"):
        BackupHeader.received({**sent, "wal_file": "x"})
    del sent["data_crc32"]
    with pytest.raises(RaftlogError, match="incomplete backup header"):
        BackupHeader.received(sent)
