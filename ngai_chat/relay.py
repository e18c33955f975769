"""Generations and readers: the heart of the relay.

A **generation** runs the one upstream request of a session in its own greenlet
and appends every event to the session's log in the store. One **watcher**
greenlet per relay ticks every running generation a few times a second: it keeps
each marked alive, and stops it when ``DELETE`` set the cancel flag or when no
reader has been attached for ``NGAI_ABANDON_TIMEOUT``. Stopping means killing the
generation greenlet with :class:`Stop`; the exception lands where it waits (on the
upstream socket, most likely), and its ``finally`` closes the upstream response,
which is what stops the billing.

A **reader** replays the log after the client's last event id, then follows it
live; when nothing happens for ``NGAI_HEARTBEAT_INTERVAL`` it yields a heartbeat
tick, which the view writes as ``: keep-alive`` — and that write is how a gone
client is noticed under WSGI. Readers never talk to the upstream.

Who ends the log, and how (exactly one terminal event, the store guarantees it)::

    what happened                               terminal event
    upstream finished (or finished, then broke)  done {finishReason}
    DELETE, or abandoned by every reader         done {finishReason: "cancelled"}
    upstream refused / broke / went silent       error {code: upstream_*}
    more than NGAI_MAX_EVENTS events             error {code: too_long}
    the server shuts down (SIGTERM) first        error {code: upstream_interrupted}
    the generating process died (Redis store)    error {code: upstream_interrupted},
                                                 written by a reader that saw it lapse
"""

from __future__ import annotations

import logging
import time
import typing as t
import weakref

import gevent
import gevent.greenlet

from . import errors
from .metrics import Finished
from .metrics import Metrics
from .sse import json_data as _json
from .store import Event
from .store import SessionInfo
from .store import Store
from .upstream import Chunk
from .upstream import Upstream

__all__ = [
    "Batch",
    "Relay",
    "ShuttingDown",
    "Stop",
    "begin_shutdown",
    "chunk_event_data",
    "done_data",
]

log = logging.getLogger(__name__)

#: seconds between watcher ticks; bounds how late a cancel is seen elsewhere
TICK_INTERVAL = 0.2
#: seconds to wait for the usage chunk (or ``[DONE]``) once the finish reason came
FINISH_GRACE = 2.0
#: seconds an idle reader waits before checking that the generation still lives
LIVENESS_POLL = 2.0

#: what a reader yields: events to send, or ``None`` for a heartbeat
Batch = list[Event] | None

Spawn = t.Callable[..., gevent.greenlet.Greenlet]


