"""The offline demo model ``ngai/demo``: no key, no network, the same events.

It streams what a modern model streams, shaped like OpenRouter's chunks, so a
frontend built against the demo works unchanged against a real model:

1. a short reasoning phase: ``delta.reasoning`` text with ``content: ""`` and the
   matching ``delta.reasoning_details`` entry (``reasoning.text``, ``index`` 0);
2. the reply, one word per chunk at about twenty words a second, whitespace kept
   exactly. It quotes the last user message verbatim, line breaks and all, so
   Markdown typed into the chat page (a code block, a table) comes back as Markdown;
   one chunk carries a ``url_citation`` annotation;
3. a finish chunk, then a usage chunk with ``choices: []`` and a ``usage`` that has
   ``cost`` and the token details.

And what today's models add (SPEC §2 ``NGAI_DEMO``), so that each can be seen and
tested offline:

* asked for an image (``modalities`` contains ``"image"``, or the last user message
  asks to draw or for an image), the reply ends with one small PNG that the demo
  draws itself (:func:`demo_png`: ``zlib`` and ``struct``, no imaging library), in
  ``delta.images`` as an image model sends it;
* given ``tools``, it calls the first one instead of answering: arguments made from
  the tool's JSON schema, streamed in several ``delta.tool_calls`` fragments (the
  first with ``id``, ``type`` and ``function.name``), then ``finish_reason:
  "tool_calls"``;
* the reply names each attachment of the last user message (image, PDF, audio),
  with its type and size.

Every chunk has the same ``id`` (``gen-demo-…``), as OpenRouter's generation id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
import typing as t
import uuid
import zlib

import gevent

from ..config import DEMO_MODEL
from . import Chunk

__all__ = [
    "DEMO_CITATION",
    "DEMO_MODEL",
    "DemoUpstream",
    "attachments",
    "demo_png",
    "demo_reasoning",
    "demo_reply",
    "tool_arguments",
    "wants_image",
]

#: a word and the whitespace after it, or leading whitespace: they join back exactly
_WORDS = re.compile(r"\S+\s*|\s+")
#: a line that opens or closes a fenced code block
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
#: past this many words the quote is cut short: at 20 words a second, half a minute
MAX_QUOTED_WORDS = 600

_NO_TEXT = "You sent no text."
_INTRO = "You said:"
_OUTRO = (
    "This is the NGAI demo model answering offline, without an API key. "
    "Each word you see arrives as its own chunk event, about twenty a second, "
    "just as a real model's tokens would. "
)
#: the sentence the demo's one citation points at
_CITED = "Set OPENROUTER_API_KEY to talk to a real model through OpenRouter."

#: the source the demo cites (the inner object of its ``url_citation`` annotation,
#: without ``start_index``/``end_index``, which depend on the reply)
DEMO_CITATION: dict[str, str] = {
    "url": "https://openrouter.ai/docs/quickstart",
    "title": "OpenRouter Quickstart",
    "content": "OpenRouter provides a unified API that gives you access to hundreds of AI models.",
}


def _last_user_text(messages: list[dict[str, t.Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if isinstance(p, dict)]
            content = "\n".join(str(p) for p in parts if p)
        return str(content or "")
    return ""


def _quote(text: str) -> str:
    """The user's text as the reply quotes it: verbatim but for blank edges.

    Only leading and trailing blank lines go (they would merge with the reply's own
    paragraph breaks); indentation of the first line, inner line breaks and spaces
    stay. Very long texts are cut short, and a code fence left open (by the cut or
    by the user) is closed, so the rest of the reply is not swallowed into it.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"^(?:[ \t]*\n)+", "", text).rstrip()
    words = _WORDS.findall(text)
    if len(words) > MAX_QUOTED_WORDS:
        text = "".join(words[:MAX_QUOTED_WORDS]).rstrip() + " …"
    fence = _open_fence(text)
    if fence:
        text += "\n" + fence
    return text


def _open_fence(text: str) -> str:
    """The fence that opened a code block ``text`` leaves unclosed, or ``""``."""
    opened = ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        marks = match.group(1)
        if not opened:
            opened = marks
        elif marks[0] == opened[0] and len(marks) >= len(opened) and not line.strip()[len(marks) :]:
            opened = ""
    return opened


def demo_reply(messages: list[dict[str, t.Any]]) -> str:
    """The demo's answer to a conversation, as Markdown.

    :param messages: the conversation; the last user message is quoted, and its
        attachments named.
    """
    said = _quote(_last_user_text(messages))
    opening = f"{_INTRO}\n\n{said}\n\n" if said.strip() else f"{_NO_TEXT} "
    attached = attachments(messages)
    if attached:
        opening += "You attached " + _and(attached) + ".\n\n"
    return f"{opening}{_OUTRO}{_CITED}"


