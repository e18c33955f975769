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

Every chunk has the same ``id`` (``gen-demo-…``), as OpenRouter's generation id.
"""

from __future__ import annotations

import re
import time
import typing as t
import uuid

import gevent

from ..config import DEMO_MODEL
from . import Chunk

__all__ = ["DEMO_CITATION", "DEMO_MODEL", "DemoUpstream", "demo_reasoning", "demo_reply"]

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

    :param messages: the conversation; the last user message is quoted.
    """
    said = _quote(_last_user_text(messages))
    opening = f"{_INTRO}\n\n{said}\n\n" if said.strip() else f"{_NO_TEXT} "
    return f"{opening}{_OUTRO}{_CITED}"


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
        return _DemoStream(self._chunks(body.get("messages", [])))

    def _chunks(self, messages: list[dict[str, t.Any]]) -> t.Iterator[dict[str, t.Any]]:
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
        yield chunk({"content": ""}, "stop")

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
                    "supported_parameters": ["reasoning", "include_reasoning"],
                }
            ]
        }

    def close(self) -> None:
        return None
