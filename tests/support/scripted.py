"""An in-process :class:`~ngai_chat.upstream.Upstream` for unit tests of the views.

It hands the relay exactly the chunks (or errors) a test scripts, and counts the
requests, without any socket. Timing-sensitive behaviour is tested over real
sockets instead (``tests/test_live.py``).
"""

from __future__ import annotations

import json
import typing as t

import gevent
import gevent.event

from bench.fake_chunks import make_chunk
from ngai_chat import errors
from ngai_chat.generation import Generation
from ngai_chat.generation import Writer
from ngai_chat.metrics import Metrics
from ngai_chat.store import SessionInfo
from ngai_chat.store import Store
from ngai_chat.upstream import Chunk

__all__ = ["ScriptedUpstream", "chunk", "generation", "text_stream"]


def chunk(content: str | None = None, *, finish: str | None = None, **extra: t.Any) -> dict:
    """An OpenAI ``chat.completion.chunk`` with one choice (no role in its delta),
    from :func:`bench.fake_chunks.make_chunk` with this module's id and model.
    """
    model = extra.pop("model", "test/model")
    return make_chunk(
        content, finish_reason=finish, model=model, gen_id="gen-test", role=None, **extra
    )


def text_stream(*pieces: str, finish: str = "stop", usage: dict | None = None) -> list:
    """The steps of a normal answer: the pieces, a finish chunk, a usage chunk."""
    steps: list = [chunk(piece) for piece in pieces]
    steps.append(chunk("", finish=finish))
    steps.append({"id": "gen-test", "choices": [], "usage": usage or {"total_tokens": 3}})
    return steps


class _Stream:
    def __init__(self, steps: list, upstream: ScriptedUpstream) -> None:
        self.steps = steps
        self.upstream = upstream
        self.closed = False

    def __iter__(self) -> t.Iterator[Chunk]:
        for step in self.steps:
            if isinstance(step, BaseException):
                raise step
            if isinstance(step, int | float):
                gevent.sleep(step)
                continue
            if isinstance(step, gevent.event.Event):  # a gate the test opens
                step.wait()
                continue
            if isinstance(step, str):  # raw JSON text, passed as received
                yield Chunk(step, json.loads(step))
                continue
            yield Chunk.from_value(step)

    def close(self) -> None:
        self.closed = True
        self.upstream.closed += 1


class ScriptedUpstream:
    """Answers every request with ``steps``: chunk dicts, raw JSON strings,
    numbers (seconds to pause), gates (a :class:`gevent.event.Event` waited on) and
    exceptions (raised where they stand).

    :param refuse: raised by ``stream_chat`` itself (an upstream HTTP error).
    """

    name = "openrouter"

    def __init__(
        self,
        steps: list | None = None,
        *,
        refuse: errors.ApiError | None = None,
        models: dict | errors.ApiError | None = None,
    ) -> None:
        self.steps = steps if steps is not None else text_stream("Hello", " world")
        self.refuse = refuse
        self.models = models if models is not None else {"data": []}
        self.requests: list[tuple[dict, str | None]] = []
        self.closed = 0
        self.model_calls = 0

    def stream_chat(self, body: dict, *, referer: str | None) -> _Stream:
        self.requests.append((body, referer))
        if self.refuse is not None:
            raise self.refuse
        return _Stream(list(self.steps), self)

    def list_models(self) -> dict:
        self.model_calls += 1
        if isinstance(self.models, errors.ApiError):
            raise self.models
        return self.models

    def close(self) -> None:
        return None


def generation(
    store: Store, session: SessionInfo, upstream: ScriptedUpstream, writer: Writer | None = None
) -> Generation:
    """A generation of ``session`` (claimed) on ``upstream``, as the relay makes
    one, not started: ``gevent.spawn(generation.run)`` runs it."""
    return Generation(
        session,
        store=store,
        upstream=upstream,
        max_events=100_000,
        max_log_bytes=100_000_000,
        metrics=Metrics(),
        spawn=gevent.spawn,
        on_end=lambda _: None,
        writer=writer,
    )
