"""``GET /metrics``: in one process (a private registry per app) and for a whole
gunicorn instance of several workers on Redis (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import typing as t
import uuid
from pathlib import Path

import prometheus_client
import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.live import wait_until
from ngai_chat import errors
from ngai_chat.config import DEFAULT_MODEL
from ngai_chat.metrics import Finished
from ngai_chat.metrics import Metrics
from tests.conftest import API_KEY
from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import chunk
from tests.support.scripted import text_stream
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import parse

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "cost": 0.000375,
    "completion_tokens_details": {"reasoning_tokens": 9},
    "prompt_tokens_details": {"cached_tokens": 4},
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels), parsed by
    prometheus_client's own parser (so the text is valid exposition format too).
    """
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scrape(client: t.Any) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples_of(response.get_data(as_text=True))


def run_session(client: t.Any, **kwargs: t.Any) -> list[t.Any]:
    response = client.post("/prepare", json=HELLO, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    with client.get(f"/stream/{response.get_json()['sessionId']}") as stream:
        return events(parse(stream.get_data(as_text=True)))


# --- in process ---------------------------------------------------------------------


def test_tokens_and_cost_match_the_usage(make_app: t.Any) -> None:
    upstream = ScriptedUpstream(text_stream("Hi", usage=USAGE))
    client = make_app(upstream, NGAI_METRICS="1").test_client()
    for _ in range(3):
        assert run_session(client)[-1].name == "done"
    samples = scrape(client)
    model = "test/model"  # as the chunks name it
    for kind, per_answer in (("prompt", 12), ("completion", 30), ("reasoning", 9), ("cached", 4)):
        assert value(samples, "ngai_tokens_total", model=model, kind=kind) == 3 * per_answer
    assert math.isclose(value(samples, "ngai_cost_usd_total", model=model), 3 * 0.000375)
    usage_labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openrouter",
        "gen_ai_request_model": DEFAULT_MODEL,  # what /prepare asked for: the default
        "gen_ai_response_model": model,
    }
    for kind, per_answer in (("input", 12), ("output", 30)):
        labels = {**usage_labels, "gen_ai_token_type": kind}
        assert value(samples, "gen_ai_client_token_usage_sum", **labels) == 3 * per_answer
        assert value(samples, "gen_ai_client_token_usage_count", **labels) == 3
        # 30 output tokens fall in the (16, 64] bucket of the OpenTelemetry boundaries
        if kind == "output":
            assert value(samples, "gen_ai_client_token_usage_bucket", **labels, le="16.0") == 0
            assert value(samples, "gen_ai_client_token_usage_bucket", **labels, le="64.0") == 3
    assert value(samples, "ngai_generations_total", outcome="done") == 3
    assert value(samples, "ngai_sessions_created_total") == 3
    assert value(samples, "ngai_streams_total") == 3
    assert value(samples, "ngai_streams_open") == 0
    assert value(samples, "ngai_generations_running") == 0
    assert value(samples, "ngai_events_total", event="chunk") == 3 * 3


def test_garbage_usage_counts_nothing(make_app: t.Any) -> None:
    bad = {"prompt_tokens": "12", "completion_tokens": True, "total_tokens": -3, "cost": 1e999}
    upstream = ScriptedUpstream(text_stream("Hi", usage=bad))
    client = make_app(upstream, NGAI_METRICS="1").test_client()
    assert run_session(client)[-1].name == "done"
    samples = scrape(client)
    assert total(samples, "ngai_tokens_total") == 0
    assert total(samples, "ngai_cost_usd_total") == 0
    assert value(samples, "ngai_generations_total", outcome="done") == 1


def test_upstream_errors_and_rejections_by_code(make_app: t.Any) -> None:
    failing = ScriptedUpstream(refuse=errors.UpstreamRateLimited())
    client = make_app(failing, NGAI_METRICS="1").test_client()
    assert run_session(client)[-1].json["code"] == "upstream_rate_limited"
    client.post("/prepare", data="x")  # 415
    client.post("/prepare", json={"messages": []})  # 400
    samples = scrape(client)
    assert value(samples, "ngai_upstream_errors_total", code="upstream_rate_limited") == 1
    assert value(samples, "ngai_generations_total", outcome="upstream_rate_limited") == 1
    assert value(samples, "ngai_requests_rejected_total", code="unsupported_media_type") == 1
    assert value(samples, "ngai_requests_rejected_total", code="invalid_request") == 1
    # a failure of ours is an outcome, not an upstream error
    assert total(samples, "ngai_upstream_errors_total") == 1


