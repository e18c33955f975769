"""The OpenAI-compatible front door (SPEC §3): ``POST /v1/chat/completions`` and
``GET /v1/models``, for the official OpenAI SDKs and every tool that takes an
OpenAI base URL.

A nested blueprint (``/v1`` under :data:`~.base.chat_blueprint`), so that its error
handlers answer everything under ``/v1`` — the guards, validation, 413/415, and
unknown paths or methods — with OpenAI's error body, which each SDK maps to its
own exception class. An answer is one session over the same relay and log as
the NGAI door, admitted by the same guards (:func:`~.base.admit`); what goes
out is made by the pure encoder :mod:`ngai_chat.wire.openai`.

Nobody can resume an answer here, so there is no abandon grace: when the client
closes its connection before the answer's end, the session is cancelled and the
upstream closed at once. The client's socket is watched while the answer runs
(a streamed one included, whose upstream may be silent for long), so that this
happens within a second, not at the next failed write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import socket
import typing as t

import flask
import gevent
import gevent.greenlet
import gevent.socket
from flask import Blueprint
from flask import current_app
from flask import request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed

from .. import errors
from ..catalog import filter_models
from ..chunks import load_json
from ..guards import check_token
from ..guards import deadline
from ..relay import Batch
from ..relay import Reader
from ..relay import Relay
from ..relay import ShuttingDown
from ..schema import PASSTHROUGH
from ..schema import ChatRequest
from ..schema import validate
from ..services import EXTENSION
from ..services import get_services
from ..sse import json_data
from ..store import Event
from ..wire import openai as wire
from .base import ANY_STRING
from .base import CAPACITY_RETRY_AFTER
from .base import HEARTBEAT
from .base import SSE_HEADERS
from .base import admit
from .base import api_error_of
from .base import chat_blueprint
from .base import with_allow
from .base import writes

__all__ = ["chat_completions", "models", "openai_blueprint"]

log = logging.getLogger(__name__)

openai_blueprint = Blueprint("openai", __name__, url_prefix="/v1")
bp = openai_blueprint

#: keys of OpenAI's request body besides ``/prepare``'s pass-through ones
OWN_KEYS = ("model", "messages", "stream", "stream_options", "n")
#: error codes that only a stream the upstream accepted can end with: such an
#: error, even before the first chunk, is sent inside the stream
_IN_STREAM_CODES = frozenset({"upstream_error", "upstream_interrupted", "too_long"})
#: this door's routes and their methods, for a 405 rather than a 404
_ROUTES = {"chat/completions": ("POST",), "models": ("GET", "HEAD")}
_JSON = "application/json"


# --- errors ---------------------------------------------------------------------


def _discard_body() -> None:
    """Read what is left of the request body (bounded), so that a kept-alive
    connection's next request starts where the client put it.
    """
    services = current_app.extensions.get(EXTENSION)
    limit = services.settings.max_body_bytes if services is not None else 10_485_760
    timeout = services.settings.client_timeout if services is not None else 30.0
    length = request.content_length
    if length is not None and length > limit:
        return  # not worth reading; the server drains or closes the connection
    left = limit
    with contextlib.suppress(OSError, ValueError), deadline(timeout):
        stream = request.stream
        while left > 0:
            data = stream.read(min(65536, left))
            if not data:
                break
            left -= len(data)


def error_json(error: t.Mapping[str, t.Any]) -> flask.Response:
    """OpenAI's error body for a SPEC §4 error object, with its status and
    ``Retry-After``.
    """
    response = flask.Response(json_data(wire.error_body(error)), content_type=_JSON)
    status = error.get("status")
    response.status_code = status if isinstance(status, int) else 500
    retry_after = error.get("retryAfter")
    if isinstance(retry_after, int):
        response.headers["Retry-After"] = str(retry_after)
    return response


def openai_error_response(error: errors.ApiError) -> flask.Response:
    """A refused request, in OpenAI's shape (its body read first)."""
    _discard_body()
    services = current_app.extensions.get(EXTENSION)
    if services is not None:
        services.metrics.request_rejected(error.code)
    return error_json(error.to_dict())


def openai_http_error_response(exc: HTTPException) -> flask.Response:
    return with_allow(openai_error_response(api_error_of(exc)), exc)


def openai_internal_error_response(exc: Exception) -> flask.Response:
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return openai_error_response(errors.InternalError())


