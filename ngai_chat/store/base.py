"""The store interface: sessions and their event logs.

A *session* is created by ``POST /prepare`` and holds the upstream request. Its
*event log* holds the SSE events of its one generation, numbered 1, 2, 3, …; the
last one is terminal (``done`` or ``error``). Readers replay the log and follow it
live, so that a reconnect, a second tab or another instance sees the same events.

Lifecycle of a session, as seen through :meth:`Store.get`::

    pending ──claim()──▶ running ──append(terminal)──▶ finished ──replay_ttl──▶ gone
       └──── expires_at passes ────────────────────────────────────────────▶ gone

Contract every implementation keeps:

* **Expiry is exact.** A pending session past its ``expires_at`` and a finished
  one past ``finished_at + replay_ttl`` are gone for every method at once, whether
  or not :meth:`Store.sweep` has run. Sweeping only frees the memory.
* **One claim.** :meth:`Store.claim` returns ``True`` to exactly one caller per
  session, across every process sharing the store.
* **One terminal event.** After a terminal event, :meth:`Store.append` appends
  nothing and returns ``None`` (:meth:`Store.append_many` stops there); so
  racing writers of a terminal event (the generation and a reader that saw it
  die) cannot produce two.
* **Blocking reads wake promptly.** :meth:`Store.read` returns as soon as an
  event past ``after`` exists, or ``[]`` once ``timeout`` passes.
* Backend failures raise :class:`~ngai_chat.errors.StoreUnavailable`; no
  foreign exception (``redis.ConnectionError``) leaves a store.

Methods are called from many greenlets of one process at once; the memory store
is safe for that because gevent switches only where a greenlet blocks.
"""

from __future__ import annotations

import dataclasses
import typing as t

from .. import sse
from ..errors import StoreUnavailable

__all__ = [
    "TERMINAL_EVENTS",
    "ClientAtLimit",
    "Event",
    "GenerationSignals",
    "SessionInfo",
    "Store",
    "data_of",
    "frame_keeps_data",
]

#: event names that end a stream
TERMINAL_EVENTS = frozenset({"done", "error"})


class Event:
    """One SSE event of a session's log (a plain slotted class: one is made per
    chunk, so it stays as cheap as a tuple).

    A log keeps each event once, as its SSE frame; ``data`` is then read back out of
    the frame when asked for (the OpenAI and AI SDK doors parse it, the NGAI door
    sends the frame). An event read from Redis comes as data, and its frame is
    encoded when asked for.

    :param id: position in the log, from 1.
    :param name: ``chunk``, ``done`` or ``error``.
    :param data: the JSON text sent as the event's ``data:`` line, or ``None`` to
        read it from ``frame``.
    :param frame: its SSE bytes, when encoded already.
    """

    __slots__ = ("_data", "_frame", "id", "name")

    def __init__(self, id: int, name: str, data: str | None, frame: bytes | None = None) -> None:
        self.id = id
        self.name = name
        self._data = data
        self._frame = frame

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, name={self.name!r}, data={self.data!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.id, self.name, self.data) == (other.id, other.name, other.data)

    def __hash__(self) -> int:
        return hash((self.id, self.name, self.data))

    @property
    def terminal(self) -> bool:
        return self.name in TERMINAL_EVENTS

    @property
    def data(self) -> str:
        """The JSON text of the event's ``data:`` line(s)."""
        data = self._data
        if data is None:
            assert self._frame is not None
            data = self._data = data_of(self._frame)
        return data

    @property
    def frame(self) -> bytes:
        """The event as SSE bytes, encoded once however many readers send it."""
        frame = self._frame
        if frame is None:
            frame = self._frame = sse.event(self.data, name=self.name, id=self.id)
        return frame


def data_of(frame: bytes) -> str:
    """The data of an SSE frame made by :func:`ngai_chat.sse.event`: its ``data:``
    lines joined with ``\\n`` (exactly the data it was made from, unless that held a
    ``\\r`` or a lone surrogate: see :func:`frame_keeps_data`).
    """
    start = frame.find(b"data: ") + 6
    if frame.find(b"\ndata: ", start) < 0:  # the usual case: one line of JSON
        return frame[start:-2].decode()
    lines = frame[start - 6 : -2].decode().split("\n")
    return "\n".join(line[6:] for line in lines)


def frame_keeps_data(data: str) -> bool:
    """Whether :func:`data_of` gives ``data`` back from its frame: not when it holds
    a ``\\r`` (framed as a line break) or a lone surrogate (framed as its escape).
    """
    if "\r" in data:
        return False
    if data.isascii():
        return True
    try:
        data.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """A session as :meth:`Store.get` sees it now."""

    id: str
    #: the body to send upstream (model, messages, parameters), ``stream`` unset
    request: dict[str, t.Any]
    #: value for the upstream ``HTTP-Referer`` header, if any
    referer: str | None
    #: wall-clock deadline for the first ``GET /stream``
    expires_at: float
    #: a generation has been claimed (it may have finished since)
    claimed: bool = False
    #: id of the terminal event once the log has one
    terminal_id: int | None = None
    #: ``DELETE`` was called
    cancelled: bool = False
    #: who made it (a bearer token's digest, else the client's address): what
    #: per-client limits and budgets count by; ``""`` when unknown
    client: str = ""
    #: bytes of the request body that made it (attachments included): what
    #: ``NGAI_MAX_CLIENT_BYTES`` counts while the session is unfinished
    size: int = 0

    @property
    def finished(self) -> bool:
        return self.terminal_id is not None


