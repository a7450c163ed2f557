"""Who may open a data dir and whose it is: validation before mapping, the writer lock, the format and the identity.

A data dir is one LMDB environment (`DIR/data.mdb` and LMDB's reader table `DIR/lock.mdb`;
two named databases `log` and `meta`, the layout is described in raftlog.storage.lmdb)
plus `DIR/snapshots/` and the lock file:

- `DIR/raftlog.lock`: flock()ed by the one writer process (`take_writer_lock`), released by
  the OS when the process dies, so a second writer on the same dir fails at once.
- `meta` keys `format` (layout version, ASCII digits) and `identity` (JSON: cluster_id,
  node_id, created_at): written once, in the first transaction of a new environment.

Opening (`open_environment`) refuses a dir with DataDirError (one line: the dir, what is
wrong, the remedy) before anything in it is written, and before LMDB maps a data file that
could crash the process (LMDB reads its file through a memory map: a page past the end of a
truncated file is SIGBUS, not an error):

1. The dir decides what it is (`validate_data_dir`). Missing or empty: new, and a writable
   open creates it; nothing else is ever taken as new, except a creation that was
   interrupted (below). `data.mdb` missing while `raftlog.lock`, `lock.mdb` or `snapshots/`
   are there: damaged (its log, term and vote are gone), never new. Other files and no
   `data.mdb`: not a raftlog dir.
2. `data.mdb` is checked with plain reads (`read_data_file`): both LMDB meta pages (pages 0
   and 1: page number, meta flag, magic 0xBEEFC0DE, data version 1, page size, last page,
   the trees' root pages within it, transaction ids as LMDB writes them: page i holds the
   even/odd one, one apart, or both 0 in a new file). LMDB uses the meta with the higher
   transaction id, and so does the size check: a file shorter than that meta's last page
   is walked (every page reachable from its trees must lie inside the file) because LMDB
   legitimately leaves freed pages at the end unwritten.
3. The format marker and the identity are read in a readonly environment opened without
   LMDB's lock file (`lock=False` writes nothing, not even `lock.mdb`): an LMDB
   environment without them is another program's data and is refused, never extended
   with raftlog's databases; another node's or cluster's identity, or another format, is
   IdentityMismatch. Only then is the environment opened for real.

Creating a dir is atomic (`_create`): `DIR/creating.tmp/` is made first, then the writer
lock; the environment is built in `creating.tmp/` with its format and identity committed
and fsynced, and only then is its `data.mdb` renamed into the dir (a restore's `snapshots/`
just before it). A process killed on the way leaves `creating.tmp/` (with or without
`raftlog.lock` and a restore's `snapshots/` beside it) and no `data.mdb`:
nothing was stored yet, so the next writable open starts the creation again. `data.mdb`
is never seen without raftlog's identity, and `raftlog.lock` alone still means damaged.

`lock.mdb` missing beside a good `data.mdb` is fine: it is LMDB's reader table, holds no
data, and `mdb_copy` or a plain copy of `data.mdb` (a backup) does not carry it. A writable
open recreates it; a readonly open (inspect, check) then runs without it and creates nothing.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import struct
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional

import lmdb

from raftlog.errors import DataDirError, DataDirLocked, IdentityMismatch, NotADirectory, RaftlogError

log = logging.getLogger("raftlog.storage")

__all__ = ["Identity", "DataFile", "FORMAT_VERSION", "LOCK_FILE", "DATA_FILE", "LMDB_LOCK_FILE", "LOG_DB",
           "META_DB", "take_writer_lock", "release_writer_lock", "validate_data_dir", "read_data_file",
           "open_environment", "last_txnid", "damaged_remedy", "fsync_dir", "create_with",
           "FORMAT_KEY", "IDENTITY_KEY"]

FORMAT_VERSION = 1
LOCK_FILE = "raftlog.lock"        # flock()ed by the one writer process of a data dir
DATA_FILE = "data.mdb"            # LMDB's data file
LMDB_LOCK_FILE = "lock.mdb"       # LMDB's reader table
SNAPSHOT_DIR = "snapshots"
CREATING_DIR = "creating.tmp"     # where a new environment is built before its data.mdb is renamed into the dir
LOG_DB = b"log"                   # the named databases of the environment, created with the identity
META_DB = b"meta"
MAX_DBS = 4

_FORMAT = FORMAT_KEY = b"format"
_IDENTITY = IDENTITY_KEY = b"identity"

NOT_RAFTLOG_REMEDY = "give raftlog an empty or missing dir (nothing in this one was changed)"


def damaged_remedy(node_id: Optional[int]) -> str:
    """What to do about a damaged data dir of node `node_id` (None: not known)."""
    who = str(node_id) if node_id is not None else "<id>"
    return (f"restore it from a backup, or replace this member: `raftlog members remove {who}`, then start it "
            f"on an empty dir with `raftlog node --join` (nothing in this one was changed)")


# ---------------------------------------------------------------- identity

def new_incarnation() -> int:
    """A random data-dir incarnation: 63 bits, never 0."""
    return secrets.randbits(63) | 1


_FIELD_TYPES = {"str": str, "int": int}


@dataclass(frozen=True)
class Identity:
    """Who a data dir belongs to; written once when the dir is created.

    A new field needs only a line here with a default (what older records read as) and its
    value in `new`: the stored JSON holds every field, and records without it still load.
    """

    cluster_id: str
    node_id: int
    created_at: str = ""
    # Random, made with the dir (raftlog.core.incarnations): peers refuse a member that comes
    # back with another. 0 = a dir made before incarnations; a writable open gives it one.
    incarnation: int = 0

    @classmethod
    def new(cls, cluster_id: str, node_id: int) -> "Identity":
        """The identity of a dir created now, with a new random incarnation."""
        return cls(str(cluster_id), node_id, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   new_incarnation())

    def to_json(self) -> bytes:
        """The stored form: every field, keys sorted."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Identity":
        """The inverse of to_json; ValueError when a field without a default is missing or of the wrong type."""
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        values = {}
        for f in fields(cls):
            if f.name in d:
                values[f.name] = _FIELD_TYPES[str(f.type)](d[f.name])
            elif f.default is MISSING:
                raise ValueError(f"no {f.name}")
        return cls(**values)


