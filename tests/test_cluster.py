"""Many instances on a Redis Cluster: gunicorn processes sharing a real 3 + 3 cluster
(started by the tests) and one fake upstream, as ``tests/test_scale_out.py`` does
on one Redis; plus failovers in the middle of streams.

A stream whose node fails over must go on with every event in order, or end with
exactly one terminal error event: never a silent stop, a duplicate, or ids that
skip.
"""

from __future__ import annotations

import collections
import threading
import time
import typing as t
import uuid

import pytest
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.redis_cluster import RedisCluster
from tests.conftest import API_KEY
from tests.support.helpers import wait_until
from tests.support.sse_parse import Frame
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import texts

pytestmark = [pytest.mark.redis, pytest.mark.live]

PREFIX = f"ngai-cluster-{uuid.uuid4().hex[:8]}:"


def env_for(fake: fu.FakeUpstream, cluster: RedisCluster) -> dict[str, str]:
    return {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "REDIS_URL": cluster.url,
        "NGAI_REDIS_KEY_PREFIX": PREFIX,
        "NGAI_HEARTBEAT_INTERVAL": "0.5",
        "NGAI_ABANDON_TIMEOUT": "3",
        "NGAI_UPSTREAM_READ_TIMEOUT": "10",
    }


@pytest.fixture(scope="module")
def instances(fake: fu.FakeUpstream, redis_cluster: RedisCluster) -> t.Iterator[list[LiveApp]]:
    apps = [LiveApp(env_for(fake, redis_cluster)) for _ in range(3)]
    try:
        for app in apps:
            app.start()
        yield apps
    finally:
        closing = [threading.Thread(target=app.close) for app in apps]  # at once
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join(30)


def slow_model(fake: fu.FakeUpstream, words: int = 20, interval: float = 0.05) -> tuple[str, str]:
    model = f"test/{uuid.uuid4().hex[:10]}"
    pieces = [f"wörd{i} " for i in range(words)]
    fake.script(model, fu.text_chunks(pieces, interval=interval))
    return model, "".join(pieces)