def test_gauges_while_a_stream_is_open(make_app: t.Any) -> None:
    # a pause keeps the generation running while the test scrapes
    upstream = ScriptedUpstream([chunk("Hi"), 0.5, *text_stream(" there")])
    app = make_app(upstream, NGAI_METRICS="1")
    client = app.test_client()
    sid = client.post("/prepare", json=HELLO).get_json()["sessionId"]
    stream = client.get(f"/stream/{sid}", buffered=False)
    frames = iter(stream.response)  # the body: read up to the first chunk event only
    first = b""
    while b"event: chunk" not in first:
        first += next(frames)
    samples = scrape(client)
    assert value(samples, "ngai_streams_open") == 1
    assert value(samples, "ngai_generations_running") == 1
    assert value(samples, "ngai_sessions_live") == 1
    assert (
        value(
            samples,
            "gen_ai_client_operation_time_to_first_chunk_seconds_count",
            gen_ai_operation_name="chat",
            gen_ai_provider_name="openrouter",
        )
        == 1
    )
    for _ in frames:
        pass
    stream.close()
    samples = scrape(client)
    assert value(samples, "ngai_streams_open") == 0
    assert value(samples, "ngai_generations_running") == 0
    assert value(samples, "ngai_sessions_live") == 0


def test_apps_keep_apart_and_leave_the_global_registry_alone(make_app: t.Any) -> None:
    # a host app that already uses prometheus_client's default registry
    host_counter = prometheus_client.Counter(
        f"host_requests_{uuid.uuid4().hex[:8]}", "A host app's own counter."
    )
    host_counter.inc()
    try:
        one = make_app(NGAI_METRICS="1").test_client()
        two = make_app(NGAI_METRICS="1").test_client()  # same metric names: no clash
        run_session(one)
        run_session(one)
        run_session(two)
        assert value(scrape(one), "ngai_sessions_created_total") == 2
        assert value(scrape(two), "ngai_sessions_created_total") == 1
        global_text = prometheus_client.generate_latest().decode()
        assert "ngai_" not in global_text
        assert host_counter._name in global_text
    finally:
        prometheus_client.REGISTRY.unregister(host_counter)


def test_info_and_a_store_that_does_not_answer(make_app: t.Any) -> None:
    app = make_app(NGAI_METRICS="1")
    store = app.extensions["ngai_chat"].store

    def down() -> int:
        raise errors.StoreUnavailable()

    store.count_live = down
    samples = scrape(app.test_client())
    assert math.isnan(value(samples, "ngai_sessions_live"))
    info = [labels for (name, labels) in samples if name == "ngai_info"]
    assert dict(info[0]) == {"version": "0.1.0", "store": "memory", "upstream": "openrouter"}


def test_metrics_off_counts_nothing_but_budgets_still_count(make_app: t.Any) -> None:
    # budgets hear of finished answers from the generation itself, not from metrics
    app = make_app(NGAI_BUDGET_TOTAL="1000000 tokens/day")
    services = app.extensions["ngai_chat"]
    run_session(app.test_client())
    assert services.budgets.spent("ip:127.0.0.1")["total"] > 0
    assert services.metrics.render() == b""  # an empty registry


# --- a gunicorn instance of three workers on Redis ----------------------------------


