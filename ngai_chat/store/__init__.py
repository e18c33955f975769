"""Session stores: pick one by URL with :func:`store_from_url`."""

from __future__ import annotations

import time
import typing as t

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
    **options: t.Any,
) -> Store:
    """The store for ``REDIS_URL``: Redis when set, else this process's memory.

    :param url: ``redis://…``/``rediss://…``/``unix://…``, or ``None`` for memory.
    :param replay_ttl: seconds a finished log stays readable.
    :param clock: wall-clock source, injectable for tests.
    :param options: passed to the Redis store (key prefix, heartbeat, …).
    """
    if not url or url == "memory://":
        return MemoryStore(replay_ttl=replay_ttl, clock=clock)
    from .redis import RedisStore  # imported lazily: the only importer of redis

    store: Store = RedisStore(url, replay_ttl=replay_ttl, clock=clock, **options)
    return store
