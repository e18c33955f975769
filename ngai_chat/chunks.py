"""What the upstream's bytes mean: the pure layer of the relay (no I/O, no gevent, no Flask).

Three things live here, each tested against exact bytes in tables:

* :class:`EventSplitter` turns the upstream body, read in blocks of any size, into
  the ``data`` of each Server-Sent Event (WHATWG rules: lines end with CR, LF or
  CRLF, also when a CRLF is split across reads; comments and fields other than
  ``data`` are dropped). It works on whole blocks at the bytes level — one search
  for the blank line per block, nothing per line — and never holds more than
  ``max_event_bytes`` of one event, so an upstream that never ends its line costs
  a bounded buffer and linear work.
* :func:`parse_chunk` parses one event's data once (orjson, falling back to the
  standard library for what orjson refuses: lone surrogates, huge integers) and
  scrubs the API key from it *after decoding*, so a key hidden behind JSON
  escapes (``\\u0073k-…``) is caught too. Only a chunk that held the key is
  re-serialized; every other chunk keeps the upstream's bytes.
* :class:`Chunk` says what an OpenAI ``chat.completion.chunk`` means (text,
  reasoning, finish reason, usage, model, id, citations, reasoning details,
  mid-stream error, tool-call fragments, generated images),
  :func:`chunk_event_data` builds a ``chunk`` event's data by splicing ``content``
  and ``reasoning`` into the upstream's text, and
  :class:`Answer` gathers what the ``done`` event reports (:class:`ToolCalls`
  assembles the tool calls from their fragments).
"""

from __future__ import annotations

import json
import typing as t

import orjson

from . import errors
from .log import REDACTED
from .sse import json_data

__all__ = [
    "REDACTED",
    "Answer",
    "Chunk",
    "EventSplitter",
    "ToolCalls",
    "chunk_event_data",
    "done_data",
    "error_data",
    "image_url",
    "json_string",
    "load_json",
    "parse_chunk",
    "redact",
    "stream_error",
]


def json_string(text: str) -> str:
    """``text`` as a JSON string literal (the hot path's one encoding per chunk; the
    doors' encoders write theirs with it too, so the OpenAI door can find the splice).
    """
    try:
        return orjson.dumps(text).decode()
    except TypeError:  # a lone surrogate
        return json.dumps(text)


def load_json(text: str | bytes) -> t.Any:
    """Parse JSON with orjson, falling back to the standard library for what orjson
    refuses (lone surrogates, huge integers).

    :raises ValueError: it is not JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class EventTooLarge(errors.UpstreamStreamError):
    """One upstream event (or line) passed ``NGAI_MAX_EVENT_BYTES``: not retryable,
    since the same request would bring the same event (and be paid for again).
    """

    retryable = False


class EventSplitter:
    """Splits an SSE body, fed in blocks, into the ``data`` of each event.

    :param max_event_bytes: the longest event accepted, its field names and line
        breaks included.
    """

    def __init__(self, max_event_bytes: int = 16_777_216) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        #: the last block ended with a CR: an LF starting the next one is its CRLF's
        self._skip_lf = False
        #: bytes searched for an event's end so far: each byte fed is searched
        #: once (plus one byte a blank line may straddle), so an event of 12 MB
        #: fed in 4 KiB blocks costs linear work, never a re-search of its buffer
        self.scanned = 0

    def feed(self, block: bytes) -> list[bytes]:
        """The data of every event that ``block`` completes, in order.

        :raises EventTooLarge: an event grew past ``max_event_bytes``.
        """
        buffer = self._buffer
        if not buffer and not self._skip_lf and block.endswith(b"\n\n") and b"\r" not in block:
            # the usual block: whole events, nothing held from the last one
            self.scanned += len(block)
            return self._events(block[:-2])
        if self._skip_lf:
            self._skip_lf = False
            if block.startswith(b"\n"):
                block = block[1:]
        if b"\r" in block:
            self._skip_lf = block.endswith(b"\r")
            block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = max(0, len(buffer) - 1)  # a blank line may straddle the blocks
        buffer += block
        self.scanned += len(buffer) - start
        end = buffer.rfind(b"\n\n", start)
        if end < 0:
            if len(buffer) > self.max_event_bytes:
                self._too_large()
            return []
        with memoryview(buffer) as view:
            complete = bytes(view[:end])  # one copy of a big event, not two
        del buffer[: end + 2]
        if len(buffer) > self.max_event_bytes:
            self._too_large()
        return self._events(complete)

    def finish(self) -> list[bytes]:
        """At the end of the body: the data of an event whose lines all ended but
        whose blank line never came (``data: [DONE]\\n``, then EOF), as lenient
        clients such as sseclient-py read it.
        """
        rest, self._buffer = bytes(self._buffer), bytearray()
        return self._events(rest) if rest.endswith(b"\n") else []

    def _events(self, complete: bytes) -> list[bytes]:
        """The data of the whole events in ``complete`` (without its last blank line)."""
        found: list[bytes] = []
        for raw in complete.split(b"\n\n"):
            if len(raw) > self.max_event_bytes:
                self._too_large()
            if raw.startswith(b"data: ") and b"\n" not in raw:
                found.append(raw[6:])  # the usual event: one data line
            elif raw:
                data = _data_of(raw)
                if data is not None:
                    found.append(data)
        return found

    def _too_large(self) -> t.NoReturn:
        self._buffer.clear()
        raise EventTooLarge(
            f"The model provider sent an event longer than {self.max_event_bytes} bytes "
            "(NGAI_MAX_EVENT_BYTES); the stream was stopped."
        )


def _data_of(raw: bytes) -> bytes | None:
    """The data of one event's lines (``None`` when it has no ``data`` field)."""
    parts: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line.startswith(b":"):
            continue  # a comment (": OPENROUTER PROCESSING")
        name, colon, value = line.partition(b":")
        if name != b"data":
            continue  # event, id, retry: the relay has no use for them
        if colon and value.startswith(b" "):
            value = value[1:]
        parts.append(value)
    return b"\n".join(parts) if parts else None


