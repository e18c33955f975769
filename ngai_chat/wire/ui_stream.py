"""The AI SDK's UI message stream (SPEC §3 ``POST /chat``), made from a session's log:
the pure encoder of the ``/chat`` door (no I/O, no Flask, no gevent).

Each part is one SSE event, ``data: <compact JSON>``, and the stream ends with
``data: [DONE]``::

    start {messageId}, start-step
    reasoning-start {id}, reasoning-delta {id, delta}…, reasoning-end {id}
    text-start {id}, text-delta {id, delta}…, text-end {id}
    source-url {sourceId, url, title?}            once per cited URL
    tool-input-start {toolCallId, toolName}       on a call's first fragment
    tool-input-delta {toolCallId, inputTextDelta} per fragment of arguments
    file {url, mediaType}                         per generated image
    tool-input-available {toolCallId, toolName, input} | tool-input-error {…, errorText}
    finish-step, finish {finishReason, messageMetadata}  |  error {errorText}  |  abort
    [DONE]

:class:`UIStream` keeps what a part depends on (the open text or reasoning block,
the tool calls started, the URLs cited), so it is rebuilt by feeding it the log
from its first event — which is also what the SDK asks of a resumed stream (a replay
of the whole message): the same log gives the same bytes, ids included.
"""

from __future__ import annotations

import typing as t

from ..chunks import Chunk
from ..chunks import image_url
from ..chunks import json_string
from ..chunks import load_json
from ..errors import ApiError
from ..sse import json_data


