"""What only the Redis Cluster store does: hash-tagged keys, its URL, and writes that
stay honest when a failover loses the newest of them (asynchronous replication).

A failover that loses writes cannot be staged on demand (on loopback a replica is
never behind), so the loss is made by hand: the newest events are removed from the
session's log on its master, as a promoted replica that had not received them
would lack them.
"""

from __future__ import annotations

import json
import time
import typing as t
import uuid

import pytest
import redis

from bench.redis_cluster import RedisCluster
from ngai_chat.config import ConfigError
from ngai_chat.store import SessionInfo
from ngai_chat.store import store_from_url
from ngai_chat.store.redis_cluster import ClusterStore
from ngai_chat.store.redis_cluster import parse_cluster_url
from tests.support.helpers import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_cluster: RedisCluster) -> t.Iterator[ClusterStore]:
    prefix = f"ngai-test-{uuid.uuid4().hex}:"
    store = store_from_url(redis_cluster.url, replay_ttl=300, key_prefix=prefix)
    assert isinstance(store, ClusterStore)
    yield store
    store.close()


def running(store: ClusterStore) -> str:
    sid = str(uuid.uuid4())
    store.create(SessionInfo(id=sid, request={}, referer=None, expires_at=time.time() + 600))
    assert store.claim(sid)
    return sid


def lose_newest(cluster: RedisCluster, store: ClusterStore, sid: str, count: int) -> None:
    """Make the log look as a replica that missed its newest ``count`` events would."""
    hash_key, stream_key, _ = store._keys(sid)
    with cluster.node_of(hash_key).client() as client:
        last = int(client.hget(hash_key, "last") or 0)
        kept = client.xrange(stream_key, "-", f"0-{last - count}")
        ttl = client.pttl(stream_key)
        client.delete(stream_key)  # XDEL would leave the stream's top id behind
        for entry_id, fields in kept:
            client.xadd(stream_key, fields, id=entry_id)
        client.pexpire(stream_key, ttl)
        client.hset(hash_key, "last", last - count)


def log_of(store: ClusterStore, sid: str) -> list[tuple[int, str, str]]:
    reader = ClusterStore(
        store_url(store), replay_ttl=300, key_prefix=store.key_prefix
    )  # another process: no local copy
    try:
        events = []
        while True:
            batch = reader.read(sid, events[-1][0] if events else 0, timeout=0)
            if not batch:
                return events
            events += [(e.id, e.name, e.data) for e in batch]
    finally:
        reader.close()


def store_url(store: ClusterStore) -> str:
    return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in store._nodes)


def test_every_key_of_a_session_in_one_slot(
    store: ClusterStore, redis_cluster: RedisCluster
) -> None:
    sid = running(store)
    store.attach(sid, "reader")
    store.append(sid, "chunk", '"a"')
    keys = [*store._keys(sid), store._channel(sid)]
    with redis_cluster.masters()[0].client() as client:
        slots = {client.cluster("keyslot", key) for key in keys}
    assert len(slots) == 1
    with redis_cluster.node_of(keys[0]).client() as client:
        assert all(client.exists(key) for key in keys[:3])


def test_a_failover_that_lost_events_is_repaired_by_their_writer(
    store: ClusterStore, redis_cluster: RedisCluster
) -> None:
    sid = running(store)
    for i in range(5):
        assert store.append(sid, "chunk", f'"{i}"') == i + 1
    lose_newest(redis_cluster, store, sid, 2)
    assert store.append(sid, "chunk", '"5"') == 6
    assert store.append(sid, "done", "{}") == 7
    assert log_of(store, sid) == [
        *[(i + 1, "chunk", f'"{i}"') for i in range(6)],
        (7, "done", "{}"),
    ]


def test_a_hole_its_writer_cannot_fill_ends_the_log_after_every_id_it_wrote(
    store: ClusterStore, redis_cluster: RedisCluster
) -> None:
    sid = running(store)
    for i in range(5):
        store.append(sid, "chunk", f'"{i}"')
    store._local._drop(sid)  # no copy of what was lost
    lose_newest(redis_cluster, store, sid, 2)
    assert store.append(sid, "chunk", '"5"') is None  # not written past the hole
    events = log_of(store, sid)
    assert [e[0] for e in events] == [1, 2, 3, 6]  # readers at 4 or 5 see the end too
    end = events[-1]
    assert end[1] == "error" and json.loads(end[2])["code"] == "store_unavailable"
    info = store.get(sid)
    assert info is not None and info.terminal_id == 6
    assert store.append(sid, "chunk", '"6"') is None