# --- attachments, images, tools --------------------------------------------------

_DATA_URL = re.compile(r"data:([\w.+/-]+);base64,")
#: a last user message asking for a picture
_DRAW = re.compile(
    r"\b(draw|paint|sketch)\b"
    r"|\b(generate|create|make|show|send|give)\b[^.?!\n]{0,40}\b(image|picture|illustration)s?\b",
    re.IGNORECASE,
)


def _last_user_parts(messages: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
    return []


def _size(data: str, start: int = 0) -> int:
    """Bytes that base64 ``data[start:]`` decodes to, without decoding it."""
    length = len(data) - start
    return length * 3 // 4 - (data.endswith("==") + data.endswith("="))


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _described(url: t.Any, what: str) -> str:
    if not isinstance(url, str):
        return what
    match = _DATA_URL.match(url)
    if match is not None:
        return f"{what} ({match.group(1)}, {_human(_size(url, match.end()))})"
    return f"{what} (linked, {url.split('?')[0][:60]})"


def attachments(messages: list[dict[str, t.Any]]) -> list[str]:
    """The attachments of the last user message, each named with its type and size
    (``an image (image/png, 12.0 KB)``).
    """
    found = []
    for part in _last_user_parts(messages):
        kind = part.get("type")
        if kind == "image_url":
            inner = part.get("image_url")
            found.append(
                _described(inner.get("url") if isinstance(inner, dict) else None, "an image")
            )
        elif kind == "file":
            inner = part.get("file")
            inner = inner if isinstance(inner, dict) else {}
            name = inner.get("filename")
            what = f'a file "{name}"' if isinstance(name, str) and name else "a file"
            found.append(_described(inner.get("file_data"), what))
        elif kind == "input_audio":
            inner = part.get("input_audio")
            inner = inner if isinstance(inner, dict) else {}
            data, fmt = inner.get("data"), inner.get("format")
            size = f", {_human(_size(data))}" if isinstance(data, str) else ""
            found.append(f"audio ({fmt if isinstance(fmt, str) else 'unknown format'}{size})")
    return found


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def wants_image(body: dict[str, t.Any]) -> bool:
    """Whether the request asks for an image: ``modalities`` contains ``"image"``,
    or the last user message asks to draw or for an image.
    """
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "image" in modalities:
        return True
    messages = body.get("messages")
    return bool(_DRAW.search(_last_user_text(messages if isinstance(messages, list) else [])))


def demo_png(seed: str, size: int = 64) -> bytes:
    """A small PNG drawn here: a diagonal gradient in colours chosen by ``seed``,
    with a disc in its middle. RGB, 8 bits, one IDAT: ``zlib`` and ``struct`` only.
    """
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    first, second, disc = digest[0:3], digest[3:6], digest[6:9]
    centre, radius = (size - 1) / 2, size / 4
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter: none
        for x in range(size):
            if (x - centre) ** 2 + (y - centre) ** 2 <= radius**2:
                rows += disc
                continue
            mix = (x + y) / (2 * (size - 1))
            rows += bytes(round(a + (b - a) * mix) for a, b in zip(first, second, strict=True))

    def block(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + block(b"IHDR", header)
        + block(b"IDAT", zlib.compress(bytes(rows), 9))
        + block(b"IEND", b"")
    )


def _example(schema: t.Any, text: str) -> t.Any:
    """A value that fits a JSON schema, as a model would fill it in."""
    if not isinstance(schema, dict):
        return text
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example(schema.get("items"), text)]
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {str(name): _example(inner, text) for name, inner in properties.items()}
    return text


def tool_arguments(tool: t.Any, messages: list[dict[str, t.Any]]) -> tuple[str, str]:
    """The first tool's name and the demo's arguments for it (JSON text): every
    property of its ``parameters`` filled in, strings with the user's words.
    """
    function = tool.get("function") if isinstance(tool, dict) else None
    function = function if isinstance(function, dict) else {}
    name = function.get("name")
    said = " ".join(_last_user_text(messages).split())[:80] or "demo"
    parameters = function.get("parameters")
    if not isinstance(parameters, dict) or not isinstance(parameters.get("properties"), dict):
        parameters = {"type": "object", "properties": {}}
    arguments = _example({**parameters, "type": "object"}, said)
    return (name if isinstance(name, str) and name else "tool"), json.dumps(
        arguments, ensure_ascii=False
    )


def demo_reasoning(messages: list[dict[str, t.Any]]) -> str:
    """What the demo "thinks" before it answers."""
    said = _last_user_text(messages)
    words = len(said.split())
    lines = len(said.strip().splitlines()) if said.strip() else 0
    return (
        f"The user sent {words} word{'s' * (words != 1)} on {lines} "
        f"line{'s' * (lines != 1)}. I will quote them back exactly, "
        "line breaks and all, then cite where to learn more."
    )