# ---------------------------------------------------------------- the LMDB file, read without mapping it
# LMDB 0.9 (data version 1) on a 64-bit machine, native byte order; mdb.c names in comments.

_MAGIC = 0xBEEFC0DE               # MDB_MAGIC
_DATA_VERSION = 1                 # MDB_DATA_VERSION
_P_INVALID = (1 << 64) - 1        # P_INVALID: the root of an empty tree
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_META, _P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x20
_F_BIGDATA, _F_SUBDATA, _F_DUPDATA = 0x01, 0x02, 0x04
_PAGE = struct.Struct("=QHHHH")   # MDB_page: mp_pgno, mp_pad, mp_flags, mp_lower, mp_upper
_OVERFLOW_PAGES = struct.Struct("=I")   # MDB_page.mp_pages of an overflow page, at offset 12
_DB = "IHHQQQQQ"                  # MDB_db: md_pad (the page size in the free DB), md_flags, md_depth, branch, leaf,
#                                   overflow pages, entries, md_root
_META = struct.Struct("=IIQQ" + _DB + _DB + "QQ")   # MDB_meta after the page header: magic, version, address,
#                                   mapsize, the free DB, the main DB, mm_last_pg, mm_txnid
_NODE = struct.Struct("=HHHH")    # MDB_node: mn_lo, mn_hi, mn_flags, mn_ksize; key and data follow
_DB_ROOT = struct.Struct("=Q")    # md_root, at offset 40 of an MDB_db
_DB_SIZE = 48
_PGNO = struct.Struct("=Q")
_HEADER = _PAGE.size              # PAGEHDRSZ
_META_END = _HEADER + _META.size
_MIN_PAGE, _MAX_PAGE = 512, 1 << 16


