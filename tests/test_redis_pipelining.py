"""The Redis store's group commit: the appends that a process's generations make at the
same time go to Redis in one pipeline, each getting its own ids (issue 15, point 2).
"""

from __future__ import annotations

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
import gevent.event
import pytest
import redis

from ngai_chat.errors import StoreUnavailable
from ngai_chat.generation import Writer
from ngai_chat.store import SessionInfo
from ngai_chat.store import store_from_url
from ngai_chat.store.redis import RedisStore
from ngai_chat.store.redis import _Append
from tests.support.helpers import wait_until
from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import chunk
from tests.support.scripted import generation

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[1]
WRITERS = 50


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> t.Iterator[RedisStore]:
    store = store_from_url(redis_url, replay_ttl=60, key_prefix=redis_prefix)
    assert isinstance(store, RedisStore)
    yield store
    store.close()
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def claimed(store: RedisStore) -> str:
    session = SessionInfo(
        id=uuid.uuid4().hex,
        request={"model": "m", "messages": []},
        referer=None,
        expires_at=time.time() + 600,
    )
    store.create(session)
    assert store.claim(session.id)
    return session.id


def test_appends_made_while_one_is_in_flight_go_in_one_pipeline(store: RedisStore) -> None:
    sessions = [claimed(store) for _ in range(WRITERS)]
    together = store._together
    run = together._run
    batches: list[int] = []

    def first_waits_for_the_others(calls: t.Sequence[t.Any]) -> list[t.Any]:
        if not batches:  # hold the first pipeline until every other append queued
            wait_until(lambda: len(together._open.calls) == WRITERS - 1, 10, "the next batch")
        batches.append(len(calls))
        return run(calls)

    together._run = first_waits_for_the_others  # type: ignore[method-assign]
    results: dict[str, list[int]] = {}

    def write(session_id: str) -> None:
        results[session_id] = store.append_many(
            session_id, [("chunk", json.dumps({"s": session_id, "n": n})) for n in (1, 2)]
        )

    threads = [threading.Thread(target=write, args=(sid,)) for sid in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert batches == [1, WRITERS - 1]
    assert all(results[sid] == [1, 2] for sid in sessions)
    elsewhere = store_from_url(store_url(store), replay_ttl=60, key_prefix=store.key_prefix)
    try:
        for sid in sessions:
            events = elsewhere.read(sid, 0, 0)
            assert [(e.id, json.loads(e.data)) for e in events] == [
                (1, {"s": sid, "n": 1}),
                (2, {"s": sid, "n": 2}),
            ]
    finally:
        elsewhere.close()


def store_url(store: RedisStore) -> str:
    kwargs = store._pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def test_one_failing_append_fails_alone(store: RedisStore) -> None:
    """Appends of many sessions go in one script call, and one that fails (a key of
    the wrong type) fails alone: the others, and the calls beside them, land."""
    good, other = claimed(store), claimed(store)
    with redis.Redis.from_url(store_url(store)) as client:
        client.set(f"{store.key_prefix}s:wrong-type", "x")  # HMGET on it is an error
    hash_key, _, readers_key = store._keys(good)
    attach = (store._attach, [hash_key, readers_key], store._args(time.time(), "r1", "30", 30000))
    replies = store._run_together(
        [
            _Append(good, ["chunk", "1", "0", "chunk", "2", "0"]),
            attach,
            _Append("wrong-type", ["chunk", "1", "0"]),
            _Append(other, ["chunk", "1", "0"]),
        ]
    )
    assert replies[0] == [1, 2]
    assert replies[1] == 1
    assert isinstance(replies[2], redis.ResponseError)
    assert "WRONGTYPE" in str(replies[2])
    assert replies[3] == [1]
    assert [e.data for e in store.read(other, 0, 0)] == ["1"]
    assert store.tick(good).readers == 1


def test_greenlets_of_a_gevent_worker_share_pipelines(redis_url: str, redis_prefix: str) -> None:
    """Patched as in a worker: 100 generations appending at once make a few round trips."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import json, sys, time, uuid, gevent
        from ngai_chat.store import SessionInfo, store_from_url
        url, prefix = sys.argv[1:3]
        store = store_from_url(url, replay_ttl=60, key_prefix=prefix)
        pipelines = []
        run = store._together._run
        def counting(calls):
            pipelines.append(len(calls))
            return run(calls)
        store._together._run = counting
        ids = [uuid.uuid4().hex for _ in range(100)]
        for sid in ids:
            store.create(SessionInfo(sid, {"m": 1}, None, time.time() + 60))
            assert store.claim(sid)
        def write(sid):
            return [store.append(sid, "chunk", json.dumps({"n": n})) for n in range(1, 11)]
        greenlets = [gevent.spawn(write, sid) for sid in ids]
        gevent.joinall(greenlets, timeout=30, raise_error=True)
        print(json.dumps({"ids": [g.value for g in greenlets], "pipelines": pipelines}))
        store.close()
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, redis_url, redis_prefix],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        with redis.Redis.from_url(redis_url) as client:
            keys = list(client.scan_iter(match=f"{redis_prefix}*", count=1000))
            if keys:
                client.delete(*keys)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ids"] == [list(range(1, 11))] * 100
    assert sum(result["pipelines"]) == 1000
    # the greenlets queue behind the first pipeline in flight: about 10 full rounds
    assert len(result["pipelines"]) <= 25, result["pipelines"]


def test_the_first_of_a_batch_killed_while_waiting_its_turn_still_sends_it() -> None:
    """Patched as in a worker: the caller that is to send the next batch is killed
    (a generation stopped) while a round trip is in flight; the batch still goes,
    its other caller gets its reply, and the killed one dies after."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import json, gevent
        from gevent.event import Event
        from ngai_chat.store.redis import _Together
        sent, release = [], Event()
        def run(calls):
            sent.append(list(calls))
            if len(sent) == 1:
                release.wait(10)  # the first round trip stays in flight
            return [f"reply {call}" for call in calls]
        together = _Together(run)
        first = gevent.spawn(together.call, "a")
        gevent.sleep(0.01)
        leader = gevent.spawn(together.call, "b")  # first of the next batch
        gevent.sleep(0.01)
        other = gevent.spawn(together.call, "c")
        gevent.sleep(0.01)
        leader.kill(block=False)
        gevent.sleep(0.01)
        release.set()
        gevent.joinall([first, leader, other], timeout=10)
        print(json.dumps({
            "sent": sent,
            "first": first.value,
            "other": other.value,
            "leader_killed": isinstance(leader.exception, gevent.GreenletExit)
            or leader.value is not None and type(leader.value).__name__ == "GreenletExit",
            "all_ended": all(g.ready() for g in (first, leader, other)),
        }))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sent"] == [["a"], ["b", "c"]]
    assert result["first"] == "reply a"
    assert result["other"] == "reply c"
    assert result["leader_killed"] is True
    assert result["all_ended"] is True


def count_calls(obj: t.Any, name: str) -> list[int]:
    """Count the calls of ``obj.name`` from now on: ``[calls]``, kept up to date."""
    calls = [0]
    real = getattr(obj, name)

    def counting(*args: t.Any, **kwargs: t.Any) -> t.Any:
        calls[0] += 1
        return real(*args, **kwargs)

    setattr(obj, name, counting)
    return calls


def test_a_reader_following_another_process_takes_the_tails_entries(
    store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    """The tail's one blocking read brings the new events: a reader waiting at the end
    of a log generated elsewhere makes no read of its own."""
    elsewhere = store_from_url(redis_url, replay_ttl=60, key_prefix=redis_prefix)
    assert isinstance(elsewhere, RedisStore)
    try:
        sid = claimed(store)
        own_reads = count_calls(elsewhere._redis, "xread")
        pipelines = count_calls(elsewhere._redis, "pipeline")
        got: list[list[tuple[int, str]]] = []

        def follow() -> None:
            after = 0
            while after < 6:
                events = elsewhere.read(sid, after, timeout=10)
                got.append([(e.id, e.data) for e in events])
                after = events[-1].id

        reader = threading.Thread(target=follow)
        reader.start()
        for n in range(1, 7):
            # wait until the reader waits in the tail at the end of the log
            wait_until(lambda: elsewhere._tail._streams, 10, "the reader to wait")
            wait_until(
                lambda n=n: (
                    next(iter(elsewhere._tail._streams.values())).waiters == 1
                    and next(iter(elsewhere._tail._streams.values())).latest == n - 1
                ),
                10,
                "the reader at the end",
            )
            assert store.append(sid, "chunk", f'{{"n":{n}}}') == n
            wait_until(lambda n=n: sum(len(batch) for batch in got) == n, 10, "the event")
        reader.join(10)
        assert [event for batch in got for event in batch] == [
            (n, f'{{"n":{n}}}') for n in range(1, 7)
        ]
        assert own_reads == [0]
        # only its first read, before the tail followed the stream, went to Redis
        assert pipelines == [1]
    finally:
        elsewhere.close()


def test_append_batches_make_one_round_trip_and_fail_per_session(store: RedisStore) -> None:
    """Several sessions' events in one call of the append script; one that fails (a
    key of the wrong type) gets its own failure, the others their ids, mirrored here."""
    good, other = claimed(store), claimed(store)
    with redis.Redis.from_url(store_url(store)) as client:
        client.set(f"{store.key_prefix}s:wrong-type", "x")
    round_trips = count_calls(store._together, "_run")
    results = store.append_batches(
        {
            good: [("chunk", "a"), ("chunk", "b")],
            "wrong-type": [("chunk", "c")],
            other: [("chunk", "d")],
        }
    )
    assert round_trips == [1]
    assert results[good] == [1, 2]
    assert results[other] == [1]
    assert isinstance(results["wrong-type"], StoreUnavailable)
    assert "Redis" in str(results["wrong-type"])  # no WRONGTYPE text for a client
    assert [e.data for e in store.read(good, 0, 0)] == ["a", "b"]  # from this process's copy


def _answer(chunks: int, pause: float) -> list[t.Any]:
    steps = [step for n in range(chunks) for step in (pause, chunk(f"{n} "))]
    return [*steps, chunk("", finish="stop")]


def _texts(store: RedisStore, session_id: str) -> list[str]:
    events, after = [], 0
    while batch := store.read(session_id, after, 0):
        events += batch
        after = batch[-1].id
    return [e.data if e.name == "chunk" else e.name for e in events]


def test_the_writer_appends_every_generations_chunks_together(store: RedisStore) -> None:
    """50 generations whose chunks come at the same moments: one writer appends the
    chunks of all of them in one round trip per moment, each log exact."""
    sessions = [store.get(claimed(store)) for _ in range(WRITERS)]
    batches: list[int] = []
    chunks = [0]
    append_batches = store.append_batches

    def counting(appends: t.Any) -> t.Any:
        carried = sum(name == "chunk" for events in appends.values() for name, _ in events)
        if carried:  # (not a terminal event's own append)
            batches.append(len(appends))
            chunks[0] += carried
        return append_batches(appends)

    store.append_batches = counting  # type: ignore[method-assign]
    writer = Writer(store, gevent.spawn)
    # The moments: every generation waits at gate n for its chunk n; a gate opens
    # once all of them have relayed the chunk before it (not after a pause, which a
    # loaded machine would stretch into moments of their own).
    gates = [gevent.event.Event() for _ in range(10)]
    answer = [step for n, gate in enumerate(gates) for step in (gate, chunk(f"{n} "))]
    generations = [
        generation(store, session, ScriptedUpstream([*answer, chunk("", finish="stop")]), writer)
        for session in sessions
        if session is not None
    ]
    greenlets = [gevent.spawn(g.run) for g in generations]
    for n, gate in enumerate(gates):
        wait_until(
            lambda n=n: all(g.events >= n for g in generations),
            10,
            f"every generation's chunk {n - 1}",
            sleep=gevent.sleep,
        )
        gate.set()
    gevent.joinall(greenlets, timeout=60)
    assert chunks == [11 * WRITERS]  # every chunk (10 and the finish) went through it
    assert len(batches) <= 15, batches  # 10 moments, not 550 chunks
    assert max(batches) == WRITERS
    for g in generations:
        texts = _texts(store, g.session.id)
        assert texts[-1] == "done"
        assert [json.loads(text)["choices"][0]["delta"]["content"] for text in texts[:10]] == [
            f"{n} " for n in range(10)
        ]


def test_a_generation_whose_appends_fail_ends_alone(store: RedisStore) -> None:
    """One session's appends fail (its hash became a string): its generation ends
    with the store's failure, the others beside it in the same round trips finish."""
    sessions = [store.get(claimed(store)) for _ in range(3)]
    assert all(sessions)
    broken = sessions[0]
    assert broken is not None
    writer = Writer(store, gevent.spawn)
    broken_here = gevent.event.Event()  # the rest of the answers wait for the break
    steps = _answer(10, 0.01)
    generations = [
        generation(store, session, ScriptedUpstream([*steps[:6], broken_here, *steps[6:]]), writer)
        for session in sessions
        if session is not None
    ]
    greenlets = [gevent.spawn(g.run) for g in generations]
    wait_until(
        lambda: all(g.events == 3 and not g.writing for g in generations),
        10,
        "the first three chunks appended",
        sleep=gevent.sleep,
    )
    with redis.Redis.from_url(store_url(store)) as client:
        client.delete(f"{store.key_prefix}s:{broken.id}")
        client.set(f"{store.key_prefix}s:{broken.id}", "x")
    broken_here.set()
    gevent.joinall(greenlets, timeout=30)
    assert isinstance(generations[0].write_error, StoreUnavailable)
    assert generations[0].events < 11  # it stopped relaying
    for g in generations[1:]:
        assert g.write_error is None
        assert _texts(store, g.session.id)[-1] == "done"
        assert len(_texts(store, g.session.id)) == 12


def test_a_writer_killed_mid_round_trip_tells_its_generations() -> None:
    """Nobody else would append their chunks: they end with a store failure instead
    of waiting for ever for their chunks to be written."""
    stuck = gevent.event.Event()

    class StuckStore:
        shared = True

        def append_batches(self, batches: t.Any) -> t.Any:
            stuck.wait()

    session = SessionInfo(
        id="s1", request={"model": "m", "messages": []}, referer=None, expires_at=time.time()
    )
    writer = Writer(t.cast(t.Any, StuckStore()), gevent.spawn)
    waiting = generation(t.cast(t.Any, StuckStore()), session, ScriptedUpstream([]), writer)
    waiting.outbox.append(("chunk", "{}"))
    waiting.writing = True
    writer.queue(waiting)
    gevent.sleep(0.01)  # the writer is in its round trip
    assert writer._greenlet is not None
    writer._greenlet.kill()
    assert waiting.writing is False
    assert waiting.written.is_set()
    assert isinstance(waiting.write_error, StoreUnavailable)
