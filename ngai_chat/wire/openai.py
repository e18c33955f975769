"""The OpenAI-compatible door's wire format (SPEC §3 "OpenAI-compatible"): the log's
events in, what the official OpenAI SDKs read out. Pure: no I/O, no Flask, no gevent.

* :func:`raw_chunk` undoes :func:`~ngai_chat.chunks.chunk_event_data`'s splice: the
  upstream chunk exactly as received, so that a streamed answer is ``data: <chunk>``
  lines (:func:`chunk_frame`) and then ``data: [DONE]`` (:data:`DONE_FRAME`).
* :class:`Completion` assembles the non-streamed ``chat.completion`` from the same
  events: content, reasoning, tool calls, annotations, images, usage.
* :func:`error_body` is OpenAI's ``{"error": {"message", "type", "param", "code"}}``
  for a SPEC §4 error, with the ``type`` each SDK maps to its exception class;
  :func:`error_frame` is the same inside a stream.
"""

from __future__ import annotations

import typing as t

from ..chunks import Chunk
from ..chunks import json_string
from ..chunks import load_json
from ..sse import event
from ..sse import json_data

__all__ = [
    "DONE_FRAME",
    "Completion",
    "chunk_frame",
    "chunk_frame_of",
    "error_body",
    "error_frame",
    "error_type",
    "model_list",
    "raw_chunk",
]

#: the end of a streamed answer
DONE_FRAME = b"data: [DONE]\n\n"

#: what :func:`~ngai_chat.chunks.chunk_event_data` puts before the two texts
_CONTENT_KEY = '"content":'
_REASONING_KEY = ',"reasoning":'

#: OpenAI's error ``type`` by HTTP status (5xx: ``api_error``)
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def _spliced_literal(literal: str) -> bool:
    """Whether ``literal`` is a JSON string exactly as the splice writes one."""
    if len(literal) < 2 or literal[0] != '"' or literal[-1] != '"':
        return False
    if "\\" not in literal and literal.count('"') == 2 and literal.isprintable():
        # the usual text: no escapes, its two quotes its ends, and nothing that
        # orjson would escape (quotes, backslashes, control characters)
        return True
    try:
        value = load_json(literal)
    except ValueError:
        return False
    return isinstance(value, str) and json_string(value) == literal


def raw_chunk(data: str) -> str:
    """The upstream chunk of a ``chunk`` event's ``data``, as the upstream sent it.

    :func:`~ngai_chat.chunks.chunk_event_data` appended ``,"content":<json>,
    "reasoning":<json>`` before the chunk's closing brace. Neither key can occur
    unescaped inside a JSON string, so their last occurrences are the splice's;
    the two texts between them are checked to be what the splice writes, and cut
    off. Anything else (a chunk made by re-serializing) is parsed and written
    again without the two keys.
    """
    reasoning_at = data.rfind(_REASONING_KEY)
    if reasoning_at > 0 and data.endswith("}"):
        content_at = data.rfind(_CONTENT_KEY, 0, reasoning_at)
        if content_at > 0:
            before = data[content_at - 1]
            if (
                before in ",{"
                and _spliced_literal(data[content_at + len(_CONTENT_KEY) : reasoning_at])
                and _spliced_literal(data[reasoning_at + len(_REASONING_KEY) : -1])
            ):
                end = content_at - 1 if before == "," else content_at
                return data[:end] + "}"
    value = load_json(data)
    if isinstance(value, dict):
        value.pop("content", None)
        value.pop("reasoning", None)
    return json_data(value)


def chunk_frame(data: str) -> bytes:
    """The stream's frame for a ``chunk`` event: ``data: <upstream chunk>``."""
    return event(raw_chunk(data))


_DATA_LINE = b"\ndata: "
_CONTENT_KEY_BYTES = _CONTENT_KEY.encode()
_REASONING_KEY_BYTES = _REASONING_KEY.encode()
_QUOTE = ord('"')
_COMMA = ord(",")
_BRACE = ord("{")
_FRAME_END = b"}\n\n"


