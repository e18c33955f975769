"""The Redis store's tail: one blocking ``XREAD`` per process for every stream
a reader here waits on (so Redis connections are bounded by processes, not by
open streams).
"""

from __future__ import annotations

import threading
import time
import typing as t

import redis

from ..errors import StoreUnavailable

__all__ = ["Tail", "stream_entries", "streams_of"]


class _Followed:
    """A stream the tail follows: the newest event id seen, the entries its last
    read brought, and who waits on it."""

    __slots__ = ("changed", "failure", "idle_since", "latest", "recent", "waiters")

    def __init__(self, latest: int, lock: threading.Lock) -> None:
        self.latest = latest
        #: ``(first id, entries)`` of the last read that found it grown
        self.recent: tuple[int, list[t.Any]] = (0, [])
        self.waiters = 0
        self.idle_since = 0.0
        self.changed = threading.Condition(lock)
        self.failure: Exception | None = None


class Tail:
    """Waits for new events on many streams with one blocking ``XREAD``.

    A poller thread (a greenlet under gevent) blocks in ``XREAD`` on every stream
    that has a waiter, and wakes the waiters of the streams that grew. A stream
    stays in the ``XREAD`` for ``linger`` seconds after its last waiter left, so a
    reader coming back for the next event finds it followed already.

    The ``XREAD`` brings the new entries themselves (up to ``count`` a stream), and
    a waiter that was at the end of its stream takes them from there
    (:meth:`entries_after`): readers following a log live make no round trip of
    their own per event, only the tail does, one for every stream of the process.

    :param client: a Redis client on a pool of its own.
    :param block: seconds one ``XREAD`` blocks: how long a stream new to the set
        may wait to join it.
    :param linger: seconds a stream stays followed without waiters.
    :param count: entries one ``XREAD`` brings of a stream at most.
    """

    def __init__(
        self, client: redis.Redis, *, block: float = 0.1, linger: float = 2.0, count: int = 8
    ) -> None:
        self._client = client
        self._count = count
        self._block_ms = max(1, int(block * 1000))
        self._linger = linger
        self._lock = threading.Lock()
        self._streams: dict[str, _Followed] = {}
        self._poller: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        """Say the store is closing its connections: a read that fails from now on
        (however redis-py fails when its pool is disconnected under it, from another
        thread) ends the poller quietly, its waiters told the store is unavailable.
        """
        self._closed = True

    def wait(self, stream_key: str, after: int, timeout: float) -> bool:
        """Wait until ``stream_key`` has an event past ``after``.

        :return: ``False`` when ``timeout`` passed first.
        :raises StoreUnavailable: Redis failed meanwhile.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            followed = self._streams.get(stream_key)
            if followed is None:
                followed = self._streams[stream_key] = _Followed(after, self._lock)
            followed.waiters += 1
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, daemon=True)
                self._poller.start()
            try:
                while followed.latest <= after:
                    if followed.failure is not None:
                        raise StoreUnavailable() from followed.failure
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    followed.changed.wait(remaining)
                return True
            finally:
                followed.waiters -= 1
                followed.idle_since = time.monotonic()

    def entries_after(self, stream_key: str, after: int) -> list[t.Any]:
        """The entries the tail's last read brought for ``stream_key`` when they
        follow event ``after`` exactly, else ``[]`` (the caller reads them itself).
        """
        with self._lock:
            followed = self._streams.get(stream_key)
            if followed is None:
                return []
            first, entries = followed.recent
            return entries if first == after + 1 else []

    def at_end(self, stream_key: str, after: int) -> bool:
        """Whether ``stream_key`` is followed and its newest event the tail has
        seen is ``after``: a reader there can wait without reading first."""
        with self._lock:
            followed = self._streams.get(stream_key)
            return followed is not None and followed.failure is None and followed.latest == after

    def _poll(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for key, followed in list(self._streams.items()):
                    if not followed.waiters and now - followed.idle_since >= self._linger:
                        del self._streams[key]
                if not self._streams:
                    self._poller = None
                    return
                cursors: dict[t.Any, t.Any] = {
                    key: f"0-{followed.latest}" for key, followed in self._streams.items()
                }
            try:
                response = self._client.xread(cursors, count=self._count, block=self._block_ms)
            except Exception as exc:
                with self._lock:  # every waiter hears of it; the next wait starts afresh
                    for followed in self._streams.values():
                        followed.failure = exc
                        followed.changed.notify_all()
                    self._streams.clear()
                    self._poller = None
                if not (self._closed or isinstance(exc, redis.RedisError | OSError)):
                    raise  # not Redis failing: a bug, to be seen in the log
                return
            with self._lock:
                for key, entries in streams_of(response):
                    grown = self._streams.get(key)
                    if grown is not None and entries:
                        first = int(entries[0][0].partition("-")[2])
                        newest = int(entries[-1][0].partition("-")[2])
                        grown.recent = (first, entries)
                        grown.latest = max(grown.latest, newest)
                        grown.changed.notify_all()


def streams_of(response: t.Any) -> list[tuple[str, list[t.Any]]]:
    """The ``(key, entries)`` of an ``XREAD`` reply on any number of streams
    (RESP2 ``[[key, entries], …]`` or RESP3 ``{key: [entries]}``).
    """
    if not response:
        return []
    if isinstance(response, dict):
        return [
            (key, list(value[0]) if value and isinstance(value[0], list) else list(value))
            for key, value in response.items()
        ]
    return [(key, list(entries)) for key, entries in response]


def stream_entries(response: t.Any) -> list[t.Any]:
    """The ``(id, fields)`` entries of an ``XREAD`` reply on one stream (read by
    :func:`streams_of`: a ``?protocol=3`` in the URL must not break reading).
    """
    streams = streams_of(response)
    return streams[0][1] if streams else []
