"""Serving `raftlog backup`: a compacted copy of this node's data.mdb, taken live, streamed to the client.

The copy is made by a child process (`python -m raftlog.storage.backup_copy DIR`) from one
LMDB read transaction: the node's writes go on meanwhile (LMDB keeps the pages that
transaction reads), and neither its storage locks nor its GIL are held by the copy. The
child's output is sent on the request's id as wire/requests.py describes (Entries frames of
BACKUP_PIECE_BYTES, then one StatusReply with the header fields, or an Error), paced by the
client's socket: while the client does not read, no more of the copy is read either. A log
compacted behind a snapshot file (retention, an embedded state machine) sends that file
first, the one the copy's transaction records, then the copy; the header then names it
with its size and crc32 (a version 2 backup file, raftlog.storage.backup_file).

The backup's index is the copy's durable commit index: every entry up to it is committed in
the cluster and is the committed entry at its index (Log Matching); entries the copy holds
past it are kept in the file and dropped by a restore.
"""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import zlib
from dataclasses import asdict
from typing import TYPE_CHECKING, BinaryIO, Optional

from raftlog.hot import ERR_BAD_REQUEST, ERR_INTERNAL, KIND_DATA, RecordBatch, encode_entries, encode_status_reply
from raftlog.runtime.port import NodePort
from raftlog.storage.backup_copy import LENGTH, CopyState
from raftlog.storage.lmdb import LmdbStorage
from raftlog.wire.requests import BACKUP_PIECE_BYTES

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection

log = logging.getLogger("raftlog.backup")


class BackupService:
    """Backups of one node's data dir, streamed to the client that asked; one at a time (a child process each)."""

    def __init__(self, port: NodePort) -> None:
        self.port = port
        self._tasks: set[asyncio.Task] = set()

    def handle(self, conn: "Connection", request_id: int) -> None:
        """A backup request: start copying and streaming; every outcome is answered on `conn`."""
        storage = self.port.storage
        if not isinstance(storage, LmdbStorage):
            self.port.error(conn, request_id, ERR_BAD_REQUEST, f"node {self.port.node_id} keeps no data dir to back up")
            return
        if self._tasks:
            # Each backup is a child process and a read transaction pinning pages: one at a time.
            self.port.error(conn, request_id, ERR_BAD_REQUEST,
                            f"node {self.port.node_id} is already sending a backup; try again once it is done")
            return
        task = asyncio.get_running_loop().create_task(self._serve(conn, request_id, storage.path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def shutdown(self) -> None:
        """Stop every backup in flight (their child processes are killed; the clients see the connection close)."""
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, conn: "Connection", request_id: int, path: str) -> None:
        """Copy `path` in a child process and stream it to `conn`.

        The child's pipes are read with blocking reads on the loop's executor, not with
        asyncio's subprocess transports: a task cancelled while such a transport is being set
        up can wait forever for it, and a node shutting down must not.
        """
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        proc = subprocess.Popen([sys.executable, "-m", "raftlog.storage.backup_copy", path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        try:
            state = await loop.run_in_executor(None, _read_state, stdout)
            # The body: the snapshot file's `snapshot_size` bytes (none without one), then the copy
            # to EOF; no piece spans both, so each part's crc32 is counted apart.
            size, snapshot_crc, crc = 0, 0, 0
            while state is not None and not conn.closed:
                left = state.snapshot_size - size
                piece = await loop.run_in_executor(None, stdout.read,
                                                   min(BACKUP_PIECE_BYTES, left) if left > 0 else BACKUP_PIECE_BYTES)
                if not piece:
                    break
                if left > 0:
                    snapshot_crc = zlib.crc32(piece, snapshot_crc)
                else:
                    crc = zlib.crc32(piece, crc)
                self.port.reply(conn, encode_entries(request_id, size + len(piece), [size],
                                                     RecordBatch.encode(0, KIND_DATA, [piece])))
                size += len(piece)
                await _writable(conn)
            if conn.closed:
                log.info("node %d: a backup's client went away after %d bytes", self.port.node_id, size)
                return
            refusal = (await loop.run_in_executor(None, stderr.read)).decode(errors="replace").strip()
            if await loop.run_in_executor(None, proc.wait) != 0 or state is None:
                message = refusal.splitlines()[-1] if refusal else f"the copy failed (status {proc.returncode})"
                log.warning("node %d: backup refused: %s", self.port.node_id, message)
                self.port.error(conn, request_id, ERR_INTERNAL, message)
                return
            header = {**asdict(state), "data_size": size - state.snapshot_size, "data_crc32": crc}
            if state.snapshot_file is None:
                del header["snapshot_file"], header["snapshot_size"]     # a version 1 backup's fields
            else:
                header["snapshot_crc32"] = snapshot_crc
            self.port.reply(conn, encode_status_reply(request_id, json.dumps(header).encode()))
            log.info("node %d sent a backup at index %d term %d (%d bytes) in %.1f s", self.port.node_id,
                     state.index, state.term, size, time.monotonic() - started)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()            # at once: it exited or was just killed (a read still pending gets EOF)
            stdout.close()
            stderr.close()


def _read_state(stdout: BinaryIO) -> Optional[CopyState]:
    """The child's CopyState (its first output), or None when it stopped before writing one."""
    head = stdout.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (length,) = LENGTH.unpack(head)
    raw = stdout.read(length)
    return CopyState(**json.loads(raw)) if len(raw) == length else None


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
