"""``chat_blueprint`` itself and what every front door shares: its set-up on
registration, JSON errors (SPEC §4), reading a request body, and :func:`admit`, the
guards a request passes before it starts an answer, on whichever door it came.

Registering the blueprint is all a host app does: :func:`~ngai_chat.services.init_app`
runs once per app on registration (unless :func:`ngai_chat.create_app` ran it
first with test doubles).
"""

from __future__ import annotations

import functools
import logging
import math
import typing as t
import uuid

import flask
from flask import Blueprint
from flask import current_app
from flask import request
from flask.blueprints import BlueprintSetupState
from flask_cors.core import FLASK_CORS_EVALUATED
from flask_cors.core import get_cors_options
from flask_cors.core import set_cors_headers
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from .. import errors
from .. import sse
from ..guards import check_token
from ..guards import client_key
from ..guards import deadline
from ..guards import upstream_body
from ..schema import ChatRequest
from ..schema import parse_json
from ..services import EXTENSION
from ..services import get_services
from ..services import init_app
from ..store import SessionInfo
from ..store.base import ClientAtLimit

__all__ = [
    "ANY_STRING",
    "HEARTBEAT",
    "SLICE_BYTES",
    "SSE_HEADERS",
    "admit",
    "apply_cors",
    "chat_blueprint",
    "error_response",
    "http_error_response",
    "internal_error_response",
    "mount_prefix",
    "no_content",
    "read_body",
    "slices",
    "writes",
]

log = logging.getLogger(__name__)

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