@dataclass(frozen=True)
class MetaPage:
    """One LMDB meta page's fields that say where the environment's data is."""

    page: int                     # 0 or 1
    txnid: int                    # the transaction that wrote it
    last_pg: int                  # the last page in use then
    psize: int                    # the page size
    roots: tuple[int, int]        # the free DB's and the main DB's root pages (P_INVALID: empty)


@dataclass(frozen=True)
class DataFile:
    """A data.mdb that passed read_data_file: its size and the meta LMDB will use."""

    size: int
    meta: MetaPage


class _Refused(Exception):
    """What is wrong with data.mdb (the message), raised inside the checks and turned into DataDirError."""


def _parse_meta(buf: bytes, page: int) -> tuple[Optional[MetaPage], str]:
    """The meta page `page` from its first bytes, or None and why it is not a good one."""
    if len(buf) < _META_END:
        return None, "cut short"
    pgno, _, flags, _, _ = _PAGE.unpack_from(buf)
    (magic, version, _, _, psize, _, _, _, _, _, _, free_root, _, _, _, _, _, _, _, main_root, last_pg,
     txnid) = _META.unpack_from(buf, _HEADER)
    if magic != _MAGIC:
        return None, f"bad magic {magic:#010x}"
    if version != _DATA_VERSION:
        return None, f"LMDB data version {version}, this LMDB reads {_DATA_VERSION}"
    if pgno != page or not flags & _P_META:
        return None, f"page number {pgno} and flags {flags:#x}, not meta page {page}"
    if not (_MIN_PAGE <= psize <= _MAX_PAGE and psize & (psize - 1) == 0):
        return None, f"page size {psize}"
    if last_pg < 1:
        return None, f"last page {last_pg}"
    for root in (free_root, main_root):
        if root != _P_INVALID and not 2 <= root <= last_pg:
            return None, f"a root page {root} outside pages [2, {last_pg}]"
    return MetaPage(page, txnid, last_pg, psize, (free_root, main_root)), ""


def _meta_pages(fd: int, size: int) -> MetaPage:
    """The meta LMDB will use (the higher transaction id), after checking both; _Refused otherwise."""
    first = os.pread(fd, _META_END, 0)
    meta0, why0 = _parse_meta(first, 0)
    if meta0 is None:
        lmdb_magic = first[_HEADER:_HEADER + 4] == struct.pack("=I", _MAGIC)
        if lmdb_magic and len(first) < _META_END:
            raise _Refused(f"is truncated: it ends at {size} bytes, inside its first meta page")
        # Page 0 is bad, so LMDB refuses the file. Tell a damaged page 0 of an LMDB file
        # (page 1 intact at one of the page sizes) from a file that is not LMDB's at all.
        psize = _MIN_PAGE
        while psize <= _MAX_PAGE:
            meta1, _ = _parse_meta(os.pread(fd, _META_END, psize), 1)
            if meta1 is not None and meta1.psize == psize:
                raise _Refused(f"has a damaged meta page 0 ({why0}); meta page 1 is intact "
                               f"(transaction {meta1.txnid})")
            psize <<= 1
        if lmdb_magic:
            raise _Refused(f"has a damaged meta page 0 ({why0}) and no intact meta page 1")
        raise _Refused("is not an LMDB file (no LMDB meta page at its start)")
    psize = meta0.psize
    if size < 2 * psize:
        raise _Refused(f"is truncated: it ends at {size} bytes, needs at least {(meta0.last_pg + 1) * psize}")
    meta1, why1 = _parse_meta(os.pread(fd, _META_END, psize), 1)
    if meta1 is None:
        raise _Refused(f"has a damaged meta page 1 ({why1}); meta page 0 is intact (transaction {meta0.txnid})")
    if meta1.psize != psize:
        raise _Refused(f"has meta pages that disagree on the page size ({psize} and {meta1.psize})")
    t0, t1 = meta0.txnid, meta1.txnid
    if not (t0 == t1 == 0 or (t0 % 2 == 0 and t1 % 2 == 1 and abs(t0 - t1) == 1)):
        raise _Refused(f"has meta pages with transaction ids {t0} and {t1}, a pair LMDB never writes "
                       "(one of them is damaged)")
    newer, older = (meta1, meta0) if t1 > t0 else (meta0, meta1)
    if older.last_pg > newer.last_pg:
        raise _Refused(f"has meta pages out of order: transaction {older.txnid} ends at page {older.last_pg}, "
                       f"the later {newer.txnid} at page {newer.last_pg} (one of them is damaged)")
    return newer


