"""A session's event log kept in this process's memory, shared by both stores.

The memory store keeps every log here; the Redis store keeps here the logs of
the generations this process runs, for its own readers (no round trip per chunk).
How readers are woken is each store's own business: gevent events between
greenlets for the memory store, a condition that threads (or, patched, greenlets)
wait on for the Redis store.
"""

from __future__ import annotations

from .. import sse
from .base import Event

__all__ = ["READ_BATCH", "EventLog"]

#: events one read returns at most: a reader far behind takes its backlog in
#: pieces (each a list of references to the shared log, never copies)
READ_BATCH = 256


class EventLog:
    """The events of one log, numbered from 1.

    Each is kept as a plain ``(name, data, frame)`` tuple, its SSE frame encoded
    once when appended and shared by every reader. The garbage collector stops
    tracking tuples of strings and bytes, so a process holding millions of events
    (the replay window of a busy server) pays nothing for them at every full
    collection; an :class:`~ngai_chat.store.base.Event` object per kept event
    cost about 0.8 µs of collection per chunk.
    """

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: list[tuple[str, str, bytes]] = []

    def __len__(self) -> int:
        return len(self._events)

    def append(self, name: str, data: str) -> int:
        """Keep one event; its id."""
        event_id = len(self._events) + 1
        self._events.append((name, data, sse.event(data, name=name, id=event_id)))
        return event_id

    def read(self, after: int) -> list[Event]:
        """The events after ``after``, at most :data:`READ_BATCH` of them."""
        start = max(after, 0)
        kept = self._events[start : start + READ_BATCH]
        return [Event(start + i, *event) for i, event in enumerate(kept, 1)]
