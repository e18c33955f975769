"""Redis for the tests: the shared server when one answers, else a private one.

Fixtures (import them into a test module or ``conftest.py``):

* ``redis_url`` (session): a Redis to talk to. The one on 127.0.0.1:6379 when it
  answers, else a private ``redis-server`` started for this test session.
* ``redis_prefix``: a fresh key prefix per test, so tests (and concurrent test
  runs on the shared server) never see each other's keys. Pass it to the store
  as ``key_prefix``.
* ``redis_server``: a private ``redis-server`` per test, for tests that stop and
  restart Redis. Those must never touch the shared server.

:class:`RedisServer` runs one private server and can stop and restart it on the
same port.
"""

from __future__ import annotations

import os
import shutil
import typing as t
import uuid

import pytest

from bench.redis_server import INSTALL_HINT
from bench.redis_server import SHARED_REDIS
from bench.redis_server import RedisServer
from bench.redis_server import redis_answers

__all__ = ["RedisServer", "redis_answers", "redis_prefix", "redis_server", "redis_url"]


@pytest.fixture(scope="session")
def redis_url() -> t.Iterator[str]:
    """URL of a Redis for this test session: the shared one, else a private one.

    ``TEST_REDIS_PRIVATE=1`` forces a private server even when the shared
    one answers.
    """
    if os.environ.get("TEST_REDIS_PRIVATE") != "1" and redis_answers(*SHARED_REDIS):
        host, port = SHARED_REDIS
        yield f"redis://{host}:{port}/0"
        return
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test (or test run) uses."""
    return f"ngai-test-{uuid.uuid4().hex}:"


@pytest.fixture
def redis_server() -> t.Iterator[RedisServer]:
    """A private, running ``redis-server`` this test may stop and restart."""
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with RedisServer() as server:
        yield server
