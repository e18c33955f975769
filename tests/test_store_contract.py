"""One contract suite for every store (``ngai_chat.store.base``), plus Redis specifics.

The process running these tests is not monkey-patched: the memory store is
driven by gevent greenlets (as in a worker), while redis-py blocks on real
sockets, so concurrency against Redis uses threads and a second store instance
stands in for another process.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import threading
import time
import typing as t
import uuid
from pathlib import Path

import gevent
import pytest
import redis

from bench.live import free_port
from bench.redis_cluster import RedisCluster
from ngai_chat.errors import StoreUnavailable
from ngai_chat.store import SessionInfo
from ngai_chat.store import Store
from ngai_chat.store import store_from_url
from tests.support import helpers
from tests.support.helpers import Clock
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
SESSION_TTL = 600.0
REPLAY_TTL = 300.0
HEARTBEAT = 15.0
#: seconds the Redis store keeps a reader that stopped refreshing (2 beats + grace)
PRESENCE_TTL = 2 * HEARTBEAT + 5.0


class FakeClock(Clock):
    """The shared fake clock, starting at this module's ``T0``."""

    def __init__(self, now: float = T0) -> None:
        super().__init__(now)


def new_session(clock: FakeClock, **changes: t.Any) -> SessionInfo:
    fields: dict[str, t.Any] = {
        "id": str(uuid.uuid4()),
        "request": {
            "model": "mistralai/mistral-7b-instruct:free",
            "messages": [{"role": "user", "content": 'Grüße, 世界! 👋 "quoted"\nnew line'}],
            "temperature": 0.7,
            "stop": ["\n\n", "END"],
            "provider": {"order": ["a", "b"], "allow_fallbacks": False},
            "seed": None,
        },
        "referer": "https://example.test/chat",
        "expires_at": clock() + SESSION_TTL,
    }
    fields.update(changes)
    return SessionInfo(**fields)


def wait_until(predicate: t.Callable[[], t.Any], timeout: float, what: str) -> t.Any:
    """The shared :func:`~tests.support.helpers.wait_until`, polling every 5 ms."""
    return helpers.wait_until(predicate, timeout, what, interval=0.005)