@dataclasses.dataclass(frozen=True)
class ClientAtLimit:
    """Why :meth:`Store.create` refused a session: its client holds its share."""

    #: live sessions (pending or running) the client holds
    held: int
    #: when the client's earliest pending session expires (wall clock), or
    #: ``None`` when all of them are running
    next_expiry: float | None
    #: bytes of request bodies those sessions hold (counted under a byte cap)
    held_bytes: int = 0
    #: refused by the byte cap (``NGAI_MAX_CLIENT_BYTES``), not the session count
    by_bytes: bool = False


@dataclasses.dataclass(frozen=True)
class GenerationSignals:
    """What a running generation learns on each tick of the relay's watcher (the
    greenlet that, with a shared store, checks cancels and readers for every
    generation of its process).
    """

    #: ``DELETE /stream/<id>`` was called
    cancelled: bool
    #: readers attached right now, in every process
    readers: int


class Store(t.Protocol):
    """Where sessions and event logs live (memory, or Redis for many processes)."""

    #: ``"memory"`` or ``"redis"``, as reported by ``/health``
    kind: str
    #: other processes share it: appends cost a round trip, and readers,
    #: cancels and generations elsewhere are seen only by polling
    shared: bool

    def create(
        self, session: SessionInfo, client_limit: int = 0, client_bytes: int = 0
    ) -> ClientAtLimit | None:
        """Store a new pending session; it is gone after ``session.expires_at``.

        :param client_limit: when above 0, refuse the session if its client
            (``session.client``) already holds this many live sessions (pending,
            or running until their terminal event), counted exactly across every
            process sharing the store, in the same step as the creation.
        :param client_bytes: when above 0, refuse the session if the ``size`` of
            its client's live sessions and its own would pass this many bytes
            (counted and released with the sessions above).
        :return: ``None`` when stored, else what the client holds.
        """

    def get(self, session_id: str) -> SessionInfo | None:
        """The session, or ``None`` if unknown or expired."""

    def claim(self, session_id: str) -> bool:
        """Mark the session running; ``True`` for the one caller that wins.

        Fails for a session whose log already ended (cancelled before any
        ``GET``). A claimed session counts as alive (see :meth:`generation_alive`)
        until its generation's ticks take over, and no longer expires by
        ``expires_at``: it lives until its terminal event plus the replay TTL.
        """

    def append(self, session_id: str, name: str, data: str) -> int | None:
        """Append an event and wake its readers.

        :return: the new event's id, or ``None`` when the log already ended or
            the session is gone.
        """

    def append_many(self, session_id: str, events: t.Sequence[tuple[str, str]]) -> list[int]:
        """Append ``(name, data)`` events in order, at once (one round trip).

        :return: the new events' ids: fewer than given when a terminal event
            ended the log, none when it had ended already or the session is gone.
        """

    def append_batches(
        self, batches: t.Mapping[str, t.Sequence[tuple[str, str]]]
    ) -> dict[str, list[int] | StoreUnavailable]:
        """:meth:`append_many` for several sessions at once (one round trip for all,
        with a store shared between processes).

        :return: by session, the ids appended, or the failure it got.
        """

    def read(self, session_id: str, after: int, timeout: float) -> list[Event]:
        """Events with ids greater than ``after`` (possibly only the first of them:
        call again for more), waiting up to ``timeout`` seconds for the first one.
        ``[]`` on timeout or when the session is gone.
        """

    def cancel(self, session_id: str) -> bool:
        """Set the cancel flag; ``False`` when the session is unknown."""

    def attach(self, session_id: str, reader_id: str) -> None:
        """Record (or refresh) an attached reader. Readers call it at least once
        per heartbeat interval while attached; a store shared between processes
        lets a reader's presence lapse a little after it stops refreshing, since
        the process that held it may have died without calling :meth:`detach`.
        """

    def detach(self, session_id: str, reader_id: str) -> None:
        """Forget an attached reader."""

    def tick(self, session_id: str) -> GenerationSignals:
        """Called for a running generation every few seconds: reports cancel and
        readers, and keeps the session's keys from expiring while it runs.
        """

    def tick_many(self, session_ids: t.Sequence[str]) -> dict[str, GenerationSignals]:
        """:meth:`tick` for every generation a process runs, at once: one round trip
        however many (a store shared between processes also renews the process's
        liveness in it).
        """

    def cancels(self) -> list[str]:
        """Sessions whose generations run in this process and that another process
        cancelled since the last call, at a cost that does not grow with the
        generations (``[]`` for a store not shared between processes: the relay
        stops a generation cancelled here itself). The relay asks a few times a
        second, so a cancel takes effect at once wherever it was made;
        :meth:`tick_many` reports every cancel too, less often.
        """

    def generation_alive(self, session_id: str) -> bool:
        """Whether the claimed generation still lives: with a store shared between
        processes, whether the process that claimed it still renews its liveness
        (apart from ticks, so that no number of generations and no slow tick makes
        a live process look dead); readers that see it lapse end the log with
        ``upstream_interrupted``.
        """

    def count_live(self) -> int:
        """Sessions that are pending or running (not finished, not expired)."""

    def sweep(self, now: float) -> int:
        """Free the sessions expired at ``now``; returns how many."""

    def put_chat(self, chat_key: str, value: str, ttl: float) -> None:
        """Remember what a chat id names (the ``/chat`` door's chat → its latest
        answer), for ``ttl`` seconds, replacing what it named before; seen by every
        process sharing the store.
        """

    def get_chat(self, chat_key: str) -> str | None:
        """What :meth:`put_chat` stored, or ``None`` if never stored or expired."""

    def ping(self) -> None:
        """Raise :class:`~ngai_chat.errors.StoreUnavailable` if unreachable."""

    def close(self) -> None:
        """Release connections."""
