"""The background sweep: started lazily, idempotent, restarted when dead."""

from __future__ import annotations

import typing as t

import gevent

from ngai_chat.store import MemoryStore
from ngai_chat.store import SessionInfo
from ngai_chat.sweeper import Sweeper
from ngai_chat.sweeper import sweep_once
from tests.conftest import Clock
from tests.support.helpers import wait_until


def pending(store: MemoryStore, clock: Clock, session_id: str, ttl: float) -> None:
    store.create(SessionInfo(session_id, {"messages": []}, None, clock.now + ttl))


def wait_for(predicate: t.Callable[[], t.Any], timeout: float) -> None:
    # gevent.sleep lets the sweep greenlet run
    wait_until(predicate, timeout, "the sweeper", interval=0.01, sleep=gevent.sleep)


def test_sweep_greenlet_frees_expired_sessions(clock: Clock) -> None:
    store = MemoryStore(replay_ttl=5, clock=clock)
    pending(store, clock, "old", ttl=1)
    pending(store, clock, "new", ttl=100)
    clock.advance(2)
    sweeper = Sweeper(store, interval=0.01, clock=clock)
    sweeper.ensure_running()
    first = sweeper._greenlet
    sweeper.ensure_running()  # idempotent: the same greenlet
    assert sweeper._greenlet is first
    wait_for(lambda: "old" not in store._entries, timeout=5)
    assert "new" in store._entries
    sweeper.stop()


def test_dead_sweeper_is_started_again(clock: Clock) -> None:
    store = MemoryStore(replay_ttl=5, clock=clock)
    sweeper = Sweeper(store, interval=0.01, clock=clock)
    sweeper.ensure_running()
    assert sweeper.running
    assert sweeper._greenlet is not None
    sweeper._greenlet.kill()
    assert not sweeper.running
    sweeper.ensure_running()
    assert sweeper.running
    sweeper.stop()


def test_sweep_once_counts(clock: Clock) -> None:
    store = MemoryStore(replay_ttl=5, clock=clock)
    for n in range(3):
        pending(store, clock, f"s{n}", ttl=10)
    assert sweep_once(store, clock.now + 9) == 0
    assert sweep_once(store, clock.now + 10) == 3
    assert store.count_live() == 0
