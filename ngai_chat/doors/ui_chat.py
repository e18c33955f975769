"""The AI SDK front door (SPEC §3): ``POST /chat``, then ``GET``/``DELETE
/chat/<chatId>/stream``, the UI message stream that ``useChat`` (``ai`` 5, 6, 7)
speaks through its ``DefaultChatTransport``.

A view over the same relay as the NGAI door: :func:`~.base.admit` passes the same
guards and creates the same kind of session, the answer streams at once from
``relay.open``, and :class:`~ngai_chat.wire.ui_stream.UIStream` turns the log's
events into parts. A chat names its latest answer (session, message id) in the
store, so that a resume or a stop reaches it from any process; with
``NGAI_API_TOKENS`` that name includes the token's digest, so another token's
requests never find it.
"""

from __future__ import annotations

import re
import typing as t
import uuid

import flask
import orjson
from flask import request

from .. import errors
from ..guards import check_token
from ..guards import client_key
from ..messages import to_upstream
from ..relay import Reader
from ..relay import ShuttingDown
from ..schema import ChatRequest
from ..schema import validate
from ..services import Services
from ..services import get_services
from ..store import SessionInfo
from ..wire.ui_stream import UIStream
from .base import ANY_STRING
from .base import CAPACITY_RETRY_AFTER
from .base import HEARTBEAT
from .base import SLICE_BYTES
from .base import SSE_HEADERS
from .base import admit
from .base import chat_blueprint as bp
from .base import no_content

__all__ = ["cancel_chat", "chat", "resume_chat"]

#: what a chat id may be (the SDK's generateId makes 16 of these characters)
CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_MESSAGE_ID = 256
TRIGGERS = ("submit-message", "regenerate-message")
#: the door's own keys; every other key of the body goes to /prepare's validation
OWN_KEYS = ("id", "messages", "trigger", "messageId")
#: seconds a chat remembers its latest answer on top of the session's own TTLs: an
#: answer that runs this long can still be resumed and stopped by its chat id
ANSWER_SECONDS = 3600.0
HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}


class _Chat(t.NamedTuple):
    """What ``POST /chat`` said besides the conversation."""

    id: str
    message_id: str


@bp.post("/chat")
def chat() -> flask.Response:
    services = get_services()
    asked: list[_Chat] = []

    def to_request(body: t.Any) -> ChatRequest:
        chat_request, said = _parse(body)
        if services.relay.open_streams >= services.settings.max_streams:
            raise errors.CapacityExceeded(
                f"This server has its maximum of {services.settings.max_streams} open "
                f"streams (NGAI_MAX_STREAMS); try again in {CAPACITY_RETRY_AFTER} s.",
                retry_after=CAPACITY_RETRY_AFTER,
            )
        asked.append(said)
        return chat_request

    session = admit(to_request)
    said = asked[0]
    key = _chat_key(services, said.id, session.client)
    previous = _latest(services, key)
    if previous is not None:
        services.relay.cancel(previous[0])  # a chat has at most one running answer
    record = orjson.dumps([session.id, said.message_id]).decode()
    settings = services.settings
    ttl = settings.session_ttl + settings.replay_ttl + ANSWER_SECONDS
    services.store.put_chat(key, record, ttl)
    return _stream(services, session, said.message_id)


def _parse(body: t.Any) -> tuple[ChatRequest, _Chat]:
    """``DefaultChatTransport``'s body → the ``/prepare`` request and the chat.

    :raises InvalidRequest: naming the field.
    """
    if not isinstance(body, dict):
        raise errors.InvalidRequest(
            'The body must be a JSON object {"id", "messages", "trigger"} as the AI '
            "SDK's DefaultChatTransport sends it.",
            field="body",
        )
    chat_id = body.get("id")
    if not isinstance(chat_id, str) or not CHAT_ID.fullmatch(chat_id):
        raise errors.InvalidRequest(
            "'id' must be the chat's id: 1 to 128 characters of A-Z, a-z, 0-9, _ and -.",
            field="id",
        )
    trigger = body.get("trigger", "submit-message")
    if trigger not in TRIGGERS:
        raise errors.InvalidRequest(
            f"'trigger' must be one of {', '.join(TRIGGERS)}.", field="trigger"
        )
    message_id = body.get("messageId")
    if message_id is not None and (
        not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID
    ):
        raise errors.InvalidRequest(
            f"'messageId' must be a message id string (at most {MAX_MESSAGE_ID} characters).",
            field="messageId",
        )
    if trigger != "regenerate-message" or message_id is None:
        message_id = f"msg-{uuid.uuid4().hex}"
    prepared = {key: value for key, value in body.items() if key not in OWN_KEYS}
    prepared["messages"] = to_upstream(body.get("messages"))
    return validate(prepared), _Chat(chat_id, message_id)


