"""The small helpers every kind of test uses, each in one place: a free port, a
wait on a condition with a deadline, and a clock that moves only when told to.

Other support modules re-export them (``tests.support.live.free_port``,
``tests.conftest.Clock``, …) so that every import that worked keeps working.
"""

from __future__ import annotations

import socket
import time
import typing as t

__all__ = ["Clock", "FakeClock", "free_port", "wait_until"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: t.Callable[[], t.Any],
    timeout: float,
    what: str = "the condition",
    *,
    interval: float = 0.02,
    sleep: t.Callable[[float], t.Any] = time.sleep,
) -> t.Any:
    """Poll ``predicate`` until it returns something truthy, and return that; fail
    after ``timeout`` seconds.

    :param what: said in the failure, e.g. ``"gunicorn on port 3000"``.
    :param interval: seconds between polls.
    :param sleep: how to wait between polls (``gevent.sleep`` lets greenlets run).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        sleep(interval)


class Clock:
    """A wall clock that only moves when told to (inject it as ``clock=``).

    :param now: the time it starts at, in seconds since the epoch.
    """

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: the name the store contract tests knew it by
FakeClock = Clock
