"""``chat_blueprint``: the HTTP surface (SPEC §3); the only module that reads ``request``.

Registering the blueprint is all a host app does: :func:`~ngai_chat.services.init_app`
runs once per app on registration (unless :func:`ngai_chat.create_app` ran it
first with test doubles).
"""

from __future__ import annotations

import datetime
import logging
import math
import re
import typing as t
import uuid

import flask
from flask import Blueprint
from flask import current_app
from flask import request
from flask.blueprints import BlueprintSetupState
from flask_cors import CORS
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from . import errors
from . import sse
from ._version import __version__
from .catalog import filter_models
from .catalog import wants_free
from .chunks import error_data
from .guards import check_token
from .guards import client_key
from .guards import deadline
from .guards import upstream_body
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .openapi import openapi_document
from .relay import Reader
from .relay import ShuttingDown
from .schema import parse_json
from .schema import validate
from .services import EXTENSION
from .services import get_services
from .services import init_app
from .store import SessionInfo
from .store.base import ClientAtLimit

__all__ = ["chat_blueprint", "error_response", "http_error_response", "internal_error_response"]

log = logging.getLogger(__name__)

#: milliseconds a browser waits before reconnecting a dropped stream
RETRY_MS = 3000
#: seconds a client is told to wait when the server is full
CAPACITY_RETRY_AFTER = 5
#: seconds a client is told to wait when all its sessions are running
CLIENT_BUSY_RETRY_AFTER = 5
HEARTBEAT = sse.comment("keep-alive")
#: bytes of frames written at once: bounds what a slow reader holds
SLICE_BYTES = 65536
SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
_LAST_EVENT_ID = re.compile(r"[0-9]{1,11}")
_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

