"""Serving `raftlog backup`: a compacted copy of this node's data.mdb, taken live, streamed to the client.

The copy is made by a child process (`python -m raftlog.storage.backup_copy DIR`) from one
LMDB read transaction: the node's writes go on meanwhile (LMDB keeps the pages that
transaction reads), and neither its storage locks nor its GIL are held by the copy. The
child's output is sent on the request's id as wire/requests.py describes (Entries frames of
BACKUP_PIECE_BYTES, then one StatusReply with the header fields, or an Error), paced by the
client's socket: while the client does not read, no more of the copy is read either.

The backup's index is the copy's durable commit index: every entry up to it is committed in
the cluster and is the committed entry at its index (Log Matching); entries the copy holds
past it are kept in the file and dropped by a restore.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import zlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Optional

from raftlog.hot import ERR_BAD_REQUEST, ERR_INTERNAL, KIND_DATA, RecordBatch, encode_entries, encode_status_reply
from raftlog.runtime.port import NodePort
from raftlog.storage.backup_copy import LENGTH, CopyState
from raftlog.storage.lmdb import LmdbStorage
from raftlog.wire.requests import BACKUP_PIECE_BYTES

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection

log = logging.getLogger("raftlog.backup")


class BackupService:
    """Backups of one node's data dir, each streamed to the client that asked (one child process each)."""

    def __init__(self, port: NodePort) -> None:
        self.port = port
        self._tasks: set[asyncio.Task] = set()

    def handle(self, conn: "Connection", request_id: int) -> None:
        """A backup request: start copying and streaming; every outcome is answered on `conn`."""
        storage = self.port.storage
        if not isinstance(storage, LmdbStorage):
            self.port.error(conn, request_id, ERR_BAD_REQUEST, f"node {self.port.node_id} keeps no data dir to back up")
            return
        task = asyncio.get_running_loop().create_task(self._serve(conn, request_id, storage.path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def shutdown(self) -> None:
        """Stop every backup in flight (their child processes are killed; the clients see the connection close)."""
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, conn: "Connection", request_id: int, path: str) -> None:
        """Copy `path` in a child process and stream it to `conn`."""
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "raftlog.storage.backup_copy", path,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    limit=2 * BACKUP_PIECE_BYTES)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            state = await _read_state(proc.stdout)
            size, crc = 0, 0
            while state is not None and not conn.closed:
                try:
                    piece = await proc.stdout.readexactly(BACKUP_PIECE_BYTES)
                except asyncio.IncompleteReadError as end:
                    piece = end.partial
                if not piece:
                    break
                crc = zlib.crc32(piece, crc)
                self.port.reply(conn, encode_entries(request_id, size + len(piece), [size],
                                                     RecordBatch.encode(0, KIND_DATA, [piece])))
                size += len(piece)
                await _writable(conn)
            if conn.closed:
                log.info("node %d: a backup's client went away after %d bytes", self.port.node_id, size)
                return
            refusal = (await proc.stderr.read()).decode(errors="replace").strip()
            if await proc.wait() != 0 or state is None:
                message = refusal.splitlines()[-1] if refusal else f"the copy failed (status {proc.returncode})"
                log.warning("node %d: backup refused: %s", self.port.node_id, message)
                self.port.error(conn, request_id, ERR_INTERNAL, message)
                return
            header = {**asdict(state), "data_size": size, "data_crc32": crc}
            self.port.reply(conn, encode_status_reply(request_id, json.dumps(header).encode()))
            log.info("node %d sent a backup at index %d term %d (%d bytes) in %.1f s", self.port.node_id,
                     state.index, state.term, size, time.monotonic() - started)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _read_state(stdout: asyncio.StreamReader) -> Optional[CopyState]:
    """The child's CopyState (its first output), or None when it stopped before writing one."""
    try:
        (length,) = LENGTH.unpack(await stdout.readexactly(LENGTH.size))
        return CopyState(**json.loads(await stdout.readexactly(length)))
    except asyncio.IncompleteReadError:
        return None


async def _writable(conn: "Connection") -> None:
    """Return once `conn`'s socket takes writes again (at once when it does), or it closed."""
    before = conn.on_writable
    loop = asyncio.get_running_loop()
    try:
        while conn.write_paused and not conn.closed:
            ready = loop.create_future()

            def writable(ready: asyncio.Future = ready) -> None:
                if not ready.done():
                    ready.set_result(None)
                if before is not None:
                    before()
            conn.on_writable = writable
            try:
                await asyncio.wait_for(ready, 1.0)     # a connection that closes calls nothing: look again
            except asyncio.TimeoutError:
                pass
    finally:
        conn.on_writable = before
