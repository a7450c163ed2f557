"""Crash safety of LmdbStorage: a writer process SIGKILLed at random moments loses no saved batch
and never leaves a torn one.

The child appends numbered batches (sync=True, a tiny initial map so it also grows the map
while being killed) and reports each batch on its stdout only after `save` returned. Each
payload says `batch:position:size`, so after every kill the parent can check that the log is
exactly batches 1..K, each complete, that every reported batch is there byte for byte, and
that the hard state saved in the same transaction matches the last batch.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import pytest

from raftlog.storage.lmdb import LmdbStorage

MIN_KILLS = 24                    # kills at least
MID_WRITE_KILLS = MIN_KILLS // 2  # of which at least this many land while the child is writing
MAX_KILLS = 10 * MIN_KILLS        # kills at most, while too few landed mid-write (a loaded machine starts slowly)

CHILD = textwrap.dedent("""
    import os, random, sys, zlib
    from raftlog.core.messages import HardState
    from raftlog.hot import KIND_DATA, RecordBatch
    from raftlog.storage.lmdb import LmdbStorage

    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    s = LmdbStorage.open(path, node_id=1, cluster_id="crash", map_size=64 << 10)
    last = s.last_index()
    batch_id = int(s.records(last, last + 1).payload(0).split(b":")[0]) + 1 if last else 1
    os.write(1, b"ready\\n")
    while True:
        n = rng.choice([1, 2, 5, 16, 64, 200])
        pad = b"x" * rng.randint(0, 200)
        payloads = [b"%d:%d:%d:" % (batch_id, i, n) + pad for i in range(n)]
        term = 1 + batch_id // 16
        records = RecordBatch.encode(term, KIND_DATA, payloads)
        first = last + 1
        last = first + n - 1
        s.save(first_index=first, records=records, hard_state=HardState(term, 1, last))
        # One short write per line: atomic on a pipe, so a kill never leaves half a report.
        os.write(1, b"%d %d %d %d\\n" % (batch_id, first, last, zlib.crc32(records.buffer)))
        batch_id += 1
""")


def check_log(path: str, reported: dict[int, tuple[int, int, int]], since: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """Assert the log is batches 1..K, each whole, holding every reported batch; return (K + 1, last + 1).

    `since` = (batch, index) where a previous check ended: the batches before it were
    already walked, so only their CRCs are re-checked (every record is still parsed).
    """
    with LmdbStorage.open(path, node_id=1, cluster_id="crash") as s:
        last = s.last_index()
        assert s.first_index() == 1
        if reported:
            assert last >= max(r[1] for r in reported.values()), "a reported batch was lost"
        assert s.hard_state().commit == last, "hard state not saved with its batch"
        assert s.log_index().last_index == last            # every CRC checked
        expect_batch, start = since
        assert last + 1 >= start, "the log shrank"
        entries = s.records(start, last + 1).entries(start)
        assert len(entries) == last + 1 - start
        expect_pos, size, batch_first = 0, None, start
        for index, _term, _kind, payload in entries:
            b, pos, n = (int(x) for x in payload.split(b":")[:3])
            if expect_pos == 0:
                assert b == expect_batch, f"entry {index}: batch {b}, expected batch {expect_batch} to start"
                size, batch_first = n, index
            assert (b, pos, n) == (expect_batch, expect_pos, size), f"entry {index}: torn batch"
            expect_pos += 1
            if expect_pos == size:
                if b in reported:
                    assert reported[b][:2] == (batch_first, index)
                expect_batch, expect_pos = expect_batch + 1, 0
        assert expect_pos == 0, f"the last batch {expect_batch} is partial"
        for b, (first, stop, crc) in reported.items():
            if b >= since[0]:
                assert zlib.crc32(s.records(first, stop + 1).buffer) == crc, f"batch {b} changed"
        return expect_batch, last + 1


@pytest.mark.process
def test_sigkill_never_loses_or_tears_a_batch(tmp_path):
    """SIGKILL at random moments (seeded): MIN_KILLS kills at least, and more until enough landed mid-write."""
    path = str(tmp_path / "node")
    rng = random.Random(20240601)
    reported: dict[int, tuple[int, int, int]] = {}
    kills = kills_while_writing = 0
    since = (1, 1)
    while kills < MAX_KILLS and (kills < MIN_KILLS or kills_while_writing < MID_WRITE_KILLS
                                 or len(reported) <= MIN_KILLS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, path, str(kills)], stdout=subprocess.PIPE)
        try:
            if rng.random() < 0.15:
                time.sleep(rng.uniform(0, 0.3))            # may die while opening or creating
            else:
                assert child.stdout.readline() == b"ready\n"
                time.sleep(rng.uniform(0, 0.25))
            child.send_signal(signal.SIGKILL)
            out = child.stdout.read()
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        kills += 1
        assert child.returncode == -signal.SIGKILL, "the writer stopped before it was killed"
        lines = [line for line in out.split(b"\n") if line and line != b"ready"]
        kills_while_writing += bool(lines)
        for line in lines:
            b, first, last, crc = (int(x) for x in line.split())
            reported[b] = (first, last, crc)
        since = check_log(path, reported, since)
        assert since[0] > max(reported, default=0)
    assert check_log(path, reported) == since              # a last walk over the whole log
    print(f"\n{kills} kills, {kills_while_writing} while the child was writing; {len(reported)} batches reported")
    assert kills_while_writing >= MID_WRITE_KILLS, f"only {kills_while_writing} of {kills} kills landed mid-write"
    assert len(reported) > MIN_KILLS, f"only {len(reported)} batches reported in {kills} kills"


def test_checker_catches_a_torn_batch(tmp_path):
    """The check above is not vacuous: a batch cut in two is reported."""
    from raftlog.core.messages import HardState
    from raftlog.hot import KIND_DATA, RecordBatch

    path = str(tmp_path / "node")
    whole = RecordBatch.encode(1, KIND_DATA, [b"1:%d:3:" % i for i in range(3)])
    torn = RecordBatch.encode(1, KIND_DATA, [b"2:%d:4:" % i for i in range(2)])
    with LmdbStorage.open(path, node_id=1, cluster_id="crash") as s:
        s.save(first_index=1, records=whole, hard_state=HardState(1, 1, 3))
    assert check_log(path, {1: (1, 3, zlib.crc32(whole.buffer))}) == (2, 4)
    with LmdbStorage.open(path, node_id=1, cluster_id="crash") as s:
        s.save(first_index=4, records=torn, hard_state=HardState(1, 1, 5))
    with pytest.raises(AssertionError, match="partial"):
        check_log(path, {})
    with pytest.raises(AssertionError, match="lost"):
        check_log(path, {3: (6, 9, 0)})
