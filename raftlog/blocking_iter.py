"""The blocking face of an async iterator that lives on an event loop in another thread (Client, SyncRaftLog)."""
from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

T = TypeVar("T")


def blocking_iter(run: Callable[[Any], Any], agen: AsyncIterator[T], still_open: Callable[[], bool]) -> Iterator[T]:
    """Yield `agen`'s items, each awaited on its loop through `run` (which blocks until the loop answers).

    However the iteration ends (exhausted, broken off, an error), `agen` is closed on its loop
    while `still_open()` says the loop still runs.
    """
    async def step() -> T:
        return await agen.__anext__()
    try:
        while True:
            try:
                yield run(step())
            except StopAsyncIteration:
                return
    finally:
        if still_open():
            run(agen.aclose())          # type: ignore[attr-defined]