def _node_offsets(page: bytes, pgno: int, psize: int) -> Iterator[int]:
    """The offsets of the nodes of a branch or leaf page; _Refused when its header does not fit the page."""
    _, _, _, lower, upper = _PAGE.unpack_from(page)
    if not _HEADER <= lower <= upper <= psize or (lower - _HEADER) % 2:
        raise _Refused(f"has a damaged page {pgno} (free space bounds {lower}, {upper})")
    for (offset,) in struct.iter_unpack("=H", page[_HEADER:lower]):
        if not upper <= offset <= psize - _NODE.size:
            raise _Refused(f"has a damaged page {pgno} (a node at offset {offset})")
        yield offset


def _reachable_end(fd: int, size: int, meta: MetaPage) -> int:
    """The end, in bytes, of the furthest page reachable from `meta`'s trees that the file holds or lacks.

    Walks the free DB, the main DB and every named DB (and dup-sort sub-DB) from their roots:
    branch pages give children, leaf pages give overflow pages and sub-DB roots. A page
    past the end of the file is counted, not read. _Refused when a page makes no sense
    (outside [2, last_pg], reached twice, the wrong page number or type, nodes that do not fit).
    """
    psize, last_pg = meta.psize, meta.last_pg
    end = 2 * psize
    seen: set[int] = set()
    todo = [root for root in meta.roots if root != _P_INVALID]

    def claim(pgno: int, pages: int = 1) -> bool:
        """Count pages [pgno, pgno + pages) as reachable; True when the file holds them."""
        nonlocal end
        if pgno < 2 or pgno + pages - 1 > last_pg:
            raise _Refused(f"has a B-tree that points at page {pgno}, outside its pages [2, {last_pg}]")
        if pgno in seen:
            raise _Refused(f"has a B-tree that reaches page {pgno} twice")
        seen.add(pgno)
        end = max(end, (pgno + pages) * psize)
        return (pgno + pages) * psize <= size

    while todo:
        pgno = todo.pop()
        if not claim(pgno):
            continue
        page = os.pread(fd, psize, pgno * psize)
        number, _, flags, _, _ = _PAGE.unpack_from(page)
        if number != pgno:
            raise _Refused(f"has a damaged page {pgno} (it says it is page {number})")
        if flags & _P_BRANCH:
            for offset in _node_offsets(page, pgno, psize):
                lo, hi, high, _ = _NODE.unpack_from(page, offset)
                todo.append(lo | hi << 16 | high << 32)
        elif flags & _P_LEAF:
            if flags & _P_LEAF2:
                continue                    # fixed-size keys only: points nowhere
            for offset in _node_offsets(page, pgno, psize):
                lo, hi, node_flags, ksize = _NODE.unpack_from(page, offset)
                data = offset + _NODE.size + ksize
                dsize = lo | hi << 16
                if node_flags & _F_BIGDATA:
                    if data + _PGNO.size > psize:
                        raise _Refused(f"has a damaged page {pgno} (an overflow node past its end)")
                    (first,) = _PGNO.unpack_from(page, data)
                    pages = (_HEADER - 1 + dsize) // psize + 1      # OVPAGES: at least this many
                    if 2 <= first and (first + 1) * psize <= size:
                        head = os.pread(fd, _HEADER, first * psize)
                        held = _OVERFLOW_PAGES.unpack_from(head, 12)[0]
                        if _PAGE.unpack_from(head)[0] != first or not _PAGE.unpack_from(head)[2] & _P_OVERFLOW \
                                or held < pages:
                            raise _Refused(f"has a damaged overflow page {first}")
                        pages = held                                # an overwrite may have kept more
                    claim(first, pages)
                elif data + dsize > psize:
                    raise _Refused(f"has a damaged page {pgno} (a node past its end)")
                elif node_flags & _F_SUBDATA and dsize == _DB_SIZE:
                    (root,) = _DB_ROOT.unpack_from(page, data + 40)
                    if root != _P_INVALID:
                        todo.append(root)
        else:
            raise _Refused(f"has a damaged page {pgno} (flags {flags:#x}: neither a branch nor a leaf)")
    return end