def prepare(app: LiveApp, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    response = requests.post(app.url("/prepare"), json=body, timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["sessionId"])


def read_all(app: LiveApp, sid: str, timeout: float = 20, **headers: str) -> list[Frame]:
    with StreamReader(app.url(f"/stream/{sid}"), headers=headers, timeout=timeout) as reader:
        return events(reader.read_all())


def signature(frames: list[Frame]) -> list[tuple[str | None, str | None, str | None]]:
    return [(f.id, f.name, f.data) for f in frames]


def hash_key(sid: str) -> str:
    return f"{PREFIX}s:{{{sid}}}"


def test_health_reports_the_redis_store(instances: list[LiveApp]) -> None:
    for app in instances:
        body = requests.get(app.url("/health"), timeout=5).json()
        assert body["status"] == "ok" and body["store"] == "redis"


def test_prepare_here_stream_there_resume_elsewhere(
    instances: list[LiveApp], fake: fu.FakeUpstream
) -> None:
    a, b, c = instances
    model, expected = slow_model(fake)
    sid = prepare(a, model)
    with StreamReader(b.url(f"/stream/{sid}"), timeout=20) as first:
        seen = [first.until(lambda f: f.name == "chunk") for _ in range(4)]
    rest = read_all(c, sid, **{"Last-Event-ID": seen[-1].id or ""})
    whole = seen + rest
    assert [int(f.id or 0) for f in whole] == list(range(1, len(whole) + 1))
    assert texts(whole) == expected and whole[-1].name == "done"
    assert signature(read_all(a, sid)) == signature(whole)  # a replay on a third
    assert len(fake.chat_requests(model)) == 1


def test_sessions_spread_over_every_master(
    instances: list[LiveApp], fake: fu.FakeUpstream, redis_cluster: RedisCluster
) -> None:
    model, _ = slow_model(fake, words=1, interval=0)
    sids = [prepare(instances[i % 3], model) for i in range(24)]
    owner = redis_cluster.owners()
    by_master = collections.Counter(owner(hash_key(sid)).port for sid in sids)
    masters = {node.port for node in redis_cluster.masters()}
    assert set(by_master) == masters, by_master
    for sid in sids:  # and each is really there, where its slot says
        with owner(hash_key(sid)).client() as client:
            assert client.exists(hash_key(sid))


def test_racing_instances_make_one_upstream_request_per_session(
    instances: list[LiveApp], fake: fu.FakeUpstream
) -> None:
    model, expected = slow_model(fake, words=10, interval=0.02)
    sids = [prepare(instances[i % 3], model) for i in range(5)]
    results: dict[tuple[str, int], list[Frame]] = {}

    def reader(sid: str, index: int) -> None:
        results[sid, index] = read_all(instances[index % 3], sid)

    threads = [
        threading.Thread(target=reader, args=(sid, i)) for sid in sids for i in range(3)
    ]  # every session read from the three instances at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 15
    for sid in sids:
        first = signature(results[sid, 0])
        assert all(signature(results[sid, i]) == first for i in range(3))
        assert texts(results[sid, 0]) == expected
    assert len(fake.chat_requests(model)) == len(sids)


def test_delete_on_one_instance_stops_the_generation_on_another(
    instances: list[LiveApp], fake: fu.FakeUpstream
) -> None:
    a, b, c = instances
    model = f"test/{uuid.uuid4().hex[:10]}"
    fake.script(model, fu.text_chunks(["tok "] * 500, interval=0.1))
    sid = prepare(a, model)
    with StreamReader(b.url(f"/stream/{sid}"), timeout=20) as reader:
        reader.until(lambda f: f.name == "chunk")
        upstream = fake.wait_for_request(model)
        deleted_at = time.monotonic()
        assert requests.delete(c.url(f"/stream/{sid}"), timeout=5).status_code == 204
        done = reader.until(lambda f: f.name in {"done", "error"})
    assert done.name == "done" and done.json["finishReason"] == "cancelled"
    assert fake.wait_closed(upstream, timeout=3) - deleted_at < 1.0


def test_killed_generator_ends_readers_elsewhere(
    instances: list[LiveApp], fake: fu.FakeUpstream, redis_cluster: RedisCluster
) -> None:
    with LiveApp(env_for(fake, redis_cluster)) as doomed:
        model = f"test/{uuid.uuid4().hex[:10]}"
        fake.script(model, fu.text_chunks(["tok "] * 500, interval=0.1))
        sid = prepare(doomed, model)
        with StreamReader(doomed.url(f"/stream/{sid}"), timeout=20) as starter:
            starter.until(lambda f: f.name == "chunk")  # the generation runs on `doomed`
            with StreamReader(instances[0].url(f"/stream/{sid}"), timeout=20) as survivor:
                survivor.until(lambda f: f.name == "chunk")
                doomed.kill()
                killed_at = time.monotonic()
                terminal = survivor.until(lambda f: f.name in {"done", "error"})
                noticed_after = time.monotonic() - killed_at
    assert terminal.name == "error" and terminal.json["code"] == "upstream_interrupted"
    assert noticed_after < 10
    assert read_all(instances[1], sid)[-1].json["code"] == "upstream_interrupted"


# -- failovers ----------------------------------------------------------------------

#: chunks of each stream, and seconds between them: long enough that the failover
#: falls in the middle of every stream
WORDS, INTERVAL = 40, 0.1


class Streams:
    """Sessions prepared on one instance, each read to its end from another (and,
    for some, from a third as well), every frame kept."""

    def __init__(self, instances: list[LiveApp], fake: fu.FakeUpstream, count: int) -> None:
        self.model, self.expected = slow_model(fake, words=WORDS, interval=INTERVAL)
        self.sids = [prepare(instances[i % 3], self.model) for i in range(count)]
        self.frames: dict[tuple[str, int], list[Frame]] = {}
        self.started: set[tuple[str, int]] = set()
        self._threads = [
            threading.Thread(target=self._read, args=(instances, sid, i, reader), daemon=True)
            for i, sid in enumerate(self.sids)
            for reader in ((1, 2) if i % 2 else (1,))
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, instances: list[LiveApp], sid: str, i: int, reader: int) -> None:
        app = instances[(i + reader) % 3]
        frames = self.frames.setdefault((sid, reader), [])
        with StreamReader(app.url(f"/stream/{sid}"), timeout=60) as stream:
            while (frame := stream.next()) is not None:
                if frame.name:
                    frames.append(frame)
                    self.started.add((sid, reader))

    def wait_started(self) -> None:
        wait_until(
            lambda: len(self.started) == len(self._threads), 20, "every stream's first chunk"
        )

    def join(self) -> None:
        for thread in self._threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in self._threads), "a stream never ended"

    def check(self) -> collections.Counter[str]:
        """Every stream honest; how they ended (``done`` or the error's code)."""
        outcomes: collections.Counter[str] = collections.Counter()
        for (sid, reader), frames in self.frames.items():
            where = f"session {sid} reader {reader}"
            assert frames, f"{where}: no events"
            log = frames
            if len(frames) > 1 and frames[-1].id == frames[-2].id:
                # the relay's own error, not the log's: the store failed past its
                # failover wait; it repeats the last id so a reconnect resumes there
                assert frames[-1].json["code"] == "store_unavailable", f"{where}: {frames[-1]}"
                log = frames[:-1]
            ids = [int(f.id or 0) for f in log]
            assert ids == list(range(1, len(ids) + 1)), f"{where}: {signature(frames)}"
            terminal = [f for f in frames if f.name in {"done", "error"}]
            assert len(terminal) == 1 and frames[-1] is terminal[0], f"{where}: {terminal}"
            chunks = texts(frames)
            assert self.expected.startswith(chunks), f"{where}: wrong text {chunks!r}"
            if frames[-1].name == "done":
                assert chunks == self.expected, f"{where}: done without every chunk"
                outcomes["done"] += 1
            else:
                outcomes[str(frames[-1].json["code"])] += 1
        return outcomes