def _chat_key(services: Services, chat_id: str, client: str) -> str:
    """The store's name for a chat: its id, and its owner's token digest when tokens
    are required (so that no other token reaches it).
    """
    return f"{client}:{chat_id}" if services.settings.api_tokens else chat_id


def _latest(services: Services, key: str) -> tuple[str, str] | None:
    """The chat's latest answer: (session id, message id), or ``None``."""
    record = services.store.get_chat(key)
    if record is None:
        return None
    session_id, message_id = orjson.loads(record)
    return str(session_id), str(message_id)


def _owner_key(services: Services, chat_id: str) -> str | None:
    """The chat's key for the caller of ``GET``/``DELETE``, ``None`` for an id that
    names no chat.

    :raises Unauthorized: tokens are required and none of them was sent.
    """
    token = check_token(request.headers.get("Authorization"), services.settings.api_tokens)
    if not CHAT_ID.fullmatch(chat_id):
        return None
    return _chat_key(services, chat_id, client_key(token, request.remote_addr))


def _running(services: Services, chat_id: str) -> tuple[SessionInfo, str] | None:
    """The chat's running answer (its session and message id), or ``None``."""
    key = _owner_key(services, chat_id)
    latest = _latest(services, key) if key is not None else None
    if latest is None:
        return None
    session = services.store.get(latest[0])
    if session is None or session.finished:
        return None
    return session, latest[1]


@bp.get(f"/chat/<{ANY_STRING}:chat_id>/stream")
def resume_chat(chat_id: str) -> flask.Response:
    services = get_services()
    running = _running(services, chat_id)
    if running is None:
        return no_content()
    if request.method == "HEAD":
        return _response(iter(()))
    if services.relay.open_streams >= services.settings.max_streams:
        raise errors.CapacityExceeded(
            f"This server has its maximum of {services.settings.max_streams} open streams "
            f"(NGAI_MAX_STREAMS); try again in {CAPACITY_RETRY_AFTER} s.",
            retry_after=CAPACITY_RETRY_AFTER,
        )
    session, message_id = running
    return _stream(services, session, message_id)


@bp.delete(f"/chat/<{ANY_STRING}:chat_id>/stream")
def cancel_chat(chat_id: str) -> flask.Response:
    services = get_services()
    running = _running(services, chat_id)
    if running is not None:
        services.relay.cancel(running[0].id)
    return no_content()


def _stream(services: Services, session: SessionInfo, message_id: str) -> flask.Response:
    """The whole message from ``start``, then live parts (the SDK's resume is a replay)."""
    reader = services.relay.open(session, 0)
    response = _response(_parts(reader, UIStream(message_id)))
    response.call_on_close(reader.close)
    return response


def _response(body: t.Iterator[bytes]) -> flask.Response:
    return flask.Response(body, content_type="text/event-stream", headers=HEADERS)


def _parts(reader: Reader, encoder: UIStream) -> t.Iterator[bytes]:
    """The bytes of one UI message stream, in writes of about :data:`SLICE_BYTES`
    at most (a replay holds one slice at a time). Plain values only: no request
    context in here.
    """
    yield encoder.start()
    try:
        for batch in reader:
            if batch is None:
                yield HEARTBEAT
                continue
            if len(batch) == 1:
                data = encoder.feed(batch)
                if data:
                    yield data
                continue
            start = size = 0
            for index, event in enumerate(batch):
                size += len(event.data)
                if size >= SLICE_BYTES:
                    data = encoder.feed(batch[start : index + 1])
                    if data:
                        yield data
                    start, size = index + 1, 0
            if start < len(batch):
                data = encoder.feed(batch[start:])
                if data:
                    yield data
    except (errors.SessionNotFound, errors.StoreUnavailable) as exc:
        yield encoder.error(exc)
    except ShuttingDown:
        yield encoder.error(
            errors.UpstreamInterrupted(
                "This server is restarting; reload to receive the rest of the answer."
            )
        )
