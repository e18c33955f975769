"""The one builder of OpenAI/OpenRouter ``chat.completion.chunk`` objects that the
test doubles (:mod:`bench.fake_upstream` over sockets,
:mod:`tests.support.scripted` in process) and the benchmark script answers with.

Shapes follow the recordings in ``tests/fixtures/openrouter/``: one choice with a
``delta``, then a finish chunk, then a usage chunk whose ``choices`` is empty.
"""

from __future__ import annotations

import itertools
import time
import typing as t
from collections.abc import Mapping

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_USAGE",
    "error_chunk",
    "make_chunk",
    "new_generation_id",
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
