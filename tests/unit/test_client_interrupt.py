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
