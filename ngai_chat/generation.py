"""One generation: the one upstream request of a session, relayed into its log.

A :class:`Generation` runs in its own greenlet (started by the relay). It reads the
upstream's chunks, appends a ``chunk`` event for each, and ends the log with
exactly one terminal event, whatever happens — the store refuses a second one.
It writes the terminal event of every answer it runs; the relay writes the two
others (``done``/``cancelled`` for a session cancelled before any ``GET``, and
``upstream_interrupted`` when a reader sees a generation elsewhere die)::

    what happened                                terminal event
    upstream finished (or finished, then broke)  done {finishReason}
    DELETE, or abandoned by every reader         done {finishReason: "cancelled"}
    upstream refused / broke / went silent       error {code: upstream_*}
    more than NGAI_MAX_EVENTS events or          error {code: too_long}
      NGAI_MAX_LOG_BYTES bytes
    the server shuts down (SIGTERM) first        error {code: upstream_interrupted}

It is stopped by :meth:`Generation.stop`, which throws :class:`Stop` into its
greenlet: the exception lands where it waits (on the upstream socket, most
likely), and the ``finally`` that closes the upstream response is what stops the
billing.

With a store shared between processes (Redis), a chunk costs a round trip to
append: a generation puts its chunks in its outbox and the process's one
:class:`Writer` appends every generation's outbox in one call per round trip,
while the generations go on reading their upstreams.
"""

from __future__ import annotations

import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.greenlet

from . import errors
from .budget import Budgets
from .chunks import Answer
from .chunks import Chunk
from .chunks import chunk_event_data
from .chunks import done_data
from .chunks import error_data
from .chunks import stream_error
from .metrics import Finished
from .metrics import Metrics
from .store import SessionInfo
from .store import Store
from .upstream import Upstream

__all__ = ["Generation", "Stop", "Writer"]

log = logging.getLogger(__name__)

#: seconds to wait for the usage chunk (or ``[DONE]``) once the finish reason came
FINISH_GRACE = 2.0
#: seconds a generation may relay chunks without letting other greenlets run: an
#: upstream whose bytes are always ready would otherwise starve every other stream
YIELD_EVERY = 0.0005

Spawn = t.Callable[..., gevent.greenlet.Greenlet]


