"""The offline demo model ``ngai/demo``: no key, no network, the same events.

It answers with a reply built from the last user message, one word per chunk at
about twenty words a second, then a finish chunk and a usage chunk shaped like
OpenRouter's, so a frontend built against the demo works unchanged against a
real model.
"""

from __future__ import annotations

import re
import time
import typing as t
import uuid

import gevent

from ..config import DEMO_MODEL
from . import Chunk

__all__ = ["DEMO_MODEL", "DemoUpstream"]

_WORDS = re.compile(r"\S+\s*")


def _last_user_text(messages: list[dict[str, t.Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content or "").strip()
    return ""


def demo_reply(messages: list[dict[str, t.Any]]) -> str:
    """The demo's answer to a conversation."""
    said = " ".join(_last_user_text(messages).split())
    words = said.split(" ")
    if len(words) > 40:
        said = " ".join(words[:40]) + " …"
    opening = f"You said: “{said}”. " if said else "You sent no text. "
    return (
        f"{opening}This is the NGAI demo model answering offline, without an API key. "
        "Each word you see arrives as its own chunk event, about twenty a second, "
        "just as a real model's tokens would. Set OPENROUTER_API_KEY to talk to a "
        "real model through OpenRouter."
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

    :param words_per_second: pace of the reply.
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
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "choices": [choice]}

        yield chunk({"role": "assistant", "content": ""})
        words = _WORDS.findall(reply)
        for index, word in enumerate(words):
            if index:
                self.sleep(self.delay)
            yield chunk({"role": "assistant", "content": word})
        yield chunk({"role": "assistant", "content": ""}, "stop")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        yield {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": prompt_tokens + len(words),
                "cost": 0,
            },
        }

    def list_models(self) -> dict[str, t.Any]:
        return {
            "data": [
                {
                    "id": DEMO_MODEL,
                    "name": "NGAI demo (offline)",
                    "description": "Built in; streams a canned reply; needs no API key.",
                    "context_length": 4096,
                    "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
                }
            ]
        }

    def close(self) -> None:
        return None