def chunk_frame_of(frame: bytes) -> bytes | None:
    """:func:`chunk_frame`, cut from the ``chunk`` event's NGAI frame (``id:`` and
    ``event:`` lines, then its data, encoded once when the event was logged): the
    bytes from its first ``data:`` line to the splice, without decoding or
    encoding anything (the hot path). A chunk whose JSON holds line breaks has
    several ``data:`` lines, which come out as :func:`chunk_frame` writes them.

    The splice is recognized when both of its texts are plain (no escapes: the
    eight quotes from its ``"content":`` on are its keys' and texts' own);
    ``None`` otherwise, and :func:`chunk_frame` does the work.
    """
    start = frame.find(_DATA_LINE)
    reasoning_at = frame.rfind(_REASONING_KEY_BYTES)
    if start < 0 or reasoning_at < 0:
        return None
    content_at = frame.rfind(_CONTENT_KEY_BYTES, start, reasoning_at)
    if content_at <= start:
        return None
    splice = frame[content_at:]
    if (
        not splice.endswith(b'"}\n\n')
        or b"\\" in splice
        or splice.count(b'"') != 8
        or splice[len(_CONTENT_KEY_BYTES)] != _QUOTE
        or frame[reasoning_at - 1] != _QUOTE
        or frame[reasoning_at + len(_REASONING_KEY_BYTES)] != _QUOTE
    ):
        return None
    before = frame[content_at - 1]
    if before == _COMMA:
        return frame[start + 1 : content_at - 1] + _FRAME_END
    if before == _BRACE:
        return frame[start + 1 : content_at] + _FRAME_END
    return None


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(error: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """OpenAI's error body for a SPEC §4 error object (``code``, ``message``,
    ``status``, ``field``?): ``code`` is §4's code, ``param`` the field.
    """
    status = error.get("status")
    return {
        "error": {
            "message": error.get("message"),
            "type": error_type(status if isinstance(status, int) else 500),
            "param": error.get("field"),
            "code": error.get("code"),
        }
    }


def error_frame(error: t.Mapping[str, t.Any]) -> bytes:
    """A mid-stream error: ``data: {"error": {...}}`` (the stream then ends)."""
    return event(json_data(error_body(error)))


class Completion:
    """The non-streamed ``chat.completion``, assembled from a session's events.

    Feed every event with :meth:`add`; once the terminal one came,
    :attr:`error` is the §4 error object of an ``error`` event, or
    :meth:`result` is the completion.
    """

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._images: list[dict[str, t.Any]] = []
        self.created: int | None = None
        #: the ``done`` event's data, once it came
        self.done: dict[str, t.Any] | None = None
        #: the ``error`` event's data, once it came
        self.error: dict[str, t.Any] | None = None

    def add(self, name: str, data: str) -> None:
        """Take one event of the log."""
        if name == "chunk":
            value = load_json(data)
            if not isinstance(value, dict):
                return
            chunk = Chunk(data, value)
            if chunk.content:
                self._content.append(chunk.content)
            if chunk.reasoning:
                self._reasoning.append(chunk.reasoning)
            if "images" in chunk.delta:
                self._images.extend(chunk.images)
            created = value.get("created")
            if self.created is None and isinstance(created, int) and not isinstance(created, bool):
                self.created = created
        elif name == "done":
            self.done = load_json(data)
        elif name == "error":
            self.error = load_json(data)

    def result(self, now: int, fallback_id: str) -> dict[str, t.Any]:
        """The ``chat.completion`` (after ``done``).

        :param now: ``created`` when no chunk carried one.
        :param fallback_id: ``id`` when no chunk carried one.
        """
        done = self.done or {}
        tool_calls = done.get("toolCalls") or []
        text = "".join(self._content)
        message: dict[str, t.Any] = {
            "role": "assistant",
            # OpenAI's own answers carry null content beside tool calls
            "content": text if text or not tool_calls else None,
        }
        if self._reasoning:
            message["reasoning"] = "".join(self._reasoning)
        if done.get("reasoningDetails"):
            message["reasoning_details"] = done["reasoningDetails"]
        if tool_calls:
            message["tool_calls"] = tool_calls
        if done.get("citations"):
            message["annotations"] = [
                {"type": "url_citation", "url_citation": citation} for citation in done["citations"]
            ]
        if self._images:
            message["images"] = self._images
        return {
            "id": done.get("generationId") or fallback_id,
            "object": "chat.completion",
            "created": self.created if self.created is not None else now,
            "model": done.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": done.get("finishReason")}
            ],
            "usage": done.get("usage"),
        }


def model_list(data: t.Mapping[str, t.Any], *, owner: str) -> dict[str, t.Any]:
    """OpenAI's model list for the upstream's ``{"data": [...]}``.

    :param owner: ``owned_by`` of a model whose id names no owner (``vendor/…``).
    """
    listed = []
    for model in data.get("data", []):
        model_id = model.get("id") if isinstance(model, dict) else None
        if not isinstance(model_id, str) or not model_id:
            continue
        created = model.get("created")
        listed.append(
            {
                "id": model_id,
                "object": "model",
                "created": created if isinstance(created, int) and created >= 0 else 0,
                "owned_by": model_id.split("/", 1)[0] if "/" in model_id else owner,
            }
        )
    return {"object": "list", "data": listed}
