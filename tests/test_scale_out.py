"""Many instances on one Redis: gunicorn processes sharing a real Redis and one fake upstream.

Each app is its own gunicorn master with a gevent worker, as separate instances
behind a load balancer would be; the Redis server is private to this module, so
that it can be stopped and restarted mid-stream.
"""

from __future__ import annotations

import threading
import time
import typing as t
import uuid

import pytest
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.live import readers_that_never_read
from bench.live import vm_rss_kib
from tests.conftest import API_KEY
from tests.support.redis_server import RedisServer
from tests.support.sse_parse import Frame
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import texts

pytestmark = [pytest.mark.redis, pytest.mark.live]


@pytest.fixture(scope="module")
def redis() -> t.Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def env_for(fake: fu.FakeUpstream, redis: RedisServer, prefix: str) -> dict[str, str]:
    return {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "REDIS_URL": redis.url,
        "NGAI_REDIS_KEY_PREFIX": prefix,
        "NGAI_HEARTBEAT_INTERVAL": "0.5",
        "NGAI_ABANDON_TIMEOUT": "3",
        "NGAI_UPSTREAM_READ_TIMEOUT": "10",
    }


@pytest.fixture(scope="module")
def instances(fake: fu.FakeUpstream, redis: RedisServer) -> t.Iterator[list[LiveApp]]:
    env = env_for(fake, redis, f"ngai-scale-{uuid.uuid4().hex[:8]}:")
    apps = [LiveApp(env) for _ in range(3)]
    try:
        for app in apps:
            app.start()
        yield apps
    finally:
        for app in apps:
            app.close()


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


def read_all(app: LiveApp, sid: str, **headers: str) -> list[Frame]:
    with StreamReader(app.url(f"/stream/{sid}"), headers=headers, timeout=20) as reader:
        return events(reader.read_all())


def signature(frames: list[Frame]) -> list[tuple[str | None, str | None, str | None]]:
    return [(f.id, f.name, f.data) for f in frames]


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
    # a second tab on yet another instance replays the same log
    assert signature(read_all(a, sid)) == signature(whole)
    assert len(fake.chat_requests(model)) == 1
    end = requests.get(b.url(f"/stream/{sid}?lastEventId={whole[-1].id}"), timeout=5)
    assert end.status_code == 204


def test_fan_out_across_instances_one_upstream_request(
    instances: list[LiveApp], fake: fu.FakeUpstream
) -> None:
    model, expected = slow_model(fake)
    sid = prepare(instances[0], model)
    results: dict[int, list[Frame]] = {}

    def reader(index: int) -> None:
        results[index] = read_all(instances[index % 3], sid)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6
    first = signature(results[0])
    assert all(signature(frames) == first for frames in results.values())
    assert texts(results[0]) == expected
    assert len(fake.chat_requests(model)) == 1


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
    instances: list[LiveApp], fake: fu.FakeUpstream, redis: RedisServer
) -> None:
    reader_app = instances[0]
    env = env_for(fake, redis, "")
    env["NGAI_REDIS_KEY_PREFIX"] = reader_app.env["NGAI_REDIS_KEY_PREFIX"]
    with LiveApp(env) as doomed:
        model = f"test/{uuid.uuid4().hex[:10]}"
        fake.script(model, fu.text_chunks(["tok "] * 500, interval=0.1))
        sid = prepare(doomed, model)
        with StreamReader(doomed.url(f"/stream/{sid}"), timeout=20) as starter:
            starter.until(lambda f: f.name == "chunk")  # the generation runs on `doomed`
            with StreamReader(reader_app.url(f"/stream/{sid}"), timeout=20) as survivor:
                survivor.until(lambda f: f.name == "chunk")
                doomed.kill()
                killed_at = time.monotonic()
                terminal = survivor.until(lambda f: f.name in {"done", "error"})
                noticed_after = time.monotonic() - killed_at
    assert terminal.name == "error" and terminal.json["code"] == "upstream_interrupted"
    assert terminal.json["retryable"] is True
    assert noticed_after < 10
    # the log ended for everyone: a later reader gets the same terminal event
    assert read_all(instances[1], sid)[-1].json["code"] == "upstream_interrupted"


