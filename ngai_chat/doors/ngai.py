"""The NGAI front door (SPEC §3): ``POST /prepare``, then ``GET``/``DELETE
/stream/<id>``, the seed backend's protocol that ``EventSource``, the chat page and
``ngai-client.js`` speak. Its frames are the log's events as they are stored.
"""

from __future__ import annotations

import datetime
import re
import typing as t

import flask
from flask import request

from .. import errors
from .. import sse
from ..chunks import error_data
from ..guards import check_token
from ..relay import Reader
from ..relay import ShuttingDown
from ..schema import validate
from ..services import get_services
from .base import ANY_STRING
from .base import CAPACITY_RETRY_AFTER
from .base import HEARTBEAT
from .base import SLICE_BYTES
from .base import SSE_HEADERS
from .base import admit
from .base import chat_blueprint as bp
from .base import no_content
from .base import writes

__all__ = ["cancel", "prepare", "stream"]

#: milliseconds a browser waits before reconnecting a dropped stream
RETRY_MS = 3000
_LAST_EVENT_ID = re.compile(r"[0-9]{1,11}")
_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@bp.post("/prepare")
def prepare() -> flask.Response:
    session = admit(validate)
    return flask.jsonify(
        sessionId=session.id,
        streamUrl=flask.url_for(".stream", session_id=session.id),
        expiresAt=_iso(session.expires_at),
    )


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _last_event_id() -> int | None:
    """The client's last event id (``Last-Event-ID`` header or ``?lastEventId=``).

    Present but unreadable counts as 0: the client has seen nothing usable.
    """
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.args.get("lastEventId")
    if raw is None:
        return None
    raw = raw.strip(" \t")
    # ASCII digits only: str.isdigit() takes superscripts (which int() refuses)
    # and int() reads Arabic-Indic or mathematical digits as numbers
    return int(raw) if _LAST_EVENT_ID.fullmatch(raw) else 0


@bp.get(f"/stream/<{ANY_STRING}:session_id>")
def stream(session_id: str) -> flask.Response:
    services = get_services()
    last_id = _last_event_id()
    if request.method == "HEAD":
        return _head(session_id, last_id)
    relay = services.relay
    if relay.open_streams >= services.settings.max_streams:
        return _refuse_stream(last_id or 0, services.settings.max_streams)
    try:
        session = services.store.get(session_id) if _SESSION_ID.match(session_id) else None
    except errors.StoreUnavailable as exc:
        # still a stream, so that EventSource clients can read the reason
        return _event_stream(iter([_preamble(), _error_frame(exc, last_id or 0)]))
    if session is None:
        if last_id is not None:
            return no_content()
        not_found = _error_frame(errors.SessionNotFound(), 1)
        return _event_stream(iter([_preamble(), not_found]))
    if session.terminal_id is not None and last_id is not None and last_id >= session.terminal_id:
        return no_content()
    reader = relay.open(session, last_id or 0)
    response = _event_stream(_frames(reader))
    response.call_on_close(reader.close)
    return response


def _head(session_id: str, last_id: int | None) -> flask.Response:
    """``HEAD /stream/<id>``: the headers a ``GET`` would get, and nothing
    started: no claim, no upstream request, no reader attached.
    """
    try:
        session = get_services().store.get(session_id) if _SESSION_ID.match(session_id) else None
    except errors.StoreUnavailable:
        session = None
    if last_id is not None and (
        session is None or (session.terminal_id is not None and last_id >= session.terminal_id)
    ):
        return no_content()
    return _event_stream(iter(()))


def _refuse_stream(last_id: int, limit: int) -> flask.Response:
    """The over-capacity answer: one retryable error event that is not part of the
    session's log, carrying the client's own last event id so that its reconnect
    resumes exactly where it was.
    """
    get_services().metrics.request_rejected("capacity_exceeded")
    refusal = errors.CapacityExceeded(
        f"This server has its maximum of {limit} open streams (NGAI_MAX_STREAMS); "
        f"reconnect in {CAPACITY_RETRY_AFTER} s.",
        retry_after=CAPACITY_RETRY_AFTER,
    )
    frames = [sse.retry(CAPACITY_RETRY_AFTER * 1000), _error_frame(refusal, last_id)]
    return _event_stream(iter(frames))


def _preamble() -> bytes:
    return sse.retry(RETRY_MS) + sse.comment("ngai_chat stream")


def _event_stream(frames: t.Iterator[bytes]) -> flask.Response:
    return flask.Response(
        frames, content_type="text/event-stream; charset=utf-8", headers=SSE_HEADERS
    )


def _frames(reader: Reader) -> t.Iterator[bytes]:
    """The bytes of one stream, in writes of at most about :data:`SLICE_BYTES`:
    a reader far behind (a long log replayed) holds one slice at a time, never a
    copy of its whole backlog. Plain values only: no request context in here.
    """
    yield _preamble()
    try:
        for batch in reader:
            if batch is None:
                yield HEARTBEAT
                continue
            if len(batch) == 1 and len(batch[0].frame) <= SLICE_BYTES:
                yield batch[0].frame  # the live case: one event a wake-up
                continue
            yield from writes([event.frame for event in batch])
    except errors.SessionNotFound as exc:
        # the session is gone for good: a reconnect with this id gets 204
        yield _error_frame(exc, reader.after + 1)
    except errors.StoreUnavailable as exc:
        yield _error_frame(exc, reader.after)
    except ShuttingDown as stop:
        failure = errors.UpstreamInterrupted(
            "This server is restarting; reconnect to receive the rest of the answer."
        )
        yield _error_frame(failure, stop.last_id)


def _error_frame(error: errors.ApiError, last_id: int) -> bytes:
    """A terminal error event that is not part of the session's log (the one way
    this door builds one). Its id is the client's last event id, so that a
    reconnect (to this or another instance) resumes exactly where the client was,
    with nothing lost or repeated; or the next one, for a session that is not
    found, so that a browser's reconnect brings a ``Last-Event-ID`` and gets 204.
    """
    return sse.event(error_data(error), name="error", id=last_id)


@bp.delete(f"/stream/<{ANY_STRING}:session_id>")
def cancel(session_id: str) -> flask.Response:
    services = get_services()
    check_token(request.headers.get("Authorization"), services.settings.api_tokens)
    if not _SESSION_ID.match(session_id) or not services.relay.cancel(session_id):
        raise errors.SessionNotFound()
    return no_content()