class _DemoStream:
    def __init__(self, chunks: t.Iterator[dict[str, t.Any]]) -> None:
        self._chunks = chunks

    def __iter__(self) -> t.Iterator[Chunk]:
        return (Chunk.from_value(value) for value in self._chunks)

    def close(self) -> None:
        return None


class DemoUpstream:
    """The built-in offline model.

    :param words_per_second: pace of the reasoning and of the reply.
    :param sleep: how to wait between words (``gevent.sleep``; tests pass a no-op).
    """

    name = "demo"

    def __init__(
        self,
        *,
        words_per_second: float = 20.0,
        sleep: t.Callable[[float], None] = gevent.sleep,
    ) -> None:
        self.delay = 1.0 / words_per_second
        self.sleep = sleep

    def stream_chat(self, body: dict[str, t.Any], *, referer: str | None) -> _DemoStream:
        return _DemoStream(self._chunks(body))

    def _chunks(self, body: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        tools = body.get("tools")
        reply = demo_reply(messages)
        base = {
            "id": f"gen-demo-{uuid.uuid4().hex[:20]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": DEMO_MODEL,
            "provider": "NGAI demo",
        }

        def chunk(delta: dict[str, t.Any], finish: str | None = None) -> dict[str, t.Any]:
            choice = {"index": 0, "delta": {"role": "assistant", **delta}, "finish_reason": finish}
            return {**base, "choices": [choice]}

        yield chunk({"content": ""})
        thoughts = _WORDS.findall(demo_reasoning(messages))
        for piece in thoughts:
            detail = {"type": "reasoning.text", "text": piece, "format": "unknown", "index": 0}
            yield chunk({"content": "", "reasoning": piece, "reasoning_details": [detail]})
            self.sleep(self.delay)

        if isinstance(tools, list) and tools:
            yield from self._tool_call(chunk, tools[0], messages)
            words: list[str] = []
            yield from self._usage(base, messages, words, thoughts)
            return

        words = _WORDS.findall(reply)
        cited_at = len(reply) - len(_CITED)
        citation = {**DEMO_CITATION, "start_index": cited_at, "end_index": len(reply)}
        for index, word in enumerate(words):
            if index:
                self.sleep(self.delay)
            delta: dict[str, t.Any] = {"content": word}
            if index == len(words) - 1:
                # the annotation comes with the last word of the sentence it supports
                delta["annotations"] = [{"type": "url_citation", "url_citation": citation}]
            yield chunk(delta)
        if wants_image(body):
            self.sleep(self.delay)
            url = "data:image/png;base64," + base64.b64encode(demo_png(reply)).decode("ascii")
            yield chunk(
                {"content": "", "images": [{"type": "image_url", "image_url": {"url": url}}]}
            )
        yield chunk({"content": ""}, "stop")
        yield from self._usage(base, messages, words, thoughts)

    def _tool_call(
        self,
        chunk: t.Callable[..., dict[str, t.Any]],
        tool: t.Any,
        messages: list[dict[str, t.Any]],
    ) -> t.Iterator[dict[str, t.Any]]:
        """The call of the first tool, its arguments in several fragments."""
        name, arguments = tool_arguments(tool, messages)
        call_id = f"call_demo_{uuid.uuid4().hex[:16]}"
        first = {"index": 0, "id": call_id, "type": "function",
                 "function": {"name": name, "arguments": ""}}  # fmt: skip
        yield chunk({"content": None, "tool_calls": [first]})
        step = max(1, -(-len(arguments) // 4))  # four fragments, or fewer for short ones
        for start in range(0, len(arguments), step):
            self.sleep(self.delay)
            piece = {"index": 0, "function": {"arguments": arguments[start : start + step]}}
            yield chunk({"content": None, "tool_calls": [piece]})
        yield chunk({"content": None}, "tool_calls")

    @staticmethod
    def _usage(
        base: dict[str, t.Any],
        messages: list[dict[str, t.Any]],
        words: list[str],
        thoughts: list[str],
    ) -> t.Iterator[dict[str, t.Any]]:
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(words) + len(thoughts)
        yield {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "cost": 0,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": len(thoughts)},
            },
        }

    def list_models(self) -> dict[str, t.Any]:
        return {
            "data": [
                {
                    "id": DEMO_MODEL,
                    "name": "NGAI demo (offline)",
                    "description": (
                        "Built in; thinks, quotes your message back, cites a source; "
                        "needs no API key."
                    ),
                    "context_length": 4096,
                    "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
                    "architecture": {
                        "input_modalities": ["text", "image", "file", "audio"],
                        "output_modalities": ["text", "image"],
                    },
                    "supported_parameters": ["reasoning", "include_reasoning", "tools"],
                }
            ]
        }

    def close(self) -> None:
        return None
