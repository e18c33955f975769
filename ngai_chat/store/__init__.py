"""Session stores: pick one by URL with :func:`store_from_url`."""

from __future__ import annotations

import time
import typing as t

from ..config import REDIS_SCHEMES
from ..config import ConfigError
from ..config import shared_store_url
from .base import Event as Event
from .base import GenerationSignals as GenerationSignals
from .base import SessionInfo as SessionInfo
from .base import Store as Store
from .memory import MemoryStore as MemoryStore

__all__ = ["Event", "GenerationSignals", "MemoryStore", "SessionInfo", "Store", "store_from_url"]


def store_from_url(
    url: str | None,
    *,
    replay_ttl: float,
    clock: t.Callable[[], float] = time.time,
    max_replay_bytes: int = 268_435_456,
    **options: t.Any,
) -> Store:
    """The store for ``REDIS_URL``: Redis when set, else this process's memory.

    :param url: ``redis://…``/``rediss://…``/``unix://…``, ``redis+cluster://…``
        (a Redis Cluster), or ``memory://`` or
        ``None`` for memory.
    :param replay_ttl: seconds a finished log stays readable.
    :param clock: wall-clock source, injectable for tests.
    :param max_replay_bytes: bytes of finished logs one process keeps at most
        (memory store; Redis keeps them in Redis, for ``replay_ttl``).
    :param options: passed to the Redis store (key prefix, heartbeat, …).
    :raises ConfigError: the URL has another scheme.
    """
    if url is None or not shared_store_url(url):
        return MemoryStore(replay_ttl=replay_ttl, clock=clock, max_replay_bytes=max_replay_bytes)
    if not url.startswith(REDIS_SCHEMES):
        # redis-py would say something about its own URL parsing; say which setting
        # (only the scheme is shown: the rest may hold a password)
        scheme = url.split("://", 1)[0] + "://" if "://" in url else "(none)"
        raise ConfigError(
            f"Invalid REDIS_URL: the scheme {scheme} selects no store. Use memory:// (one "
            "process), a redis://, rediss:// or unix:// URL such as redis://localhost:6379/0, "
            "or redis+cluster://host:port[,host:port…] for a Redis Cluster."
        )
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from .redis_cluster import ClusterStore  # imported lazily, as below

        cluster: Store = ClusterStore(url, replay_ttl=replay_ttl, clock=clock, **options)
        return cluster
    from .redis import RedisStore  # imported lazily: only the Redis store imports redis

    store: Store = RedisStore(url, replay_ttl=replay_ttl, clock=clock, **options)
    return store