def read_data_file(path: str, *, node_id: Optional[int] = None, walk: bool = False) -> DataFile:
    """Check DIR/data.mdb with plain reads so that LMDB may map it; DataDirError (nothing changed) otherwise.

    Both meta pages, then the file's size against the newer one's last page: a shorter file
    (or any file with `walk=True`) has every page reachable from its trees checked to lie
    inside it. The error names what is wrong ("data.mdb is empty", "is truncated: it ends at
    8192 bytes, needs at least 57344", "is not an LMDB file", a damaged meta page); its
    remedy names `node_id` when given.
    """
    file = os.path.join(path, DATA_FILE)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DataDirError(path, f"cannot read {DATA_FILE}: {exc.strerror}", damaged_remedy(node_id)) from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise _Refused("is empty (0 bytes)")
        meta = _meta_pages(fd, size)
        if walk or size < (meta.last_pg + 1) * meta.psize:
            needed = _reachable_end(fd, size, meta)
            if needed > size:
                raise _Refused(f"is truncated: it ends at {size} bytes, needs at least {needed}")
        return DataFile(size, meta)
    except _Refused as refused:
        raise DataDirError(path, f"{DATA_FILE} {refused}", damaged_remedy(node_id)) from None
    except OSError as exc:
        raise DataDirError(path, f"cannot read {DATA_FILE}: {exc.strerror}", damaged_remedy(node_id)) from None
    finally:
        os.close(fd)


def validate_data_dir(path: str, *, node_id: Optional[int] = None, walk: bool = False) -> Optional[DataFile]:
    """What the dir at `path` holds, decided with plain reads: None when nothing is there (missing or empty).

    A creation that was interrupted (`creating.tmp/`, perhaps the writer lock beside it, no
    data.mdb) is nothing too. Otherwise the checked data.mdb (read_data_file), or DataDirError: not a directory,
    raftlog's or LMDB's files without data.mdb (damaged, never new), other files without
    data.mdb (not a raftlog dir), or a data.mdb LMDB must not map.
    """
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise NotADirectory(path, "is not a directory", NOT_RAFTLOG_REMEDY) from None
    except OSError as exc:
        raise DataDirError(path, f"cannot be listed: {exc.strerror}", NOT_RAFTLOG_REMEDY) from None
    if DATA_FILE not in names and _creation_interrupted(names):
        return None
    names = [n for n in names if n != CREATING_DIR]
    if not names:
        return None
    if DATA_FILE not in names:
        ours = [n for n in (LOCK_FILE, LMDB_LOCK_FILE, SNAPSHOT_DIR) if n in names]
        if ours:
            raise DataDirError(path, f"{DATA_FILE} is missing beside {' and '.join(ours)}: raftlog used this dir, "
                                     "and its log, term and vote are gone", damaged_remedy(node_id))
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise DataDirError(path, f"holds {shown} but no {DATA_FILE}: not a raftlog data dir", NOT_RAFTLOG_REMEDY)
    return read_data_file(path, node_id=node_id, walk=walk)


def _creation_interrupted(names: list[str]) -> bool:
    """True when the listing is what a creation killed before its data.mdb was renamed in leaves.

    (`snapshots/` too: a restore renames it in just before data.mdb; creating.tmp/ goes only
    once data.mdb is in place.)
    """
    return CREATING_DIR in names and set(names) <= {CREATING_DIR, LOCK_FILE, SNAPSHOT_DIR}


# ---------------------------------------------------------------- the writer lock