# --- one chunk ----------------------------------------------------------------


def redact(value: t.Any, secret: str) -> tuple[t.Any, bool]:
    """``value`` with every occurrence of ``secret`` replaced, at any depth, and
    whether anything was.
    """
    if isinstance(value, str):
        if secret in value:
            return value.replace(secret, REDACTED), True
        return value, False
    if isinstance(value, dict):
        changed = False
        result: dict[t.Any, t.Any] = {}
        for key, item in value.items():
            new_key, key_changed = redact(key, secret)
            new_item, item_changed = redact(item, secret)
            result[new_key] = new_item
            changed = changed or key_changed or item_changed
        return (result, True) if changed else (value, False)
    if isinstance(value, list):
        items = [redact(item, secret) for item in value]
        if any(changed for _, changed in items):
            return [item for item, _ in items], True
        return value, False
    return value, False


class Chunk:
    """One upstream data chunk: its JSON text as received, parsed, and what it means.

    :param text: the ``data`` JSON text, exactly as the upstream sent it (unless it
        held the API key).
    :param value: the parsed object.
    """

    __slots__ = ("choice", "delta", "text", "value")

    def __init__(self, text: str, value: dict[str, t.Any]) -> None:
        self.text = text
        self.value = value
        choices = value.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        #: ``choices[0]``, or ``{}``
        self.choice: dict[str, t.Any] = choice if isinstance(choice, dict) else {}
        delta = self.choice.get("delta")
        if not isinstance(delta, dict):
            delta = self.choice.get("message")  # some servers send whole messages
        #: ``choices[0].delta``, or ``{}``
        self.delta: dict[str, t.Any] = delta if isinstance(delta, dict) else {}

    @classmethod
    def from_value(cls, value: dict[str, t.Any]) -> Chunk:
        """A chunk made here rather than received (the demo model, tests)."""
        return cls(json_data(value), value)

    def __repr__(self) -> str:
        return f"Chunk({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chunk) and (self.text, self.value) == (other.text, other.value)

    __hash__ = None  # type: ignore[assignment]

    @property
    def content(self) -> str:
        """The text of ``choices[0].delta.content``, ``""`` when none."""
        content = self.delta.get("content")
        return content if isinstance(content, str) else ""

    @property
    def reasoning(self) -> str:
        """The text of ``choices[0].delta.reasoning``, ``""`` when none."""
        reasoning = self.delta.get("reasoning")
        return reasoning if isinstance(reasoning, str) else ""

    @property
    def finish_reason(self) -> str | None:
        reason = self.choice.get("finish_reason")
        return reason if isinstance(reason, str) and reason else None

    @property
    def model(self) -> str | None:
        model = self.value.get("model")
        return model if isinstance(model, str) and model else None

    @property
    def id(self) -> str | None:
        """The generation id (``gen-…``)."""
        chunk_id = self.value.get("id")
        return chunk_id if isinstance(chunk_id, str) and chunk_id else None

    @property
    def usage(self) -> t.Any:
        return self.value.get("usage")

    @property
    def citations(self) -> list[dict[str, t.Any]]:
        """The ``url_citation`` objects of the delta's (or message's) annotations."""
        annotations = self.delta.get("annotations")
        if not isinstance(annotations, list):
            return []
        found = []
        for annotation in annotations:
            if isinstance(annotation, dict) and annotation.get("type") == "url_citation":
                inner = annotation.get("url_citation")
                if isinstance(inner, dict):
                    found.append(inner)
        return found

    @property
    def reasoning_details(self) -> list[t.Any]:
        details = self.delta.get("reasoning_details")
        return details if isinstance(details, list) else []

    @property
    def tool_calls(self) -> list[dict[str, t.Any]]:
        """The ``delta.tool_calls`` fragments (objects only), as sent."""
        calls = self.delta.get("tool_calls")
        if not isinstance(calls, list):
            return []
        return [call for call in calls if isinstance(call, dict)]

    @property
    def images(self) -> list[dict[str, t.Any]]:
        """The ``delta.images`` entries (``{"type": "image_url", "image_url": {"url"}}``)
        whose URL is a string, as sent.
        """
        images = self.delta.get("images")
        if not isinstance(images, list):
            return []
        return [image for image in images if image_url(image) is not None]


