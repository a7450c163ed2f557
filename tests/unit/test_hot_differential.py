"""Differential tests: random operation sequences and byte streams through the Cython module and
its pure twin, comparing every result and every exception (fixtures both_log, both_codec)."""
from __future__ import annotations

import random
from array import array
from types import ModuleType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.hot_strategies import U64, error_type, encode, frame_args, normalize, outcome

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

INDEX = st.integers(-2, 40)
TERM = st.integers(0, 6)
TERMS = st.lists(TERM, max_size=8).map(sorted)
ANY_TERMS = st.lists(TERM, max_size=8)
AS = st.sampled_from(["array", "list"])

LOG_OPS = st.one_of(
    st.tuples(st.just("append"), TERM, st.integers(-1, 4)),
    st.tuples(st.just("extend"), ANY_TERMS, AS),
    st.tuples(st.just("truncate_from"), INDEX),
    st.tuples(st.just("compact_to"), INDEX),
    st.tuples(st.just("reset"), st.integers(-1, 20), st.integers(-1, 6)),
    st.tuples(st.just("term_at"), st.one_of(INDEX, st.sampled_from([2**63, 2**70, -(2**70)]))),
    st.tuples(st.just("terms"), INDEX, INDEX),
    st.tuples(st.just("first_index_of_term"), INDEX),
    st.tuples(st.just("find_conflict_by_term"), INDEX, st.integers(-1, 7)),
    st.tuples(st.just("match_append"), INDEX, st.integers(-1, 7), TERMS, st.integers(-1, 40), AS, st.booleans()),
)


def run_op(mod: ModuleType, log: object, op: tuple) -> object:
    """Apply one operation to `log`; match_append may also apply its answer, as a follower would."""
    name, *args = op
    if name == "extend":
        terms, kind = args
        return log.extend(array("Q", terms) if kind == "array" else terms)
    if name == "match_append":
        prev_index, prev_term, terms, commit, kind, apply = args
        result = mod.match_append(log, prev_index, prev_term, array("Q", terms) if kind == "array" else terms, commit)
        if apply and result[0]:
            if result[1]:
                log.truncate_from(result[1])
            log.extend(array("Q", terms[result[2]:]))
        return result
    if name == "reset":
        return log.reset(*args)
    return getattr(log, name)(*args)


def state(log: object) -> tuple:
    """Everything observable about a LogIndex."""
    return (len(log), log.snapshot_index, log.snapshot_term, log.first_index, log.last_index, log.last_term,
            log.terms(log.first_index, log.last_index + 1).tolist())


@SETTINGS
@given(start=st.tuples(st.integers(0, 5), TERM), ops=st.lists(LOG_OPS, max_size=40))
def test_log_operation_sequences(both_log: tuple[ModuleType, ModuleType], start: tuple[int, int],
                                 ops: list[tuple]) -> None:
    logs = [mod.LogIndex(*start) for mod in both_log]
    for op in ops:
        results = [outcome(lambda m=mod, log=log, op=op: run_op(m, log, op)) for mod, log in zip(both_log, logs)]
        assert results[0] == results[1], op
        assert state(logs[0]) == state(logs[1]), op


@SETTINGS
@given(matches=st.lists(st.one_of(U64, st.integers(-5, 5), st.integers(2**64, 2**66)), min_size=0, max_size=10),
       outgoing=st.lists(st.integers(0, 50), max_size=5), as_array=st.booleans())
def test_quorum_rules(both_log: tuple[ModuleType, ModuleType], matches: list[int], outgoing: list[int],
                      as_array: bool) -> None:
    if as_array and all(0 <= m < 2**64 for m in matches):
        matches = array("Q", matches)
    results = [(outcome(lambda mod=mod: mod.quorum_commit(matches)),
                outcome(lambda mod=mod: mod.joint_quorum_commit(matches, outgoing)))
               for mod in both_log]
    assert results[0] == results[1]


@SETTINGS
@given(term=st.one_of(U64, st.integers(-3, -1), st.integers(2**64, 2**65)), kind=st.integers(-1, 5),
       payloads=st.lists(st.one_of(st.binary(max_size=30), st.binary(max_size=30).map(bytearray)), max_size=5))
def test_encode_records(both_codec: tuple[ModuleType, ModuleType], term: int, kind: int, payloads: list) -> None:
    results = [outcome(lambda mod=mod: mod.encode_records(term, kind, payloads)) for mod in both_codec]
    assert results[0] == results[1]


@SETTINGS
@given(args=frame_args(), split=st.lists(st.integers(0, 400), max_size=4))
def test_every_frame_encodes_and_decodes_alike(both_codec: tuple[ModuleType, ModuleType], args: tuple,
                                               split: list[int]) -> None:
    encoded = [encode(mod, *args) for mod in both_codec]
    assert encoded[0] == encoded[1]
    frame = encoded[0]
    cuts = sorted({min(c, len(frame)) for c in split} | {0, len(frame)})
    decoded = []
    for mod in both_codec:
        decoder = mod.FrameDecoder()
        frames = [f for lo, hi in zip(cuts, cuts[1:]) for f in decoder.feed(frame[lo:hi])]
        assert decoder.buffered == 0
        assert len(frames) == 1
        decoded.append(normalize(frames[0], mod))
    assert decoded[0] == decoded[1]


