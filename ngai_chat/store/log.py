"""A session's event log kept in this process's memory, shared by both stores.

The memory store keeps every log here; the Redis store keeps here the logs of
the generations this process runs, for its own readers (no round trip per chunk).
How readers are woken is each store's own business: gevent events between
greenlets for the memory store, a condition that threads (or, patched, greenlets)
wait on for the Redis store.
"""

from __future__ import annotations

from .. import sse
from .base import TERMINAL_EVENTS
from .base import Event
from .base import frame_keeps_data

__all__ = ["EVENT_OVERHEAD", "READ_BATCH", "EventLog"]

#: events one read returns at most: a reader far behind takes its backlog in
#: pieces (each a list of references to the shared log, never copies)
READ_BATCH = 256
#: bytes an event costs besides its frame: the ``bytes`` object's header (33) and
#: two list slots (16)
EVENT_OVERHEAD = 49
#: one string object per event name, whoever made the name
_NAMES = {name: name for name in ("chunk", *sorted(TERMINAL_EVENTS))}


class EventLog:
    """The events of one log, numbered from 1.

    Each event is kept once, as its SSE frame (encoded once when appended, and
    shared by every reader), with its name; its data is read back out of the frame
    when a reader asks for it (:func:`~ngai_chat.store.base.data_of`), and kept
    apart only for the rare data a frame cannot give back exactly. Plain lists of
    ``bytes`` and ``str``: the garbage collector tracks neither their items nor an
    object per event, so a process holding millions of events (the replay window
    of a busy server) pays nothing for them at every full collection.
    """

    __slots__ = ("_frames", "_names", "_odd", "nbytes")

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._names: list[str] = []
        #: data that its frame does not give back exactly, by event id
        self._odd: dict[int, str] | None = None
        #: bytes held, about: the frames with their objects and list slots
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def append(self, name: str, data: str) -> int:
        """Keep one event; its id."""
        event_id = len(self._frames) + 1
        frame = sse.event(data, name=name, id=event_id)
        self._frames.append(frame)
        self._names.append(_NAMES.get(name) or name)
        self.nbytes += len(frame) + EVENT_OVERHEAD
        if not frame_keeps_data(data):
            if self._odd is None:
                self._odd = {}
            self._odd[event_id] = data
            self.nbytes += len(data) + EVENT_OVERHEAD
        return event_id

    def read(self, after: int) -> list[Event]:
        """The events after ``after``, at most :data:`READ_BATCH` of them."""
        start = max(after, 0)
        end = start + READ_BATCH
        frames = self._frames[start:end]
        names = self._names[start:end]
        odd = self._odd
        if odd is None:
            return [
                Event(event_id, name, None, frame)
                for event_id, name, frame in zip(
                    range(start + 1, start + 1 + len(frames)), names, frames, strict=True
                )
            ]
        return [
            Event(event_id, name, odd.get(event_id), frame)
            for event_id, name, frame in zip(
                range(start + 1, start + 1 + len(frames)), names, frames, strict=True
            )
        ]