def take_writer_lock(path: str) -> int:
    """Take the data dir's writer lock (flock, released by the OS when the process dies); returns its fd.

    Creates the dir if needed. DataDirLocked when another open (in this or another process)
    holds it; NotADirectory when the path is a file.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectory(path, "is not a directory", NOT_RAFTLOG_REMEDY)
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(path, "is already open for writing (by this or another process)",
                            "close the other log or stop the node that uses it") from None
    return fd


def release_writer_lock(fd: Optional[int]) -> None:
    """Release a lock take_writer_lock returned (None: no lock was taken)."""
    if fd is not None:
        os.close(fd)


# ---------------------------------------------------------------- format and identity

def _verify_identity(path: str, found: Optional[tuple[Optional[bytes], Optional[bytes]]],
                     node_id: Optional[int], cluster_id: Optional[str]) -> Identity:
    """The stored identity, checked: `found` is (format, identity) as stored, None without raftlog's databases.

    IdentityMismatch (one line with its remedy) when the databases, the format marker or the
    identity are missing or unreadable, the format is not FORMAT_VERSION, or a given node_id
    or cluster_id differs from the stored one (None accepts whatever is stored).
    """
    fmt, raw = found if found is not None else (None, None)
    if fmt is None and raw is None:
        raise IdentityMismatch(path, "is an LMDB environment without raftlog's identity: another program's data?",
                               NOT_RAFTLOG_REMEDY)
    if fmt is None:
        raise IdentityMismatch(path, "has no raftlog format marker", damaged_remedy(node_id))
    if fmt != str(FORMAT_VERSION).encode():
        raise IdentityMismatch(path, f"has layout format {bytes(fmt).decode(errors='replace')!r}; "
                                     f"this raftlog reads format {FORMAT_VERSION}",
                               "open it with the raftlog version that wrote it")
    if raw is None:
        raise IdentityMismatch(path, "has no identity record", damaged_remedy(node_id))
    try:
        stored = Identity.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise IdentityMismatch(path, f"has an identity record that does not decode ({exc})",
                               damaged_remedy(node_id)) from None
    wrong = []
    if node_id is not None and stored.node_id != node_id:
        wrong.append(f"node id {stored.node_id} (expected {node_id})")
    if cluster_id is not None and stored.cluster_id != cluster_id:
        wrong.append(f"cluster id {stored.cluster_id!r} (expected {cluster_id!r})")
    if wrong:
        raise IdentityMismatch(path, "belongs to another node: found " + " and ".join(wrong),
                               "give each node its own data dir, or check --id and --cluster-id")
    return stored


def _read_identity(env: lmdb.Environment, txn: lmdb.Transaction) -> Optional[tuple[Optional[bytes], Optional[bytes]]]:
    """(format, identity) as stored, or None when the environment lacks raftlog's databases."""
    try:
        env.open_db(LOG_DB, txn=txn, create=False)
        meta_db = env.open_db(META_DB, txn=txn, create=False)
    except lmdb.NotFoundError:
        return None
    return txn.get(_FORMAT, db=meta_db), txn.get(_IDENTITY, db=meta_db)


Verify = Callable[[lmdb.Environment, lmdb.Transaction], None]


def _peek(path: str, data: DataFile, node_id: Optional[int], cluster_id: Optional[str],
          verify: Optional[Verify]) -> None:
    """Check format, identity and `verify` without writing anything: a readonly environment without LMDB's lock file.

    Without the lock file nothing tells a writer of the same environment (another program, or
    a raftlog node beside `inspect`) that we read: it could reuse the pages we read once it
    has committed twice more. So the outcome counts only when `last_txnid` after the reads
    is at most one past the one read; after a few tries under a busy writer the check is left to the
    locked open that follows. So it is when py-lmdb refuses to open the environment (this
    process has it open already; it allows one per path): the open that follows says why.
    """
    for _ in range(5):
        try:
            env = lmdb.open(path, subdir=True, max_dbs=MAX_DBS, readonly=True, lock=False, create=False,
                            map_size=(data.meta.last_pg + 1) * data.meta.psize)
        except lmdb.Error:
            return
        refusal: Optional[RaftlogError] = None
        try:
            with env.begin() as txn:
                seen = txn.id()
                try:
                    _check_contents(env, txn, path, node_id, cluster_id, verify)
                except RaftlogError as exc:
                    refusal = exc
        finally:
            env.close()
        if last_txnid(path) <= seen + 1:
            if refusal is not None:
                raise refusal
            return