def test_a_retried_append_whose_reply_was_lost_is_not_written_twice(
    store: ClusterStore,
) -> None:
    sid = running(store)
    store.append(sid, "chunk", '"0"')
    batch = [("chunk", '"1"'), ("chunk", '"2"')]
    assert store._append_script(sid, batch, 1, 0) == [2, 3]
    # the same call again (its reply lost to a failover): found written, not rewritten
    assert store._append_script(sid, batch, 1, 0) == [2, 3]
    assert [e[0] for e in log_of(store, sid)] == [1, 2, 3]


def test_a_retried_claim_wins_once(store: ClusterStore) -> None:
    sid = str(uuid.uuid4())
    store.create(SessionInfo(id=sid, request={}, referer=None, expires_at=time.time() + 600))
    keys = list(store._keys(sid)[:2])
    args = store._args(time.time(), 60000, store.process_id, "token-1")
    assert store._run("CLAIM", keys, args)[0] == 1
    assert store._run("CLAIM", keys, args)[0] == 1  # the same claim, retried
    other = store._args(time.time(), 60000, store.process_id, "token-2")
    assert store._run("CLAIM", keys, other)[0] == 0


def test_cluster_urls() -> None:
    nodes, options = parse_cluster_url("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001,h")
    assert nodes == [("10.0.0.1", 7000), ("::1", 7001), ("h", 6379)]
    assert options == {"ssl": False, "username": "u", "password": "p@ss"}
    assert parse_cluster_url("rediss+cluster://:secret@h:1/0")[1] == {
        "ssl": True,
        "password": "secret",
    }
    for bad in (
        "redis+cluster://",
        "redis+cluster://h:notaport",
        "redis+cluster://:secret@h:1/3",
        "redis+cluster://:secret@h:99999",
    ):
        with pytest.raises(ConfigError) as error:
            parse_cluster_url(bad)
        assert "secret" not in str(error.value)


def test_an_unreachable_cluster_fails_within_the_failover_wait() -> None:
    store = ClusterStore(
        "redis+cluster://127.0.0.1:1", replay_ttl=300, failover_wait=1, socket_connect_timeout=1
    )
    started = time.monotonic()
    with pytest.raises(Exception) as error:
        store.get("x")
    assert type(error.value).__name__ == "StoreUnavailable"
    assert isinstance(error.value.__cause__, redis.RedisError)
    assert time.monotonic() - started < 10
    store.close()


def test_liveness_is_the_process_s_and_lapses_when_it_stops(redis_cluster: RedisCluster) -> None:
    prefix = f"ngai-test-{uuid.uuid4().hex}:"
    here = ClusterStore(redis_cluster.url, replay_ttl=300, key_prefix=prefix, liveness_ttl=1.0)
    elsewhere = ClusterStore(redis_cluster.url, replay_ttl=300, key_prefix=prefix)
    try:
        sids = [running(here) for _ in range(30)]  # spread over the three masters
        signals = here.tick_many(sids)
        assert all(not s.cancelled and s.readers == 0 for s in signals.values())
        time.sleep(1.5)  # past one liveness TTL: only the heartbeat keeps them alive
        assert all(elsewhere.generation_alive(sid) for sid in sids)
        elsewhere.cancel(sids[0])
        assert here.tick(sids[0]).cancelled  # a cancel from another process
        here.close()  # the process stops renewing: every generation of it lapses
        wait_until(lambda: not any(elsewhere.generation_alive(sid) for sid in sids), 5, "the lapse")
    finally:
        here.close()
        elsewhere.close()


@pytest.mark.parametrize("written", [False, True], ids=["never-written", "reply-lost"])
def test_after_an_append_that_failed_unseen_the_next_id_is_past_it(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch, written: bool
) -> None:
    sid = running(store)
    for i in range(3):
        store.append(sid, "chunk", f'"{i}"')
    real = store._together.call_all

    def failing(calls: t.Any) -> t.Any:
        if written:
            real(calls)  # written (and maybe read elsewhere), then the reply is lost
        raise redis.ConnectionError("the node went away")

    monkeypatch.setattr(store._together, "call_all", failing)
    with pytest.raises(Exception, match="unreachable"):
        store.append(sid, "chunk", '"3"')
    monkeypatch.undo()
    # event 4 may have been seen: the end is numbered past it either way
    assert store.append(sid, "error", '{"code":"store_unavailable"}') == 5
    ids = [e[0] for e in log_of(store, sid)]
    assert ids == ([1, 2, 3, 4, 5] if written else [1, 2, 3, 5])