def master_with_most(cluster: RedisCluster, sids: list[str]) -> t.Any:
    owner = cluster.owners()
    counts = collections.Counter(owner(hash_key(sid)).port for sid in sids)
    port = counts.most_common(1)[0][0]
    return next(node for node in cluster.nodes if node.port == port)


def test_graceful_failover_mid_stream_loses_nothing(
    instances: list[LiveApp], fake: fu.FakeUpstream, redis_cluster: RedisCluster
) -> None:
    redis_cluster.wait_healthy()  # every master has its replica in sync
    streams = Streams(instances, fake, count=6)
    streams.wait_started()
    master = master_with_most(redis_cluster, streams.sids)
    replica = redis_cluster.replica_of(master)
    with replica.client() as client:
        assert client.execute_command("CLUSTER", "FAILOVER") in (True, "OK")
    wait_until(lambda: replica.role() == "master", 20, "the replica promoted")
    streams.join()
    outcomes = streams.check()
    print(f"graceful failover: {dict(outcomes)}")
    # a graceful failover syncs the replica first: every stream goes on, complete
    assert outcomes == {"done": len(streams.frames)}, outcomes
    assert len(fake.chat_requests(streams.model)) == len(streams.sids)


def test_killed_master_mid_stream_goes_on_or_ends_with_one_error(
    instances: list[LiveApp], fake: fu.FakeUpstream, redis_cluster: RedisCluster
) -> None:
    redis_cluster.wait_healthy()
    streams = Streams(instances, fake, count=6)
    try:
        streams.wait_started()
        master = master_with_most(redis_cluster, streams.sids)
        replica = redis_cluster.replica_of(master)
        master.kill()
        wait_until(lambda: replica.role() == "master", 20, "the replica promoted")
        streams.join()
    finally:
        redis_cluster.restart_killed()  # a replica again, once it has synced
    outcomes = streams.check()
    print(f"SIGKILLed master: {dict(outcomes)}")
    assert set(outcomes) <= {"done", "store_unavailable", "upstream_interrupted"}, outcomes
    assert len(fake.chat_requests(streams.model)) == len(streams.sids)
    # the service is whole again: a new session on every instance streams to its end
    for app in instances:
        model, expected = slow_model(fake, words=5, interval=0.01)
        assert texts(read_all(app, prepare(app, model))) == expected
