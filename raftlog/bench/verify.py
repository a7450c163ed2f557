"""After a run: every node's log identical over the committed range, every acknowledged request in place."""
from __future__ import annotations

from raftlog.bench.stats import Stats
from raftlog.hot import RecordBatch


def verify(data_dirs: dict[int, str], stats: Stats, pools: list[list[RecordBatch]],
           chunk: int = 1 << 15) -> tuple[bool, str]:
    """Offline, after the nodes stopped: logs identical over the committed range, every ack's payloads in place.

    `data_dirs` maps node ids to their data dirs. The committed range is `[1, C]` with C the
    highest commit index any node saved; every node must hold it. Records are compared as stored
    bytes (term, kind, CRC and payload);
    an acknowledged request must hold its pool batch's payloads, restamped with the term
    found there, at `[first_index, first_index + count)`.
    """
    from raftlog.storage.lmdb import LmdbStorage
    stores = {}
    try:
        for i, data_dir in data_dirs.items():
            stores[i] = LmdbStorage.open(data_dir, node_id=None, cluster_id=None, readonly=True)
        commit = max(s.hard_state().commit for s in stores.values())
        for i, s in stores.items():
            if s.last_index() < commit:
                return False, f"node {i} holds entries up to {s.last_index()}, the commit index is {commit}"
        ref_id = max(stores, key=lambda i: stores[i].hard_state().commit)
        ref = stores[ref_id]
        acks = sorted(stats.acks)
        k = 0
        prev_end = 0
        lo = 1
        while lo <= commit:
            hi = min(commit + 1, lo + chunk)
            batch = ref.records(lo, hi)
            hi = lo + len(batch)
            buf = bytes(batch.buffer)
            for i, s in stores.items():
                if i != ref_id and bytes(s.records(lo, hi).buffer) != buf:
                    return False, f"node {i} differs from node {ref_id} in [{lo}, {hi})"
            while k < len(acks) and acks[k][0] < hi:
                first, client, slot = acks[k]
                want = pools[client][slot]
                n = len(want)
                if first < prev_end:
                    return False, f"two acknowledged requests overlap at index {first}"
                if first + n - 1 > commit:
                    return False, f"acknowledged entries [{first}, {first + n}) beyond the commit index {commit}"
                if first < lo or first + n > hi:
                    got = ref.records(first, first + n)   # straddles a chunk: read it alone
                else:
                    got = batch.slice(first - lo, first - lo + n)
                if len(got) != n or bytes(got.buffer) != bytes(want.restamp(got.term(0)).buffer):
                    return False, f"the request acknowledged at index {first} is not what the log holds there"
                prev_end = first + n
                k += 1
            lo = hi
        if k != len(acks):
            return False, f"{len(acks) - k} acknowledged requests lie beyond the commit index {commit}"
        logs = "log of 1 node checked" if len(stores) == 1 else f"logs of {len(stores)} nodes identical"
        return True, (f"{logs} over [1, {commit}]; "
                      f"{len(acks)} acknowledged requests in place")
    finally:
        for s in stores.values():
            s.close()
