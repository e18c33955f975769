"""Liveness under load (SPEC §5 invariant 12): with Redis, however many generations a
process runs, keeping them alive costs a constant number of round trips per tick,
and a slow tick of a live process never makes its readers elsewhere call a
generation dead.

The process running these tests is not monkey-patched: the relay's greenlets run
on this thread, redis-py blocks on real sockets, and each store's heartbeat is a
real thread (as it is a greenlet of its own in a worker). A second store stands in
for another process.
"""

from __future__ import annotations

import functools
import time
import typing as t
import uuid

import gevent
import pytest
import redis
import redis.connection

from ngai_chat.errors import StoreUnavailable
from ngai_chat.relay import Relay
from ngai_chat.store import SessionInfo
from ngai_chat.store import store_from_url
from ngai_chat.store.redis import RedisStore
from tests.support import helpers
from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import chunk

pytestmark = pytest.mark.redis

#: generations run by one process in these tests
GENERATIONS = 300
LIVENESS_TTL = 0.5
#: waits that let the relay's greenlets run
wait_until = functools.partial(helpers.wait_until, sleep=gevent.sleep)


def redis_store(url: str, prefix: str, name: str, **options: t.Any) -> RedisStore:
    store = store_from_url(url, replay_ttl=60, key_prefix=prefix, client_name=name, **options)
    assert isinstance(store, RedisStore)
    return store


def new_session() -> SessionInfo:
    return SessionInfo(
        id=uuid.uuid4().hex,
        request={"model": "test/model", "messages": []},
        referer=None,
        expires_at=time.time() + 600,
    )


@pytest.fixture
def cleanup(redis_url: str, redis_prefix: str) -> t.Iterator[list[RedisStore]]:
    stores: list[RedisStore] = []
    yield stores
    for store in stores:
        store.close()
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)


