"""Issue 14's five deployment bugs, each as a new user met it: a memory store that
gunicorn took for a shared one, the rate limit on a ``unix://`` Redis (and its
password in the log), a mounted blueprint that rearranged the host's logging and
answered CORS for the host's routes, and the demo model refused by an allowlist.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask_cors import CORS

import ngai_chat.log
from ngai_chat import chat_blueprint
from ngai_chat import create_app
from ngai_chat import gunicorn_conf
from ngai_chat.config import ConfigError
from ngai_chat.config import load_settings
from ngai_chat.counters import counter_storage
from ngai_chat.counters import limits_url
from ngai_chat.log import REDACTED
from ngai_chat.log import RedactingFilter
from ngai_chat.log import redact_url
from ngai_chat.log import redact_urls
from ngai_chat.log import startup_notices
from tests.conftest import API_KEY
from tests.support.helpers import free_port
from tests.support.helpers import wait_until

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
PASSWORD = "pa55-w0rd-of-redis"


# --- (a) whether the store is shared is decided once --------------------------------


class _Cfg:
    workers = 4
    worker_connections = 6000


class _Server:
    """What gunicorn's ``on_starting`` hook reads of its arbiter."""

    cfg = _Cfg()
    log = logging.getLogger("test.gunicorn")


@pytest.fixture(autouse=True)
def _master_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """``on_starting`` marks the notices as given, for the workers it would fork."""
    monkeypatch.setattr(ngai_chat.log, "notices_given_by_master", False)


