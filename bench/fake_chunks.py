"""The one builder of OpenAI/OpenRouter ``chat.completion.chunk`` objects that the
test doubles (:mod:`bench.fake_upstream` over sockets,
:mod:`tests.support.scripted` in process) and the benchmark script answers with.

Shapes follow the recordings in ``tests/fixtures/openrouter/``: one choice with a
``delta``, then a finish chunk, then a usage chunk whose ``choices`` is empty.
"""

from __future__ import annotations

import base64
import itertools
import random
import time
import typing as t
from collections.abc import Mapping

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_USAGE",
    "data_url",
    "error_chunk",
    "image_chunk",
    "make_chunk",
    "new_generation_id",
    "tool_call_chunks",
    "usage_chunk",
]

#: the ``model`` of chunks made by the builders when none is given
DEFAULT_MODEL = "fake/model"
#: the usage chunk's ``usage`` when none is given
DEFAULT_USAGE: Mapping[str, t.Any] = {
    "prompt_tokens": 8,
    "completion_tokens": 5,
    "total_tokens": 13,
    "cost": 0,
}

_generation_ids = itertools.count(1)


def new_generation_id() -> str:
    """A fresh ``gen-fake-N`` id for the chunks of one generation."""
    return f"gen-fake-{next(_generation_ids)}"


def make_chunk(
    content: str | None = "",
    *,
    finish_reason: str | None = None,
    model: str = DEFAULT_MODEL,
    gen_id: str = "gen-fake-0",
    provider: str = "Fake",
    created: int | None = None,
    role: str | None = "assistant",
    **extra: t.Any,
) -> dict[str, t.Any]:
    """An OpenRouter ``chat.completion.chunk`` with one choice.

    :param content: the delta's ``content``; None leaves it out.
    :param role: the delta's ``role``; None leaves it out.
    :param extra: more top-level fields (``usage``, ``error``, …).
    """
    delta: dict[str, t.Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": gen_id,
        "provider": provider,
        "model": model,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": finish_reason,
                "native_finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        **extra,
    }


def usage_chunk(
    usage: Mapping[str, t.Any] = DEFAULT_USAGE,
    *,
    model: str = DEFAULT_MODEL,
    gen_id: str = "gen-fake-0",
    provider: str = "Fake",
) -> dict[str, t.Any]:
    """The last chunk of an OpenRouter stream: ``choices: []`` and the ``usage``."""
    chunk = make_chunk(model=model, gen_id=gen_id, provider=provider)
    chunk["choices"] = []
    chunk["usage"] = dict(usage)
    return chunk


def error_chunk(
    code: int = 502,
    message: str = "Provider returned error",
    *,
    metadata: Mapping[str, t.Any] | None = None,
    model: str = DEFAULT_MODEL,
    gen_id: str = "gen-fake-0",
) -> dict[str, t.Any]:
    """A mid-stream error as OpenRouter documents it: a top-level ``error`` and
    ``finish_reason: "error"`` (see fixture ``11-midstream-error-DOCS-EXAMPLE``)."""
    chunk = make_chunk("", finish_reason="error", model=model, gen_id=gen_id)
    del chunk["choices"][0]["native_finish_reason"], chunk["choices"][0]["logprobs"]
    chunk["error"] = {"code": code, "message": message}
    if metadata is not None:
        chunk["error"]["metadata"] = dict(metadata)
    return chunk


def data_url(size: int, media_type: str = "image/png", *, seed: int = 0) -> str:
    """A ``data:<media_type>;base64,…`` URL of about ``size`` characters, its
    payload random bytes (so that nothing on the way compresses it away).
    """
    prefix = f"data:{media_type};base64,"
    raw = random.Random(seed).randbytes(max(0, (size - len(prefix)) * 3 // 4))
    return prefix + base64.b64encode(raw).decode("ascii")


def image_chunk(
    *urls: str,
    content: str | None = "",
    model: str = DEFAULT_MODEL,
    gen_id: str = "gen-fake-0",
    **extra: t.Any,
) -> dict[str, t.Any]:
    """A chunk carrying generated images, as OpenRouter's image models send them:
    ``delta.images: [{"type": "image_url", "image_url": {"url"}}, …]``, one event
    of several MB each (see :func:`data_url`).
    """
    chunk = make_chunk(content, model=model, gen_id=gen_id, **extra)
    chunk["choices"][0]["delta"]["images"] = [
        {"type": "image_url", "image_url": {"url": url}} for url in urls
    ]
    return chunk


def tool_call_chunks(
    name: str,
    arguments: str,
    *,
    index: int = 0,
    call_id: str | None = None,
    pieces: int = 4,
    finish: bool = True,
    model: str = DEFAULT_MODEL,
    gen_id: str = "gen-fake-0",
) -> list[dict[str, t.Any]]:
    """The chunks of one streamed tool call: a first fragment with ``id``, ``type``
    and ``function.name`` (arguments ``""``), then ``arguments`` in ``pieces``
    fragments (cut anywhere, by characters), then, when ``finish``, a chunk with
    ``finish_reason: "tool_calls"``. Interleave the lists of several calls (with
    ``finish=False`` and distinct ``index``) for parallel calls.
    """
    call_id = call_id or f"call_fake_{index}"
    first = {"index": index, "id": call_id, "type": "function",
             "function": {"name": name, "arguments": ""}}  # fmt: skip
    fragments = [first]
    step = max(1, -(-len(arguments) // max(1, pieces)))
    for start in range(0, len(arguments), step):
        piece = arguments[start : start + step]
        fragments.append({"index": index, "function": {"arguments": piece}})
    chunks = []
    for fragment in fragments:
        chunk = make_chunk(None, model=model, gen_id=gen_id)
        chunk["choices"][0]["delta"]["tool_calls"] = [fragment]
        chunks.append(chunk)
    if finish:
        chunks.append(make_chunk(None, finish_reason="tool_calls", model=model, gen_id=gen_id))
    return chunks