def test_several_workers_share_one_redis(fake: fu.FakeUpstream, redis: RedisServer) -> None:
    env = env_for(fake, redis, f"ngai-workers-{uuid.uuid4().hex[:8]}:")
    with LiveApp(env, workers=3) as app:
        assert len(app.worker_pids()) == 3
        model, expected = slow_model(fake, words=10, interval=0.02)
        sids = [prepare(app, model) for _ in range(6)]
        for sid in sids:
            frames = read_all(app, sid)
            assert texts(frames) == expected
            assert signature(read_all(app, sid)) == signature(frames)  # any worker replays
        assert len(fake.chat_requests(model)) == len(sids)


def test_redis_down_then_back(fake: fu.FakeUpstream) -> None:
    with RedisServer() as redis:
        env = env_for(fake, redis, "ngai-outage:")
        with LiveApp(env) as app:
            model = f"test/{uuid.uuid4().hex[:10]}"
            fake.script(model, fu.text_chunks(["tok "] * 300, interval=0.05))
            sid = prepare(app, model)
            with StreamReader(app.url(f"/stream/{sid}"), timeout=20) as reader:
                reader.until(lambda f: f.name == "chunk")
                redis.stop()
                terminal = reader.until(lambda f: f.name in {"done", "error"})
                assert reader.next() is None
            assert terminal.name == "error"
            assert terminal.json["code"] == "store_unavailable" and terminal.json["retryable"]

            health = requests.get(app.url("/health"), timeout=5)
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            refused = requests.post(
                app.url("/prepare"),
                json={"messages": [{"role": "user", "content": "x"}]},
                timeout=5,
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "store_unavailable"
            assert int(refused.headers["Retry-After"]) == refused.json()["error"]["retryAfter"]
            with StreamReader(app.url(f"/stream/{sid}"), timeout=10) as down:
                [event] = events(down.read_all())
                assert event.json["code"] == "store_unavailable"
            assert "Traceback" not in requests.get(app.url("/models"), timeout=5).text

            redis.start()  # back, empty: the service recovers by itself
            ok = requests.get(app.url("/health"), timeout=5)
            assert ok.status_code == 200 and ok.json()["status"] == "ok"
            again, expected = slow_model(fake, words=5, interval=0.01)
            assert texts(read_all(app, prepare(app, again))) == expected
            assert "Traceback" not in app.log_text()


def test_readers_that_never_read_cost_a_bounded_amount_on_redis(
    instances: list[LiveApp], fake: fu.FakeUpstream
) -> None:
    generating, elsewhere = instances[0], instances[1]
    model = f"test/{uuid.uuid4().hex[:10]}"
    piece = "z" * 8000
    fake.script(model, fu.text_chunks([piece] * 400))  # ~6.4 MB of event data
    sid = prepare(generating, model)
    assert texts(read_all(generating, sid)) == piece * 400
    grown = {}
    for app in (generating, elsewhere):  # its local log, and the Redis Stream
        [worker] = app.worker_pids()
        before = vm_rss_kib(worker)
        with readers_that_never_read(app, f"/stream/{sid}", 50):
            grown[app.port] = vm_rss_kib(worker) - before
            assert requests.get(app.url("/health"), timeout=5).status_code == 200
    print(f"worker growth for 50 never-reading readers, KiB by port: {grown}")
    # before: each reader joined its whole backlog (+6 MB each, 300 MB per instance)
    assert all(kib < 50 * 512 for kib in grown.values()), grown


def test_last_event_id_past_a_live_log_elsewhere_ends_with_the_log(
    instances: list[LiveApp], fake: fu.FakeUpstream
) -> None:
    model, _ = slow_model(fake, words=10, interval=0.05)
    sid = prepare(instances[0], model)
    with StreamReader(instances[0].url(f"/stream/{sid}")) as first:
        first.until(lambda f: f.name == "chunk")
        started = time.monotonic()
        with StreamReader(
            instances[1].url(f"/stream/{sid}"), headers={"Last-Event-ID": "1000"}, timeout=15
        ) as past:
            frames = past.read_all()
        waited = time.monotonic() - started
        first.until(lambda f: f.name == "done")
    assert [f for f in frames if f.name] == []
    assert waited < 10  # the log's end (then the generation's liveness), not the replay TTL