def last_txnid(path: str) -> int:
    """The newest LMDB transaction on disk in the dir's data.mdb (plain reads; DataDirError when damaged).

    A read transaction without LMDB's lock file that began at transaction T saw intact pages
    if this is at most T + 1 once its reads are done: a writer reuses freed pages only from
    the second commit after they were freed.
    """
    return read_data_file(path).meta.txnid


def _check_contents(env: lmdb.Environment, txn: lmdb.Transaction, path: str, node_id: Optional[int],
                    cluster_id: Optional[str], verify: Optional[Verify]) -> Identity:
    """The checked identity, then `verify`, in `txn`; an LMDB error reading the pages is DataDirError."""
    try:
        identity = _verify_identity(path, _read_identity(env, txn), node_id, cluster_id)
        if verify is not None:
            verify(env, txn)
    except lmdb.Error as exc:
        raise DataDirError(path, f"LMDB cannot read {DATA_FILE} ({exc})", damaged_remedy(node_id)) from None
    return identity


def open_environment(path: str, *, node_id: Optional[int], cluster_id: Optional[str], readonly: bool,
                     create: bool, sync: bool, map_size: int, verify: Optional[Verify] = None,
                     reader_lock: bool = True) -> tuple[lmdb.Environment, Identity, Optional[int]]:
    """Validate the dir, then open its LMDB environment: `(env, identity, writer lock fd or None)`.

    A missing or empty dir is created by a writable open with `create` (ValueError without
    a valid node_id and cluster_id), its format and identity written in the first
    transaction; otherwise FileNotFoundError. Any other dir is checked before LMDB maps it
    and before anything is written (DataDirError, IdentityMismatch: see the module
    docstring). A writable open takes the writer lock (RaftlogError when another process
    holds it). A readonly open registers as a reader in LMDB's lock file, so that a writer
    beside it keeps the pages it reads; it writes nothing when `lock.mdb` is missing or
    with `reader_lock=False` (then it runs without LMDB's lock file, which only a writer
    running beside it would need: the caller must tell a read that raced a writer, see
    `last_txnid`).
    `verify(env, txn)` checks more of an existing dir's contents (raising to refuse it): in
    the same write-free read as the identity, and again in the opened environment.
    """
    found = validate_data_dir(path, node_id=node_id)
    if found is None and (readonly or not create):
        raise FileNotFoundError(f"no raftlog data dir at {path}")
    if found is None and (node_id is None or cluster_id is None):
        raise ValueError("creating a data dir needs node_id and cluster_id")
    if found is None and (not isinstance(node_id, int) or node_id < 1):
        raise ValueError(f"node id must be a positive integer, got {node_id!r}")
    if found is None:
        assert node_id is not None and cluster_id is not None
        lock_fd: Optional[int] = _create(path, node_id, cluster_id, map_size)
    else:
        _peek(path, found, node_id, cluster_id, verify)
        lock_fd = None if readonly else take_writer_lock(path)
    try:
        if lock_fd is not None:
            validate_data_dir(path, node_id=node_id)     # again, now that no other raftlog writer can change it
            _remove_creating(path)                       # what a creation killed after its rename left
        lock = not readonly or (reader_lock and os.path.exists(os.path.join(path, LMDB_LOCK_FILE)))
        try:
            env = lmdb.open(path, subdir=True, max_dbs=MAX_DBS, map_size=map_size, readonly=readonly,
                            create=False, sync=sync, metasync=sync, lock=lock)
        except lmdb.Error as exc:
            if "already open in this process" in str(exc):
                raise RaftlogError(f"data dir {path} is already open in this process") from None
            raise DataDirError(path, f"LMDB refuses {DATA_FILE} ({exc})", damaged_remedy(node_id)) from None
        try:
            with env.begin() as txn:
                identity = _check_contents(env, txn, path, node_id, cluster_id, verify)
            if not readonly and identity.incarnation == 0:
                identity = _give_incarnation(env, path, identity)
        except BaseException:
            env.close()
            raise
    except BaseException:
        release_writer_lock(lock_fd)
        raise
    return env, identity, lock_fd


