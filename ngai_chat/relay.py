"""The relay: starts one generation per session and serves its readers.

``relay.open(session, last_id)`` is the one entry point of a stream: it attaches a
:class:`Reader`, starts the session's :class:`~ngai_chat.generation.Generation` if
nobody has, and counts the stream open until the view closes the reader. The view
only turns the reader's batches into bytes.

A **reader** replays the log after the client's last event id, then follows it
live; when nothing happens for ``NGAI_HEARTBEAT_INTERVAL`` it yields a heartbeat
tick, which the view writes as ``: keep-alive`` — and that write is how a gone
client is noticed under WSGI. Readers never talk to the upstream.

How a generation learns that it must stop:

* **cancel** (``DELETE``): here, at once; a generation in another process (Redis)
  sees the session's cancel flag on its next tick.
* **abandon**: when the last reader of this process leaves, a timer checks again
  after ``NGAI_ABANDON_TIMEOUT``; with a store shared between processes, readers
  elsewhere count too, and the tick sees them.
* **shutdown** (SIGTERM): :func:`begin_shutdown` stops every generation shortly
  before gunicorn's graceful timeout, and readers end their streams.
* a **dead generation** elsewhere (its process died; Redis only): a reader that
  sees its liveness lapse ends the log with ``upstream_interrupted``.

Ticks exist only for a store shared between processes: one watcher greenlet per
relay looks at the process's cancel inbox five times a second (one round trip,
however many generations run here), reads the cancel flag and the readers of
every process for all its generations every two seconds (one round trip per
tick), and retries the terminal event of a generation whose store failed at its
end. The store keeps the process marked alive on its own. With the memory store
nothing ticks.
"""

from __future__ import annotations

import contextlib
import logging
import time
import typing as t
import uuid
import weakref

import gevent
import gevent.greenlet

from . import errors
from .budget import Budgets
from .chunks import Answer
from .chunks import done_data
from .chunks import error_data
from .generation import Generation
from .generation import Spawn
from .generation import Stop
from .generation import Writer
from .metrics import Metrics
from .store import Event
from .store import GenerationSignals
from .store import SessionInfo
from .store import Store
from .upstream import Upstream

__all__ = ["Batch", "Reader", "Relay", "ShuttingDown", "Stop", "begin_shutdown"]

log = logging.getLogger(__name__)

#: seconds between the watcher's looks at this process's cancel inbox (shared
#: stores): how late a cancel made in another process is seen
CANCEL_POLL = 0.2
#: seconds between full ticks (shared stores): how late a generation whose readers
#: all left starts its abandon timeout, and how often its keys' TTL is pushed on
TICK_INTERVAL = 2.0
#: seconds an idle reader waits before checking that the generation still lives
LIVENESS_POLL = 2.0

#: what a reader yields: events to send, or ``None`` for a heartbeat
Batch = list[Event] | None


class ShuttingDown(Exception):
    """A reader's stream must end now: this process is shutting down.

    :param last_id: the last event id the reader sent.
    """

    def __init__(self, last_id: int) -> None:
        super().__init__(last_id)
        self.last_id = last_id


#: every relay of this process, told when the worker receives SIGTERM
_RELAYS: weakref.WeakSet[Relay] = weakref.WeakSet()


def begin_shutdown(grace: float) -> None:
    """Start draining every relay in this process: streams still open after
    ``grace`` seconds end with a terminal error rather than a silent cut.
    """
    for relay in list(_RELAYS):
        relay.begin_shutdown(grace)