def image_url(image: t.Any) -> str | None:
    """The URL of one ``delta.images`` entry, or ``None`` when it has none."""
    if not isinstance(image, dict):
        return None
    inner = image.get("image_url")
    url = inner.get("url") if isinstance(inner, dict) else None
    return url if isinstance(url, str) else None


class ToolCalls:
    """Tool calls assembled from ``delta.tool_calls`` fragments by their ``index``:
    ``id``, ``type`` and ``function.name`` from the fragments that carry them,
    ``function.arguments`` concatenated in order (SPEC §3 ``done.toolCalls``).
    A fragment without an ``index`` is a call of its own (one-shot servers).
    """

    def __init__(self) -> None:
        self._calls: list[dict[str, t.Any]] = []
        self._by_index: dict[t.Any, dict[str, t.Any]] = {}

    def add(self, fragment: dict[str, t.Any]) -> None:
        """Take one fragment."""
        index = fragment.get("index")
        call = self._by_index.get(index) if index is not None else None
        if call is None:
            call = {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
            self._calls.append(call)
            if index is not None and isinstance(index, int | str):
                self._by_index[index] = call
        if isinstance(fragment.get("id"), str) and fragment["id"]:
            call["id"] = fragment["id"]
        if isinstance(fragment.get("type"), str) and fragment["type"]:
            call["type"] = fragment["type"]
        function = fragment.get("function")
        if isinstance(function, dict):
            name = function.get("name")
            if isinstance(name, str) and name:
                call["function"]["name"] = name
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call["function"]["arguments"] += arguments

    def calls(self) -> list[dict[str, t.Any]]:
        """The calls so far, as the upstream would have sent them unstreamed."""
        return [
            {"id": call["id"], "type": call["type"], "function": dict(call["function"])}
            for call in self._calls
        ]


def parse_chunk(data: bytes, secret: str = "") -> Chunk | None:
    """Parse one event's data into a :class:`Chunk` (``None`` when it is not a JSON
    object), with ``secret`` scrubbed from every decoded string.

    :raises UpstreamStreamError: the data is not UTF-8 text.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.UpstreamStreamError(
            "The model provider sent bytes that are not UTF-8 text."
        ) from None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(text)
        except ValueError:
            return None  # not JSON: skipped, like any line a client cannot use
    if not isinstance(value, dict):
        return None
    if secret and ("\\" in text or secret in text):
        # The key may hide behind escapes: look for it in what the JSON says.
        value, changed = redact(value, secret)
        if changed:
            return Chunk(json_data(value), value)
    return Chunk(text, value)


def chunk_event_data(chunk: Chunk) -> str:
    """The ``data`` of a ``chunk`` event: the upstream chunk as received, plus a
    top-level ``content`` (``choices[0].delta.content``) and ``reasoning``
    (``choices[0].delta.reasoning``), each ``""`` when none.

    The two are spliced in before the object's closing brace rather than the chunk
    being re-serialized, so the client sees the upstream's bytes exactly.
    """
    added = f'"content":{json_string(chunk.content)},"reasoning":{json_string(chunk.reasoning)}'
    text = chunk.text.rstrip()
    if text.endswith("}"):
        body = text[:-1].rstrip()
        separator = "" if body.endswith("{") else ","
        return f"{body}{separator}{added}}}"
    return json_data({**chunk.value, "content": chunk.content, "reasoning": chunk.reasoning})


def stream_error(chunk: Chunk) -> errors.UpstreamStreamError | None:
    """The error carried by a mid-stream error chunk (a top-level ``error``, or
    ``finish_reason: "error"``), or ``None`` for a normal one.
    """
    error = chunk.value.get("error")
    if error is None and chunk.choice.get("finish_reason") != "error":
        return None
    message = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    elif isinstance(error, str):
        message = error
    return errors.UpstreamStreamError(message, upstream=error)


class Answer:
    """What the chunks of one answer add up to: what the ``done`` event reports.

    :param model: the requested model, reported until a chunk names another.
    """

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.finish_reason: str | None = None
        self.usage: t.Any = None
        self.generation_id: str | None = None
        self.citations: list[dict[str, t.Any]] = []
        self._cited: set[str] = set()
        self._details: list[dict[str, t.Any] | t.Any] = []
        self._by_index: dict[t.Any, dict[str, t.Any]] = {}
        self.tool_calls = ToolCalls()

    def add(self, chunk: Chunk) -> None:
        """Take what ``chunk`` says about the whole answer."""
        if chunk.id is not None:
            self.generation_id = chunk.id
        if chunk.model is not None:
            self.model = chunk.model
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if "annotations" in chunk.delta:
            for citation in chunk.citations:
                url = citation.get("url")
                key = url if isinstance(url, str) else json_data(citation)
                if key not in self._cited:
                    self._cited.add(key)
                    self.citations.append(citation)
        if chunk.delta.get("reasoning_details"):
            for detail in chunk.reasoning_details:
                self._merge_detail(detail)
        if "tool_calls" in chunk.delta:
            for fragment in chunk.tool_calls:
                self.tool_calls.add(fragment)

    def _merge_detail(self, detail: t.Any) -> None:
        """Merge by ``index``: ``text``, ``summary`` and ``data`` concatenate, every
        other field keeps its last non-null value; a detail without an index is
        kept as it came.
        """
        if not isinstance(detail, dict) or detail.get("index") is None:
            self._details.append(detail)
            return
        index = detail["index"]
        merged = self._by_index.get(index)
        if merged is None:
            merged = self._by_index[index] = dict(detail)
            self._details.append(merged)
            return
        for key, value in detail.items():
            if value is None:
                continue
            if key in ("text", "summary", "data") and isinstance(value, str):
                previous = merged.get(key)
                merged[key] = (previous if isinstance(previous, str) else "") + value
            else:
                merged[key] = value

    @property
    def reasoning_details(self) -> list[t.Any]:
        return list(self._details)


def done_data(answer: Answer, finish_reason: str | None = None) -> str:
    """The ``data`` of a ``done`` event.

    :param finish_reason: reported instead of the answer's (``"cancelled"``).
    """
    return json_data(
        {
            "finishReason": finish_reason or answer.finish_reason,
            "model": answer.model,
            "usage": answer.usage,
            "generationId": answer.generation_id,
            "citations": answer.citations,
            "reasoningDetails": answer.reasoning_details,
            "toolCalls": answer.tool_calls.calls(),
        }
    )


def error_data(error: errors.ApiError) -> str:
    """The ``data`` of an ``error`` event."""
    return json_data(error.to_dict())