chat_blueprint = Blueprint(
    "ngai_chat",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
bp = chat_blueprint


class AnyStringConverter(BaseConverter):
    """Matches any rest of the path, slashes, newlines and the empty string
    included, so that nothing under ``/stream/`` is a routing 404 (SPEC §3):
    werkzeug's ``path`` converter stops at a newline (``/stream/abc%0D%0A``).
    """

    regex = r"(?s:.*)"
    part_isolating = False


#: the converter's name in the app's URL map
ANY_STRING = "ngai_chat_any"


@bp.record_once
def _on_register(state: BlueprintSetupState) -> None:
    # Recorded before any route, so it runs before the rules that use the
    # converter are added to the app's map (blueprint setup runs in order).
    app = t.cast(flask.Flask, state.app)
    app.url_map.converters.setdefault(ANY_STRING, AnyStringConverter)
    services = init_app(app)
    prefix = (state.url_prefix or "").rstrip("/")
    origins = list(services.settings.cors_origins)
    CORS(
        app,
        resources={rf"{re.escape(prefix)}/.*": {"origins": origins}},
        send_wildcard=origins == ["*"],
        allow_headers=["Content-Type", "Authorization", "Last-Event-ID"],
        expose_headers=[
            "Retry-After",
            "Warning",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ],
        methods=["GET", "POST", "DELETE", "OPTIONS"],
        max_age=600,
    )


@bp.before_request
def _ensure_sweeper() -> None:
    get_services().sweeper.ensure_running()


# --- errors -----------------------------------------------------------------


def error_response(error: errors.ApiError) -> flask.Response:
    """The JSON response for an error (SPEC §4)."""
    services = current_app.extensions.get(EXTENSION)
    if services is not None:
        services.metrics.request_rejected(error.code)
    response = flask.jsonify(error.to_body())
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


_HTTP_ERRORS: dict[int, type[errors.ApiError]] = {
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def http_error_response(exc: HTTPException) -> flask.Response:
    """A werkzeug HTTP error as SPEC §4 JSON."""
    cls = _HTTP_ERRORS.get(exc.code or 500)
    if cls is None:
        if (exc.code or 500) < 500:
            error: errors.ApiError = errors.InvalidRequest(exc.description)
        else:
            error = errors.InternalError()
    else:
        error = cls()
    response = error_response(error)
    if exc.code == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def internal_error_response(exc: Exception) -> flask.Response:
    """Log the traceback; the client gets a plain ``internal_error``."""
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(errors.InternalError())


bp.register_error_handler(errors.ApiError, error_response)
bp.register_error_handler(HTTPException, http_error_response)
bp.register_error_handler(Exception, internal_error_response)


# --- endpoints --------------------------------------------------------------


@bp.get("/")
def index() -> str:
    services = get_services()
    api_base = flask.url_for(".prepare")[: -len("/prepare")]
    return flask.render_template(
        "ngai_chat/index.html",
        api_base=api_base,
        demo=services.settings.demo,
        default_model=services.settings.effective_default_model,
        version=__version__,
    )


@bp.post("/prepare")
def prepare() -> flask.Response:
    services = get_services()
    settings = services.settings
    refused: errors.Unauthorized | None = None
    try:
        token = check_token(request.headers.get("Authorization"), settings.api_tokens)
    except errors.Unauthorized as exc:
        # counted against the address before it is refused: guessing tokens costs calls
        token, refused = None, exc
    client = client_key(token, request.remote_addr)
    if services.rate_limiter is not None:
        status = services.rate_limiter.hit(client)
        flask.g.ngai_rate_limit = status
        status.check()
    if refused is not None:
        raise refused
    if services.relay.shutting_down:
        raise errors.CapacityExceeded(
            "This server is restarting; send the request again.", retry_after=1
        )
    if services.budgets is not None:
        services.budgets.check(client)
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise errors.UnsupportedMediaType(
            "Send the body as JSON with 'Content-Type: application/json'"
            + (f" (got '{request.mimetype}')." if request.mimetype else ".")
        )
    body = upstream_body(
        validate(parse_json(_read_body(settings.max_body_bytes, settings.client_timeout))), settings
    )
    origin = request.headers.get("Origin")
    referer = settings.referer or (origin if origin and origin != "null" else None)
    if services.store.count_live() >= settings.max_sessions:
        raise errors.CapacityExceeded(
            f"The server holds its maximum of {settings.max_sessions} sessions "
            "(NGAI_MAX_SESSIONS); try again in a few seconds.",
            retry_after=CAPACITY_RETRY_AFTER,
        )
    now = services.clock()
    session = SessionInfo(
        id=str(uuid.uuid4()),
        request=body,
        referer=referer,
        expires_at=now + settings.session_ttl,
        client=client,
    )
    at_limit = services.store.create(session, settings.max_sessions_per_client)
    if at_limit is not None:
        raise _client_at_limit(at_limit, settings.max_sessions_per_client, now)
    services.metrics.session_created()
    return flask.jsonify(
        sessionId=session.id,
        streamUrl=flask.url_for(".stream", session_id=session.id),
        expiresAt=_iso(session.expires_at),
    )


@bp.after_request
def _rate_limit_headers(response: flask.Response) -> flask.Response:
    """``RateLimit-*`` on every answer of a call the rate limit counted, errors too."""
    status = flask.g.pop("ngai_rate_limit", None)
    if status is not None:
        response.headers.update(status.headers())
    return response


def _client_at_limit(held: ClientAtLimit, limit: int, now: float) -> errors.RateLimited:
    """The 429 for ``NGAI_MAX_SESSIONS_PER_CLIENT``, with the real wait: until the
    client's oldest unused session expires, or a short while when every one of
    its sessions is streaming (one of them will finish).
    """
    if held.next_expiry is not None:
        wait = max(1, math.ceil(held.next_expiry - now))
        why = (
            f"try again in {wait} s, when its oldest session not yet streamed expires "
            "(streaming or DELETE-ing its unused sessions frees them sooner)"
        )
    else:
        wait = CLIENT_BUSY_RETRY_AFTER
        why = f"all of them are streaming answers; try again in {wait} s, as they finish"
    return errors.RateLimited(
        f"This client holds its maximum of {limit} live sessions "
        f"(NGAI_MAX_SESSIONS_PER_CLIENT): {why}.",
        retry_after=wait,
    )


def _read_body(limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes, arrived within ``timeout`` seconds.

    A body read waits on the client: the worker's socket timeout bounds each
    wait, and this deadline the whole body (a client trickling a byte at a time
    would pass every single wait).
    """
    too_large = errors.PayloadTooLarge(
        f"The request body is larger than {limit} bytes (NGAI_MAX_BODY_BYTES); "
        "send a shorter conversation."
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        with deadline(timeout):
            data = request.stream.read(limit + 1)
    except OSError:  # timed out, or the client went away (gunicorn's NoMoreData)
        raise errors.InvalidRequest(
            f"The request body did not arrive within {timeout:g} s (NGAI_CLIENT_TIMEOUT); "
            "send it at once, with a correct Content-Length.",
            field="body",
        ) from None
    if len(data) > limit:
        raise too_large
    return data


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
        return _event_stream(iter([_preamble(), _out_of_log_error(exc, last_id or 0)]))
    if session is None:
        if last_id is not None:
            return _no_content()
        not_found = sse.event(error_data(errors.SessionNotFound()), name="error", id=1)
        return _event_stream(iter([_preamble(), not_found]))
    if session.terminal_id is not None and last_id is not None and last_id >= session.terminal_id:
        return _no_content()
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
        return _no_content()
    return _event_stream(iter(()))


def _no_content() -> flask.Response:
    """204: what tells EventSource to stop reconnecting."""
    response = flask.Response(status=204)
    del response.headers["Content-Type"]
    return response


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
    frames = [sse.retry(CAPACITY_RETRY_AFTER * 1000), _out_of_log_error(refusal, last_id)]
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
            pending: list[bytes] = []
            size = 0
            for event in batch:
                frame = event.frame
                pending.append(frame)
                size += len(frame)
                if size >= SLICE_BYTES:
                    yield b"".join(pending)
                    pending, size = [], 0
            if pending:
                yield b"".join(pending) if len(pending) > 1 else pending[0]
    except errors.SessionNotFound as exc:
        # the session is gone for good: a reconnect with this id gets 204
        yield sse.event(error_data(exc), name="error", id=reader.after + 1)
    except errors.StoreUnavailable as exc:
        yield _out_of_log_error(exc, reader.after)
    except ShuttingDown as stop:
        failure = errors.UpstreamInterrupted(
            "This server is restarting; reconnect to receive the rest of the answer."
        )
        yield _out_of_log_error(failure, stop.last_id)


def _out_of_log_error(error: errors.ApiError, last_id: int) -> bytes:
    """A terminal error event that is not part of the session's log. It carries the
    client's last event id, so that a reconnect (to this or another instance)
    resumes exactly where the client was, with nothing lost or repeated.
    """
    return sse.event(error_data(error), name="error", id=last_id)


@bp.delete(f"/stream/<{ANY_STRING}:session_id>")
def cancel(session_id: str) -> flask.Response:
    services = get_services()
    check_token(request.headers.get("Authorization"), services.settings.api_tokens)
    if not _SESSION_ID.match(session_id) or not services.relay.cancel(session_id):
        raise errors.SessionNotFound()
    return _no_content()


@bp.get("/models")
def models() -> flask.Response:
    services = get_services()
    data, stale = services.models.get()
    free_only = wants_free(request.args.get("free"))
    response = flask.jsonify(
        filter_models(data, allowlist=services.settings.model_allowlist, free_only=free_only)
    )
    if stale:
        response.headers["Warning"] = "110 - stale"
    return response


@bp.get("/health")
def health() -> flask.Response:
    services = get_services()
    body: dict[str, t.Any] = {
        "status": "ok",
        "upstream": services.upstream.name,
        "store": services.store.kind,
        "sessions": 0,
        "streams": services.relay.open_streams,
        "version": __version__,
    }
    try:
        services.store.ping()
        body["sessions"] = services.store.count_live()
    except errors.StoreUnavailable as exc:
        body.update(status="degraded", error=exc.to_dict())
        response = flask.jsonify(body)
        response.status_code = 503
        return response
    return flask.jsonify(body)


@bp.get("/openapi.json")
def openapi() -> flask.Response:
    prefix = flask.url_for(".prepare")[: -len("/prepare")]
    return flask.jsonify(openapi_document(prefix))


@bp.get("/metrics")
def metrics() -> flask.Response:
    services = get_services()
    if not services.settings.metrics:
        raise errors.NotFound("Metrics are off; set NGAI_METRICS=1 to serve them here.")
    return flask.Response(services.metrics.render(), content_type=METRICS_CONTENT_TYPE)