class Stop(BaseException):
    """Thrown into a generation greenlet to end it: ``done``/``cancelled``, or an
    ``upstream_interrupted`` error when the reason is ``"shutdown"``.

    A ``BaseException`` so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Generation:
    """Runs one session's upstream request and ends its log exactly once.

    :param session: the claimed session.
    :param store: where its log lives.
    :param upstream: where the answer comes from.
    :param max_events: events kept, the terminal one included.
    :param max_log_bytes: bytes of event data kept.
    :param metrics: told when it ends.
    :param budgets: told what it spent when it ends, when budgets are set.
    :param spawn: starts its greenlet.
    :param on_end: called once its terminal event is written (or failed to be).
    :param writer: appends its chunks in batches (with a store shared between
        processes); without one, each chunk is appended in place.
    """

    def __init__(
        self,
        session: SessionInfo,
        *,
        store: Store,
        upstream: Upstream,
        max_events: int,
        max_log_bytes: int,
        metrics: Metrics,
        spawn: Spawn,
        budgets: Budgets | None = None,
        on_end: t.Callable[[Generation], None],
        writer: Writer | None = None,
    ) -> None:
        self.session = session
        self.store = store
        self.upstream = upstream
        self.max_events = max_events
        self.max_log_bytes = max_log_bytes
        self.metrics = metrics
        self.budgets = budgets
        self.spawn = spawn
        self.on_end = on_end
        #: what the chunks said so far: what ``done`` reports
        self.answer = Answer(session.request.get("model"))
        #: chunk events appended, and the bytes of their data
        self.events = 0
        self.log_bytes = 0
        #: ``perf_counter()`` when the first chunk arrived (the relay-delay sample)
        self.first_chunk_at: float | None = None
        self.greenlet: gevent.greenlet.Greenlet | None = None
        #: it may be stopped only while this is true: while it relays chunks, and
        #: only once, so that no second :class:`Stop` lands in its ending
        self.stoppable = True
        #: since when no reader has been attached (monotonic), ``None`` while one is
        self.alone_since: float | None = None
        self.writer = writer
        #: chunks the writer has not taken yet
        self.outbox: list[tuple[str, str]] = []
        #: the writer holds chunks of this generation (in its queue, or in flight)
        self.writing = False
        #: set by the writer when it is done with this generation's chunks (``writing``
        #: fell)
        self.written = gevent.event.Event()
        #: the failure of an append of the writer: the generation ends with it
        self.write_error: errors.StoreUnavailable | None = None
        #: ``(name, data)`` of the terminal event when the store failed to take it
        self.unwritten: tuple[str, str] | None = None
        #: the greenlet has begun :meth:`run` (a kill before that would keep it
        #: from ever running, and from ending the log)
        self._entered = False
        #: why it was stopped before it began, if it was
        self._stopped_early: str | None = None

    def start(self) -> None:
        self.greenlet = self.spawn(self.run)

    def stop(self, reason: str) -> None:
        """Throw :class:`Stop` into the generation if it is still relaying, once."""
        if self.stoppable and self.greenlet is not None:
            self.stoppable = False
            if self._entered:
                self.greenlet.kill(Stop(reason), block=False)
            else:  # not begun: run() stops at once, and still ends the log
                self._stopped_early = reason

    def run(self) -> None:
        """Relay the answer, then end the log."""
        session = self.session
        failure: errors.ApiError | None = None
        finish_reason: str | None = "cancelled"  # unless the upstream finished
        self._entered = True
        try:
            if self._stopped_early is not None:
                raise Stop(self._stopped_early)
            self._relay()
            finish_reason = None  # the answer's own
        except Stop as stop:
            log.info("session %s: generation stopped (%s)", session.id, stop.reason)
            if stop.reason == "shutdown":
                failure = errors.UpstreamInterrupted(
                    "The server restarted before the answer was finished. Send the message again."
                )
        except errors.UpstreamError as exc:
            if self.answer.finish_reason is not None and isinstance(
                exc, errors.UpstreamInterrupted | errors.UpstreamTimeout
            ):
                finish_reason = None  # finished, then broke: still done
            else:
                log.info("session %s: upstream failed: %s", session.id, exc.code)
                failure = exc
        except errors.ApiError as exc:
            failure = exc
        except Exception:
            log.exception("session %s: generation failed", session.id)
            failure = errors.InternalError()
        finally:
            self.stoppable = False
        while self.writing:  # every chunk before the terminal event
            self.written.clear()
            self.written.wait()
        if failure is not None:
            terminal, outcome = ("error", error_data(failure)), failure.code
        else:
            terminal = ("done", done_data(self.answer, finish_reason))
            outcome = "cancelled" if finish_reason == "cancelled" else "done"
        if self.budgets is not None:
            # counted before the terminal event shows: a client that sends its next
            # request the moment it sees ``done`` finds this answer in its budget
            self.budgets.record(session.client, self.answer.usage)
        try:
            self.store.append(session.id, *terminal)
        except errors.StoreUnavailable:
            log.warning("session %s: could not store the terminal event", session.id)
            self.unwritten = terminal
        finally:
            self.on_end(self)
        self.metrics.generation_finished(
            Finished(
                outcome=outcome,
                model=self.answer.model,
                request_model=session.request.get("model"),
                usage=self.answer.usage,
                chunks=self.events,
                client=session.client,
            )
        )

    def _relay(self) -> None:
        """Relay the upstream's chunks into the log until the upstream finished
        (``[DONE]``, or the finish reason and a short grace for the usage chunk).
        """
        started = time.monotonic()
        stream = self.upstream.stream_chat(self.session.request, referer=self.session.referer)
        try:
            chunks = iter(stream)
            answer = self.answer
            last_yield = time.perf_counter()
            # the event loop's pass count: when it moved, this greenlet waited for the
            # upstream and every other one had its turn (gevent's libuv loop always says
            # -1: then it yields by the clock alone)
            loop = gevent.get_hub().loop
            seen = loop.iteration
            while True:
                if answer.finish_reason is None:
                    chunk = next(chunks, None)
                else:
                    chunk = self._next_within_grace(chunks)
                if chunk is None:
                    return
                self._append(chunk)
                del chunk  # not held while the next one is awaited (an idle stream's memory)
                if self.events == 1:
                    self.metrics.observe_first_chunk(time.monotonic() - started)
                now = time.perf_counter()
                if (turn := loop.iteration) != seen:
                    seen, last_yield = turn, now
                elif now - last_yield >= YIELD_EVERY:
                    gevent.sleep(0)  # let readers and the other generations run
                    last_yield = time.perf_counter()
        finally:
            stream.close()

    @staticmethod
    def _next_within_grace(chunks: t.Iterator[Chunk]) -> Chunk | None:
        """The next chunk once the finish reason came: only the usage chunk and
        ``[DONE]`` may follow, so a missing ``[DONE]`` costs seconds, not the read
        timeout.
        """
        with gevent.Timeout(FINISH_GRACE, False):
            return next(chunks, None)
        return None

    def _append(self, chunk: Chunk) -> None:
        failure = stream_error(chunk)
        if failure is not None:
            raise failure
        self.answer.add(chunk)
        data = chunk_event_data(chunk)
        self.log_bytes += len(data) if data.isascii() else len(data.encode())
        if self.events >= self.max_events - 1:  # keep the last slot for the terminal event
            raise errors.TooLong(
                f"The answer passed {self.max_events} events (NGAI_MAX_EVENTS) and was cut off."
            )
        if self.log_bytes > self.max_log_bytes:
            raise errors.TooLong(
                f"The answer passed {self.max_log_bytes} bytes (NGAI_MAX_LOG_BYTES) and was "
                "cut off."
            )
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        self.events += 1
        if self.writer is None:
            self.store.append(self.session.id, "chunk", data)
            return
        if self.write_error is not None:
            raise self.write_error
        self.outbox.append(("chunk", data))
        if not self.writing:
            self.writing = True
            self.writer.queue(self)


class Writer:
    """Appends the chunks of every generation of a process to a store shared between
    processes, in one call per round trip (:meth:`Store.append_batches`): what all
    the generations put in their outboxes while a round trip was in flight goes in
    the next.

    One greenlet for the process, running while there is something to append — not
    one per answer woken for every chunk: a generation queues itself when its outbox
    gets its first chunk, and goes on reading its upstream.

    :param store: the shared store.
    :param spawn: starts the writer's greenlet.
    """

    def __init__(self, store: Store, spawn: Spawn) -> None:
        self.store = store
        self.spawn = spawn
        #: generations with chunks to append, by session id, in the order they came
        self._queue: dict[str, Generation] = {}
        self._greenlet: gevent.greenlet.Greenlet | None = None

    def queue(self, generation: Generation) -> None:
        """Append ``generation``'s outbox with the next round trip; it is told in
        ``written``/``write_error``, and ``writing`` falls once it is all appended."""
        self._queue[generation.session.id] = generation
        if self._greenlet is None:
            self._greenlet = self.spawn(self._run)

    def _run(self) -> None:
        queued: dict[str, Generation] = {}
        try:
            while self._queue:
                queued, self._queue = self._queue, {}
                batches: dict[str, list[tuple[str, str]]] = {}
                for session_id, generation in queued.items():
                    batches[session_id], generation.outbox = generation.outbox, []
                try:
                    results = self.store.append_batches(batches)
                except errors.StoreUnavailable as exc:
                    results = dict.fromkeys(batches, exc)
                for session_id, generation in queued.items():
                    result = results[session_id]
                    if isinstance(result, errors.StoreUnavailable):
                        _done_writing(generation, result)
                    elif generation.outbox:  # more came meanwhile: with the next trip
                        self._queue.setdefault(session_id, generation)
                    else:
                        _done_writing(generation)
                queued = {}
        finally:
            self._greenlet = None
            # killed: the generations it held are told, nobody else would append
            for generation in [*queued.values(), *self._queue.values()]:
                if generation.writing:
                    _done_writing(generation, errors.StoreUnavailable())
            self._queue = {}


def _done_writing(generation: Generation, error: errors.StoreUnavailable | None = None) -> None:
    """Tell ``generation`` the writer holds none of its chunks any more; ``error``:
    they were not appended (nor will what it queues next be: it ends with it)."""
    if error is not None:
        generation.write_error = error
        generation.outbox.clear()
    generation.writing = False
    generation.written.set()