def blocked_clients(url: str, client_name: str) -> int:
    """Connections named ``client_name`` that Redis holds in a blocking command."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        count = sum(
            1 for c in client.client_list() if c.get("name") == client_name and "b" in c["flags"]
        )
        client.connection_pool.disconnect()
    return count


def drop_keys(url: str, prefix: str) -> None:
    with redis.Redis.from_url(url) as client:
        if client.info("replication").get("role") != "master":
            client.connection_pool.disconnect()
            return
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            pipe.delete(key)  # one by one: on a cluster node keys differ in slot
        pipe.execute()
        client.connection_pool.disconnect()


class Backend:
    """Builds stores of one kind over one shared backend, and runs work concurrently
    the way that kind allows (greenlets for memory, threads for Redis)."""

    def __init__(self, kind: str, clock: FakeClock, url: str = "", prefix: str = "") -> None:
        self.kind = kind
        self.clock = clock
        self.url = url
        self.prefix = prefix
        #: ``CLIENT SETNAME`` of this test's Redis connections
        self.client_name = prefix.rstrip(":")
        #: ``host:port`` of every node, for a cluster
        self.cluster_nodes: list[str] = []
        self.stores: list[Store] = []

    def store(self, **options: t.Any) -> Store:
        """A store over the shared backend; for Redis each call is a new "process"."""
        if self.kind == "memory":
            if not self.stores:
                self.stores.append(store_from_url(None, replay_ttl=REPLAY_TTL, clock=self.clock))
            return self.stores[0]
        options.setdefault("client_name", self.client_name)
        store = store_from_url(
            self.url,
            replay_ttl=REPLAY_TTL,
            clock=self.clock,
            key_prefix=self.prefix,
            heartbeat=HEARTBEAT,
            **options,
        )
        self.stores.append(store)
        return store

    def waiting_tails(self) -> int:
        """Tails of this test's stores waiting on Redis: blocked in ``XREAD`` on one
        Redis, subscribed to a shard channel on a cluster."""
        if self.kind == "redis":
            return blocked_clients(self.url, self.client_name)
        count = 0
        for node in self.cluster_nodes:
            with redis.Redis.from_url(f"redis://{node}/0", decode_responses=True) as client:
                count += sum(
                    1
                    for c in client.client_list()
                    if c.get("name") == self.client_name and int(c.get("ssub", 0)) > 0
                )
                client.connection_pool.disconnect()
        return count

    def run_concurrently(self, calls: t.Sequence[t.Callable[[], t.Any]]) -> list[t.Any]:
        """Run all ``calls`` at once; their results in order."""
        if self.kind == "memory":
            greenlets = [gevent.spawn(call) for call in calls]
            gevent.joinall(greenlets, timeout=10, raise_error=True)
            assert all(g.ready() for g in greenlets)
            return [g.value for g in greenlets]
        barrier = threading.Barrier(len(calls), timeout=10)
        results: list[t.Any] = [None] * len(calls)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                barrier.wait()
                results[i] = calls[i]()
            except BaseException as exc:  # re-raised in the test thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads)
        if errors:
            raise errors[0]
        return results

    def close(self) -> None:
        for store in self.stores:
            store.close()
        if self.kind == "redis":
            drop_keys(self.url, self.prefix)
        elif self.kind == "cluster":
            for node in self.cluster_nodes:
                drop_keys(f"redis://{node}/0", self.prefix)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("cluster", id="cluster", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> t.Iterator[Backend]:
    if request.param == "memory":
        backend = Backend("memory", clock)
    elif request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        backend = Backend("cluster", clock, cluster.url, request.getfixturevalue("redis_prefix"))
        backend.cluster_nodes = [node.address for node in cluster.nodes]
    else:
        url = request.getfixturevalue("redis_url")
        backend = Backend("redis", clock, url, request.getfixturevalue("redis_prefix"))
    yield backend
    backend.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store()


def info(store: Store, session_id: str) -> SessionInfo:
    """The session, which must exist."""
    session = store.get(session_id)
    assert session is not None, f"session {session_id} is gone"
    return session


def claimed_session(store: Store, clock: FakeClock) -> SessionInfo:
    session = new_session(clock)
    store.create(session)
    assert store.claim(session.id)
    return session


class TestStoreContract:
    def test_kind(self, backend: Backend, store: Store) -> None:
        # a cluster is a kind of Redis, as /health reports it
        assert store.kind == ("redis" if backend.kind == "cluster" else backend.kind)

    def test_create_get_round_trip(self, store: Store, clock: FakeClock) -> None:
        session = new_session(clock)
        store.create(session)
        assert store.get(session.id) == session
        bare = new_session(clock, referer=None, request={"messages": []})
        store.create(bare)
        assert store.get(bare.id) == bare
        assert info(store, bare.id).referer is None

    def test_any_string_round_trips(self, store: Store, clock: FakeClock) -> None:
        odd = "lone \ud800 surrogate, NUL \x00, emoji 👋, CR \r"
        session = new_session(clock, request={"messages": [{"content": odd}]}, referer=odd)
        store.create(session)
        assert store.get(session.id) == session
        assert store.append(session.id, odd, odd) == 1
        assert [(e.name, e.data) for e in store.read(session.id, 0, timeout=1)] == [(odd, odd)]

    def test_unknown_session(self, store: Store) -> None:
        for unknown in (str(uuid.uuid4()), "not-a-session", "../../etc", "ä*?[]{}:"):
            assert store.get(unknown) is None
            assert store.claim(unknown) is False
            assert store.append(unknown, "chunk", "{}") is None
            assert store.cancel(unknown) is False
            assert store.generation_alive(unknown) is False
            assert store.tick(unknown).readers == 0
            store.attach(unknown, "r1")
            store.detach(unknown, "r1")
            started = time.monotonic()
            assert store.read(unknown, 0, timeout=5) == []
            assert time.monotonic() - started < 2

    def test_pending_expires_exactly_at_expires_at(self, store: Store, clock: FakeClock) -> None:
        session = new_session(clock)
        store.create(session)
        store.append(session.id, "chunk", '{"early": true}')
        clock.now = session.expires_at - 0.001
        assert store.get(session.id) == session
        assert store.count_live() == 1
        clock.now = session.expires_at  # no sweep: expiry is exact by itself
        assert store.get(session.id) is None
        assert store.claim(session.id) is False
        assert store.append(session.id, "chunk", "{}") is None
        assert store.cancel(session.id) is False
        assert store.read(session.id, 0, timeout=0.5) == []
        assert store.count_live() == 0

    def test_claim_once(self, store: Store, clock: FakeClock) -> None:
        session = new_session(clock)
        store.create(session)
        assert store.claim(session.id) is True
        assert store.claim(session.id) is False
        assert info(store, session.id).claimed is True

    def test_claimed_session_outlives_expires_at(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        clock.now = session.expires_at + 10 * SESSION_TTL
        assert info(store, session.id).claimed is True
        assert store.append(session.id, "chunk", "{}") == 1
        assert [e.id for e in store.read(session.id, 0, timeout=1)] == [1]
        assert store.count_live() == 1

    def test_claim_after_the_log_ended_fails(self, store: Store, clock: FakeClock) -> None:
        session = new_session(clock)
        store.create(session)
        assert store.append(session.id, "done", "{}") == 1  # cancelled before any GET
        assert store.claim(session.id) is False

    def test_claim_expired_session_fails(self, store: Store, clock: FakeClock) -> None:
        session = new_session(clock)
        store.create(session)
        clock.now = session.expires_at
        assert store.claim(session.id) is False

    def test_append_numbers_events_from_one(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        payloads = [json.dumps({"content": f"tök {i} 🚀\n"}, ensure_ascii=False) for i in range(25)]
        ids = [store.append(session.id, "chunk", data) for data in payloads]
        assert ids == list(range(1, 26))
        events = store.read(session.id, 0, timeout=1)
        assert [(e.id, e.name, e.data) for e in events] == [
            (i + 1, "chunk", data) for i, data in enumerate(payloads)
        ]
        assert not any(e.terminal for e in events)

    def test_append_batches_appends_each_sessions_as_append_many(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Several sessions at once: each gets its ids in order, a log that ends in
        the batch takes nothing after its terminal event, a gone session none."""
        first, second, ended = (claimed_session(store, clock) for _ in range(3))
        store.append(first.id, "chunk", "0")
        results = store.append_batches(
            {
                first.id: [("chunk", "1"), ("chunk", "2")],
                second.id: [("chunk", "a")],
                ended.id: [("chunk", "x"), ("done", "{}"), ("chunk", "late")],
                "no-such-session": [("chunk", "?")],
            }
        )
        assert results == {
            first.id: [2, 3],
            second.id: [1],
            ended.id: [1, 2],
            "no-such-session": [],
        }
        assert [e.data for e in store.read(first.id, 0, timeout=1)] == ["0", "1", "2"]
        assert [(e.name, e.data) for e in store.read(ended.id, 0, timeout=1)] == [
            ("chunk", "x"),
            ("done", "{}"),
        ]

    def test_read_after_n_resumes_exactly(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        for i in range(1, 13):
            store.append(session.id, "chunk", json.dumps({"n": i}))
        for after in range(12):
            events = store.read(session.id, after, timeout=1)
            assert [e.id for e in events] == list(range(after + 1, 13))
            assert [json.loads(e.data)["n"] for e in events] == list(range(after + 1, 13))
        assert store.read(session.id, 12, timeout=0) == []

    def test_read_times_out_empty(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        store.append(session.id, "chunk", "{}")
        started = time.monotonic()
        assert store.read(session.id, 1, timeout=0.3) == []
        assert 0.25 <= time.monotonic() - started < 5

    def test_read_past_the_end_waits_its_timeout(self, store: Store, clock: FakeClock) -> None:
        # a reader with nothing left to get must not spin
        session = claimed_session(store, clock)
        store.append(session.id, "chunk", "{}")
        store.append(session.id, "done", "{}")
        started = time.monotonic()
        assert store.read(session.id, 2, timeout=0.3) == []
        assert 0.25 <= time.monotonic() - started < 5

    def test_read_wakes_promptly_on_append(self, backend: Backend, clock: FakeClock) -> None:
        writer = backend.store()
        session = claimed_session(writer, clock)
        writer.append(session.id, "chunk", '"first"')
        readers = [backend.store() for _ in range(3)]
        woke: list[tuple[list[int], float]] = []

        def read(store: Store) -> None:
            events = store.read(session.id, 1, timeout=10)
            woke.append(([e.id for e in events], time.monotonic()))

        if backend.kind == "memory":
            greenlets = [gevent.spawn(read, store) for store in readers]
            gevent.sleep(0)  # each reader runs until it waits
            assert not woke
            appended_at = time.monotonic()
            assert writer.append(session.id, "chunk", '"second"') == 2
            gevent.joinall(greenlets, timeout=10, raise_error=True)
        else:
            threads = [threading.Thread(target=read, args=(store,)) for store in readers]
            for thread in threads:
                thread.start()
            # Append only once all three stores' tails sit in XREAD BLOCK, so this
            # is a wake-up.
            wait_until(
                lambda: backend.waiting_tails() == 3,
                timeout=10,
                what="three readers' tails waiting (XREAD BLOCK, or SSUBSCRIBE on a cluster)",
            )
            assert not woke
            appended_at = time.monotonic()
            assert writer.append(session.id, "chunk", '"second"') == 2
            for thread in threads:
                thread.join(10)
        assert [ids for ids, _ in woke] == [[2], [2], [2]]
        assert all(at - appended_at < 2 for _, at in woke), "readers woke late"

    def test_terminal_event_ends_the_log(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        assert store.append(session.id, "chunk", "{}") == 1
        assert info(store, session.id).terminal_id is None
        assert store.append(session.id, "done", '{"finishReason":"stop"}') == 2
        finished = info(store, session.id)
        assert finished.terminal_id == 2
        assert finished.finished
        assert store.append(session.id, "chunk", "{}") is None
        assert store.append(session.id, "error", "{}") is None
        events = store.read(session.id, 0, timeout=1)
        assert [(e.id, e.name, e.terminal) for e in events] == [
            (1, "chunk", False),
            (2, "done", True),
        ]
        assert store.read(session.id, 2, timeout=0.2) == []

    def test_error_is_terminal_too(self, store: Store, clock: FakeClock) -> None:
        session = new_session(clock)
        store.create(session)
        # A session may end before any generation claims it (DELETE before GET).
        assert store.append(session.id, "error", '{"code":"x"}') == 1
        assert info(store, session.id).terminal_id == 1
        assert store.append(session.id, "done", "{}") is None

    def test_finished_session_gone_after_replay_ttl(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        store.append(session.id, "chunk", "{}")
        store.append(session.id, "done", "{}")
        finished_at = clock()
        assert store.count_live() == 0
        clock.now = finished_at + REPLAY_TTL - 0.001
        assert info(store, session.id).terminal_id == 2
        assert len(store.read(session.id, 0, timeout=1)) == 2
        clock.now = finished_at + REPLAY_TTL
        assert store.get(session.id) is None
        assert store.read(session.id, 0, timeout=0.5) == []
        assert store.cancel(session.id) is False

    def test_cancel_flag(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        assert store.tick(session.id).cancelled is False
        assert info(store, session.id).cancelled is False
        assert store.cancel(session.id) is True
        assert info(store, session.id).cancelled is True
        assert store.tick(session.id).cancelled is True
        assert store.cancel(session.id) is True  # idempotent

    def test_cancels_reach_the_process_of_the_generation(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        here, elsewhere = backend.store(), backend.store()
        running = claimed_session(here, clock)
        pending = new_session(clock)
        here.create(pending)
        finished = claimed_session(here, clock)
        here.append(finished.id, "done", "{}")
        assert here.cancels() == []
        assert elsewhere.cancel(running.id) is True
        assert elsewhere.cancel(pending.id) is True  # nobody runs it: no inbox told
        assert elsewhere.cancel(finished.id) is True  # ended: nobody to tell either
        if backend.kind == "memory":
            assert here.cancels() == []  # one process: the relay stopped it itself
        else:
            assert here.cancels() == [running.id]
            assert elsewhere.cancels() == []
        assert here.cancels() == []  # each cancel is taken once
        assert here.tick(running.id).cancelled is True  # and the flag stays

    def test_cancel_before_claim(self, store: Store, clock: FakeClock) -> None:
        session = new_session(clock)
        store.create(session)
        assert store.cancel(session.id) is True
        cancelled = info(store, session.id)
        assert cancelled.cancelled is True
        assert cancelled.claimed is False

    def test_attach_detach_count_in_tick(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        assert store.tick(session.id).readers == 0
        store.attach(session.id, "r1")
        store.attach(session.id, "r2")
        store.attach(session.id, "r1")  # a refresh, not a new reader
        assert store.tick(session.id).readers == 2
        store.detach(session.id, "r1")
        store.detach(session.id, "never-attached")
        assert store.tick(session.id).readers == 1
        store.detach(session.id, "r2")
        assert store.tick(session.id) == store.tick(session.id)
        assert store.tick(session.id).readers == 0

    def test_generation_alive_after_claim_and_tick(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        assert store.generation_alive(session.id) is True
        store.tick(session.id)
        assert store.generation_alive(session.id) is True

    def test_count_live_counts_pending_and_running(self, store: Store, clock: FakeClock) -> None:
        assert store.count_live() == 0
        pending = new_session(clock)
        store.create(pending)
        running = claimed_session(store, clock)
        finished = claimed_session(store, clock)
        store.append(finished.id, "done", "{}")
        assert store.count_live() == 2
        clock.now = pending.expires_at
        assert store.count_live() == 1
        assert store.get(running.id) is not None
        store.append(running.id, "error", "{}")
        assert store.count_live() == 0

    def test_sweep_frees_expired_sessions(self, store: Store, clock: FakeClock) -> None:
        pending = new_session(clock)
        store.create(pending)
        running = claimed_session(store, clock)
        finished = claimed_session(store, clock)
        store.append(finished.id, "done", "{}")
        assert store.sweep(T0) == 0
        assert store.sweep(T0 + REPLAY_TTL - 0.001) == 0
        assert store.sweep(T0 + REPLAY_TTL) == 1  # the finished one
        assert store.get(finished.id) is None  # freed, even by the clock's time
        assert store.sweep(pending.expires_at) == 1
        assert store.get(pending.id) is None
        assert store.sweep(T0 + 100 * SESSION_TTL) == 0  # a running one never expires
        assert store.get(running.id) is not None
        assert store.count_live() == 1

    def test_client_limit_counts_pending_and_running(self, store: Store, clock: FakeClock) -> None:
        first = new_session(clock, client="ip:203.0.113.7")
        assert store.create(first, 2) is None
        clock.advance(10)
        second = new_session(clock, client="ip:203.0.113.7")
        assert store.create(second, 2) is None
        refused = new_session(clock, client="ip:203.0.113.7")
        held = store.create(refused, 2)
        assert held is not None and held.held == 2
        assert held.next_expiry == first.expires_at  # the oldest pending one frees first
        assert store.get(refused.id) is None and store.count_live() == 2
        # another client, or no cap, is not affected
        assert store.create(new_session(clock, client="ip:198.51.100.1"), 2) is None
        assert store.create(new_session(clock, client="ip:203.0.113.7")) is None
        assert store.create(new_session(clock, client="ip:203.0.113.7"), 0) is None

    def test_client_limit_when_every_session_runs(self, store: Store, clock: FakeClock) -> None:
        sessions = [new_session(clock, client="token:abc") for _ in range(2)]
        for session in sessions:
            assert store.create(session, 2) is None
            assert store.claim(session.id)
        clock.advance(SESSION_TTL + 1)  # running sessions do not expire by their deadline
        held = store.create(new_session(clock, client="token:abc"), 2)
        assert held is not None and held.held == 2 and held.next_expiry is None

    def test_client_sessions_free_on_terminal_event_and_expiry(
        self, store: Store, clock: FakeClock
    ) -> None:
        running = new_session(clock, client="ip:192.0.2.1")
        pending = new_session(clock, client="ip:192.0.2.1")
        for session in (running, pending):
            assert store.create(session, 2) is None
        assert store.claim(running.id)
        assert store.create(new_session(clock, client="ip:192.0.2.1"), 2) is not None
        store.append(running.id, "done", "{}")  # finished: no longer counted
        third = new_session(clock, client="ip:192.0.2.1")
        assert store.create(third, 2) is None
        assert store.create(new_session(clock, client="ip:192.0.2.1"), 2) is not None
        clock.advance(SESSION_TTL)  # both pending ones expire exactly at their deadline
        assert store.create(new_session(clock, client="ip:192.0.2.1"), 2) is None
        # cancelled before any GET: ended, so freed at once
        cancelled = new_session(clock, client="ip:192.0.2.1")
        assert store.create(cancelled, 2) is None
        assert store.create(new_session(clock, client="ip:192.0.2.1"), 2) is not None
        assert store.claim(cancelled.id)
        store.append(cancelled.id, "done", "{}")
        assert store.create(new_session(clock, client="ip:192.0.2.1"), 2) is None

    def test_client_bytes_count_unfinished_sessions(self, store: Store, clock: FakeClock) -> None:
        # issue 16: NGAI_MAX_CLIENT_BYTES, released where the session count is
        client = "ip:203.0.113.9"
        first = new_session(clock, client=client, size=400)
        assert store.create(first, 0, 1000) is None
        clock.advance(10)
        running = new_session(clock, client=client, size=500)
        assert store.create(running, 0, 1000) is None
        assert store.claim(running.id)
        assert store.get(running.id).size == 500  # type: ignore[union-attr]
        refused = store.create(new_session(clock, client=client, size=101), 0, 1000)
        assert refused is not None and refused.by_bytes and refused.held_bytes == 900
        assert refused.held == 2 and refused.next_expiry == first.expires_at
        assert store.create(new_session(clock, client=client, size=100), 0, 1000) is None
        # full to the byte; another client, or no byte cap, is not affected
        assert store.create(new_session(clock, client=client, size=1), 0, 1000) is not None
        assert store.create(new_session(clock, client="ip:198.51.100.2", size=999), 0, 1000) is None
        assert store.create(new_session(clock, client="ip:198.51.100.3", size=5000)) is None
        # a finished answer releases its bytes
        store.append(running.id, "done", "{}")
        assert store.create(new_session(clock, client=client, size=450), 0, 1000) is None
        # pending ones release theirs when they expire unstarted
        clock.advance(SESSION_TTL + 1)
        assert store.create(new_session(clock, client=client, size=1000), 0, 1000) is None

    def test_client_bytes_and_count_both_hold(self, store: Store, clock: FakeClock) -> None:
        client = "token:xyz"
        assert store.create(new_session(clock, client=client, size=10), 1, 1000) is None
        by_count = store.create(new_session(clock, client=client, size=10), 1, 1000)
        assert by_count is not None and not by_count.by_bytes
        alone = store.create(new_session(clock, client="ip:192.0.2.77", size=2000), 5, 1000)
        assert alone is not None and alone.by_bytes and alone.held == 0
        assert alone.next_expiry is None and alone.held_bytes == 0

    def test_client_bytes_hold_under_concurrent_creates(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        stores = [backend.store() for _ in range(4)]
        sessions = [new_session(clock, client="ip:10.9.8.6", size=300) for _ in range(12)]
        results = backend.run_concurrently(
            [
                functools.partial(stores[i % 4].create, session, 0, 1000)
                for i, session in enumerate(sessions)
            ]
        )
        assert sum(result is None for result in results) == 3
        assert stores[0].count_live() == 3

    def test_client_limit_holds_under_concurrent_creates(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        stores = [backend.store() for _ in range(4)]
        sessions = [new_session(clock, client="ip:10.9.8.7") for _ in range(12)]
        results = backend.run_concurrently(
            [
                functools.partial(stores[i % 4].create, session, 5)
                for i, session in enumerate(sessions)
            ]
        )
        assert sum(result is None for result in results) == 5
        assert stores[0].count_live() == 5

    def test_concurrent_claims_have_one_winner(self, backend: Backend, clock: FakeClock) -> None:
        stores = [backend.store() for _ in range(2)]
        session = new_session(clock)
        stores[0].create(session)
        calls = [functools.partial(stores[i % 2].claim, session.id) for i in range(24)]
        assert sorted(backend.run_concurrently(calls)) == [False] * 23 + [True]

    def test_racing_terminal_appends_write_one(self, backend: Backend, clock: FakeClock) -> None:
        stores = [backend.store() for _ in range(2)]
        session = claimed_session(stores[0], clock)
        kinds = ["chunk", "done", "chunk", "error"] * 6
        calls = [
            functools.partial(stores[i % 2].append, session.id, name, str(i))
            for i, name in enumerate(kinds)
        ]
        results = backend.run_concurrently(calls)
        written = {
            new_id: name for name, new_id in zip(kinds, results, strict=True) if new_id is not None
        }
        assert sum(name in ("done", "error") for name in written.values()) == 1
        events = stores[1].read(session.id, 0, timeout=1)
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert {e.id: e.name for e in events} == written
        assert [e.terminal for e in events] == [False] * (len(events) - 1) + [True]
        assert info(stores[0], session.id).terminal_id == len(events)

    # --- the /chat door's chats (put_chat / get_chat) -------------------------

    def test_chat_round_trip_and_replace(self, backend: Backend) -> None:
        stores = [backend.store(), backend.store()]  # two processes' stores
        assert stores[0].get_chat("token:ab:chat-1") is None
        stores[0].put_chat("token:ab:chat-1", '["s1","m1"]', 60)
        assert stores[1].get_chat("token:ab:chat-1") == '["s1","m1"]'
        stores[1].put_chat("token:ab:chat-1", '["s2","m2"]', 60)
        assert stores[0].get_chat("token:ab:chat-1") == '["s2","m2"]'
        assert stores[0].get_chat("token:cd:chat-1") is None  # another owner's key
        assert stores[0].get_chat("chat-1") is None

    def test_chat_expires_after_its_ttl(self, backend: Backend, clock: FakeClock) -> None:
        store = backend.store()
        store.put_chat("chat-short", "x", 0.05)
        store.put_chat("chat-long", "y", 60)
        if backend.kind == "memory":
            clock.advance(0.05)
        else:  # Redis expires keys by its own clock
            helpers.wait_until(lambda: store.get_chat("chat-short") is None, 5, "expiry")
        assert store.get_chat("chat-short") is None
        assert store.get_chat("chat-long") == "y"
        store.put_chat("chat-other", "z", 60)  # puts forget what expired
        assert store.get_chat("chat-other") == "z"


@pytest.mark.redis
class TestRedisStore:
    """What only the Redis store promises: errors, TTLs, recovery, many processes."""

    @pytest.fixture
    def backend(self, clock: FakeClock, redis_url: str, redis_prefix: str) -> t.Iterator[Backend]:
        backend = Backend("redis", clock, redis_url, redis_prefix)
        yield backend
        backend.close()

    @pytest.fixture
    def client(self, redis_url: str) -> t.Iterator[redis.Redis]:
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            yield client
            client.connection_pool.disconnect()

    def ttls(self, client: redis.Redis, prefix: str) -> dict[str, int]:
        """PTTL of every key under ``prefix``, by key without the prefix."""
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        return {key.removeprefix(prefix): client.pttl(key) for key in keys}

    def test_unreachable_redis_raises_store_unavailable(self, clock: FakeClock) -> None:
        store = store_from_url(
            f"redis://127.0.0.1:{free_port()}/0",
            replay_ttl=REPLAY_TTL,
            clock=clock,
            socket_connect_timeout=1,
        )
        session = new_session(clock)
        calls: list[t.Callable[[], t.Any]] = [
            store.ping,
            lambda: store.create(session),
            lambda: store.get(session.id),
            lambda: store.claim(session.id),
            lambda: store.append(session.id, "chunk", "{}"),
            lambda: store.read(session.id, 0, timeout=1),
            lambda: store.cancel(session.id),
            store.cancels,
            lambda: store.attach(session.id, "r"),
            lambda: store.detach(session.id, "r"),
            lambda: store.tick(session.id),
            lambda: store.generation_alive(session.id),
            lambda: store.put_chat("chat", "x", 60),
            lambda: store.get_chat("chat"),
            store.count_live,
            lambda: store.sweep(T0),
        ]
        try:
            for call in calls:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as info:
                    call()
                assert not isinstance(info.value, redis.RedisError)
                assert isinstance(info.value.__cause__, redis.ConnectionError)
                assert info.value.retryable
                assert time.monotonic() - started < 3  # no retry loop
        finally:
            store.close()

    def test_every_key_has_a_ttl(
        self, backend: Backend, client: redis.Redis, clock: FakeClock
    ) -> None:
        store = backend.store(liveness_ttl=5.0, running_ttl=120.0)
        prefix = backend.prefix
        session = new_session(clock)
        sid = session.id
        store.create(session)
        ttls = self.ttls(client, prefix)
        assert set(ttls) == {f"s:{sid}", "live"}
        assert 0 < ttls[f"s:{sid}"] <= SESSION_TTL * 1000
        assert ttls["live"] >= ttls[f"s:{sid}"] - 100  # read a few ms apart

        assert store.claim(sid)
        store.append(sid, "chunk", "{}")
        store.attach(sid, "r1")
        store.tick(sid)
        process = f"p:{store.process_id}"  # type: ignore[attr-defined]
        ttls = self.ttls(client, prefix)
        assert set(ttls) == {f"s:{sid}", f"e:{sid}", f"r:{sid}", process, "live"}
        assert all(ttl > 0 for ttl in ttls.values()), ttls
        assert 110_000 < ttls[f"s:{sid}"] <= 120_000
        assert 110_000 < ttls[f"e:{sid}"] <= 120_000
        assert 0 < ttls[process] <= 5_000
        assert 0 < ttls[f"r:{sid}"] <= PRESENCE_TTL * 1000

        store.append(sid, "done", "{}")
        ttls = self.ttls(client, prefix)
        # the empty ``live`` index is gone: Redis deletes empty sorted sets
        assert set(ttls) == {f"s:{sid}", f"e:{sid}", f"r:{sid}", process, "done"}
        for key in (f"s:{sid}", f"e:{sid}", f"r:{sid}"):
            assert 0 < ttls[key] <= REPLAY_TTL * 1000, key
        assert ttls["done"] > 0

        assert store.sweep(T0 + REPLAY_TTL) == 1
        assert set(self.ttls(client, prefix)) <= {"live", "done", process}

        store.put_chat("chat-1", "x", 30)
        assert 0 < self.ttls(client, prefix)["chat:chat-1"] <= 30_000

    def test_reader_presence_lapses(self, store: Store, clock: FakeClock) -> None:
        session = claimed_session(store, clock)
        store.attach(session.id, "r1")
        clock.advance(PRESENCE_TTL / 2)
        store.attach(session.id, "r2")
        clock.now = T0 + PRESENCE_TTL - 0.001
        assert store.tick(session.id).readers == 2
        clock.now = T0 + PRESENCE_TTL  # r1 stopped refreshing two heartbeats ago and more
        assert store.tick(session.id).readers == 1

    def test_generation_alive_lapses_when_its_process_stops(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        store = backend.store(liveness_ttl=0.2)
        elsewhere = backend.store(liveness_ttl=0.2)
        session = claimed_session(store, clock)
        assert elsewhere.generation_alive(session.id)
        # no tick for five times the liveness TTL: the process's heartbeat keeps it
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            assert elsewhere.generation_alive(session.id)
            time.sleep(0.02)
        store.close()  # as its process dies: the heartbeat stops
        wait_until(lambda: not elsewhere.generation_alive(session.id), 5, "the alive key to lapse")
        unclaimed = new_session(clock)
        elsewhere.create(unclaimed)
        assert not elsewhere.generation_alive(unclaimed.id)

    def test_dead_generation_is_swept(
        self, backend: Backend, client: redis.Redis, clock: FakeClock
    ) -> None:
        store = backend.store()
        session = claimed_session(store, clock)
        assert store.count_live() == 1
        client.delete(f"{backend.prefix}s:{session.id}")  # its running TTL ran out
        assert store.sweep(T0) == 1
        assert store.count_live() == 0

    def test_client_share_has_a_ttl_and_forgets_dead_generations(
        self, backend: Backend, client: redis.Redis, clock: FakeClock
    ) -> None:
        store = backend.store(running_ttl=120.0)
        key = f"{backend.prefix}c:ip:192.0.2.9"
        session = new_session(clock, client="ip:192.0.2.9")
        assert store.create(session, 1) is None
        assert 0 < client.pttl(key) <= SESSION_TTL * 1000
        assert store.claim(session.id)
        store.tick(session.id)
        assert 110_000 < client.pttl(key) <= max(SESSION_TTL, 120) * 1000
        assert store.create(new_session(clock, client="ip:192.0.2.9"), 1) is not None
        client.delete(f"{backend.prefix}s:{session.id}")  # its generation died
        assert store.create(new_session(clock, client="ip:192.0.2.9"), 1) is None

    def test_a_create_costs_the_same_however_many_sessions_the_client_holds(
        self, backend: Backend, client: redis.Redis, clock: FakeClock
    ) -> None:
        """A PaaS router without NGAI_TRUSTED_PROXIES is one client for everybody:
        issue 15's soak found every create scanning all of its sessions in Redis
        (0.8 ms of Redis per /prepare at 1,000 streams, Redis blocked meanwhile)."""
        store = backend.store()
        who = "ip:10.0.0.1"
        held = [new_session(clock, client=who, size=100) for _ in range(300)]
        for session in held:
            assert store.create(session, 0, 10**9) is None
        for session in held[:150]:
            assert store.claim(session.id)
        for session in held[:50]:
            store.append(session.id, "done", "{}")  # 250 left in the share

        def scanned(call: t.Callable[[], t.Any]) -> int:
            """EXISTS and HGET commands Redis ran (in scripts) for ``call``."""

            def calls() -> int:
                stats = client.info("commandstats")
                return sum(
                    stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("exists", "hget")
                )

            before = calls()
            call()
            return calls() - before

        assert scanned(lambda: store.create(new_session(clock, client=who, size=100), 0, 10**9)) < 5
        assert scanned(lambda: store.create(new_session(clock, client=who, size=100), 300, 0)) < 5
        # over a limit, it counts exactly: the finished ones are not in the share
        refused = store.create(new_session(clock, client=who, size=100), 0, 252 * 100)
        assert refused is not None and refused.by_bytes
        assert refused.held == 252 and refused.held_bytes == 252 * 100
        ttls = {kind: client.pttl(f"{backend.prefix}{kind}:{who}") for kind in ("c", "cb", "ct")}
        assert all(ttl > 0 for ttl in ttls.values()), ttls
        assert int(client.get(f"{backend.prefix}ct:{who}")) == 252 * 100

    def test_blocking_read_longer_than_socket_timeout(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        store = backend.store(socket_timeout=0.5)  # reads block in slices of 0.25 s
        session = claimed_session(store, clock)
        started = time.monotonic()
        assert store.read(session.id, 0, timeout=0.8) == []
        assert 0.75 <= time.monotonic() - started < 3
        store.append(session.id, "chunk", "{}")
        assert [e.id for e in store.read(session.id, 0, timeout=0.7)] == [1]

    def test_waiting_readers_share_one_blocking_connection(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        writer = backend.store()
        store = backend.store()
        sessions = [claimed_session(writer, clock) for _ in range(20)]
        woke: list[list[int]] = []

        def read(session_id: str) -> None:
            woke.append([e.id for e in store.read(session_id, 0, timeout=10)])

        threads = [threading.Thread(target=read, args=(s.id,)) for s in sessions]
        for thread in threads:
            thread.start()
        tail = store._tail  # type: ignore[attr-defined]
        wait_until(
            lambda: sum(f.waiters for f in tail._streams.values()) == 20, 5, "20 waiting readers"
        )
        wait_until(lambda: blocked_clients(backend.url, backend.client_name) == 1, 5, "XREAD")
        assert blocked_clients(backend.url, backend.client_name) == 1  # one for all twenty
        for session in sessions:
            writer.append(session.id, "chunk", "{}")
        for thread in threads:
            thread.join(5)
        assert woke == [[1]] * 20

    def test_stream_is_capped(
        self, backend: Backend, client: redis.Redis, clock: FakeClock
    ) -> None:
        store = backend.store(max_events=10)
        session = claimed_session(store, clock)
        for _ in range(400):
            store.append(session.id, "chunk", "{}")
        assert client.xlen(f"{backend.prefix}e:{session.id}") < 400
        assert store.append(session.id, "chunk", "{}") == 401

    def test_recovers_when_redis_restarts(
        self, redis_server: RedisServer, redis_prefix: str, clock: FakeClock
    ) -> None:
        store = store_from_url(
            redis_server.url,
            replay_ttl=REPLAY_TTL,
            clock=clock,
            key_prefix=redis_prefix,
            client_name="ngai-restart",
        )
        # readers on another instance (this one serves its own appends from memory)
        elsewhere = store_from_url(
            redis_server.url,
            replay_ttl=REPLAY_TTL,
            clock=clock,
            key_prefix=redis_prefix,
            client_name="ngai-restart",
        )
        try:
            before = claimed_session(store, clock)
            assert store.append(before.id, "chunk", "{}") == 1
            # A reader blocked in XREAD when Redis dies gets StoreUnavailable, at once.
            failures: list[BaseException] = []

            def read() -> None:
                try:
                    elsewhere.read(before.id, 1, timeout=30)
                except BaseException as exc:
                    failures.append(exc)

            reader = threading.Thread(target=read)
            reader.start()
            wait_until(lambda: blocked_clients(redis_server.url, "ngai-restart"), 5, "XREAD")
            redis_server.stop()
            reader.join(5)
            assert not reader.is_alive()
            assert [type(exc) for exc in failures] == [StoreUnavailable]
            with pytest.raises(StoreUnavailable):
                store.ping()
            with pytest.raises(StoreUnavailable):
                store.append(before.id, "chunk", "{}")

            redis_server.start()
            store.ping()
            assert store.get(before.id) is None  # the restarted server is empty
            after = claimed_session(store, clock)  # scripts reloaded after NOSCRIPT
            assert store.append(after.id, "chunk", "{}") == 1
            assert [e.id for e in store.read(after.id, 0, timeout=1)] == [1]
            assert [e.id for e in elsewhere.read(after.id, 0, timeout=1)] == [1]
        finally:
            store.close()
            elsewhere.close()

    def test_readers_of_local_appends_need_no_round_trip(
        self, redis_server: RedisServer, redis_prefix: str, clock: FakeClock
    ) -> None:
        store = store_from_url(
            redis_server.url, replay_ttl=REPLAY_TTL, clock=clock, key_prefix=redis_prefix
        )
        try:
            session = claimed_session(store, clock)
            for n in range(1, 4):
                assert store.append(session.id, "chunk", f'{{"n":{n}}}') == n
            redis_server.stop()  # nothing to ask: the events this process wrote are here
            assert [e.data for e in store.read(session.id, 1, timeout=1)] == ['{"n":2}', '{"n":3}']
            assert store.read(session.id, 3, timeout=0.05) == []
            with pytest.raises(StoreUnavailable):
                store.append(session.id, "chunk", "{}")
            # a failed append drops the local copy: readers go back to Redis, and fail
            with pytest.raises(StoreUnavailable):
                store.read(session.id, 0, timeout=0.05)
        finally:
            store.close()

    def test_many_greenlets_under_gevent_monkey_patching(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """In a gevent worker (patched sockets), blocked readers do not block each other."""
        script = textwrap.dedent(
            """
            from gevent import monkey; monkey.patch_all()
            import json, sys, time, gevent
            from ngai_chat.store import SessionInfo, store_from_url
            import redis
            url, prefix, name = sys.argv[1:4]
            store = store_from_url(url, replay_ttl=60, key_prefix=prefix, client_name=name,
                                   max_connections=4)
            now = time.time()
            store.create(SessionInfo("s1", {"m": 1}, None, now + 60))
            assert store.claim("s1")
            readers = [gevent.spawn(store.read, "s1", 0, 10) for _ in range(50)]
            ticks = [gevent.spawn(store.tick, "s1") for _ in range(50)]
            gevent.joinall(ticks, timeout=5, raise_error=True)
            with redis.Redis.from_url(url) as probe:
                deadline = time.monotonic() + 10
                while sum(c.get("name") == name and "b" in c["flags"]
                          for c in probe.client_list()) < 1:
                    assert time.monotonic() < deadline, "readers did not block"
                    gevent.sleep(0.005)
                probe.connection_pool.disconnect()
            started = time.monotonic()
            store.append("s1", "chunk", "{}")
            gevent.joinall(readers, timeout=5, raise_error=True)
            print(json.dumps({
                "woke": [[e.id for e in g.value] for g in readers],
                "seconds": time.monotonic() - started,
            }))
            store.close()
            """
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", script, redis_url, redis_prefix, redis_prefix.rstrip(":")],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            drop_keys(redis_url, redis_prefix)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["woke"] == [[1]] * 50
        assert result["seconds"] < 2
