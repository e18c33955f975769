"""What the orchestrator asks of the load generator, and what it gets back.

Plain dataclasses that travel as JSON lines between the two processes (the load
generator runs gevent; the orchestrator does not import it).
"""

from __future__ import annotations

import dataclasses
import typing as t

__all__ = [
    "MESSAGES",
    "UI_MESSAGES",
    "FanoutJob",
    "IdleJob",
    "Job",
    "PrepareJob",
    "Record",
    "SessionsJob",
    "Target",
    "WaveJob",
    "job_from_json",
]


#: the conversation every benchmark session sends
MESSAGES = [{"role": "user", "content": "benchmark"}]
#: the same conversation as the AI SDK sends it to ``POST /chat``
UI_MESSAGES = [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "benchmark"}]}]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where streams come from.

    ``relay``: ``POST {prefix}/prepare``, then ``GET`` its ``streamUrl`` on the app.
    ``direct``: ``POST {path}`` with ``stream: true`` straight to the fake upstream,
    the baseline without the relay.
    ``get``: ``GET {path}?model=<model>``, one request through a pass-through proxy
    that turns it into the upstream's ``POST`` (nginx, :mod:`bench.baselines`).
    ``chat``: ``POST {path}/chat`` on the app, the AI SDK door: one request whose
    answer is the UI message stream (:data:`UI_MESSAGES`).
    ``completion``: ``POST {path}`` without ``stream``, an OpenAI ``chat.completion``
    answered whole (its "first chunk" is the whole answer): the OpenAI doors.
    """

    kind: t.Literal["relay", "direct", "get", "chat", "completion"]
    port: int
    path: str = ""


@dataclasses.dataclass(frozen=True)
class SessionsJob:
    """``concurrency`` clients, each streaming one session after another until
    ``duration`` seconds have passed or ``max_sessions`` were started in all.
    The steady rate is counted from ``warmup`` seconds on."""

    target: Target
    model: str
    concurrency: int
    duration: float
    max_sessions: int
    session_timeout: float
    warmup: float = 0.0
    kind: t.Literal["sessions"] = "sessions"


@dataclasses.dataclass(frozen=True)
class FanoutJob:
    """``repeats`` times: one session, ``readers`` clients reading it at once."""

    target: Target
    model: str
    readers: int
    repeats: int
    session_timeout: float
    kind: t.Literal["fanout"] = "fanout"


@dataclasses.dataclass(frozen=True)
class IdleJob:
    """Open idle connections in ``steps``; after each step report ``ready`` and wait
    for a line on stdin; close everything after the last one.

    A step is ``("stream", n)``: n sessions whose streams are open and silent, or
    ``("bare", n)``: n connections that sent half a request head and wait (what
    any idle connection costs the server, the baseline of an idle stream).
    """

    target: Target
    model: str
    steps: tuple[tuple[str, int], ...]
    concurrency: int
    step_timeout: float
    hold_timeout: float
    kind: t.Literal["idle"] = "idle"


@dataclasses.dataclass(frozen=True)
class PrepareJob:
    """``probes`` sequential ``POST /prepare``, then ``fill`` more, ``concurrency``
    at a time, then ``probes`` sequential ones again: the latency of creating a
    session in an empty store, and in one that holds ``fill`` sessions."""

    target: Target
    model: str
    probes: int
    fill: int
    concurrency: int
    timeout: float
    kind: t.Literal["prepare"] = "prepare"


@dataclasses.dataclass(frozen=True)
class WaveJob:
    """``sessions`` sessions, ``concurrency`` at a time: each client starts its next
    session when one ends (``concurrency`` 1: one after another). The first
    ``concurrency`` starts are spread evenly over ``ramp`` seconds, so that a
    thousand connections do not arrive in the same millisecond.

    Every chunk that carries the fake's send time (:data:`bench.httpclient.STAMP`)
    adds its latency: arrival at the client minus that time.
    """

    target: Target
    model: str
    sessions: int
    concurrency: int
    ramp: float
    session_timeout: float
    kind: t.Literal["wave"] = "wave"


Job = SessionsJob | FanoutJob | IdleJob | PrepareJob | WaveJob


@dataclasses.dataclass
class Record:
    """One stream as a client saw it; times in seconds.

    ``ttfb``/``ttfc``/``total`` count from the stream request (``GET /stream`` on
    the relay, ``POST /chat/completions`` direct), ``prepare`` is the relay's
    ``POST /prepare`` before it.
    """

    #: seconds since the job started, when the session began
    started: float = 0.0
    prepare: float | None = None
    #: first byte of the stream response
    ttfb: float | None = None
    #: first data frame (the upstream's first chunk)
    ttfc: float | None = None
    #: terminal frame
    total: float | None = None
    #: data frames received, the terminal one included
    events: int = 0
    #: the first data frame, counted from the session's first request (its
    #: ``POST /prepare`` on a two-step relay): what a user waits
    first_chunk: float | None = None
    error: str | None = None


def job_from_json(data: dict[str, t.Any]) -> Job:
    """The job encoded by ``dataclasses.asdict``."""
    fields = dict(data)
    fields["target"] = Target(**fields["target"])
    kind = fields.pop("kind")
    if kind == "sessions":
        return SessionsJob(**fields)
    if kind == "fanout":
        return FanoutJob(**fields)
    if kind == "prepare":
        return PrepareJob(**fields)
    if kind == "wave":
        return WaveJob(**fields)
    if kind == "idle":
        fields["steps"] = tuple((kind, int(count)) for kind, count in fields["steps"])
        return IdleJob(**fields)
    raise ValueError(f"unknown job kind {kind!r}")
