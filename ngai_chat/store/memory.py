"""The in-process store: dicts and gevent wake-ups.

Correct only inside one worker process; gunicorn's master refuses to start several
workers on it (:func:`ngai_chat.gunicorn_conf.on_starting`, by
:attr:`Settings.store_shared <ngai_chat.config.Settings.store_shared>`), and a mounted
blueprint warns. Every method runs without blocking
except :meth:`MemoryStore.read`, so no other greenlet can interleave inside one.

Finished logs are kept for replay until ``replay_ttl`` passes, and under
``max_replay_bytes`` (``NGAI_MAX_REPLAY_BYTES``) all together: past it, the
oldest finished logs are dropped first, and their sessions answer as expired ones
do. Memory freed that way, or by expiry, is given back to the operating system by
the sweep (``malloc_trim``) once enough has been freed: glibc's allocator keeps
freed memory for reuse otherwise, and a worker's RSS stayed at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import heapq
import time
import typing as t

import gevent.event

from ..errors import StoreUnavailable
from .base import TERMINAL_EVENTS
from .base import ClientAtLimit
from .base import Event
from .base import GenerationSignals
from .base import SessionInfo
from .log import EventLog

__all__ = ["MemoryStore", "release_memory"]

#: bytes of logs freed after which a sweep gives memory back to the OS
TRIM_AFTER = 32 * 1024 * 1024


@functools.cache
def _malloc_trim() -> t.Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` on another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: t.Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_memory() -> bool:
    """Give the memory that the C allocator keeps free back to the OS (glibc's
    ``malloc_trim(0)``: a few milliseconds on a large heap). Whether it could.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@dataclasses.dataclass
class _Entry:
    info: SessionInfo
    log: EventLog = dataclasses.field(default_factory=EventLog)
    readers: set[str] = dataclasses.field(default_factory=set)
    finished_at: float | None = None
    #: set and replaced by an append while readers wait on it
    changed: gevent.event.Event = dataclasses.field(default_factory=gevent.event.Event)
    #: readers waiting on ``changed`` right now: an append wakes them and replaces
    #: it only when there are some, so a busy log makes no wake-up per chunk
    waiting: int = 0