@st.composite
def streams(draw: st.DrawFn, both: tuple[ModuleType, ModuleType]) -> bytes:
    """Valid frames, possibly with a few bytes flipped, cut or inserted."""
    frames = [encode(both[1], *draw(frame_args())) for _ in range(draw(st.integers(0, 4)))]
    data = bytearray(b"".join(frames))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@SETTINGS
@given(data=st.data(), cuts=st.lists(st.integers(0, 2000), max_size=6), max_frame=st.sampled_from([64, 1 << 20]))
def test_byte_streams_split_at_random_points(both_codec: tuple[ModuleType, ModuleType], data: st.DataObject,
                                             cuts: list[int], max_frame: int) -> None:
    stream = data.draw(streams(both_codec))
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[lo:hi] for lo, hi in zip(points, points[1:])]
    per_impl = []
    for mod in both_codec:
        decoder = mod.FrameDecoder(max_frame)
        results = []
        for chunk in chunks:
            results.append(outcome(lambda decoder=decoder, chunk=chunk: decoder.feed(chunk), mod))
            results.append(decoder.buffered)
            if results[-2][0] == "error":
                break
        per_impl.append(results)
    assert per_impl[0] == per_impl[1]


@SETTINGS
@given(raw=st.binary(max_size=120), verify=st.booleans(), lo=st.integers(-4, 6), hi=st.integers(-4, 6),
       first=st.integers(0, 2**64))
def test_record_batches_of_random_bytes(both_codec: tuple[ModuleType, ModuleType], raw: bytes, verify: bool,
                                        lo: int, hi: int, first: int) -> None:
    def probe(mod: ModuleType) -> list:
        batch = mod.RecordBatch(raw, verify=verify)
        part = batch.slice(lo, hi)
        return [len(batch), batch.nbytes, batch.terms(), batch.entries(first), part.entries(0),
                outcome(lambda: part.items(first)), part.prefix_count(40), part.restamp(3).entries(1),
                outcome(lambda: batch.payload(lo))]
    results = [outcome(lambda m=mod: probe(m), mod) for mod in both_codec]
    assert results[0] == results[1]


@SETTINGS
@given(values=st.lists(st.one_of(U64, st.integers(-3, -1), st.integers(2**64, 2**65)), min_size=1, max_size=12),
       name=st.sampled_from(["appended", "read", "status", "entries", "raft"]))
def test_encoders_raise_the_same_errors(both_codec: tuple[ModuleType, ModuleType], values: list[int],
                                        name: str) -> None:
    def call(mod: ModuleType) -> bytes:
        v = values * 11
        if name == "appended":
            return mod.encode_appended(v[0], v[1], v[2])
        if name == "read":
            return mod.encode_read(v[0], v[1], v[2], v[3])
        if name == "status":
            return mod.encode_status(v[0])
        if name == "entries":
            return mod.encode_entries(v[0], v[1], v[2:], b"")
        return mod.encode_raft(v[0], *v[1:7], False, v[7], v[8])
    results = [error_type(outcome(lambda m=mod: call(m))) for mod in both_codec]
    assert results[0] == results[1]


@SETTINGS
@given(ids=st.lists(st.one_of(U64, st.integers(-2, -1)), max_size=8),
       counts=st.lists(st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32, 2**33)), max_size=8),
       first=st.one_of(U64, st.integers(2**64 - 8, 2**64)))
def test_appended_runs_agree(both_codec: tuple[ModuleType, ModuleType], ids: list[int], counts: list[int],
                             first: int) -> None:
    results = [error_type(outcome(lambda m=mod: m.encode_appended_run(ids, counts, first))) for mod in both_codec]
    assert results[0] == results[1]


def test_record_crcs_agree_at_every_length(both_codec: tuple[ModuleType, ModuleType]) -> None:
    """The extension's table-driven CRC-32 equals zlib's (the twin).

    Checked across its 16/8/1-byte steps and its zlib cut-over.
    """
    rng = random.Random(5)
    lengths = list(range(0, 300)) + [2040, 2043, 2044, 2045, 2048, 2049, 5000]
    for n in lengths:
        data = rng.randbytes(n)
        payloads = [data, data[: n // 2], bytearray(data)]
        encoded = [mod.encode_records(3, 1, payloads) for mod in both_codec]
        assert encoded[0] == encoded[1], n
        restamped = [bytes(mod.RecordBatch(encoded[0]).restamp(9).buffer) for mod in both_codec]
        assert restamped[0] == restamped[1], n
