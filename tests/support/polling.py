"""Waiting for a condition in a test: polls progress, never retries past a broken invariant.

A check polled by `wait_for` answers in one of three ways:
- a truthy value: the condition holds, `wait_for` returns it;
- a falsy value, `NotYet`, or an error of a member that is down, busy or unreachable
  (`NOT_YET_ERRORS`): not yet, poll again;
- anything else, above all an AssertionError (a safety check that failed: agreement below
  commit, a lost acknowledged entry, another payload read at an acknowledged index): fail at once.
  A violation seen once is a failure, even if a later poll would agree.

On timeout, `WaitTimeout` names what was awaited and what the last poll saw.
"""
from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

from raftlog.errors import RaftlogError

DEADLINE = 30.0          # seconds for anything that should take well under one

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a check: the awaited condition does not hold yet; the message says what was seen."""


class WaitTimeout(AssertionError):
    """The awaited condition did not come about before the deadline (the message says what was last seen)."""


# What a member that is down, starting, busy or unreachable makes a check raise: socket and
# connection errors (ConnectionError, TimeoutError), a CLI command that failed or timed out,
# and the client's typed errors (Timeout, NotLeader, Closed, an error answer of a busy node).
NOT_YET_ERRORS: tuple[type[BaseException], ...] = (NotYet, OSError, subprocess.SubprocessError, RaftlogError)


def wait_for(what: str, check: Callable[[], T], timeout: float = DEADLINE, every: float = 0.05) -> T:
    """The first truthy value of `check()`; only "not yet" answers are polled again (see the module doc).

    An AssertionError (or any error outside NOT_YET_ERRORS) raised by `check` propagates at
    once, never retried. After `timeout` seconds of "not yet", WaitTimeout naming `what` and
    the last answer seen.
    """
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        polls += 1
        try:
            value = check()
        except NOT_YET_ERRORS as exc:
            seen = f"{type(exc).__name__}: {exc}"
        else:
            if value:
                return value
            seen = f"the check returned {value!r}"
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s ({polls} polls) waiting for {what}; "
                              f"last seen: {seen}"[:2000])
        time.sleep(every)