def per_worker(directory: Path, name: str, kind: str = "counter") -> dict[int, float]:
    """``name``'s value in each worker's own file (the files the scrape merges)."""
    found: dict[int, float] = {}
    for path in directory.glob(f"{kind}_[0-9]*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in family.samples:
                if sample.name == name:
                    found[pid] = found.get(pid, 0.0) + sample.value
    return found


def metrics_dir_of(app: LiveApp) -> Path:
    """The ``PROMETHEUS_MULTIPROC_DIR`` the master gave its workers (it logs it)."""
    [line] = [line for line in app.log_text().splitlines() if "metrics: GET /metrics" in line]
    return Path(line.rsplit(" ", 1)[1])


@pytest.mark.live
@pytest.mark.redis
@pytest.mark.parametrize("own_dir", [False, True], ids=["fresh-temp-dir", "operator-dir"])
def test_every_scrape_sums_every_worker_even_a_killed_one(
    fake: fu.FakeUpstream, redis_url: str, redis_prefix: str, tmp_path: Path, own_dir: bool
) -> None:
    model = f"test/{uuid.uuid4().hex[:8]}"
    answering = "vendor/answering-model"
    fake.script(model, lambda _: fu.text_chunks(["Hel", "lo"], model=answering, usage=USAGE))
    operator_dir = tmp_path / "prom"
    operator_dir.mkdir()
    stale = operator_dir / "counter_999999.db"
    stale.write_bytes(b"stale")  # the last run's: the master removes it
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "REDIS_URL": redis_url,
        "NGAI_REDIS_KEY_PREFIX": redis_prefix,
        "NGAI_METRICS": "1",
        # the held streams' generations must not keep the master past LiveApp's
        # stop (it would be killed before on_exit removes its directory)
        "NGAI_ABANDON_TIMEOUT": "0",
        "GUNICORN_GRACEFUL_TIMEOUT": "3",
    }
    if own_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(operator_dir)
    done = 0
    lock = threading.Lock()

    def one_session(app: LiveApp) -> None:
        nonlocal done
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
        # a fresh connection each time, so that any worker may accept it
        sid = requests.post(app.url("/prepare"), json=body, timeout=10).json()["sessionId"]
        with StreamReader(app.url(f"/stream/{sid}"), timeout=20) as reader:
            assert events(reader.read_all())[-1].name == "done"
        with lock:
            done += 1

    def burst(app: LiveApp, n: int = 12) -> None:
        threads = [threading.Thread(target=one_session, args=(app,)) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    with LiveApp(env, workers=3) as app:
        pids = wait_until(
            lambda: len(app.worker_pids()) == 3 and app.worker_pids(), 20, "3 workers"
        )
        metrics_dir = metrics_dir_of(app)
        if own_dir:
            assert metrics_dir == operator_dir and not stale.exists()
        else:
            assert metrics_dir.name.startswith("ngai-metrics-") and stale.exists()

        def spread() -> bool:
            burst(app)
            busy = [
                pid
                for pid, n in per_worker(metrics_dir, "ngai_sessions_created_total").items()
                if n > 0 and pid in pids
            ]
            return len(busy) >= 2

        wait_until(spread, 60, "traffic on at least two workers")
        assert done >= 12

        held = 0  # streams left open on purpose, whose generations never end

        def instance_totals(expected: int) -> Samples | None:
            samples = samples_of(requests.get(app.url("/metrics"), timeout=5).text)
            counts = (
                value(samples, "ngai_sessions_created_total"),
                value(samples, "ngai_streams_total"),
                value(samples, "ngai_generations_total", outcome="done"),
            )
            return samples if counts == (expected + held, expected + held, expected) else None

        # generations report after their terminal event: wait for the last of them
        wait_until(lambda: instance_totals(done), 10, f"{done} sessions in the metrics")
        # each scrape lands on whichever worker accepts it: all of them agree
        for _ in range(12):
            samples = instance_totals(done)
            assert samples is not None, "a scrape disagreed with the instance's totals"
        assert value(samples, "ngai_streams_open") == 0
        assert value(samples, "ngai_tokens_total", model=answering, kind="prompt") == 12 * done
        assert value(samples, "ngai_tokens_total", model=answering, kind="completion") == 30 * done
        assert value(samples, "ngai_tokens_total", model=answering, kind="reasoning") == 9 * done
        assert value(samples, "ngai_tokens_total", model=answering, kind="cached") == 4 * done
        assert math.isclose(value(samples, "ngai_cost_usd_total", model=answering), 0.000375 * done)

        # hold a stream open on a worker that served sessions, then SIGKILL that worker
        hanging = f"test/hang-{uuid.uuid4().hex[:8]}"
        fake.script(hanging, [fu.Chunk(fu.make_chunk("x")), fu.Hang()])
        served = per_worker(metrics_dir, "ngai_sessions_created_total")
        readers: list[StreamReader] = []

        def holder_that_served() -> int | None:
            nonlocal held
            body = {"model": hanging, "messages": [{"role": "user", "content": "Hi"}]}
            sid = requests.post(app.url("/prepare"), json=body, timeout=10).json()["sessionId"]
            reader = StreamReader(app.url(f"/stream/{sid}"), timeout=20)
            readers.append(reader)
            reader.until(lambda frame: frame.name == "chunk")
            held += 1
            holding = per_worker(metrics_dir, "ngai_streams_open", "gauge_livesum")
            return next((p for p, n in holding.items() if n > 0 and served.get(p, 0) > 0), None)

        try:
            victim = wait_until(holder_that_served, 20, "a stream held by a worker that served")
            assert value(instance_totals(done) or {}, "ngai_streams_open") == held
            on_victim = per_worker(metrics_dir, "ngai_streams_open", "gauge_livesum")[victim]
            os.kill(victim, signal.SIGKILL)
            wait_until(
                lambda: len(app.worker_pids()) == 3 and victim not in app.worker_pids(),
                20,
                "the killed worker replaced",
            )
            for _ in range(12):
                samples = instance_totals(done)
                assert samples is not None, "a killed worker's counts were lost"
                # its gauges went with it (child_exit); the other held streams stay open
                assert value(samples, "ngai_streams_open") == held - on_victim
                assert value(samples, "ngai_generations_running") == held - on_victim
        finally:
            for reader in readers:
                reader.close()
        # the survivors and the newcomer go on counting into the same sums
        burst(app, 3)
        wait_until(lambda: instance_totals(done), 10, "the new sessions counted")
    # the master removes the directory it made, and leaves the operator's
    assert metrics_dir.exists() is own_dir


def test_running_gauge_from_reported_starts() -> None:
    metrics = Metrics()
    metrics.generation_started()
    metrics.generation_started()
    metrics.stream_opened()
    metrics.generation_finished(Finished("done", "m", None, 1, "ip:x"))
    samples = samples_of(metrics.render().decode())
    assert value(samples, "ngai_generations_running") == 1
    assert value(samples, "ngai_streams_open") == 1
