"""The AI SDK's ``UIMessage[]`` → the upstream's chat messages (SPEC §3 ``POST /chat``):
the pure layer of the ``/chat`` door (no I/O, no Flask).

| part | becomes |
|---|---|
| ``text`` | text content (a list of content parts when there are several, or files) |
| ``file`` with an image media type | an ``image_url`` content part |
| ``file`` with ``application/pdf`` | a ``file`` content part ``{filename, file_data}`` |
| ``reasoning``, ``step-start``, ``source-*``, ``data-*`` | nothing |
| ``tool-<name>``/``dynamic-tool`` with an input | an assistant ``tool_calls`` entry, and |
|  | for an output (or its error) a ``tool`` message right after |

An assistant message's ``metadata.reasoningDetails`` (what the door's ``finish``
part sent) goes back upstream as its ``reasoning_details``. Anything else is a
:class:`~ngai_chat.errors.InvalidRequest` naming the field
(``messages[1].parts[0].type``).
"""

from __future__ import annotations

import typing as t

from .errors import InvalidRequest
from .sse import json_data

__all__ = ["IMAGE_TYPES", "PDF_TYPE", "to_upstream"]

#: file media types sent as an ``image_url`` content part
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
#: the file media type sent as a ``file`` content part
PDF_TYPE = "application/pdf"
ROLES = ("system", "user", "assistant")
#: tool states that carry an input (a call was made)
_CALLED = frozenset({"input-available", "output-available", "output-error"})
#: parts the model has no use for, and tool parts of other states
_IGNORED = frozenset({"reasoning", "step-start", "source-url", "source-document"})


