"""The Redis store's tail (one blocking ``XREAD`` per process) as its store closes."""

from __future__ import annotations

import threading
import typing as t

import pytest

from ngai_chat.errors import StoreUnavailable
from ngai_chat.store.redis_tail import Tail
from tests.support.helpers import wait_until


class _ClosedUnder:
    """A client whose ``XREAD`` fails as redis-py's can when its pool is
    disconnected from another thread mid-checkout: a ``TypeError`` from a socket
    set to ``None`` under it (seen in CI; the race itself is too narrow to make on
    demand against a real Redis)."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.closed = threading.Event()

    def xread(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self.reading.set()
        self.closed.wait(10)
        raise TypeError("argument must be an int, or have a fileno() method.")


def _waiter(tail: Tail, outcome: list[object]) -> threading.Thread:
    def wait() -> None:
        try:
            outcome.append(tail.wait("e:s1", 0, 10))
        except StoreUnavailable as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=wait)
    waiting.start()
    return waiting


def test_a_read_failing_as_the_store_closes_ends_the_tail_quietly() -> None:
    """Its waiters hear the store is unavailable, and the poller ends without an
    unhandled exception (pytest fails a test on one, from any thread)."""
    client = _ClosedUnder()
    tail = Tail(t.cast(t.Any, client))
    outcome: list[object] = []
    waiting = _waiter(tail, outcome)
    assert client.reading.wait(5)
    poller = tail._poller
    assert poller is not None
    tail.close()  # as RedisStore.close does, before it disconnects the pools
    client.closed.set()
    poller.join(5)
    waiting.join(5)
    assert not poller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreUnavailable)
    assert tail._poller is None  # a next wait would start afresh


def test_a_bug_in_the_read_still_tells_the_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not Redis failing and not closing: the exception is not swallowed (it reaches
    the thread's hook, the log), and the waiters are told rather than left waiting."""
    seen: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_type))
    client = _ClosedUnder()
    client.closed.set()
    tail = Tail(t.cast(t.Any, client))
    outcome: list[object] = []
    waiting = _waiter(tail, outcome)
    waiting.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], StoreUnavailable)
    wait_until(lambda: seen, 5, "the poller's exception at the thread's hook")
    assert seen == [TypeError]
    assert tail._poller is None