class RoundTrips:
    """Counts the requests sent on connections named ``name`` (one per command, or
    one per pipeline)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.count = 0
        send = redis.connection.AbstractConnection.send_packed_command

        def counting(conn: t.Any, command: t.Any, check_health: bool = True) -> None:
            if conn.client_name == name:
                self.count += 1
            send(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)


def test_a_tick_costs_one_round_trip_however_many_generations(
    redis_url: str,
    redis_prefix: str,
    cleanup: list[RedisStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"ticks-{uuid.uuid4().hex[:8]}"
    store = redis_store(redis_url, redis_prefix, name, liveness_ttl=60)
    cleanup.append(store)
    sessions = [new_session() for _ in range(GENERATIONS)]
    for session in sessions:
        store.create(session)
        assert store.claim(session.id)
    store.attach(sessions[7].id, "reader")
    store.cancel(sessions[9].id)
    store.ping()  # the pooled connection is made and named before counting
    trips = RoundTrips(monkeypatch, name)

    signals = store.tick_many([sessions[0].id])
    assert trips.count == 1
    signals = store.tick_many([session.id for session in sessions])
    assert trips.count == 2  # one more, for all of them
    assert len(signals) == GENERATIONS
    assert signals[sessions[7].id].readers == 1
    assert signals[sessions[9].id].cancelled
    assert sum(s.readers for s in signals.values()) == 1
    assert sum(s.cancelled for s in signals.values()) == 1


def test_a_tick_reloads_scripts_after_redis_forgot_them(
    redis_url: str, redis_prefix: str, cleanup: list[RedisStore]
) -> None:
    store = redis_store(redis_url, redis_prefix, "reload")
    cleanup.append(store)
    session = new_session()
    store.create(session)
    assert store.claim(session.id)
    with redis.Redis.from_url(redis_url) as client:
        client.script_flush()
    assert store.tick_many([session.id])[session.id].cancelled is False
    other = new_session()
    store.create(other)
    with redis.Redis.from_url(redis_url) as client:
        client.script_flush()
    assert store.claim(other.id)


def test_hundreds_of_generations_stay_alive_through_slow_ticks(
    redis_url: str, redis_prefix: str, cleanup: list[RedisStore]
) -> None:
    here = redis_store(redis_url, redis_prefix, "here", liveness_ttl=LIVENESS_TTL)
    elsewhere = redis_store(redis_url, redis_prefix, "elsewhere", liveness_ttl=LIVENESS_TTL)
    cleanup += [here, elsewhere]
    # every generation sends one chunk, then waits on its upstream
    upstream = ScriptedUpstream([chunk("a"), 60])
    relay = Relay(here, upstream, heartbeat=0.5, abandon_timeout=600)
    slow = {"ticks": 0}
    tick_many = here.tick_many

    def slow_tick(session_ids: t.Sequence[str]) -> t.Any:
        slow["ticks"] += 1
        gevent.sleep(4 * LIVENESS_TTL)  # a tick slower than the liveness TTL
        return tick_many(session_ids)

    here.tick_many = slow_tick  # type: ignore[method-assign]
    sessions = [new_session() for _ in range(GENERATIONS)]
    for session in sessions:
        here.create(session)
        assert relay.start(session)
    try:
        wait_until(
            lambda: all(len(here.read(s.id, 0, 0)) == 1 for s in sessions),
            30,
            "every generation's first chunk",
        )
        # readers elsewhere look while ticks are slow: every generation lives
        wait_until(lambda: slow["ticks"] >= 3, 30, "three slow ticks")
        assert all(elsewhere.generation_alive(s.id) for s in sessions)
        readers = Relay(elsewhere, upstream, heartbeat=0.5)
        for session in sessions:
            info = elsewhere.get(session.id)
            assert info is not None and info.claimed
            reader = readers.open(info, 1)
            assert reader._ended() is False
            reader.close()
        assert all(elsewhere.read(s.id, 1, 0) == [] for s in sessions)  # no error written
    finally:
        for generation in list(relay.running.values()):
            generation.stop("cancelled")
        wait_until(lambda: not relay.running, 30, "the generations to end")
    assert all(here.get(s.id).terminal_id == 2 for s in sessions)  # type: ignore[union-attr]


def test_a_dead_process_ends_its_generations_elsewhere(
    redis_url: str, redis_prefix: str, cleanup: list[RedisStore]
) -> None:
    here = redis_store(redis_url, redis_prefix, "dies", liveness_ttl=LIVENESS_TTL)
    elsewhere = redis_store(redis_url, redis_prefix, "lives", liveness_ttl=LIVENESS_TTL)
    cleanup += [here, elsewhere]
    session = new_session()
    here.create(session)
    assert here.claim(session.id)
    assert here.append(session.id, "chunk", '{"n":1}') == 1
    here.close()  # its process died: nothing renews its alive key
    relay = Relay(elsewhere, ScriptedUpstream(), heartbeat=0.5)
    info = elsewhere.get(session.id)
    assert info is not None
    reader = relay.open(info, 1)
    try:
        wait_until(lambda: not elsewhere.generation_alive(session.id), 10, "the lapse")
        reader._ended()
        (event,) = elsewhere.read(session.id, 1, 0)
        assert event.name == "error" and "upstream_interrupted" in event.data
    finally:
        reader.close()


def test_a_terminal_event_the_store_refused_is_written_later(
    redis_url: str, redis_prefix: str, cleanup: list[RedisStore]
) -> None:
    """A live process whose store failed just as a generation ended still ends that
    log: readers elsewhere would otherwise wait for it as long as the process lives."""
    here = redis_store(redis_url, redis_prefix, "refused")
    cleanup.append(here)
    relay = Relay(here, ScriptedUpstream([chunk("a"), chunk("", finish="stop")]), heartbeat=0.5)
    append = here.append
    refused: list[str] = []

    def failing_once(session_id: str, name: str, data: str) -> int | None:
        if name == "done" and not refused:
            refused.append(data)
            raise StoreUnavailable()
        return append(session_id, name, data)

    here.append = failing_once  # type: ignore[method-assign]
    session = new_session()
    here.create(session)
    assert relay.start(session)
    wait_until(lambda: refused, 10, "the refused terminal event")
    info = wait_until(lambda: (s := here.get(session.id)) and s.terminal_id and s, 10, "the end")
    events = here.read(session.id, 0, 0)
    assert [e.name for e in events] == ["chunk", "chunk", "done"]
    assert events[-1].id == info.terminal_id
    assert events[-1].data == refused[0]
    assert not relay._unwritten
