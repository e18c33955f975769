"""The small helpers every kind of test uses, each in one place: a free port, a
wait on a condition with a deadline, and a clock that moves only when told to.

Other support modules re-export them (``bench.live.free_port``,
``tests.conftest.Clock``, …) so that every import that worked keeps working.
"""

from __future__ import annotations

from bench.live import free_port as free_port
from bench.live import wait_until as wait_until

__all__ = ["Clock", "FakeClock", "free_port", "wait_until"]


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