def to_upstream(messages: t.Any, path: str = "messages") -> list[dict[str, t.Any]]:
    """The upstream messages for a list of UIMessages.

    :param messages: the request's ``messages``.
    :param path: how the list is named in errors.
    :raises InvalidRequest: with ``field`` naming the first offending field.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            f"'{path}' must be a non-empty list of UIMessages "
            '({"id", "role", "parts": [{"type": "text", "text": "Hello"}]}).',
            field=path,
        )
    out: list[dict[str, t.Any]] = []
    for index, message in enumerate(messages):
        out.extend(_message(message, f"{path}[{index}]"))
    return out


def _message(message: t.Any, path: str) -> list[dict[str, t.Any]]:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{path} must be a UIMessage object.", field=path)
    role = message.get("role")
    if role not in ROLES:
        shown = repr(role) if isinstance(role, str) else "no role"
        raise InvalidRequest(
            f"{path}.role must be one of {', '.join(ROLES)}; got {shown}.", field=f"{path}.role"
        )
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise InvalidRequest(f"{path}.parts must be a list of parts.", field=f"{path}.parts")
    builder = _Builder(role)
    for index, part in enumerate(parts):
        _part(builder, part, f"{path}.parts[{index}]", role)
    built = builder.finish()
    if role == "assistant":
        details = _reasoning_details(message.get("metadata"), f"{path}.metadata")
        if details is not None:
            first = next((m for m in built if m["role"] == "assistant"), None)
            if first is None:
                first = {"role": "assistant", "content": ""}
                built.insert(0, first)
            first["reasoning_details"] = details
    return built


def _reasoning_details(metadata: t.Any, path: str) -> list[t.Any] | None:
    if not isinstance(metadata, dict) or metadata.get("reasoningDetails") is None:
        return None
    details = metadata["reasoningDetails"]
    if not isinstance(details, list):
        raise InvalidRequest(
            f"{path}.reasoningDetails must be a list (the finish part's messageMetadata).",
            field=f"{path}.reasoningDetails",
        )
    return details or None


class _Builder:
    """Gathers one UIMessage's parts into upstream messages: content parts and tool
    calls go into the current message; a part after a tool call (a later step of
    the same answer) starts the next one, after the calls' ``tool`` messages.
    """

    def __init__(self, role: str) -> None:
        self.role = role
        self.done: list[dict[str, t.Any]] = []
        self.content: list[dict[str, t.Any]] = []
        self.calls: list[dict[str, t.Any]] = []
        self.results: list[dict[str, t.Any]] = []

    def add_content(self, part: dict[str, t.Any]) -> None:
        if self.calls:
            self._flush()
        self.content.append(part)

    def add_call(self, call: dict[str, t.Any], result: dict[str, t.Any] | None) -> None:
        self.calls.append(call)
        if result is not None:
            self.results.append(result)

    def _flush(self) -> None:
        message: dict[str, t.Any] = {"role": self.role, "content": _content(self.content)}
        if self.calls:
            if not self.content:
                message["content"] = None
            message["tool_calls"] = self.calls
        self.done.append(message)
        self.done.extend(self.results)
        self.content, self.calls, self.results = [], [], []

    def finish(self) -> list[dict[str, t.Any]]:
        if self.content or self.calls or not self.done:
            self._flush()
        return self.done


def _content(parts: list[dict[str, t.Any]]) -> str | list[dict[str, t.Any]]:
    """One text part as a plain string (what every model takes); else the list."""
    if not parts:
        return ""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return t.cast(str, parts[0]["text"])
    return parts


def _part(builder: _Builder, part: t.Any, path: str, role: str) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        field = f"{path}.type" if isinstance(part, dict) else path
        raise InvalidRequest(
            f'{field} is missing: each part is an object with a "type", such as '
            '{"type": "text", "text": "Hello"}.',
            field=field,
        )
    kind = part["type"]
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{path}.text must be a string.", field=f"{path}.text")
        builder.add_content({"type": "text", "text": text})
    elif kind == "file":
        builder.add_content(_file(part, path))
    elif kind in _IGNORED or kind.startswith("data-"):
        return
    elif kind.startswith("tool-") or kind == "dynamic-tool":
        if role != "assistant":
            raise InvalidRequest(
                f"{path}.type: tool parts ({kind!r}) belong on assistant messages.",
                field=f"{path}.type",
            )
        _tool(builder, part, path, kind)
    else:
        raise InvalidRequest(
            f"{path}.type {kind!r} is not a part this server takes: send text, file, "
            "reasoning, tool-*, dynamic-tool, step-start, source-url, source-document "
            "or data-* parts.",
            field=f"{path}.type",
        )


def _file(part: dict[str, t.Any], path: str) -> dict[str, t.Any]:
    media_type = part.get("mediaType")
    url = part.get("url")
    if not isinstance(media_type, str):
        raise InvalidRequest(f"{path}.mediaType must be a string.", field=f"{path}.mediaType")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(
            f"{path}.url must be the file's URL (a data: URL or https://…).",
            field=f"{path}.url",
        )
    kind = media_type.split(";", 1)[0].strip().lower()
    if kind in IMAGE_TYPES:
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == PDF_TYPE:
        filename = part.get("filename")
        name = filename if isinstance(filename, str) and filename else "document.pdf"
        return {"type": "file", "file": {"filename": name, "file_data": url}}
    raise InvalidRequest(
        f"{path}.mediaType {media_type!r} is not a file type this server sends upstream: "
        "send images (image/png, image/jpeg, image/webp, image/gif) or PDFs (application/pdf).",
        field=f"{path}.mediaType",
    )


def _tool(builder: _Builder, part: dict[str, t.Any], path: str, kind: str) -> None:
    state = part.get("state")
    if state not in _CALLED:
        return  # still streaming its input, or waiting for an approval: no call yet
    name = part.get("toolName") if kind == "dynamic-tool" else kind[5:]
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{path}.toolName must be the tool's name.", field=f"{path}.toolName")
    call_id = part.get("toolCallId")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(
            f"{path}.toolCallId must be the call's id (a string).", field=f"{path}.toolCallId"
        )
    tool_input = part.get("input")
    arguments = "{}" if tool_input is None else json_data(tool_input)
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    result = None
    if state == "output-available":
        result = {"role": "tool", "tool_call_id": call_id, "content": json_data(part.get("output"))}
    elif state == "output-error":
        error_text = part.get("errorText")
        result = {
            "role": "tool",
            "tool_call_id": call_id,
            "content": error_text if isinstance(error_text, str) else "",
        }
    builder.add_call(call, result)
