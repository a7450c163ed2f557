"""Leadership events of one running node: each change of the leader it sees, as `(term, leader id or None)`."""
from __future__ import annotations

import logging
from typing import Callable, Optional

log = logging.getLogger("raftlog.node")

Listener = Callable[[int, Optional[int]], None]


class LeaderWatch:
    """Calls every listener, on the node's event loop, each time the (term, leader) this node sees changes.

    A change is a new leader id (0, no leader known, is reported as None), or a new term under
    a known leader (a leader re-elected is a new leadership). Terms that pass with no leader
    known (elections that fail) are not reported: the leader stays None.
    """

    def __init__(self) -> None:
        self.term = 0
        self.leader = 0
        self.closed = False
        self.listeners: list[Listener] = []
        self.closers: list[Callable[[], None]] = []

    @property
    def current(self) -> tuple[int, Optional[int]]:
        """The (term, leader id or None) last seen."""
        return self.term, self.leader or None

    def observe(self, term: int, leader: int) -> None:
        """The engine's term and leader after a Ready: tell the listeners if that is a change."""
        if leader == self.leader:
            if not leader:
                self.term = term         # elections that fail: the current term, not a change
                return
            if term == self.term:
                return
        self.term, self.leader = term, leader
        for listener in list(self.listeners):
            self._call(listener, term, leader or None)

    def subscribe(self, listener: Listener, *, now: bool = False,
                  on_close: Optional[Callable[[], None]] = None) -> Callable[[], None]:
        """Add `listener` (with `now`, call it with the current state first); the function returned removes it.

        `on_close` is called once when the node stops (at once if it has stopped already).
        """
        if now:
            self._call(listener, *self.current)
        if on_close is not None:
            if self.closed:
                on_close()
            else:
                self.closers.append(on_close)
        self.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)
            if on_close in self.closers:
                self.closers.remove(on_close)      # type: ignore[arg-type]
        return unsubscribe

    def close(self) -> None:
        """The node is stopping: no more changes; tell the subscribers that asked."""
        self.closed = True
        closers, self.closers = self.closers, []
        for on_close in closers:
            on_close()

    @staticmethod
    def _call(listener: Listener, term: int, leader: Optional[int]) -> None:
        try:
            listener(term, leader)
        except Exception:
            log.exception("a leader-change listener raised; it stays subscribed")