class Stop(BaseException):
    """Thrown into a generation greenlet to end it: ``done``/``cancelled``, or an
    ``upstream_interrupted`` error when the reason is ``"shutdown"``.

    A ``BaseException`` so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


class _END:
    """Sentinel: the upstream stream is exhausted."""


def chunk_event_data(chunk: Chunk) -> str:
    """The ``data`` of a ``chunk`` event: the upstream chunk as received, plus a
    top-level ``content`` with the text of ``choices[0].delta.content``.

    The chunk's text is spliced rather than re-serialized, so the client sees the
    upstream's bytes exactly (and the hot path pays one ``json.dumps`` of a string).
    """
    content = ""
    choices = chunk.value.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            content = delta["content"]
    text = chunk.text.rstrip()
    encoded = _json(content)
    if text.endswith("}"):
        body = text[:-1].rstrip()
        separator = "" if body.endswith("{") else ","
        return f'{body}{separator}"content":{encoded}}}'
    return _json({**chunk.value, "content": content})


def done_data(finish_reason: str | None, model: str | None, usage: t.Any) -> str:
    """The ``data`` of a ``done`` event."""
    return _json({"finishReason": finish_reason, "model": model, "usage": usage})


def error_data(error: errors.ApiError) -> str:
    """The ``data`` of an ``error`` event."""
    return _json(error.to_dict())


def _stream_error(chunk: dict[str, t.Any]) -> errors.UpstreamStreamError | None:
    """The error carried by a mid-stream error chunk, or ``None`` for a normal one."""
    error = chunk.get("error")
    choices = chunk.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    failed = isinstance(first, dict) and first.get("finish_reason") == "error"
    if error is None and not failed:
        return None
    message = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    elif isinstance(error, str):
        message = error
    return errors.UpstreamStreamError(message, upstream=error)


class _Generation:
    """One running generation, and what it has learned so far from the upstream."""

    def __init__(self, session: SessionInfo) -> None:
        self.session = session
        self.model: str | None = session.request.get("model")
        self.finish_reason: str | None = None
        self.finished = False
        self.usage: t.Any = None
        self.events = 0
        self.started_at = 0.0
        self.greenlet: gevent.greenlet.Greenlet | None = None
        #: it may be stopped only while this is true: while it relays chunks, and
        #: only once, so that no second :class:`Stop` lands in its ending
        self.stoppable = True
        #: since when no reader has been attached (watcher's clock)
        self.alone_since: float | None = None
        #: chunk events waiting for the writer greenlet
        self.outbox: list[tuple[str, str]] = []
        self.writer: gevent.greenlet.Greenlet | None = None
        self.write_error: errors.StoreUnavailable | None = None


class Relay:
    """Starts generations and serves readers for one app.

    :param store: where sessions and logs live.
    :param upstream: where answers come from.
    :param heartbeat: seconds of silence before a reader yields a heartbeat.
    :param abandon_timeout: seconds a generation runs with no reader attached.
    :param max_events: events kept per session, the terminal one included.
    :param metrics: where to count; a private set when not given.
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
        metrics: Metrics | None = None,
        spawn: Spawn = gevent.spawn,
        clock: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.heartbeat = heartbeat
        self.abandon_timeout = abandon_timeout
        self.max_events = max_events
        self.metrics = metrics or Metrics()
        self.spawn = spawn
        self.clock = clock
        #: generations running in this process, by session id
        self.running: dict[str, _Generation] = {}
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
            self._stop(generation, "shutdown")

    # --- generations -------------------------------------------------------

    def start(self, session: SessionInfo) -> bool:
        """Start the session's generation unless one was claimed already.

        :return: whether this call started it.
        """
        if not self.store.claim(session.id):
            return False
        generation = self.running[session.id] = _Generation(session)
        generation.greenlet = self.spawn(self._generate, generation)
        if self._watcher is None or self._watcher.dead:
            self._watcher = self.spawn(self._watch)
        return True

    def cancel(self, session_id: str) -> bool:
        """Stop a session's generation, wherever it runs; ``False`` if unknown.

        A session never streamed is ended at once: its upstream request is never
        made, and a later ``GET`` receives ``done``/``cancelled``.
        """
        session = self.store.get(session_id)
        if session is None:
            return False
        if self.store.claim(session_id):
            model = session.request.get("model")
            self.store.append(session_id, "done", done_data("cancelled", model, None))
            return True
        self.store.cancel(session_id)
        generation = self.running.get(session_id)
        if generation is not None:
            self._stop(generation, "cancelled")  # here: now, not on the next tick
        return True

    def _stop(self, generation: _Generation, reason: str) -> None:
        """Throw :class:`Stop` into a generation that is still relaying, once."""
        if generation.stoppable and generation.greenlet is not None:
            generation.stoppable = False
            generation.greenlet.kill(Stop(reason), block=False)

    def _generate(self, state: _Generation) -> None:
        session = state.session
        failure: errors.ApiError | None = None
        finish_reason: str | None = "cancelled"  # unless the upstream finished
        try:
            self._run(state)
            finish_reason = state.finish_reason
        except Stop as stop:
            log.info("session %s: generation stopped (%s)", session.id, stop.reason)
            if stop.reason == "shutdown":
                failure = errors.UpstreamInterrupted(
                    "The server restarted before the answer was finished. Send the message again."
                )
        except errors.UpstreamError as exc:
            if state.finish_reason is not None and isinstance(
                exc, errors.UpstreamInterrupted | errors.UpstreamTimeout
            ):
                finish_reason = state.finish_reason  # finished, then broke: still done
            else:
                log.info("session %s: upstream failed: %s", session.id, exc.code)
                failure = exc
        except errors.ApiError as exc:
            failure = exc
        except Exception:
            log.exception("session %s: generation failed", session.id)
            failure = errors.InternalError()
        finally:
            state.stoppable = False
        if state.writer is not None:
            state.writer.join()  # every chunk before the terminal event
        if failure is not None:
            terminal, outcome = ("error", error_data(failure)), failure.code
        else:
            terminal = ("done", done_data(finish_reason, state.model, state.usage))
            outcome = "cancelled" if finish_reason == "cancelled" else "done"
        try:
            self.store.append(session.id, *terminal)
        except errors.StoreUnavailable:
            log.warning("session %s: could not store the terminal event", session.id)
        finally:
            self.running.pop(session.id, None)
        self.metrics.generation_finished(
            Finished(
                outcome=outcome,
                model=state.model,
                usage=state.usage,
                chunks=state.events,
                client=session.client,
            )
        )

    def _run(self, state: _Generation) -> None:
        """Relay the upstream's chunks into the log, until the upstream finished.

        :raises UpstreamInterrupted: the stream ended without a finish reason
            (or ``[DONE]``).
        """
        session = state.session
        state.started_at = self.clock()
        stream = self.upstream.stream_chat(session.request, referer=session.referer)
        try:
            chunks = iter(stream)
            while True:
                chunk = self._next(chunks, state)
                if chunk is _END:
                    break
                assert isinstance(chunk, Chunk)
                self._relay_chunk(state, chunk)
        finally:
            stream.close()
        if state.finish_reason is None and not state.finished:
            raise errors.UpstreamInterrupted(
                "The model provider closed the stream before finishing the answer."
            )

    def _next(self, chunks: t.Iterator[Chunk], state: _Generation) -> Chunk | type[_END]:
        """The next chunk; once the finish reason came, wait only a short grace
        for the usage chunk, so a missing ``[DONE]`` costs seconds, not the read
        timeout.
        """
        if state.finish_reason is None:
            try:
                return next(chunks)
            except StopIteration:
                state.finished = True
                return _END
        result: Chunk | type[_END] = _END
        with gevent.Timeout(FINISH_GRACE, False):
            try:
                result = next(chunks)
            except StopIteration:
                state.finished = True
        return result

    def _relay_chunk(self, state: _Generation, chunk: Chunk) -> None:
        value = chunk.value
        failure = _stream_error(value)
        if failure is not None:
            raise failure
        if isinstance(value.get("model"), str):
            state.model = value["model"]
        choices = value.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            if isinstance(reason, str) and reason:
                state.finish_reason = reason
        if value.get("usage") is not None:
            state.usage = value["usage"]
        if state.events >= self.max_events - 1:  # keep the last slot for the terminal event
            raise errors.TooLong(
                f"The answer passed {self.max_events} events (NGAI_MAX_EVENTS) and was cut off."
            )
        self._write(state, chunk_event_data(chunk))
        if not state.events:
            self.metrics.observe_first_chunk(self.clock() - state.started_at)
        state.events += 1

    def _write(self, state: _Generation, data: str) -> None:
        """Queue a chunk event for the store, without waiting for it.

        The generation goes on reading the upstream while a writer greenlet
        appends what has queued up, all of it in one call: with Redis, a fast
        upstream costs one round trip per batch instead of one per chunk.

        :raises StoreUnavailable: an earlier write failed.
        """
        if state.write_error is not None:
            raise state.write_error
        state.outbox.append(("chunk", data))
        if state.writer is None:
            state.writer = self.spawn(self._flush, state)

    def _flush(self, state: _Generation) -> None:
        try:
            while state.outbox:
                batch, state.outbox = state.outbox, []
                self.store.append_many(state.session.id, batch)
        except errors.StoreUnavailable as exc:
            state.write_error = exc
            state.outbox.clear()
        finally:
            state.writer = None

    def _watch(self) -> None:
        """Tick every running generation until none is left."""
        while self.running:
            for generation in list(self.running.values()):
                try:
                    self._tick(generation)
                except errors.StoreUnavailable:
                    pass  # the generation's own appends report the outage
                except Exception:  # keep watching the others whatever one hit
                    log.exception("session %s: tick failed", generation.session.id)
            gevent.sleep(TICK_INTERVAL)

    def _tick(self, generation: _Generation) -> None:
        """Keep a generation alive; stop it on cancel, or when readers left it."""
        signals = self.store.tick(generation.session.id)
        if signals.cancelled:
            self._stop(generation, "cancelled")
        elif signals.readers:
            generation.alone_since = None
        elif generation.alone_since is None:
            generation.alone_since = self.clock()
        if (
            generation.alone_since is not None
            and self.clock() - generation.alone_since >= self.abandon_timeout
        ):
            self._stop(generation, "abandoned")

    # --- readers ------------------------------------------------------------

    def follow(self, session_id: str, after: int, reader_id: str) -> t.Iterator[Batch]:
        """The events after ``after``, live, ending with the terminal event.

        Yields lists of events, or ``None`` when ``heartbeat`` seconds passed
        without any. Keeps the reader attached while it runs.
        """
        last_sent = last_attached = self.clock()
        poll = min(self.heartbeat, LIVENESS_POLL)
        while True:
            timeout = poll
            if self.shutdown_at is not None:
                # a generation here ends its log at the deadline; give its terminal
                # event a moment to land, then end streams of generations elsewhere
                left = self.shutdown_at + 1.0 - self.clock()
                if left <= 0:
                    raise ShuttingDown(after)
                timeout = min(poll, left)
            batch = self.store.read(session_id, after, timeout=timeout)
            now = self.clock()
            if now - last_attached >= self.heartbeat / 2:
                self.store.attach(session_id, reader_id)
                last_attached = now
            if batch:
                last_sent = now
                terminal = next((i for i, event in enumerate(batch) if event.terminal), None)
                if terminal is not None:
                    yield batch[: terminal + 1]
                    return
                yield batch
                after = batch[-1].id
                continue
            if not self._still_running(session_id):
                continue  # the log just ended or vanished: read it again
            if now - last_sent >= self.heartbeat:
                last_sent = now
                yield None

    def _still_running(self, session_id: str) -> bool:
        """Check an idle session: ``False`` when its log changed under the reader
        (it just ended, or the generation died and this reader ended it).

        :raises SessionNotFound: the session vanished.
        """
        if self.store.generation_alive(session_id):  # one round trip when all is well
            return True
        session = self.store.get(session_id)
        if session is None:
            raise errors.SessionNotFound()
        if session.finished:
            return False
        if session.claimed:
            log.warning("session %s: its generation stopped ticking", session_id)
            failure = errors.UpstreamInterrupted(
                "The server generating this answer went away before finishing it. "
                "Send the message again."
            )
            self.store.append(session_id, "error", error_data(failure))
            return False
        return True