bp.register_error_handler(errors.ApiError, openai_error_response)
bp.register_error_handler(HTTPException, openai_http_error_response)
bp.register_error_handler(Exception, openai_internal_error_response)


@bp.route(f"/<{ANY_STRING}:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(rest: str) -> flask.Response:
    """Everything else under ``/v1``: routing errors in OpenAI's shape (a blueprint's
    handlers never see the app's own routing errors).
    """
    check_token(request.headers.get("Authorization"), get_services().settings.api_tokens)
    allowed = _ROUTES.get(rest)
    if allowed is not None:
        raise MethodNotAllowed(valid_methods=list(allowed))
    raise errors.NotFound(
        f"No such endpoint: {request.method} {request.path}. This server offers "
        "POST /v1/chat/completions and GET /v1/models."
    )


# --- GET /v1/models ------------------------------------------------------------


@bp.get("/models")
def models() -> flask.Response:
    services = get_services()
    check_token(request.headers.get("Authorization"), services.settings.api_tokens)
    data, stale = services.models.get()
    allowed = filter_models(data, allowlist=services.settings.effective_allowlist, free_only=False)
    body = wire.model_list(allowed, owner=services.upstream.name)
    response = flask.Response(json_data(body), content_type=_JSON)
    if stale:
        response.headers["Warning"] = "110 - stale"
    return response


# --- POST /v1/chat/completions -------------------------------------------------


@dataclasses.dataclass
class _Body:
    """What the door reads from OpenAI's body besides the ``/prepare`` request."""

    stream: bool = False

    def to_request(self, body: t.Any) -> ChatRequest:
        """OpenAI's chat completion body → the ``/prepare`` request.

        :raises InvalidRequest: naming the offending field.
        """
        if not isinstance(body, dict):
            return validate(body)  # refuses it, saying why
        for key in body:
            if key not in OWN_KEYS and key not in PASSTHROUGH:
                raise errors.InvalidRequest(
                    f"Unknown field '{key}'. Allowed: {', '.join(OWN_KEYS)}, and "
                    + ", ".join(sorted(PASSTHROUGH))
                    + ".",
                    field=key,
                )
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise errors.InvalidRequest("'stream' must be true or false.", field="stream")
        n = body.get("n")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
            raise errors.InvalidRequest(
                "Only one choice per request is supported: send 'n': 1 or leave it out.",
                field="n",
            )
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise errors.InvalidRequest(
                "'stream_options' must be an object such as {\"include_usage\": true}.",
                field="stream_options",
            )
        self.stream = bool(stream)
        chat = validate(
            {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n")}
        )
        if options is not None:
            chat = dataclasses.replace(chat, params={**chat.params, "stream_options": options})
        return chat


class ClientWatch:
    """Notices, within milliseconds, that the client closed its connection while
    its answer runs: WSGI sees it only when a write fails, and a streamed answer
    may write nothing for long (a model thinking), a non-streamed one nothing
    until its end.

    It waits for the client's socket to turn readable: the client has nothing
    more to send, so that means it closed (or, for a client that pipelines, sent
    its next request: then it is alive, and the watch ends).

    :param sock: the client's socket (``gunicorn.socket`` or ``werkzeug.socket``
        in the WSGI environ), or ``None`` when the server gives none: then
        only a failed write tells.
    :param on_gone: called (in the watching greenlet) when the client is gone.
    :param spawn: starts the watching greenlet.
    """

    def __init__(
        self,
        sock: socket.socket | None,
        on_gone: t.Callable[[], None],
        spawn: t.Callable[..., gevent.greenlet.Greenlet],
    ) -> None:
        self._sock = sock
        self._on_gone = on_gone
        self._greenlet = spawn(self._watch) if sock is not None else None

    def _watch(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            gevent.socket.wait_read(sock.fileno())
            gone = not sock.recv(1, socket.MSG_PEEK)
        except ValueError:  # a TLS socket cannot peek: leave it to the writes
            return
        except OSError:  # reset, or closed under us
            gone = True
        if gone:
            self._on_gone()

    def stop(self) -> None:
        """Stop watching (before the server reuses or closes the socket)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1.0)
            self._greenlet = None


def _client_socket() -> socket.socket | None:
    environ = request.environ
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if hasattr(sock, "fileno") and hasattr(sock, "recv") else None


class _Answer:
    """One running answer: its reader, the client watch, and its end — the session
    cancelled when the response ends before the answer did (no abandon grace).
    """

    def __init__(self, relay: Relay, session_id: str, reader: Reader) -> None:
        self.relay = relay
        self.session_id = session_id
        self.reader = reader
        #: the log's terminal event was seen
        self.ended = False
        self._closed = False
        self.watch = ClientWatch(_client_socket(), self._client_gone, relay.spawn)

    def _client_gone(self) -> None:
        log.info("session %s: the client closed its connection; cancelling", self.session_id)
        self._cancel()

    def _cancel(self) -> None:
        if not self.ended:
            try:
                self.relay.cancel(self.session_id)
            except errors.StoreUnavailable:
                log.warning("session %s: could not cancel (store unavailable)", self.session_id)

    def close(self) -> None:
        """End the answer (once): the watch, then the session if it runs on, then
        the reader.
        """
        if self._closed:
            return
        self._closed = True
        self.watch.stop()
        self._cancel()
        self.reader.close()


def _stopped_error(exc: BaseException) -> errors.ApiError:
    """What a reader's exception means for the client."""
    if isinstance(exc, errors.ApiError):
        return exc
    return errors.UpstreamInterrupted(
        "This server is restarting before the answer was finished; send the request again."
    )


@bp.post("/chat/completions")
def chat_completions() -> flask.Response:
    services = get_services()
    relay = services.relay
    limit = services.settings.max_streams
    if relay.open_streams >= limit:
        raise errors.CapacityExceeded(
            f"This server has its maximum of {limit} open answers (NGAI_MAX_STREAMS); "
            f"try again in {CAPACITY_RETRY_AFTER} s.",
            retry_after=CAPACITY_RETRY_AFTER,
        )
    body = _Body()
    session = admit(body.to_request)
    answer = _Answer(relay, session.id, relay.open(session, 0))
    if body.stream:
        return _streamed(answer)
    return _completed(answer, int(services.clock()))


def _streamed(answer: _Answer) -> flask.Response:
    """The streamed answer. It starts once the upstream has accepted the request
    (its first event; or its first heartbeat, the upstream still thinking): a
    refusal before that is an HTTP error, as for a non-streamed call.
    """
    batches = iter(answer.reader)
    try:
        first = next(batches, None)
    except (errors.ApiError, ShuttingDown) as exc:
        answer.close()
        return error_json(_stopped_error(exc).to_dict())
    if first:
        head = first[0]
        if head.name == "error":
            error = t.cast(dict[str, t.Any], load_json(head.data))
            if error.get("code") not in _IN_STREAM_CODES:
                answer.ended = True
                answer.close()
                return error_json(error)
    response = flask.Response(
        _frames(answer, itertools.chain((first,), batches)),
        content_type="text/event-stream; charset=utf-8",
        headers=SSE_HEADERS,
    )
    response.call_on_close(answer.close)
    return response


def _frame(answer: _Answer, event: Event) -> bytes:
    """One log event as this door writes it."""
    if event.name == "chunk":
        # cut from the NGAI frame when that is simple, else from the data
        return wire.chunk_frame_of(event.frame) or wire.chunk_frame(event.data)
    answer.ended = True
    if event.name == "done":
        return wire.DONE_FRAME
    return wire.error_frame(load_json(event.data))


def _frames(answer: _Answer, batches: t.Iterator[Batch]) -> t.Iterator[bytes]:
    """The stream's bytes, in writes of at most about :data:`SLICE_BYTES`."""
    try:
        for batch in batches:
            if batch is None:
                yield HEARTBEAT
                continue
            yield from writes([_frame(answer, event) for event in batch])
    except (errors.ApiError, ShuttingDown) as exc:
        yield wire.error_frame(_stopped_error(exc).to_dict())


def _completed(answer: _Answer, now: int) -> flask.Response:
    """The non-streamed answer: one ``chat.completion`` assembled from the stream."""
    completion = wire.Completion()
    try:
        for batch in answer.reader:
            for event in batch or ():
                completion.add(event.name, event.data)
                if event.terminal:
                    answer.ended = True
    except (errors.ApiError, ShuttingDown) as exc:
        return error_json(_stopped_error(exc).to_dict())
    finally:
        answer.close()
    if completion.error is not None:
        return error_json(completion.error)
    if completion.done is None:
        return error_json(errors.UpstreamInterrupted().to_dict())
    body = completion.result(now, fallback_id=f"chatcmpl-{answer.session_id}")
    return flask.Response(json_data(body), content_type=_JSON)


chat_blueprint.register_blueprint(openai_blueprint)