def _give_incarnation(env: lmdb.Environment, path: str, identity: Identity) -> Identity:
    """Record a new incarnation in the identity of a dir made before incarnations existed (its first writable open).

    Its peers never learned an incarnation for it (they predate them too), so they learn this one.
    """
    identity = replace(identity, incarnation=new_incarnation())
    with env.begin(write=True) as txn:
        txn.put(_IDENTITY, identity.to_json(), db=env.open_db(META_DB, txn=txn, create=False))
    log.info("data dir %s had no incarnation (made by an older raftlog): it is now %x", path, identity.incarnation)
    return identity


def _create(path: str, node_id: int, cluster_id: str, map_size: int) -> int:
    """Create a new data dir atomically (see the module docstring); returns the writer lock's fd.

    When the writer lock shows another process finished creating it meanwhile, its dir is
    left as it is (the caller validates it). RaftlogError when another process holds the lock.
    """
    def build(creating: str) -> None:
        env = lmdb.open(creating, subdir=True, max_dbs=MAX_DBS, map_size=map_size, create=True,
                        sync=True, metasync=True, lock=False)
        try:
            with env.begin(write=True) as txn:
                env.open_db(LOG_DB, txn=txn)
                meta_db = env.open_db(META_DB, txn=txn)
                txn.put(_FORMAT, str(FORMAT_VERSION).encode(), db=meta_db)
                txn.put(_IDENTITY, Identity.new(cluster_id, node_id).to_json(), db=meta_db)
        finally:
            env.close()
    return create_with(path, build, f"node {node_id} of cluster {cluster_id}")


def create_with(path: str, build: Callable[[str], None], what: str) -> int:
    """Create the data dir at `path` atomically from `build(creating_dir)`; returns the writer lock's fd.

    `build` makes `creating_dir/data.mdb` with raftlog's format and identity committed and
    fsynced (and may make `creating_dir/snapshots/` with the snapshot files it names, written
    durably: a restore); the snapshots dir is renamed into the dir, then data.mdb, last (see
    the module docstring). When another process finished creating the dir meanwhile, `build`
    is not called and its dir is left as it is. RaftlogError when another process holds the lock.
    """
    creating = os.path.join(path, CREATING_DIR)
    os.makedirs(creating, exist_ok=True)
    fsync_dir(path)             # creating.tmp/ is durable before raftlog.lock, which alone would mean damaged
    lock_fd = take_writer_lock(path)
    try:
        if not os.path.exists(os.path.join(path, DATA_FILE)):
            _empty(creating)
            shutil.rmtree(os.path.join(path, SNAPSHOT_DIR), ignore_errors=True)   # an interrupted creation's
            build(creating)
            if os.path.isdir(os.path.join(creating, SNAPSHOT_DIR)):
                os.rename(os.path.join(creating, SNAPSHOT_DIR), os.path.join(path, SNAPSHOT_DIR))
                fsync_dir(path)
            os.rename(os.path.join(creating, DATA_FILE), os.path.join(path, DATA_FILE))
            fsync_dir(path)
            log.info("created data dir %s for %s", path, what)
        _remove_creating(path)
    except BaseException:
        release_writer_lock(lock_fd)
        raise
    return lock_fd


def _empty(directory: str) -> None:
    """Remove the files and dirs in `directory` (what an interrupted creation left in creating.tmp/)."""
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def _remove_creating(path: str) -> None:
    """Remove `creating.tmp/` (under the writer lock, once data.mdb is in place), if it is there."""
    creating = os.path.join(path, CREATING_DIR)
    if os.path.isdir(creating):
        _empty(creating)
        os.rmdir(creating)


def fsync_dir(path: str) -> None:
    """fsync the directory `path`, making the renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dir_bytes(path: str) -> int:
    """The bytes a data dir takes on disk (allocated blocks of every file under it; 0 when it is missing).

    LMDB reuses the pages of compacted entries but never shrinks its file: after compaction
    this stops growing rather than falling.
    """
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue          # removed meanwhile (a pruned snapshot file)
    return total
