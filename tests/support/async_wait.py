"""Waiting in asyncio tests: poll for a condition with a generous deadline, never sleep and hope."""
from __future__ import annotations

import asyncio
import inspect
from typing import Awaitable, Callable, Optional, TypeVar, Union

T = TypeVar("T")


async def until(check: Callable[[], Union[T, Awaitable[T]]], what: str = "the condition", *,
                timeout: float = 30.0, seen: Optional[Callable[[], object]] = None) -> T:
    """Return the first truthy value of `check()`, polled every 10 ms.

    After `timeout` seconds fail with an AssertionError naming `what` and showing `seen()`
    (what was observed instead). `check` and `seen` may return awaitables (coroutines): they
    are awaited. The deadline only bounds a hang: it is not the property tested.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = await _value(check())
        if got:
            return got
        if loop.time() >= end:
            observed = f"; seen: {await _value(seen())!r}" if seen is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{observed}")
        await asyncio.sleep(0.01)


async def _value(got: object) -> object:
    """`got`, awaited first if it is awaitable."""
    return await got if inspect.isawaitable(got) else got