class Event(t.Protocol):
    """What the encoder reads of one log event (the store's ``Event`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def data(self) -> str: ...


__all__ = ["DONE", "FINISH_REASONS", "UIStream", "finish_reason"]

#: the stream's last line
DONE = b"data: [DONE]\n\n"
#: the upstream's finish reasons → the SDK's (anything else is ``other``)
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "error": "error",
}


def finish_reason(upstream: t.Any) -> str:
    """The SDK's finish reason for the upstream's (``None`` when none came: ``other``)."""
    return FINISH_REASONS.get(upstream, "other") if isinstance(upstream, str) else "other"


def _frame(part: str) -> str:
    return f"data: {part}\n\n"


def _media_type(url: str) -> str:
    """The media type of a data URL (``data:image/png;base64,…``); ``image/png``
    for any other URL, the type image models send.
    """
    if url.startswith("data:"):
        head = url[5:].split(",", 1)[0].split(";", 1)[0].strip()
        if head:
            return head
    return "image/png"


class _ToolCall:
    __slots__ = ("arguments", "call_id", "name", "started")

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.name: str | None = None
        #: argument fragments, in order
        self.arguments: list[str] = []
        #: ``tool-input-start`` went out (it needs both the id and the name)
        self.started = False


class UIStream:
    """Encodes one answer's log events as UI message stream parts.

    :param message_id: the assistant message's id, sent in ``start``.
    """

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        #: ``"text"`` or ``"reasoning"`` while such a block is open
        self._open: str | None = None
        self._open_id = ""
        self._blocks = 0
        self._tools: dict[t.Any, _ToolCall] = {}
        self._cited: set[str] = set()
        self.ended = False

    def start(self) -> bytes:
        """The stream's first parts: ``start`` and ``start-step``."""
        start = json_data({"type": "start", "messageId": self.message_id})
        return (_frame(start) + 'data: {"type":"start-step"}\n\n').encode()

    def feed(self, events: t.Iterable[Event]) -> bytes:
        """The parts for a batch of log events (the terminal one adds ``[DONE]``)."""
        out: list[str] = []
        for event in events:
            name = event.name
            if name == "chunk":
                self._chunk(event.data, out)
            elif name == "done":
                self._done(load_json(event.data), out)
            elif name == "error":
                error = load_json(event.data)
                message = error.get("message") if isinstance(error, dict) else None
                self._error(message if isinstance(message, str) else "The answer failed.", out)
        text = "".join(out)
        data = text.encode("utf-8", "backslashreplace") if text else b""
        return data + DONE if self.ended else data

    def error(self, error: ApiError) -> bytes:
        """An error that is not part of the log (the store failed, shutdown):
        ``error`` and ``[DONE]``.
        """
        out: list[str] = []
        self._error(error.message, out)
        return "".join(out).encode("utf-8", "backslashreplace") + DONE

    # --- chunks --------------------------------------------------------------

    def _chunk(self, data: str, out: list[str]) -> None:
        chunk = Chunk(data, load_json(data))
        delta = chunk.delta
        if not delta:
            return
        reasoning = delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            self._delta("reasoning", reasoning, out)
        content = delta.get("content")
        if content and isinstance(content, str):
            self._delta("text", content, out)
        if "annotations" in delta:
            self._citations(chunk, out)
        if "tool_calls" in delta:
            for fragment in chunk.tool_calls:
                self._fragment(fragment, out)
        if "images" in delta:
            for image in chunk.images:
                url = t.cast(str, image_url(image))
                part = {"type": "file", "url": url, "mediaType": _media_type(url)}
                out.append(_frame(json_data(part)))

    def _delta(self, kind: str, text: str, out: list[str]) -> None:
        if self._open != kind:
            self._close(out)
            self._open = kind
            self._open_id = f"{kind}-{self._blocks}"
            self._blocks += 1
            out.append(f'data: {{"type":"{kind}-start","id":"{self._open_id}"}}\n\n')
        delta = json_string(text)
        out.append(f'data: {{"type":"{kind}-delta","id":"{self._open_id}","delta":{delta}}}\n\n')

    def _close(self, out: list[str]) -> None:
        if self._open is not None:
            out.append(f'data: {{"type":"{self._open}-end","id":"{self._open_id}"}}\n\n')
            self._open = None

    def _citations(self, chunk: Chunk, out: list[str]) -> None:
        for citation in chunk.citations:
            url = citation.get("url")
            if not isinstance(url, str) or url in self._cited:
                continue
            self._cited.add(url)
            part = {"type": "source-url", "sourceId": f"source-{len(self._cited) - 1}", "url": url}
            title = citation.get("title")
            if isinstance(title, str):
                part["title"] = title
            out.append(_frame(json_data(part)))

    def _fragment(self, fragment: dict[str, t.Any], out: list[str]) -> None:
        index = fragment.get("index")
        key = index if isinstance(index, int | str) else object()  # no index: a call of its own
        call = self._tools.get(key)
        if call is None:
            call = self._tools[key] = _ToolCall()
        if call.call_id is None and isinstance(fragment.get("id"), str) and fragment["id"]:
            call.call_id = fragment["id"]
        function = fragment.get("function")
        arguments = ""
        if isinstance(function, dict):
            name = function.get("name")
            if call.name is None and isinstance(name, str) and name:
                call.name = name
            if isinstance(function.get("arguments"), str):
                arguments = function["arguments"]
        if arguments:
            call.arguments.append(arguments)
        if call.started:
            if arguments:
                out.append(self._input_delta(call, arguments))
        elif call.call_id is not None and call.name is not None:
            self._start_call(call, out)

    def _start_call(self, call: _ToolCall, out: list[str]) -> None:
        call.started = True
        start = {"type": "tool-input-start", "toolCallId": call.call_id, "toolName": call.name}
        out.append(_frame(json_data(start)))
        if call.arguments:
            out.append(self._input_delta(call, "".join(call.arguments)))

    @staticmethod
    def _input_delta(call: _ToolCall, text: str) -> str:
        call_id = json_string(t.cast(str, call.call_id))
        return (
            f'data: {{"type":"tool-input-delta","toolCallId":{call_id},'
            f'"inputTextDelta":{json_string(text)}}}\n\n'
        )

    # --- the end ---------------------------------------------------------------

    def _tool_inputs(self, out: list[str]) -> None:
        """Each call's parsed input, once the upstream has finished."""
        for number, call in enumerate(self._tools.values()):
            if not call.started:
                call.call_id = call.call_id or f"call-{number}"
                call.name = call.name or "tool"
                self._start_call(call, out)
            raw = "".join(call.arguments)
            part: dict[str, t.Any] = {"toolCallId": call.call_id, "toolName": call.name}
            try:
                part["input"] = load_json(raw) if raw.strip() else {}
                part = {"type": "tool-input-available", **part}
            except ValueError:
                part = {
                    "type": "tool-input-error",
                    **part,
                    "input": raw,
                    "errorText": f"The model sent arguments for {call.name} that are not JSON.",
                }
            out.append(_frame(json_data(part)))

    def _done(self, done: dict[str, t.Any], out: list[str]) -> None:
        self._close(out)
        self.ended = True
        if done.get("finishReason") == "cancelled":
            out.append('data: {"type":"abort"}\n\n')
            return
        self._tool_inputs(out)
        metadata: dict[str, t.Any] = {
            "model": done.get("model"),
            "usage": done.get("usage"),
            "generationId": done.get("generationId"),
        }
        if done.get("reasoningDetails"):
            metadata["reasoningDetails"] = done["reasoningDetails"]
        finish = {
            "type": "finish",
            "finishReason": finish_reason(done.get("finishReason")),
            "messageMetadata": metadata,
        }
        out.append('data: {"type":"finish-step"}\n\n')
        out.append(_frame(json_data(finish)))

    def _error(self, message: str, out: list[str]) -> None:
        self._close(out)
        self.ended = True
        out.append(_frame(json_data({"type": "error", "errorText": message})))
