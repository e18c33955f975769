"""Spend budgets: ``NGAI_BUDGET_PER_CLIENT`` / ``NGAI_BUDGET_TOTAL`` in tokens and USD,
per client and in total, in memory and on Redis, with the window's reset on an
injected clock, and shared by instances on one Redis.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest
import redis
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.live import free_port
from bench.live import wait_until
from ngai_chat import ConfigError
from ngai_chat import create_app
from ngai_chat.budget import Budget
from ngai_chat.budget import parse_budget
from ngai_chat.config import load_settings
from ngai_chat.store import MemoryStore
from tests.conftest import API_KEY
from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import text_stream
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import parse

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
OTHER = {"REMOTE_ADDR": "10.0.0.2"}


def answering(total_tokens: int = 60, cost: float | None = 0.0006) -> ScriptedUpstream:
    usage: dict[str, t.Any] = {"prompt_tokens": 10, "completion_tokens": total_tokens - 10}
    usage["total_tokens"] = total_tokens
    if cost is not None:
        usage["cost"] = cost
    return ScriptedUpstream(text_stream("Hi", usage=usage))


def prepare(client: t.Any, environ: dict[str, str] | None = None) -> t.Any:
    return client.post("/prepare", json=HELLO, environ_base=environ or {})


def answer(client: t.Any, environ: dict[str, str] | None = None) -> None:
    """One whole answer: prepared, streamed to its end (when its usage is counted)."""
    response = prepare(client, environ)
    assert response.status_code == 200, response.get_data(as_text=True)
    stream_to_end(client, response.get_json()["sessionId"])


def stream_to_end(client: t.Any, sid: str) -> None:
    with client.get(f"/stream/{sid}") as stream:
        assert events(parse(stream.get_data(as_text=True)))[-1].name == "done"


def refused(response: t.Any, setting: str) -> int:
    """The seconds a ``budget_exceeded`` refusal says to wait."""
    assert response.status_code == 429, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "budget_exceeded" and error["retryable"] is True
    assert setting in error["message"]
    assert int(response.headers["Retry-After"]) == error["retryAfter"]
    return int(error["retryAfter"])


# --- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("200000 tokens/day", Budget(200000, "tokens", 86400, "day")),
        ("2.50 usd/day", Budget(2_500_000, "usd", 86400, "day")),
        ("1 token/second", Budget(1, "tokens", 1, "second")),
        (" 3 USD / Hour ", Budget(3_000_000, "usd", 3600, "hour")),
        ("0.000001 usd/minute", Budget(1, "usd", 60, "minute")),
        ("", None),
    ],
)
def test_parse_budget(raw: str, expected: Budget | None) -> None:
    assert parse_budget(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["200000", "tokens/day", "1.5 tokens/day", "0 usd/day", "5 usd/week", "-1 tokens/day", "lots"],
)
@pytest.mark.parametrize("name", ["NGAI_BUDGET_PER_CLIENT", "NGAI_BUDGET_TOTAL"])
def test_a_bad_budget_stops_startup_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"OPENROUTER_API_KEY": API_KEY, name: raw}, environ={}, dotenv={})
    message = str(caught.value)
    assert name in message and "tokens/day" in message and "usd/day" in message


def test_budgets_read_from_a_host_apps_config() -> None:
    settings = load_settings(
        {"OPENROUTER_API_KEY": API_KEY, "NGAI_BUDGET_TOTAL": "2.50 usd/day"}, environ={}, dotenv={}
    )
    assert settings.budget_total is not None and settings.budget_total.describe() == "2.50 usd/day"
    assert settings.budget_per_client is None


# --- in memory ----------------------------------------------------------------------


def test_tokens_per_client(make_app: t.Any, clock: t.Any) -> None:
    upstream = answering(total_tokens=60)
    client = make_app(upstream, NGAI_BUDGET_PER_CLIENT="100 tokens/hour").test_client()
    answer(client)  # 60 of 100
    second = prepare(client).get_json()["sessionId"]
    early = prepare(client).get_json()["sessionId"]  # prepared while budget was left
    stream_to_end(client, second)  # 120: spent
    clock.advance(500)  # within the sessions' time to live
    assert refused(prepare(client), "NGAI_BUDGET_PER_CLIENT") == 3600 - 500
    # a session prepared before the budget ran out still gets its whole answer
    stream_to_end(client, early)
    assert len(upstream.requests) == 3
    # another client has its own budget
    answer(client, OTHER)
    assert client.application.extensions["ngai_chat"].budgets.spent("ip:10.0.0.2") == {"client": 60}
    # the next window starts from zero
    clock.advance(3100)
    answer(client)


def test_usd_in_total(make_app: t.Any, clock: t.Any) -> None:
    upstream = answering(cost=0.0006)
    client = make_app(upstream, NGAI_BUDGET_TOTAL="0.001 usd/minute").test_client()
    answer(client)  # $0.0006
    answer(client, OTHER)  # $0.0012: the whole server's budget is spent
    clock.advance(15)
    for environ in (None, OTHER, {"REMOTE_ADDR": "10.0.0.3"}):
        assert refused(prepare(client, environ), "NGAI_BUDGET_TOTAL") == 45
    services = client.application.extensions["ngai_chat"]
    assert services.budgets.spent("ip:127.0.0.1") == {"total": 1200}  # micro-dollars
    clock.advance(45)
    answer(client)


def test_both_budgets_and_what_is_counted(make_app: t.Any, clock: t.Any) -> None:
    # an answer without a cost counts for tokens only
    client = make_app(
        answering(total_tokens=50, cost=None),
        NGAI_BUDGET_PER_CLIENT="100 tokens/day",
        NGAI_BUDGET_TOTAL="0.01 usd/day",
    ).test_client()
    answer(client)
    services = client.application.extensions["ngai_chat"]
    assert services.budgets.spent("ip:127.0.0.1") == {"client": 50, "total": 0}
    answer(client)
    refused(prepare(client), "NGAI_BUDGET_PER_CLIENT")
    answer(client, OTHER)


def test_a_refusal_is_counted_in_the_metrics(make_app: t.Any) -> None:
    client = make_app(
        answering(total_tokens=10), NGAI_BUDGET_TOTAL="10 tokens/day", NGAI_METRICS="1"
    ).test_client()
    answer(client)
    refused(prepare(client), "NGAI_BUDGET_TOTAL")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ngai_requests_rejected_total{code="budget_exceeded"} 1.0' in text


def test_no_budget_no_counting(make_app: t.Any) -> None:
    app = make_app(answering())
    assert app.extensions["ngai_chat"].budgets is None
    for _ in range(3):
        answer(app.test_client())


# --- on Redis -----------------------------------------------------------------------


@pytest.fixture
def redis_apps(redis_url: str, redis_prefix: str, clock: t.Any) -> t.Callable[..., list[t.Any]]:
    """Apps that share budgets through one Redis (each its own instance: sessions in
    its own memory), on the test's clock.
    """

    def build(count: int, upstream: ScriptedUpstream, **config: str) -> list[t.Any]:
        settings = {
            "OPENROUTER_API_KEY": API_KEY,
            "REDIS_URL": redis_url,
            "NGAI_REDIS_KEY_PREFIX": redis_prefix,
            **config,
        }
        return [
            create_app(
                settings,
                store=MemoryStore(replay_ttl=300, clock=clock),
                upstream=upstream,
                clock=clock,
            )
            for _ in range(count)
        ]

    return build


@pytest.mark.redis
def test_instances_share_a_client_budget_in_tokens(
    redis_apps: t.Any, redis_url: str, redis_prefix: str, clock: t.Any
) -> None:
    one, two = (
        app.test_client()
        for app in redis_apps(2, answering(60), NGAI_BUDGET_PER_CLIENT="100 tokens/hour")
    )
    answer(one)
    answer(two)  # the same client on another instance: 120 of 100
    clock.advance(600)
    assert refused(prepare(one), "NGAI_BUDGET_PER_CLIENT") == 3000
    assert refused(prepare(two), "NGAI_BUDGET_PER_CLIENT") == 3000
    answer(two, OTHER)
    # the counters are this deployment's keys, and expire on their own
    keys = redis.Redis.from_url(redis_url).keys(f"{redis_prefix.rstrip(':')}:budget:*")
    assert len(keys) == 2
    assert all(0 < redis.Redis.from_url(redis_url).ttl(key) <= 3600 + 60 for key in keys)
    clock.advance(3000)
    answer(one)


@pytest.mark.redis
def test_instances_share_a_total_budget_in_usd(redis_apps: t.Any, clock: t.Any) -> None:
    apps = redis_apps(2, answering(cost=0.25), NGAI_BUDGET_TOTAL="0.50 usd/day")
    one, two = (app.test_client() for app in apps)
    answer(one)
    answer(two, OTHER)
    for client in (one, two):
        refused(prepare(client), "NGAI_BUDGET_TOTAL")
        refused(prepare(client, OTHER), "NGAI_BUDGET_TOTAL")
    assert apps[0].extensions["ngai_chat"].budgets.spent("x") == {"total": 500_000}
    clock.advance(86400)
    answer(two)


def test_an_unreachable_redis_is_a_clear_503(make_app: t.Any, clock: t.Any) -> None:
    app = create_app(
        {
            "OPENROUTER_API_KEY": API_KEY,
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "NGAI_BUDGET_TOTAL": "10 tokens/day",
        },
        store=MemoryStore(replay_ttl=300, clock=clock),
        upstream=answering(),
        clock=clock,
    )
    response = prepare(app.test_client())
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "store_unavailable"
    assert response.headers["Retry-After"]


@pytest.mark.live
@pytest.mark.redis
def test_two_gunicorn_instances_share_a_budget(
    fake: fu.FakeUpstream, redis_url: str, redis_prefix: str
) -> None:
    model = f"test/{uuid.uuid4().hex[:8]}"
    usage = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50, "cost": 0.001}
    fake.script(model, lambda _: fu.text_chunks(["Hel", "lo"], usage=usage))
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "REDIS_URL": redis_url,
        "NGAI_REDIS_KEY_PREFIX": redis_prefix,
        "NGAI_BUDGET_PER_CLIENT": "100 tokens/day",
    }
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    with LiveApp(env) as one, LiveApp(env) as two:
        for app in (one, two):
            sid = requests.post(app.url("/prepare"), json=body, timeout=5).json()["sessionId"]
            with StreamReader(app.url(f"/stream/{sid}"), timeout=20) as reader:
                assert events(reader.read_all())[-1].name == "done"

        def refused_on_both() -> bool:
            codes = [requests.post(a.url("/prepare"), json=body, timeout=5) for a in (one, two)]
            return all(r.status_code == 429 for r in codes)

        # the usage is counted once the generation has reported its end
        wait_until(refused_on_both, 10, "both instances to refuse the spent client")
        response = requests.post(two.url("/prepare"), json=body, timeout=5)
        assert response.json()["error"]["code"] == "budget_exceeded"
        assert 0 < int(response.headers["Retry-After"]) <= 86400