class Relay:
    """Starts generations and serves readers for one app.

    :param store: where sessions and logs live.
    :param upstream: where answers come from.
    :param heartbeat: seconds of silence before a reader yields a heartbeat.
    :param abandon_timeout: seconds a generation runs with no reader attached.
    :param max_events: events kept per session, the terminal one included.
    :param max_log_bytes: bytes of event data kept per session.
    :param metrics: where to count; a private set when not given.
    :param budgets: told what each finished answer spent, when budgets are set.
    :param spawn: starts a greenlet (a seam for tests).
    :param clock: monotonic clock.
    """

    def __init__(
        self,
        store: Store,
        upstream: Upstream,
        *,
        heartbeat: float = 15.0,
        abandon_timeout: float = 30.0,
        max_events: int = 20_000,
        max_log_bytes: int = 67_108_864,
        metrics: Metrics | None = None,
        budgets: Budgets | None = None,
        spawn: Spawn = gevent.spawn,
        clock: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.heartbeat = heartbeat
        self.abandon_timeout = abandon_timeout
        self.max_events = max_events
        self.max_log_bytes = max_log_bytes
        self.metrics = metrics or Metrics()
        self.budgets = budgets
        self.spawn = spawn
        self.clock = clock
        #: generations running in this process, by session id
        self.running: dict[str, Generation] = {}
        #: appends their chunks in batches, with a store shared between processes
        #: (a round trip per append); the memory store appends in place
        self.writer = Writer(store, spawn) if store.shared else None
        #: readers open in this process, by session id
        self._readers: dict[str, int] = {}
        #: terminal events of ended generations that the store failed to take
        self._unwritten: dict[str, tuple[str, str]] = {}
        self._watcher: gevent.greenlet.Greenlet | None = None
        #: ``GET /stream`` responses open in this process
        self.open_streams = 0
        #: monotonic time at which open streams are ended (set on SIGTERM)
        self.shutdown_at: float | None = None
        _RELAYS.add(self)

    @property
    def shutting_down(self) -> bool:
        return self.shutdown_at is not None

    def begin_shutdown(self, grace: float) -> None:
        """Stop generations and end streams ``grace`` seconds from now."""
        if self.shutdown_at is not None:
            return
        self.shutdown_at = self.clock() + grace
        log.info("shutting down: open streams end in %.0f s at the latest", grace)
        self.spawn(self._stop_at_deadline)

    def _stop_at_deadline(self) -> None:
        assert self.shutdown_at is not None
        gevent.sleep(max(0.0, self.shutdown_at - self.clock()))
        for generation in list(self.running.values()):
            generation.stop("shutdown")

    # --- streams ------------------------------------------------------------

    def open(self, session: SessionInfo, last_id: int) -> Reader:
        """Attach a reader to ``session`` after event ``last_id``, and start the
        session's generation if nobody has. Close the reader when the stream ends.
        """
        reader = Reader(self, session.id, last_id)
        self.store.attach(session.id, reader.id)
        self._readers[session.id] = self._readers.get(session.id, 0) + 1
        self.open_streams += 1
        self.metrics.stream_opened()
        generation = self.running.get(session.id)
        if generation is not None:
            generation.alone_since = None
        elif not session.claimed:
            self.start(session)
        return reader

    def _close(self, reader: Reader) -> None:
        session_id = reader.session_id
        self.open_streams -= 1
        self.metrics.stream_closed()
        left = self._readers.get(session_id, 1) - 1
        if left > 0:
            self._readers[session_id] = left
        else:
            self._readers.pop(session_id, None)
        # a shared store forgets the reader by itself when its presence lapses
        with contextlib.suppress(errors.StoreUnavailable):
            self.store.detach(session_id, reader.id)
        generation = self.running.get(session_id)
        if left <= 0 and generation is not None and not self.store.shared:
            generation.alone_since = self.clock()
            self.spawn(self._abandon_when_alone, generation)

    def _abandon_when_alone(self, generation: Generation) -> None:
        """Stop ``generation`` once it has had no reader for the abandon timeout."""
        while generation.alone_since is not None and generation.stoppable:
            left = generation.alone_since + self.abandon_timeout - self.clock()
            if left <= 0:
                generation.stop("abandoned")
                return
            gevent.sleep(left)

    # --- generations -------------------------------------------------------

    def start(self, session: SessionInfo) -> bool:
        """Start the session's generation unless one was claimed already.

        :return: whether this call started it.
        """
        if not self.store.claim(session.id):
            return False
        generation = self.running[session.id] = Generation(
            session,
            store=self.store,
            upstream=self.upstream,
            max_events=self.max_events,
            max_log_bytes=self.max_log_bytes,
            metrics=self.metrics,
            budgets=self.budgets,
            spawn=self.spawn,
            on_end=self._ended,
            writer=self.writer,
        )
        generation.start()
        self.metrics.generation_started()
        if self.store.shared and (self._watcher is None or self._watcher.dead):
            self._watcher = self.spawn(self._watch)
        return True

    def _ended(self, generation: Generation) -> None:
        session_id = generation.session.id
        self.running.pop(session_id, None)
        if generation.unwritten is not None and self.store.shared:
            # its process lives on, so readers elsewhere would wait for the end
            # of this log: the watcher writes it when the store is back
            self._unwritten[session_id] = generation.unwritten
            if self._watcher is None or self._watcher.dead:
                self._watcher = self.spawn(self._watch)

    def cancel(self, session_id: str) -> bool:
        """Stop a session's generation, wherever it runs; ``False`` if unknown.

        A session never streamed is ended at once: its upstream request is never
        made, and a later ``GET`` receives ``done``/``cancelled``.
        """
        session = self.store.get(session_id)
        if session is None:
            return False
        if self.store.claim(session_id):
            answer = Answer(session.request.get("model"))
            self.store.append(session_id, "done", done_data(answer, "cancelled"))
            return True
        self.store.cancel(session_id)
        generation = self.running.get(session_id)
        if generation is not None:
            generation.stop("cancelled")  # here: now, not on the next tick
        return True

    def _watch(self) -> None:
        """Stop the generations cancelled elsewhere, and tick every running
        generation, until none is left (shared stores).
        """
        next_tick = self.clock()
        while self.running or self._unwritten:
            try:
                if self.clock() >= next_tick:
                    next_tick = self.clock() + TICK_INTERVAL
                    generations = list(self.running.values())
                    if generations:
                        signals = self.store.tick_many([g.session.id for g in generations])
                        for generation in generations:
                            self._tick(generation, signals[generation.session.id])
                    self._write_unwritten()
                elif self.running:
                    for session_id in self.store.cancels():
                        cancelled = self.running.get(session_id)
                        if cancelled is not None:
                            cancelled.stop("cancelled")
            except errors.StoreUnavailable:
                pass  # the generations' own appends report the outage
            except Exception:  # keep watching whatever one tick hit
                log.exception("tick failed")
            gevent.sleep(CANCEL_POLL)

    def _write_unwritten(self) -> None:
        """End the logs whose generations could not (the store failed then)."""
        for session_id, terminal in list(self._unwritten.items()):
            self.store.append(session_id, *terminal)  # None: ended, or gone: done too
            del self._unwritten[session_id]
            log.info("session %s: terminal event stored late", session_id)

    def _tick(self, generation: Generation, signals: GenerationSignals) -> None:
        """Stop a generation on cancel, or when readers left it."""
        if signals.cancelled:
            generation.stop("cancelled")
        elif signals.readers:
            generation.alone_since = None
        elif generation.alone_since is None:
            generation.alone_since = self.clock()
        if (
            generation.alone_since is not None
            and self.clock() - generation.alone_since >= self.abandon_timeout
        ):
            generation.stop("abandoned")


class Reader:
    """One stream's view of a session's log: iterate it for batches of events
    (``None`` for a heartbeat), ending with the terminal event; close it when the
    response ends.

    :raises SessionNotFound: (while iterating) the session vanished.
    :raises StoreUnavailable: (while iterating) the store failed.
    :raises ShuttingDown: (while iterating) this process is shutting down.
    """

    def __init__(self, relay: Relay, session_id: str, after: int) -> None:
        self.relay = relay
        self.session_id = session_id
        #: the last event id sent (or that the client said it had)
        self.after = after
        self.id = uuid.uuid4().hex
        self._closed = False

    def __iter__(self) -> t.Iterator[Batch]:
        relay, store, session_id = self.relay, self.relay.store, self.session_id
        last_sent = last_attached = relay.clock()
        poll = min(relay.heartbeat, LIVENESS_POLL)
        while True:
            timeout = poll
            if relay.shutdown_at is not None:
                # a generation here ends its log at the deadline; give its terminal
                # event a moment to land, then end streams of generations elsewhere
                left = relay.shutdown_at + 1.0 - relay.clock()
                if left <= 0:
                    raise ShuttingDown(self.after)
                timeout = min(poll, left)
            batch = store.read(session_id, self.after, timeout=timeout)
            now = relay.clock()
            if store.shared and now - last_attached >= relay.heartbeat / 2:
                store.attach(session_id, self.id)  # a shared store's presence lapses
                last_attached = now
            if batch:
                last_sent = now
                if batch[0].id == 1:
                    self._sample_delay()
                yield batch
                if batch[-1].terminal:  # a log ends with it: only the last can be
                    return
                self.after = batch[-1].id
                continue
            if self._ended():
                return
            if now - last_sent >= relay.heartbeat:
                last_sent = now
                yield None

    def _sample_delay(self) -> None:
        """Report the relay's own delay for the session's first chunk, once."""
        generation = self.relay.running.get(self.session_id)
        if generation is not None and generation.first_chunk_at is not None:
            self.relay.metrics.observe_relay_delay(time.perf_counter() - generation.first_chunk_at)
            generation.first_chunk_at = None

    def _ended(self) -> bool:
        """Check an idle stream: ``True`` when it must end with nothing more (the
        client's last event id is at or past the log's end); ends the log of a
        generation that died elsewhere.

        :raises SessionNotFound: the session vanished.
        """
        relay, store, session_id = self.relay, self.relay.store, self.session_id
        if session_id in relay.running:
            return False  # alive, here; its log has not reached the reader yet
        session = store.get(session_id)
        if session is None:
            raise errors.SessionNotFound()
        if session.terminal_id is not None:
            return self.after >= session.terminal_id
        if store.shared and session.claimed and not store.generation_alive(session_id):
            log.warning("session %s: its generation stopped ticking", session_id)
            failure = errors.UpstreamInterrupted(
                "The server generating this answer went away before finishing it. "
                "Send the message again."
            )
            store.append(session_id, "error", error_data(failure))
        return False

    def close(self) -> None:
        """Detach from the session (once); the view calls it when the response ends."""
        if not self._closed:
            self._closed = True
            self.relay._close(self)