@pytest.mark.parametrize("url", [None, "memory://"])
def test_several_workers_on_a_memory_store_are_refused(
    url: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NGAI_DEMO", "1")
    if url is not None:
        monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(SystemExit):
        gunicorn_conf.on_starting(_Server())
    assert "4 workers need a shared store" in capsys.readouterr().err


def test_several_workers_on_redis_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGAI_DEMO", "1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # not reached at this point
    gunicorn_conf.on_starting(_Server())


@pytest.mark.live
def test_make_run_with_memory_url_and_four_workers_refuses_to_start(tmp_path: Path) -> None:
    """The issue's command: ``REDIS_URL=memory:// WEB_CONCURRENCY=4 make run``."""
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": "memory://",
        "WEB_CONCURRENCY": "4",
        "PORT": str(free_port()),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "ngai_chat"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:  # it started after all: stop it and its workers
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    assert server.returncode != 0
    assert "4 workers need a shared store" in err
    assert "serving on" not in err


def test_memory_url_is_not_shared() -> None:
    for url, shared in (
        (None, False),
        ("memory://", False),
        ("redis://localhost:6379/0", True),
        ("unix:///tmp/r.sock", True),
    ):
        environ = {"NGAI_DEMO": "1", **({"REDIS_URL": url} if url else {})}
        settings = load_settings({}, environ=environ, dotenv={})
        assert settings.store_shared is shared, url
        assert settings.store_kind == ("redis" if shared else "memory")


# --- (b) one limits storage, every Redis scheme, no password shown ------------------


@pytest.mark.parametrize(
    ("ours", "theirs", "options"),
    [
        ("redis://:pw@h:6379/0", "redis://:pw@h:6379/0", {}),
        ("rediss://h:6380/1", "rediss://h:6380/1", {}),
        ("unix://:pw@/run/redis.sock?db=2", "redis+unix://:pw@/run/redis.sock?db=2", {}),
        ("redis+cluster://:pw@a:7000,b:7001", "redis+cluster://:pw@a:7000,b:7001", {}),
        ("rediss+cluster://a:7000", "redis+cluster://a:7000", {"ssl": True}),
    ],
)
def test_redis_url_as_limits_spells_it(ours: str, theirs: str, options: dict[str, t.Any]) -> None:
    assert limits_url(ours) == (theirs, options)


def test_a_url_limits_cannot_use_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        limits_url(f"valkey://:{PASSWORD}@h:6379")
    assert PASSWORD not in str(refused.value) and REDACTED in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@h:1/0", f"redis://:{REDACTED}@h:1/0"),
        ("redis://user:pw@h:1/0", f"redis://user:{REDACTED}@h:1/0"),
        ("unix://:p@ss/w@/tmp/s.sock", f"unix://:{REDACTED}@/tmp/s.sock"),
        ("redis+cluster://:pw@a:1,b:2", f"redis+cluster://:{REDACTED}@a:1,b:2"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_in_a_message() -> None:
    message = f"unknown storage scheme : 'unix://:{PASSWORD}@/tmp/x.sock' (and redis://h:1)"
    assert redact_urls(message) == (
        f"unknown storage scheme : 'unix://:{REDACTED}@/tmp/x.sock' (and redis://h:1)"
    )


@pytest.fixture
def unix_redis(tmp_path: Path) -> t.Iterator[Path]:
    """A private redis-server on a Unix socket only, with a password."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: make test installs it"
    sock = tmp_path / "redis.sock"
    args = [
        binary,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--requirepass", PASSWORD,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(tmp_path),
    ]  # fmt: skip
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(sock), password=PASSWORD).ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, 10, "redis-server on its socket")
        yield sock
    finally:
        process.terminate()
        process.wait(10)


def test_rate_limit_and_budget_on_a_unix_socket_redis(
    unix_redis: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: ``ConfigurationError: unknown storage scheme : unix://…`` (the
    password printed with it) from every worker.
    """
    app = create_app(
        {
            "NGAI_DEMO": "1",
            "REDIS_URL": f"unix://:{PASSWORD}@{unix_redis}",
            "NGAI_RATE_LIMIT": "2/minute",
            "NGAI_BUDGET_TOTAL": "1000000 tokens/day",
        }
    )
    client = app.test_client()
    statuses = [client.post("/prepare", json=HELLO).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    keys = redis.Redis(unix_socket_path=str(unix_redis), password=PASSWORD).keys("ngai:*")
    assert keys  # the counters live in that Redis
    assert PASSWORD not in caplog.text


def test_an_unreachable_counter_redis_never_shows_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        {
            "NGAI_DEMO": "1",
            "REDIS_URL": f"unix://:{PASSWORD}@{tmp_path / 'nobody.sock'}",
            "NGAI_RATE_LIMIT": "2/minute",
        }
    )
    response = app.test_client().post("/prepare", json=HELLO)
    assert response.status_code == 503
    assert PASSWORD not in response.get_data(as_text=True)
    assert PASSWORD not in caplog.text


def test_a_base_url_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    base = f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/api/v1"
    with pytest.raises(ConfigError) as refused:
        load_settings({}, environ={"OPENROUTER_BASE_URL": f"ftp://u:{PASSWORD}@h"}, dotenv={})
    assert PASSWORD not in str(refused.value) and "OPENROUTER_BASE_URL" in str(refused.value)
    settings = load_settings(
        {}, environ={"OPENROUTER_BASE_URL": base, "OPENROUTER_API_KEY": API_KEY}, dotenv={}
    )
    assert all(PASSWORD not in message for _, message in startup_notices(settings))
    client = create_app({"OPENROUTER_BASE_URL": base, "OPENROUTER_API_KEY": API_KEY}).test_client()
    sid = client.post("/prepare", json=HELLO).get_json()["sessionId"]
    stream = client.get(f"/stream/{sid}").get_data(as_text=True)
    assert "upstream_unavailable" in stream  # nothing listens there
    assert PASSWORD not in stream and "user:[redacted]@127.0.0.1" in stream
    assert PASSWORD not in caplog.text


def test_one_counter_storage_for_the_rate_limit_and_the_budgets() -> None:
    app = create_app(
        {"NGAI_DEMO": "1", "NGAI_RATE_LIMIT": "2/minute", "NGAI_BUDGET_TOTAL": "9 tokens/day"}
    )
    services = app.extensions["ngai_chat"]
    assert services.rate_limiter.storage is services.budgets.storage
    settings = load_settings({}, environ={"NGAI_DEMO": "1"}, dotenv={})
    assert type(counter_storage(settings)).__name__ == "MemoryStorage"


# --- (c) mounted: the host's logging is the host's -----------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def host_logging() -> t.Iterator[Collect]:
    """The host's own root handler, and our logger as a host finds it (as if no
    standalone app had run in this process before).
    """
    ours = logging.getLogger("ngai_chat")
    saved = (list(ours.handlers), ours.propagate, ours.level)
    root = logging.getLogger()
    saved_root_level = root.level
    for handler in saved[0]:
        ours.removeHandler(handler)
    ours.propagate, ours.level = True, logging.NOTSET
    # a standalone app made earlier in this process filtered the root's handlers
    # (pytest's among them): a host that never made one has no such filters
    filtered = [(h, f) for h in root.handlers for f in h.filters if isinstance(f, RedactingFilter)]
    for each, redacting in filtered:
        each.removeFilter(redacting)
    handler = Collect()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for each, redacting in filtered:
            each.addFilter(redacting)
        root.setLevel(saved_root_level)
        for each in list(ours.handlers):
            ours.removeHandler(each)
        for each in saved[0]:
            ours.addHandler(each)
        ours.propagate, ours.level = saved[1], saved[2]


def test_mounted_blueprint_logs_through_the_hosts_handlers_key_redacted(
    host_logging: Collect,
) -> None:
    host = Flask("host")
    host.config["OPENROUTER_API_KEY"] = API_KEY
    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")
    ours = logging.getLogger("ngai_chat")
    # a library adds no handler, sets no level, leaves propagation alone ...
    assert ours.handlers == [] and ours.propagate and ours.level == logging.NOTSET
    # ... and puts nothing on the host's handlers
    assert not any(isinstance(f, RedactingFilter) for f in host_logging.filters)
    logging.getLogger("ngai_chat.relay").warning("upstream said: bad key %s", API_KEY)
    said = [r for r in host_logging.records if r.name == "ngai_chat.relay"]
    assert len(said) == 1
    assert API_KEY not in said[0].getMessage() and REDACTED in said[0].getMessage()
    # the startup notices reach the host too (the open-relay warning: a key, no guard)
    assert any("open relay" in r.getMessage() for r in host_logging.records)
    # the host's own records are the host's
    logging.getLogger("host.views").warning("its own %s", API_KEY)
    assert API_KEY in host_logging.records[-1].getMessage()


# --- (d) CORS: the blueprint's routes and nothing else -------------------------------

OTHER = "https://other.example"
MINE = "https://mine.example"


def host_with_its_own_cors(prefix: str) -> Flask:
    host = Flask("host")
    host.config["NGAI_DEMO"] = "1"

    @host.get("/mine")
    def mine() -> str:
        return "the host's, for mine.example only"

    @host.get("/plain")
    def plain() -> str:
        return "the host's, no CORS at all"

    CORS(host, resources={r"/mine": {"origins": [MINE]}})
    host.register_blueprint(chat_blueprint, url_prefix=prefix or None)
    return host


@pytest.mark.parametrize("prefix", ["", "/api/chat"])
def test_cors_covers_the_blueprint_only(prefix: str) -> None:
    client = host_with_its_own_cors(prefix).test_client()
    # the host's policy holds on its route
    assert (
        "Access-Control-Allow-Origin" not in client.get("/mine", headers={"Origin": OTHER}).headers
    )
    assert (
        client.get("/mine", headers={"Origin": MINE}).headers["Access-Control-Allow-Origin"] == MINE
    )
    # a host route without CORS gets none, preflight included
    assert (
        "Access-Control-Allow-Origin" not in client.get("/plain", headers={"Origin": OTHER}).headers
    )
    preflight = {"Origin": OTHER, "Access-Control-Request-Method": "GET"}
    assert "Access-Control-Allow-Origin" not in client.options("/plain", headers=preflight).headers
    # the blueprint's routes answer every origin (NGAI_CORS_ORIGINS=*), errors and preflights too
    health = client.get(f"{prefix}/health", headers={"Origin": OTHER})
    assert health.headers["Access-Control-Allow-Origin"] == "*"
    missing = client.delete(f"{prefix}/stream/nope", headers={"Origin": OTHER})
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == "*"
    asked = {
        "Origin": OTHER,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    }
    answered = client.options(f"{prefix}/prepare", headers=asked)
    assert answered.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in answered.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in answered.headers["Access-Control-Allow-Methods"]


def test_cors_origins_setting_on_a_mounted_blueprint() -> None:
    host = Flask("host")
    host.config.update(NGAI_DEMO="1", NGAI_CORS_ORIGINS=MINE)
    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")
    client = host.test_client()
    assert (
        client.get("/api/chat/health", headers={"Origin": MINE}).headers[
            "Access-Control-Allow-Origin"
        ]
        == MINE
    )
    assert (
        "Access-Control-Allow-Origin"
        not in client.get("/api/chat/health", headers={"Origin": OTHER}).headers
    )


# --- (e) the demo model is always allowed in demo mode --------------------------------


def test_the_readmes_mount_example_works_in_demo_mode() -> None:
    app = create_app({"NGAI_DEMO": "1", "NGAI_MODEL_ALLOWLIST": "*:free"})
    client = app.test_client()
    named = client.post("/prepare", json={**HELLO, "model": "ngai/demo"})
    assert named.status_code == 200, named.get_data(as_text=True)
    assert client.post("/prepare", json=HELLO).status_code == 200  # the default: the demo
    refused = client.post("/prepare", json={**HELLO, "model": "openai/gpt-4o"})
    assert refused.status_code == 403
    assert [m["id"] for m in client.get("/models").get_json()["data"]] == ["ngai/demo"]


def test_the_allowlist_still_holds_outside_demo_mode() -> None:
    app = create_app({"OPENROUTER_API_KEY": API_KEY, "NGAI_MODEL_ALLOWLIST": "*:free"})
    refused = app.test_client().post("/prepare", json={**HELLO, "model": "ngai/demo"})
    assert refused.status_code == 403