chat_blueprint = Blueprint(
    "ngai_chat",
    __name__.rsplit(".", 2)[0],  # the package: its templates/ and static/
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
    init_app(app)


# --- CORS: the blueprint's routes, and nothing of the host's -------------------


@functools.lru_cache(maxsize=16)
def _cors_options(origins: tuple[str, ...]) -> t.Any:
    """flask-cors's computed options for ``NGAI_CORS_ORIGINS`` (once per value)."""
    return get_cors_options(
        None,
        {
            "origins": list(origins),
            "send_wildcard": list(origins) == ["*"],
            "allow_headers": ["Content-Type", "Authorization", "Last-Event-ID"],
            "expose_headers": [
                "Retry-After",
                "Warning",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            "methods": ["GET", "POST", "DELETE", "OPTIONS"],
            "max_age": 600,
        },
    )


def apply_cors(response: flask.Response) -> flask.Response:
    """The CORS headers of ``NGAI_CORS_ORIGINS`` (flask-cors's own evaluation),
    preflights included.

    An ``after_request`` of the blueprint, so that it covers the blueprint's routes
    (their errors and ``OPTIONS`` too) and no route of a host app, with or without
    a prefix; a host's own flask-cors policy keeps its routes. ``create_app`` adds
    it to the whole app as well, whose routing errors are ours there.
    """
    services = current_app.extensions.get(EXTENSION)
    if services is None or hasattr(response, FLASK_CORS_EVALUATED):
        return response  # not ours, or evaluated already (by the blueprint's turn)
    set_cors_headers(response, _cors_options(services.settings.cors_origins))
    setattr(response, FLASK_CORS_EVALUATED, True)
    return response


bp.after_request(apply_cors)


@bp.before_request
def _ensure_sweeper() -> None:
    get_services().sweeper.ensure_running()


def mount_prefix() -> str:
    """Where the blueprint is mounted (``""`` standalone), from its own routes."""
    return flask.url_for("ngai_chat.prepare")[: -len("/prepare")]


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


def api_error_of(exc: HTTPException) -> errors.ApiError:
    """The SPEC §4 error for a werkzeug HTTP error."""
    cls = _HTTP_ERRORS.get(exc.code or 500)
    if cls is not None:
        return cls()
    if (exc.code or 500) < 500:
        return errors.InvalidRequest(exc.description)
    return errors.InternalError()


def with_allow(response: flask.Response, exc: HTTPException) -> flask.Response:
    """A 405's ``Allow`` header on the JSON error that answers it (any door's shape)."""
    if exc.code == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def http_error_response(exc: HTTPException) -> flask.Response:
    """A werkzeug HTTP error as SPEC §4 JSON."""
    return with_allow(error_response(api_error_of(exc)), exc)


def internal_error_response(exc: Exception) -> flask.Response:
    """Log the traceback; the client gets a plain ``internal_error``."""
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(errors.InternalError())


bp.register_error_handler(errors.ApiError, error_response)
bp.register_error_handler(HTTPException, http_error_response)
bp.register_error_handler(Exception, internal_error_response)


@bp.after_request
def _rate_limit_headers(response: flask.Response) -> flask.Response:
    """``RateLimit-*`` on every answer of a call the rate limit counted, errors too."""
    status = flask.g.pop("ngai_rate_limit", None)
    if status is not None:
        response.headers.update(status.headers())
    return response


# --- what every door shares ---------------------------------------------------


def no_content() -> flask.Response:
    """204: what tells EventSource to stop reconnecting (and the AI SDK that there
    is nothing to resume).
    """
    response = flask.Response(status=204)
    del response.headers["Content-Type"]
    return response


def read_body(limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes, arrived within ``timeout`` seconds.

    A body read waits on the client: the worker's socket timeout bounds each
    wait, and this deadline the whole body (a client trickling a byte at a time
    would pass every single wait).
    """
    too_large = errors.PayloadTooLarge(
        f"The request body is larger than {limit} bytes (NGAI_MAX_BODY_BYTES); "
        "send a shorter conversation or smaller attachments."
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


def admit(to_request: t.Callable[[t.Any], ChatRequest]) -> SessionInfo:
    """Pass every guard of a request that starts an answer, on any door, and create
    its session (SPEC §2 "Limits hold on every door").

    In order: the bearer token (a refused one still counts against the address's
    rate limit: guessing tokens costs calls), the rate limit, shutdown, the
    budgets, the body (JSON, within ``NGAI_MAX_BODY_BYTES`` and the client
    timeout), its validation, ``NGAI_MAX_SESSIONS`` and the client's own caps
    (``NGAI_MAX_SESSIONS_PER_CLIENT``, and ``NGAI_MAX_CLIENT_BYTES`` on the body's size).

    :param to_request: the door's validation: the parsed JSON body in, the body
        of ``POST /prepare`` out (:func:`~ngai_chat.schema.validate`'s shape).
    :raises ApiError: a guard refused the request.
    """
    services = get_services()
    settings = services.settings
    refused: errors.Unauthorized | None = None
    try:
        token = check_token(request.headers.get("Authorization"), settings.api_tokens)
    except errors.Unauthorized as exc:
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
    raw = read_body(settings.max_body_bytes, settings.client_timeout)
    body = upstream_body(to_request(parse_json(raw)), settings)
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
        size=len(raw),
    )
    at_limit = services.store.create(
        session, settings.max_sessions_per_client, settings.max_client_bytes
    )
    if at_limit is not None:
        if at_limit.by_bytes:
            raise _client_bytes_at_limit(at_limit, settings.max_client_bytes, len(raw), now)
        raise _client_at_limit(at_limit, settings.max_sessions_per_client, now)
    services.metrics.session_created()
    return session


def _client_bytes_at_limit(
    held: ClientAtLimit, limit: int, size: int, now: float
) -> errors.RateLimited:
    """The 429 for ``NGAI_MAX_CLIENT_BYTES``: the client's unfinished sessions hold
    too many bytes of request bodies (attachments) for this one to join them.
    """
    wait, why = _wait_for(held, now)
    if held.held == 0:
        why = "send smaller attachments, or ask the operator to raise it"
    return errors.RateLimited(
        f"This client's unfinished sessions hold {held.held_bytes} bytes of requests, and "
        f"this one ({size} bytes) would pass the {limit} bytes one client may hold "
        f"(NGAI_MAX_CLIENT_BYTES): {why}.",
        retry_after=wait,
    )


def _wait_for(held: ClientAtLimit, now: float) -> tuple[int, str]:
    """How long a client at its share waits, and why: until its oldest unused
    session expires, or a short while when every one of its sessions is
    streaming (one of them will finish).
    """
    if held.next_expiry is not None:
        wait = max(1, math.ceil(held.next_expiry - now))
        return wait, (
            f"try again in {wait} s, when its oldest session not yet streamed expires "
            "(streaming or DELETE-ing its unused sessions frees them sooner)"
        )
    wait = CLIENT_BUSY_RETRY_AFTER
    return wait, f"all of them are streaming answers; try again in {wait} s, as they finish"


def _client_at_limit(held: ClientAtLimit, limit: int, now: float) -> errors.RateLimited:
    """The 429 for ``NGAI_MAX_SESSIONS_PER_CLIENT``, with the real wait: until the
    client's oldest unused session expires, or a short while when every one of
    its sessions is streaming (one of them will finish).
    """
    wait, why = _wait_for(held, now)
    return errors.RateLimited(
        f"This client holds its maximum of {limit} live sessions "
        f"(NGAI_MAX_SESSIONS_PER_CLIENT): {why}.",
        retry_after=wait,
    )


def writes(frames: t.Iterable[bytes]) -> t.Iterator[bytes]:
    """One batch's frames in writes of at most about :data:`SLICE_BYTES`: small
    frames joined, a big one (a generated image) in :func:`slices`, so that a reader
    far behind holds one slice at a time, never a copy of its backlog.
    """
    pending: list[bytes] = []
    size = 0
    for frame in frames:
        if len(frame) > SLICE_BYTES:
            if pending:
                yield b"".join(pending) if len(pending) > 1 else pending[0]
                pending, size = [], 0
            yield from slices(frame)
            continue
        pending.append(frame)
        size += len(frame)
        if size >= SLICE_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending) if len(pending) > 1 else pending[0]


def slices(frame: bytes) -> t.Iterator[bytes]:
    """A big frame (a generated image: one event of several MB) in writes of
    :data:`SLICE_BYTES`, cut through a memoryview of the log's one copy.

    Each write gets the client timeout of its own (gevent's ``sendall`` applies
    the socket timeout to the whole write: a reader on a slow link taking 3 MB
    at once would be dropped), and a reader holds one slice at a time. A slice
    is made ``bytes`` because gunicorn's ``write`` takes nothing else: 64 KiB
    copied as it is sent and freed after, never the frame.
    """
    with memoryview(frame) as view:
        for start in range(0, len(frame), SLICE_BYTES):
            yield view[start : start + SLICE_BYTES].tobytes()