class MemoryStore:
    """Sessions and event logs in this process's memory.

    :param replay_ttl: seconds a finished log stays readable.
    :param clock: wall-clock source, injectable for tests.
    :param max_replay_bytes: bytes of finished logs kept at most; the oldest go first.
    """

    kind = "memory"
    shared = False

    def __init__(
        self,
        *,
        replay_ttl: float,
        clock: t.Callable[[], float] = time.time,
        max_replay_bytes: int = 268_435_456,
    ) -> None:
        self.replay_ttl = replay_ttl
        self.clock = clock
        self.max_replay_bytes = max_replay_bytes
        #: finished sessions, oldest first, with the bytes of their logs
        self._finished: dict[str, int] = {}
        #: bytes of the finished logs kept
        self.replay_bytes = 0
        #: bytes of logs freed since memory was last given back to the OS
        self._freed = 0
        self._entries: dict[str, _Entry] = {}
        #: entries without a terminal event, expired or not: kept as a count so
        #: that count_live (checked on every /prepare) does not walk them all
        self._unfinished = 0
        #: (expires_at, id) of sessions created unclaimed, earliest first
        self._deadlines: list[tuple[float, str]] = []
        #: client → ids of its unfinished sessions (expired ones go when looked at)
        self._by_client: dict[str, set[str]] = {}
        #: client → bytes of request bodies its unfinished sessions hold
        self._client_bytes: dict[str, int] = {}
        #: the /chat door's chat keys → (value, expiry), and their expiries in order
        self._chats: dict[str, tuple[str, float]] = {}
        self._chat_deadlines: list[tuple[float, str]] = []

    def _live(self, session_id: str, now: float | None = None) -> _Entry | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if self._expired(entry, self.clock() if now is None else now):
            self._drop(session_id)
            return None
        return entry

    def _expired(self, entry: _Entry, now: float) -> bool:
        if entry.finished_at is not None:
            return now >= entry.finished_at + self.replay_ttl
        return not entry.info.claimed and now >= entry.info.expires_at

    def _drop(self, session_id: str) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            if entry.finished_at is None:
                self._unfinished -= 1
                self._forget_client(entry.info)
            else:
                self.replay_bytes -= self._finished.pop(session_id, 0)
            self._freed += entry.log.nbytes
            entry.changed.set()  # readers blocked on it find the session gone

    def _forget_client(self, info: SessionInfo) -> None:
        held = self._by_client.get(info.client)
        if held is not None and info.id in held:
            held.discard(info.id)
            left = self._client_bytes.pop(info.client, 0) - info.size
            if held:
                self._client_bytes[info.client] = left
            else:
                del self._by_client[info.client]

    def create(
        self, session: SessionInfo, client_limit: int = 0, client_bytes: int = 0
    ) -> ClientAtLimit | None:
        self._drop(session.id)
        if (client_limit > 0 or client_bytes > 0) and session.client:
            refused = self._at_limit(session, client_limit, client_bytes)
            if refused is not None:
                return refused
        self._entries[session.id] = _Entry(info=session)
        self._unfinished += 1
        heapq.heappush(self._deadlines, (session.expires_at, session.id))
        if session.client:
            self._by_client.setdefault(session.client, set()).add(session.id)
            self._client_bytes[session.client] = (
                self._client_bytes.get(session.client, 0) + session.size
            )
        return None

    def _at_limit(self, session: SessionInfo, limit: int, byte_limit: int) -> ClientAtLimit | None:
        now = self.clock()
        client = session.client
        live = [
            entry.info
            for session_id in list(self._by_client.get(client, ()))
            if (entry := self._live(session_id, now)) is not None
        ]
        held_bytes = self._client_bytes.get(client, 0)
        over_count = limit > 0 and len(live) >= limit
        over_bytes = byte_limit > 0 and held_bytes + session.size > byte_limit
        if not (over_count or over_bytes):
            return None
        pending = [info.expires_at for info in live if not info.claimed]
        return ClientAtLimit(
            held=len(live),
            next_expiry=min(pending) if pending else None,
            held_bytes=held_bytes,
            by_bytes=not over_count,
        )

    def get(self, session_id: str) -> SessionInfo | None:
        entry = self._live(session_id)
        return None if entry is None else entry.info

    def claim(self, session_id: str) -> bool:
        entry = self._live(session_id)
        if entry is None or entry.info.claimed or entry.finished_at is not None:
            return False
        entry.info = dataclasses.replace(entry.info, claimed=True)
        return True

    def append(self, session_id: str, name: str, data: str) -> int | None:
        # the generation's one call per chunk: no list made, one wake-up at most
        entry = self._live(session_id)
        if entry is None or entry.finished_at is not None:
            return None
        event_id = self._append(entry, name, data)
        self._wake(entry)
        return event_id

    def append_many(self, session_id: str, events: t.Sequence[tuple[str, str]]) -> list[int]:
        entry = self._live(session_id)
        ids: list[int] = []
        if entry is None:
            return ids
        for name, data in events:
            if entry.finished_at is not None:
                break
            ids.append(self._append(entry, name, data))
        if ids:
            self._wake(entry)
        return ids

    def _append(self, entry: _Entry, name: str, data: str) -> int:
        event_id = entry.log.append(name, data)
        if name in TERMINAL_EVENTS:
            entry.finished_at = self.clock()
            entry.info = dataclasses.replace(entry.info, terminal_id=event_id)
            self._unfinished -= 1
            self._forget_client(entry.info)
            self._keep_for_replay(entry.info.id, entry.log.nbytes)
        return event_id

    def _keep_for_replay(self, session_id: str, nbytes: int) -> None:
        """Count a finished log, and drop the oldest ones past the cap (never the
        one that just finished: its readers are still reading it).
        """
        self._finished[session_id] = nbytes
        self.replay_bytes += nbytes
        while self.replay_bytes > self.max_replay_bytes and len(self._finished) > 1:
            self._drop(next(iter(self._finished)))

    @staticmethod
    def _wake(entry: _Entry) -> None:
        """Wake the readers waiting on ``entry``, if any."""
        if entry.waiting:
            changed, entry.changed, entry.waiting = entry.changed, gevent.event.Event(), 0
            changed.set()

    def append_batches(
        self, batches: t.Mapping[str, t.Sequence[tuple[str, str]]]
    ) -> dict[str, list[int] | StoreUnavailable]:
        return {sid: self.append_many(sid, events) for sid, events in batches.items()}

    def read(self, session_id: str, after: int, timeout: float) -> list[Event]:
        entry = self._live(session_id)
        if entry is None:
            return []
        if len(entry.log) <= after:
            changed = entry.changed
            entry.waiting += 1
            try:
                changed.wait(timeout)
            finally:
                if not changed.is_set():  # timed out: it still waits on this one
                    entry.waiting -= 1
            entry = self._live(session_id)
            if entry is None:
                return []
        return entry.log.read(after)

    def cancel(self, session_id: str) -> bool:
        entry = self._live(session_id)
        if entry is None:
            return False
        entry.info = dataclasses.replace(entry.info, cancelled=True)
        return True

    def attach(self, session_id: str, reader_id: str) -> None:
        entry = self._live(session_id)
        if entry is not None:
            entry.readers.add(reader_id)

    def detach(self, session_id: str, reader_id: str) -> None:
        entry = self._entries.get(session_id)
        if entry is not None:
            entry.readers.discard(reader_id)

    def tick(self, session_id: str) -> GenerationSignals:
        entry = self._entries.get(session_id)
        if entry is None:
            return GenerationSignals(cancelled=True, readers=0)
        return GenerationSignals(cancelled=entry.info.cancelled, readers=len(entry.readers))

    def tick_many(self, session_ids: t.Sequence[str]) -> dict[str, GenerationSignals]:
        return {session_id: self.tick(session_id) for session_id in session_ids}

    def cancels(self) -> list[str]:
        # one process: the relay stops a cancelled generation itself, at once
        return []

    def generation_alive(self, session_id: str) -> bool:
        # The generation runs in this process and always ends its log in a
        # ``finally``; it cannot die while the process lives.
        return session_id in self._entries

    def count_live(self) -> int:
        # What is left unfinished once the overdue pending sessions are dropped
        # is running, or pending and in time.
        self._drop_overdue(self.clock())
        return self._unfinished

    def _drop_overdue(self, now: float) -> int:
        """Drop the pending sessions whose deadline passed (gone anyway)."""
        dropped = 0
        while self._deadlines and self._deadlines[0][0] <= now:
            _, session_id = heapq.heappop(self._deadlines)
            entry = self._entries.get(session_id)
            if entry is not None and self._expired(entry, now):
                self._drop(session_id)
                dropped += 1
        return dropped

    def sweep(self, now: float) -> int:
        dropped = self._drop_overdue(now)
        expired = [sid for sid, entry in self._entries.items() if self._expired(entry, now)]
        for session_id in expired:
            self._drop(session_id)
        if self._freed >= TRIM_AFTER:
            self._freed = 0
            release_memory()
        return dropped + len(expired)

    def put_chat(self, chat_key: str, value: str, ttl: float) -> None:
        now = self.clock()
        chats, deadlines = self._chats, self._chat_deadlines
        # forget the expired ones as new ones come: a bounded cost per call
        while deadlines and deadlines[0][0] <= now:
            _, key = heapq.heappop(deadlines)
            held = chats.get(key)
            if held is not None and held[1] <= now:
                del chats[key]
        chats[chat_key] = (value, now + ttl)
        heapq.heappush(deadlines, (now + ttl, chat_key))

    def get_chat(self, chat_key: str) -> str | None:
        held = self._chats.get(chat_key)
        if held is None or held[1] <= self.clock():
            return None
        return held[0]

    def ping(self) -> None:
        return None

    def close(self) -> None:
        self._entries.clear()
        self._by_client.clear()
        self._client_bytes.clear()
        self._finished.clear()
        self.replay_bytes = 0
