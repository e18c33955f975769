"""Shared fixtures: a clean environment, app factories, and the test doubles."""

from __future__ import annotations

import os
import typing as t

import pytest

from bench.fake_upstream import FakeUpstream
from ngai_chat import create_app
from tests.support.helpers import Clock
from tests.support.redis_cluster import redis_cluster  # noqa: F401 - fixtures
from tests.support.redis_server import redis_prefix  # noqa: F401
from tests.support.redis_server import redis_server  # noqa: F401
from tests.support.redis_server import redis_url  # noqa: F401
from tests.support.scripted import ScriptedUpstream

API_KEY = "sk-or-v1-TESTKEY-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any) -> None:
    """No test sees the developer's key, Redis or settings, nor a ``.env`` file."""
    for name in list(os.environ):
        if name.startswith(("NGAI_", "OPENROUTER_")) or name in {
            "REDIS_URL",
            "HOST",
            "PORT",
            "REFERER",
        }:
            monkeypatch.delenv(name)
    monkeypatch.delenv("X_TITLE", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def fake() -> t.Iterator[FakeUpstream]:
    """A fake OpenAI-compatible upstream on 127.0.0.1, one per test module."""
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def upstream() -> ScriptedUpstream:
    return ScriptedUpstream()


@pytest.fixture
def make_app(upstream: ScriptedUpstream, clock: Clock) -> t.Callable[..., t.Any]:
    """Build an app with settings (``NGAI_…`` names) over the scripted upstream."""

    def factory(upstream_: ScriptedUpstream | None = None, **config: t.Any) -> t.Any:
        settings = {"OPENROUTER_API_KEY": API_KEY, **config}
        return create_app(settings, upstream=upstream_ or upstream, clock=clock)

    return factory


@pytest.fixture
def app(make_app: t.Callable[..., t.Any]) -> t.Any:
    return make_app()


@pytest.fixture
def client(app: t.Any) -> t.Any:
    return app.test_client()
