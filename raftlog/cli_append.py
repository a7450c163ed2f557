"""`raftlog append` reading stdin: each line is sent as soon as it has arrived, and every commit is reported.

A reader thread hands over whatever complete lines stdin has (it never waits for more);
the main thread appends all the lines that are waiting as one batch, prints their indexes,
and takes the next batch (lines that arrived meanwhile). So `tail -f app.log | raftlog
append` appends each line as it is written, and a large file is sent in large batches.

At EOF, or on Ctrl-C, the last line (on stderr) says how many lines committed and their
first and last index. Ctrl-C while a batch is in flight lets that batch finish (its
indexes are printed, nothing committed goes unreported); a second Ctrl-C stops waiting and
says how many lines were sent with an unknown outcome. An interrupted run exits with 130.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Optional

import click

from raftlog.errors import RaftlogError

READ_BYTES = 1 << 16          # one read of stdin
EXIT_INTERRUPTED = 130       # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
READ_AHEAD = 64              # reads of stdin held before the reader waits for the sender (4 MiB)
BATCH_LINES = 10_000          # lines per append_many at most (the client splits it into requests anyway)


class _LineReader(threading.Thread):
    """Reads `source` and puts each read's complete lines (a list) on `lines`; None at EOF.

    At most READ_AHEAD reads wait in `lines`: a file larger than that is read as it is sent.

    A stdin with a file descriptor is read with os.read on that descriptor: a daemon thread
    blocked in a buffered reader at interpreter exit can abort the interpreter.
    """

    def __init__(self, source: BinaryIO) -> None:
        super().__init__(name="raftlog-append-stdin", daemon=True)
        self.lines: queue.Queue[Optional[list[bytes]]] = queue.Queue(READ_AHEAD)
        try:
            fd = source.fileno()
            self._read: Callable[[], bytes] = lambda: os.read(fd, READ_BYTES)
        except (AttributeError, OSError, ValueError):         # io.UnsupportedOperation is both
            self._read = lambda: source.read1(READ_BYTES)  # type: ignore[attr-defined]

    def run(self) -> None:
        rest = b""
        try:
            while chunk := self._read():
                *complete, rest = (rest + chunk).split(b"\n")
                if complete:
                    self.lines.put([line.rstrip(b"\r") for line in complete])
        finally:
            if rest:
                self.lines.put([rest.rstrip(b"\r")])
            self.lines.put(None)


@dataclass
class _Tally:
    """What this run committed (count, first and last index), sent without an answer, and read but never sent."""

    committed: int = 0
    first: int = 0
    last: int = 0
    unknown: int = 0
    unsent: int = 0

    def add(self, indexes: list[int]) -> None:
        if indexes:
            self.first = self.first or indexes[0]
            self.last = indexes[-1]
            self.committed += len(indexes)

    def line(self) -> str:
        """`N lines committed, indexes A to B` plus what is unknown or unsent."""
        text = f"{self.committed} line{'' if self.committed == 1 else 's'} committed"
        if self.committed:
            text += f", indexes {self.first} to {self.last}"
        if self.unknown:
            text += f"; {self.unknown} sent with an unknown outcome (no answer before the interrupt)"
        if self.unsent:
            text += f"; {self.unsent} read but not sent"
        return text


class _Interrupts:
    """SIGINT while waiting for input stops at once; while a batch is sent and its indexes printed, after that
    (a second one: at once)."""

    def __init__(self) -> None:
        self.requested = False
        self.busy = False
        self._previous: Any = None

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.busy and not self.requested:
            self.requested = True
            return
        raise KeyboardInterrupt


def append_stdin(client: Any, as_json: bool, source: Optional[BinaryIO] = None) -> None:
    """Append each line of `source` (stdin) as it arrives; print each index, and a summary line on stderr.

    A failed append is one error line (click.ClickException, its exception as the context)
    after the summary of what did commit.
    """
    reader = _LineReader(source if source is not None else sys.stdin.buffer)
    reader.start()
    tally = _Tally()
    eof = False
    with _Interrupts() as interrupts:
        try:
            while not eof and not interrupts.requested:
                batch = reader.lines.get()
                interrupts.busy = True                       # from here a Ctrl-C waits for the batch's end
                if batch is None:
                    eof = True
                    break
                while len(batch) < BATCH_LINES:              # and whatever else has arrived meanwhile
                    try:
                        more = reader.lines.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        eof = True
                        break
                    batch.extend(more)
                try:
                    indexes = client.append_many(batch)
                except KeyboardInterrupt:
                    tally.unknown = len(batch)
                    raise
                tally.add(indexes)
                click.echo("\n".join(json.dumps({"index": i}) if as_json else str(i) for i in indexes))
                interrupts.busy = False                      # every index of the batch is printed
        except KeyboardInterrupt:
            pass
        except RaftlogError as exc:
            click.echo(tally.line(), err=True)
            raise click.ClickException(str(exc)) from None
    if eof:
        click.echo(tally.line(), err=True)
        return
    tally.unsent = sum(len(more) for more in _drain(reader.lines))
    click.echo("interrupted: " + tally.line(), err=True)
    raise SystemExit(EXIT_INTERRUPTED)


def _drain(lines: "queue.Queue[Optional[list[bytes]]]") -> list[list[bytes]]:
    """The batches waiting in `lines` now (not the EOF mark)."""
    out: list[list[bytes]] = []
    while True:
        try:
            more = lines.get_nowait()
        except queue.Empty:
            return out
        if more is not None:
            out.append(more)
