"""Ctrl-C during a blocking Client call cancels the request cleanly: no pending task, no unretrieved error.

`raftlog read --follow` stopped by Ctrl-C printed "Future exception was never retrieved ...
ConnectionError('client closed')" and "Task was destroyed but it is pending!": the request's
task was left running in the client's loop while close() failed it and stopped the loop.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import pytest

from raftlog.client import Client


def test_an_interrupted_call_is_cancelled_and_close_is_quiet(caplog):
    client = Client(["127.0.0.1:1"])
    started, outcome = threading.Event(), []

    async def read_forever(*args, **kwargs):
        started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    client._client.read = read_forever
    main = threading.get_ident()
    interrupter = threading.Thread(target=lambda: (started.wait(30), signal.pthread_kill(main, signal.SIGINT)))
    interrupter.start()
    caplog.set_level(logging.ERROR, logger="asyncio")
    with pytest.raises(KeyboardInterrupt):
        client.read(1)
    interrupter.join()
    client.close()
    assert outcome == ["cancelled"], "the interrupted request's task was left running"
    assert not [r for r in caplog.records if r.name == "asyncio"], [r.getMessage() for r in caplog.records]


def test_a_cancelled_wait_for_a_reply_cancels_the_reply_future():
    """The reply future is shielded from the per-attempt timeout, not from the caller giving up."""
    from types import SimpleNamespace

    from raftlog.client import AsyncClient

    async def main() -> None:
        client = AsyncClient(["127.0.0.1:1"])
        reply = asyncio.get_running_loop().create_future()
        conn = SimpleNamespace(address="127.0.0.1:1", last_heard=time.monotonic())
        waiting = asyncio.create_task(client._await_reply(conn, reply, time.monotonic() + 60))
        await asyncio.sleep(0)         # one turn: the task runs until it waits for the reply
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert reply.cancelled(), "closing the client would fail the reply with no one to read it"

    asyncio.run(main())
