"""A fake OpenAI-compatible upstream (an OpenRouter stand-in) on a real local socket.

The relay is tested over real TCP without the internet: point ``OPENROUTER_BASE_URL``
at :attr:`FakeUpstream.base_url` and it answers ``POST {base_url}/chat/completions``
and ``GET {base_url}/models`` the way OpenRouter does, byte by byte, at the pace a
test chooses. Standard library only, one daemon thread per connection (hundreds of
concurrent streams are fine), no gevent: the test process is not monkey-patched.

::

    with FakeUpstream() as fake:
        fake.script("slow/model", [Comment(), Pause(0.5), *text_chunks(["Hel", "lo"])])
        ...  # the relay POSTs {"model": "slow/model", ...} to fake.base_url
        request = fake.wait_for_request("slow/model")
        assert request.headers["Authorization"] == "Bearer sk-test"

What a ``POST .../chat/completions`` gets depends on the body's ``model``, first match:

1. a script registered with :meth:`FakeUpstream.script` for that exact name;
2. ``fixture:<name>``: the bytes of ``<fixtures dir>/<name>.sse`` replayed exactly, one
   write per event, or, for ``<name>.json``, that body with the status of its
   ``error.code``;
3. ``echo``: the last user message streamed back word by word (each word keeps the
   whitespace after it), then a finish chunk, a usage chunk and ``[DONE]``;
4. ``bench/<n>`` or ``bench/<n>/<words per second>``: ``n`` content chunks ``"w1 "``,
   ``"w2 "``, ... then finish, usage and ``[DONE]``, as fast as possible unless the
   name gives a pace (the benchmark's models);
5. otherwise ``400 {"error": {"code": 400, "message": "<model> is not a valid model ID"}}``.

A script is a list of steps, played in order; a callable taking the
:class:`Recorded` request and returning steps is a script too. Step kinds:

- :class:`Comment` -- an SSE comment, ``: OPENROUTER PROCESSING\\n\\n`` by default;
- :class:`Chunk` -- ``data: <json>\\n\\n`` (compact JSON, UTF-8 unescaped); a plain
  ``dict`` in a script means the same;
- :class:`Done` -- ``data: [DONE]\\n\\n``;
- :class:`Raw` -- bytes as they are; plain ``bytes`` in a script mean the same;
- :class:`Trickle` -- bytes in tiny separate TCP writes (one byte each by default),
  so that multi-byte UTF-8 characters straddle the reader's network reads;
- :class:`Pause` -- silence for N seconds, watching for the client closing;
- :class:`Hang` -- silence until the client closes (or the fake stops);
- :class:`Abort` -- close the connection mid-body (EOF, or a TCP reset);
- :class:`Begin` -- send the stream's status line and headers now (they otherwise go
  out with the first bytes written);
- :class:`Respond` -- a whole non-stream response (status, body, content type, extra
  headers such as ``Retry-After``) instead of a stream; it must come before anything
  is written, and ends the script. Builders: :func:`error_response` (OpenRouter's
  JSON error body), :func:`html_error` (a proxy's HTML page), :func:`fixture_response`.

Nothing goes out until a step writes, so a leading :class:`Pause` or :class:`Hang`
is silence before the status line. Streams are ``200 text/event-stream`` with
``Transfer-Encoding: chunked`` (OpenRouter behind Cloudflare), one HTTP chunk per
write. Every response says
``Connection: close``: one request per connection, so a request's connection closing
means exactly one thing. A script that runs out of steps ends its body properly.

Every pause watches the socket with ``poll()`` instead of sleeping, and every step
first checks it, so a client that closes is seen within milliseconds:
:attr:`Recorded.client_closed` and :attr:`Recorded.closed_at` say when, and the script
stops. A failed write counts as the client closing too. That is what lets tests hold
the relay to "the upstream connection is closed within 1 s of DELETE"
(:meth:`FakeUpstream.wait_closed`).

The chunks come from the one builder, :mod:`bench.fake_chunks` (re-exported
here: :func:`make_chunk`, :func:`usage_chunk`, :func:`error_chunk`, and for what
today's models send, :func:`image_chunk` with :func:`data_url` for generated images
of several MB and :func:`tool_call_chunks` for tool calls in fragments; a big event
can go out in blocks with ``Trickle(data, size=65536, interval=0)``);
:func:`text_chunks` makes the steps of a whole normal stream, and
:func:`fixture_steps` replays a recorded fixture inside a script. The benchmark
(``bench/``) serves its upstream with this class too.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import http
import json
import logging
import os
import re
import select
import socket
import socketserver
import struct
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from email.utils import formatdate
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

from bench.fake_chunks import DEFAULT_MODEL
from bench.fake_chunks import DEFAULT_USAGE
from bench.fake_chunks import data_url
from bench.fake_chunks import error_chunk
from bench.fake_chunks import image_chunk
from bench.fake_chunks import make_chunk
from bench.fake_chunks import new_generation_id
from bench.fake_chunks import tool_call_chunks
from bench.fake_chunks import usage_chunk

__all__ = [
    "DEFAULT_FIXTURES_DIR",
    "DEFAULT_MODELS",
    "DEFAULT_USAGE",
    "Abort",
    "Begin",
    "Chunk",
    "ClientGone",
    "Comment",
    "Connection",
    "Done",
    "FakeUpstream",
    "Hang",
    "Pause",
    "Raw",
    "Recorded",
    "Respond",
    "ScriptError",
    "Step",
    "Trickle",
    "as_step",
    "data_url",
    "echo_steps",
    "error_chunk",
    "error_response",
    "fixture_path",
    "fixture_response",
    "fixture_steps",
    "fixtures_dir",
    "html_error",
    "image_chunk",
    "make_chunk",
    "new_generation_id",
    "text_chunks",
    "tool_call_chunks",
    "usage_chunk",
]

log = logging.getLogger(__name__)

#: the recorded OpenRouter responses kept in the repository (copied, unedited, from
#: the project's shared fixtures; see their SOURCES.md); ``NGAI_FIXTURES_DIR`` overrides
DEFAULT_FIXTURES_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "openrouter"

_FREE = {"prompt": "0", "completion": "0", "request": "0", "image": "0"}

#: ``GET /models`` by default: free models, paid ones and a router priced ``"-1"``
DEFAULT_MODELS: Mapping[str, t.Any] = {
    "data": [
        {
            "id": "mistralai/mistral-7b-instruct:free",
            "name": "Mistral: Mistral 7B Instruct (free)",
            "created": 1716768000,
            "description": "A high-performing, industry-standard 7.3B parameter model.",
            "context_length": 32768,
            "architecture": {"modality": "text->text", "tokenizer": "Mistral"},
            "pricing": _FREE,
            "top_provider": {"context_length": 32768, "is_moderated": False},
        },
        {
            "id": "meta-llama/llama-3.3-70b-instruct:free",
            "name": "Meta: Llama 3.3 70B Instruct (free)",
            "created": 1733506137,
            "description": "A multilingual 70B instruction-tuned model.",
            "context_length": 131072,
            "architecture": {"modality": "text->text", "tokenizer": "Llama3"},
            "pricing": _FREE,
            "top_provider": {"context_length": 131072, "is_moderated": False},
        },
        {
            "id": "openai/gpt-4o",
            "name": "OpenAI: GPT-4o",
            "created": 1715558400,
            "description": "GPT-4o, OpenAI's multimodal flagship.",
            "context_length": 128000,
            "architecture": {"modality": "text+image->text", "tokenizer": "GPT"},
            "pricing": {"prompt": "0.0000025", "completion": "0.00001", "request": "0"},
            "top_provider": {"context_length": 128000, "is_moderated": True},
        },
        {
            "id": "anthropic/claude-3.7-sonnet",
            "name": "Anthropic: Claude 3.7 Sonnet",
            "created": 1740422110,
            "description": "Claude 3.7 Sonnet, with hybrid reasoning.",
            "context_length": 200000,
            "architecture": {"modality": "text+image->text", "tokenizer": "Claude"},
            "pricing": {"prompt": "0.000003", "completion": "0.000015", "request": "0"},
            "top_provider": {"context_length": 200000, "is_moderated": False},
        },
        {
            "id": "openrouter/auto",
            "name": "Auto Router",
            "created": 1699401600,
            "description": "Your prompt is routed to one of several models.",
            "context_length": 2000000,
            "architecture": {"modality": "text+image->text", "tokenizer": "Router"},
            "pricing": {"prompt": "-1", "completion": "-1"},
            "top_provider": {"context_length": None, "is_moderated": False},
        },
    ]
}

#: the defaults of :func:`error_response`, worded like OpenRouter's
_ERROR_MESSAGES = {
    400: "Invalid request",
    401: "No auth credentials found",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    403: "Input was flagged by moderation",
    408: "Request timed out",
    429: "Rate limit exceeded: free-models-per-min.",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No available model provider that meets your routing requirements",
}

_STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
}

_BENCH_MODEL = re.compile(r"bench/(\d+)(?:/(\d+(?:\.\d+)?))?")
#: a word and the whitespace after it, or leading whitespace: they join back exactly
_WORDS = re.compile(r"\S+\s*|\s+")
#: how often :meth:`FakeUpstream.wait_for` re-checks a predicate that no request moved
_POLL_INTERVAL = 0.05


# -- the request log ---------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Recorded:
    """One request the fake received, and when its connection closed.

    The closing fields are set by the connection's thread; read them through
    :meth:`FakeUpstream.wait_for` or :meth:`FakeUpstream.wait_closed`.
    """

    method: str
    #: the path with its query string, as sent (``/api/v1/chat/completions``)
    path: str
    #: case-insensitive, as sent
    headers: HTTPMessage
    #: the parsed JSON body, None when there was no body or it was not JSON
    json: t.Any
    body: bytes = dataclasses.field(repr=False)
    #: ``time.monotonic()`` when the request's head had been read
    started_at: float
    #: monotonic time the connection ended: the client closed it, or the fake finished
    closed_at: float | None = None
    #: True when the client closed the connection before the fake was done with it
    client_closed: bool = False

    @property
    def model(self) -> str | None:
        """The body's ``model``, when it is a string."""
        model = self.json.get("model") if isinstance(self.json, dict) else None
        return model if isinstance(model, str) else None

    @property
    def closed(self) -> bool:
        """The connection has ended, whoever ended it."""
        return self.closed_at is not None


# -- the connection, as steps see it ------------------------------------------------


class ClientGone(Exception):
    """The client closed the connection: a read saw EOF or a reset, or a write failed."""

    def __init__(self, at: float) -> None:
        super().__init__(f"the client closed the connection (monotonic {at:.3f})")
        #: ``time.monotonic()`` when the fake noticed
        self.at = at


class ScriptError(Exception):
    """A script asked for something impossible, such as a :class:`Respond` mid-stream."""


class Connection:
    """One client connection as the steps see it.

    Every write goes out at once, in one ``sendall`` (``TCP_NODELAY`` is set). Every
    wait watches the socket, so a client that closes raises :class:`ClientGone`,
    which ends the script.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        #: the status line and headers are out
        self.head_sent = False
        #: the script must stop: the response is complete, or was aborted
        self.ended = False
        #: close with a TCP reset rather than a FIN
        self.reset = False

    def begin(self, headers: Mapping[str, str] | None = None) -> None:
        """Send the head of a chunked ``200 text/event-stream`` response.

        :param headers: extra headers; they replace defaults of the same name.
        :raises ScriptError: the head was already sent.
        """
        if self.head_sent:
            raise ScriptError("the response head was already sent")
        self._send(_head(200, _STREAM_HEADERS, {"Transfer-Encoding": "chunked"}, headers or {}))
        self.head_sent = True

    def write(self, data: bytes) -> None:
        """Send body bytes now, as one HTTP chunk, after the head if needed."""
        if not self.head_sent:
            self.begin()
        if not data:
            return  # an empty HTTP chunk would end the body
        self._send(b"%x\r\n%s\r\n" % (len(data), data))

    def respond(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        """Send a whole response with a ``Content-Length``, and end the script.

        :raises ScriptError: part of another response was already sent.
        """
        if self.head_sent:
            raise ScriptError("Respond must come before anything else is written")
        self._send(_head(status, {"Content-Length": str(len(body))}, headers) + body)
        self.head_sent = self.ended = True

    def finish(self) -> None:
        """End the stream properly: the script ran out of steps."""
        if not self.head_sent:
            self.begin()
        self._send(b"0\r\n\r\n")
        self.ended = True

    def abort(self, *, reset: bool = False) -> None:
        """End the script here; the connection closes without finishing the body."""
        self.ended = True
        self.reset = reset

    def wait(self, seconds: float | None) -> None:
        """Stay silent for ``seconds`` (None: until the client closes).

        :raises ClientGone: the client closed the connection meanwhile.
        """
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poller.poll(None if remaining is None else remaining * 1000):
                return
            self._drain()

    def check(self) -> None:
        """Raise :class:`ClientGone` if the client has already closed."""
        self.wait(0)

    def _drain(self) -> None:
        """Read what made the socket readable: EOF or an error means the client left."""
        try:
            data = self._sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            raise ClientGone(time.monotonic()) from None
        if not data:
            raise ClientGone(time.monotonic())
        # Anything else the client sends after its request is ignored.

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError:
            raise ClientGone(time.monotonic()) from None


def _head(status: int, *layers: Mapping[str, str]) -> bytes:
    """A response's status line and headers; later layers replace earlier names."""
    defaults = {"Date": formatdate(usegmt=True), "Server": "fake-upstream"}
    merged: dict[str, tuple[str, str]] = {}
    for layer in (defaults, *layers, {"Connection": "close"}):
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines += [f"{name}: {value}" for name, value in merged.values()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- steps -------------------------------------------------------------------------


class Step(t.Protocol):
    """A script step: anything with ``play(conn)``, so tests can add their own."""

    def play(self, conn: Connection) -> None: ...


#: what a script may list: steps, ``dict`` (a :class:`Chunk`) or ``bytes`` (:class:`Raw`)
StepLike: t.TypeAlias = "Step | Mapping[str, t.Any] | bytes"
#: steps, or a callable that makes them from the request
ScriptSource: t.TypeAlias = "Iterable[StepLike] | Callable[[Recorded], Iterable[StepLike]]"


@dataclasses.dataclass(frozen=True)
class Comment:
    """An SSE comment line and a blank line: ``: OPENROUTER PROCESSING\\n\\n``."""

    text: str = "OPENROUTER PROCESSING"

    def play(self, conn: Connection) -> None:
        conn.write(f": {self.text}\n\n".encode())


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A data event: ``data: <compact JSON>\\n\\n``, non-ASCII left as UTF-8."""

    data: Mapping[str, t.Any]

    def play(self, conn: Connection) -> None:
        conn.write(b"data: " + _dumps(self.data) + b"\n\n")


@dataclasses.dataclass(frozen=True)
class Done:
    """The end-of-stream sentinel: ``data: [DONE]\\n\\n``."""

    def play(self, conn: Connection) -> None:
        conn.write(b"data: [DONE]\n\n")


@dataclasses.dataclass(frozen=True)
class Raw:
    """Bytes as they are, in one write (a ``str`` is encoded as UTF-8)."""

    data: bytes | str

    def play(self, conn: Connection) -> None:
        conn.write(_as_bytes(self.data))


@dataclasses.dataclass(frozen=True)
class Trickle:
    """Bytes in tiny separate writes, ``size`` bytes each, ``interval`` seconds apart.

    Each write is flushed on its own (one HTTP chunk when chunked), so a character
    of several UTF-8 bytes arrives split across the reader's network reads.
    """

    data: bytes | str
    size: int = 1
    interval: float = 0.002

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"Trickle size must be at least 1 byte, not {self.size}")

    def play(self, conn: Connection) -> None:
        data = _as_bytes(self.data)
        for offset in range(0, len(data), self.size):
            if offset:
                conn.wait(self.interval)
            conn.write(data[offset : offset + self.size])


@dataclasses.dataclass(frozen=True)
class Pause:
    """Silence for ``seconds``; a client closing meanwhile ends the script at once."""

    seconds: float

    def play(self, conn: Connection) -> None:
        conn.wait(self.seconds)


@dataclasses.dataclass(frozen=True)
class Hang:
    """Silence until the client closes the connection (or the fake stops)."""

    def play(self, conn: Connection) -> None:
        conn.wait(None)


@dataclasses.dataclass(frozen=True)
class Abort:
    """Close the connection without finishing the body: EOF, or a TCP reset."""

    reset: bool = False

    def play(self, conn: Connection) -> None:
        conn.abort(reset=self.reset)


@dataclasses.dataclass(frozen=True)
class Begin:
    """Send the stream's ``200`` status line and headers now, with ``headers`` added
    (so that what follows, a :class:`Raw` body for instance, is all body).
    """

    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def play(self, conn: Connection) -> None:
        conn.begin(self.headers)


@dataclasses.dataclass(frozen=True)
class Respond:
    """A whole non-stream response instead of a stream; ends the script."""

    status: int
    body: bytes | str = b""
    content_type: str = "application/json"
    #: extra headers, such as ``{"Retry-After": "7"}``
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def play(self, conn: Connection) -> None:
        conn.respond(
            self.status, _as_bytes(self.body), {"Content-Type": self.content_type, **self.headers}
        )


def as_step(item: StepLike) -> Step:
    """The step ``item`` stands for: a ``dict`` is a :class:`Chunk`, ``bytes`` :class:`Raw`.

    :raises TypeError: ``item`` is none of these.
    """
    if isinstance(item, bytes | bytearray):
        return Raw(bytes(item))
    if isinstance(item, Mapping):
        return Chunk(item)
    if callable(getattr(item, "play", None)):
        return item
    raise TypeError(f"not a script step: {item!r}")


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _dumps(value: t.Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# -- builders ----------------------------------------------------------------------


def text_chunks(
    text_pieces: Iterable[str],
    model: str = DEFAULT_MODEL,
    finish_reason: str | None = "stop",
    usage: Mapping[str, t.Any] | None = DEFAULT_USAGE,
    *,
    interval: float = 0.0,
    done: bool = True,
) -> list[Step]:
    """The steps of a normal stream: a role chunk (empty content), one chunk per piece,
    a finish chunk, a usage chunk with ``choices: []`` and ``[DONE]``.

    :param finish_reason: None leaves the finish chunk out.
    :param usage: None leaves the usage chunk out.
    :param interval: seconds of :class:`Pause` between content chunks.
    :param done: False leaves ``[DONE]`` out.
    """
    return list(_iter_text_chunks(text_pieces, model, finish_reason, usage, interval, done))


def _iter_text_chunks(
    text_pieces: Iterable[str],
    model: str,
    finish_reason: str | None,
    usage: Mapping[str, t.Any] | None,
    interval: float,
    done: bool,
) -> Iterator[Step]:
    gen_id = new_generation_id()
    yield Chunk(make_chunk("", model=model, gen_id=gen_id))
    for index, piece in enumerate(text_pieces):
        if index and interval:
            yield Pause(interval)
        yield Chunk(make_chunk(piece, model=model, gen_id=gen_id))
    if finish_reason is not None:
        yield Chunk(make_chunk("", finish_reason=finish_reason, model=model, gen_id=gen_id))
    if usage is not None:
        yield Chunk(usage_chunk(usage, model=model, gen_id=gen_id))
    if done:
        yield Done()


def error_response(
    status: int,
    message: str | None = None,
    *,
    metadata: Mapping[str, t.Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Respond:
    """OpenRouter's error response: ``{"error": {"code", "message", "metadata"?}}``.

    :param message: defaults to an OpenRouter-like message for the status.
    :param headers: extra headers, such as ``{"Retry-After": "20"}``.
    """
    if message is None:
        message = _ERROR_MESSAGES.get(status) or _reason(status)
    error: dict[str, t.Any] = {"code": status, "message": message}
    if metadata is not None:
        error["metadata"] = dict(metadata)
    return Respond(status, _dumps({"error": error}), headers=dict(headers or {}))


def html_error(status: int = 502, *, headers: Mapping[str, str] | None = None) -> Respond:
    """The HTML page a proxy in front of the upstream answers with (Cloudflare's style)."""
    title = f"{status} {_reason(status)}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Respond(status, page, "text/html; charset=UTF-8", dict(headers or {}))


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def fixtures_dir() -> Path:
    """The recorded OpenRouter responses: ``$NGAI_FIXTURES_DIR``, else the repository's."""
    return Path(os.environ.get("NGAI_FIXTURES_DIR") or DEFAULT_FIXTURES_DIR)


def fixture_path(name: str, suffix: str = ".sse") -> Path:
    """The file of fixture ``name`` (with or without its suffix).

    :raises FileNotFoundError: there is no such fixture.
    """
    path = fixtures_dir() / (name if name.endswith((".sse", ".json")) else name + suffix)
    if not path.is_file():
        raise FileNotFoundError(f"no fixture {path.name} in {path.parent}")
    return path


def fixture_steps(name: str) -> list[Step]:
    """Steps replaying the bytes of ``<name>.sse`` exactly, one write per event."""
    data = fixture_path(name, ".sse").read_bytes()
    return [Raw(event) for event in re.split(rb"(?<=\n\n)", data) if event]


def fixture_response(name: str, status: int | None = None) -> Respond:
    """A :class:`Respond` with the bytes of ``<name>.json``.

    :param status: defaults to the body's ``error.code``.
    """
    body = fixture_path(name, ".json").read_bytes()
    if status is None:
        status = int(json.loads(body)["error"]["code"])
    return Respond(status, body)


def echo_steps(request: Recorded) -> Iterator[Step]:
    """The ``echo`` model: the last user message back word by word, then finish, usage
    and ``[DONE]``. Words keep the whitespace after them, so the text joins back exactly.
    """
    words = _WORDS.findall(_last_user_text(request.json))
    usage = {
        "prompt_tokens": len(words),
        "completion_tokens": len(words),
        "total_tokens": 2 * len(words),
        "cost": 0,
    }
    model = request.model or DEFAULT_MODEL
    return _iter_text_chunks(words, model, "stop", usage, 0.0, True)


def _last_user_text(body: t.Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            return "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        return content if isinstance(content, str) else ""
    return ""


# -- the server --------------------------------------------------------------------


class FakeUpstream:
    """An OpenRouter stand-in on ``127.0.0.1``; see the module docstring.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. The public
    attributes may be changed at any time, also while it runs.

    :param port: 0 picks a free port.
    :param host: the address to bind.
    :param record: keep every request in :attr:`requests` (the benchmark turns it off).
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", record: bool = True) -> None:
        self.host = host
        self._requested_port = port
        #: keep every request in :attr:`requests`
        self.record = record
        self._scripts: dict[str, ScriptSource] = {}
        self._requests: list[Recorded] = []
        #: notified whenever a request arrives or a connection closes
        self._changed = threading.Condition()
        self._version = 0
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: the body of ``GET /models``
        self.models: dict[str, t.Any] = copy.deepcopy(dict(DEFAULT_MODELS))

    # -- lifecycle --

    def start(self) -> FakeUpstream:
        """Listen and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the fake upstream is already running")
        self._stopping = False
        self._server = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-upstream:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, end every open connection, and wait for them to close."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.shutdown()
        if self._thread is not None:
            self._thread.join()
        # Waking every open connection ends its script: waits and writes fail at once.
        server.interrupt_connections()
        if not server.wait_idle(timeout):
            log.warning("fake upstream: connections still open after %.1f s", timeout)
        server.server_close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake upstream is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``"""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``OPENROUTER_BASE_URL`` should be: ``http://127.0.0.1:<port>/api/v1``."""
        return f"{self.url}/api/v1"

    # -- scripting --

    def script(self, model: str, steps: ScriptSource) -> None:
        """Answer chat requests for ``model`` with ``steps``, every time.

        :param steps: steps, or a callable taking the :class:`Recorded` request and
            returning steps.
        :raises TypeError: an item of ``steps`` is not a step.
        """
        if not callable(steps):
            steps = tuple(as_step(item) for item in steps)
        self._scripts[model] = steps

    def echo(self, request: Recorded) -> Iterator[Step]:
        """The ``echo`` script, to answer other models with: ``fake.script(m, fake.echo)``."""
        return echo_steps(request)

    # -- the request log --

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, oldest first (a copy)."""
        with self._changed:
            return list(self._requests)

    def chat_requests(self, model: str | None = None) -> list[Recorded]:
        """The ``POST .../chat/completions`` requests, for ``model`` if given."""
        return [
            request
            for request in self.requests
            if request.method == "POST"
            and _route_path(request.path).endswith("/chat/completions")
            and (model is None or request.model == model)
        ]

    def wait_for(
        self, predicate: Callable[[], _T], timeout: float = 5.0, message: str | None = None
    ) -> _T:
        """Wait until ``predicate()`` is truthy, and return its value.

        It is re-checked whenever a request arrives or a connection closes, and at
        least every 50 ms.

        :raises AssertionError: ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._version
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                what = message or getattr(predicate, "__qualname__", repr(predicate))
                raise AssertionError(f"fake upstream: timed out after {timeout:g} s: {what}")
            with self._changed:
                if self._version == seen:
                    self._changed.wait(min(remaining, _POLL_INTERVAL))

    def wait_for_request(self, model: str | None = None, timeout: float = 5.0) -> Recorded:
        """The first chat request (for ``model`` if given), once it has arrived.

        :raises AssertionError: none came within ``timeout`` seconds.
        """
        what = f"a chat request for model {model!r}" if model else "a chat request"
        return self.wait_for(lambda: self.chat_requests(model), timeout, what)[0]

    def wait_closed(self, request: Recorded, timeout: float = 5.0) -> float:
        """Wait until the client has closed ``request``'s connection; return when it did.

        :returns: the ``time.monotonic()`` at which the fake saw the close.
        :raises AssertionError: it did not happen within ``timeout`` seconds, or the
            fake ended the response itself before the client closed.
        """
        what = f"the client closing {request.method} {request.path} (model {request.model!r})"
        self.wait_for(lambda: request.closed, timeout, what)
        if request.closed_at is None or not request.client_closed:
            raise AssertionError(
                f"fake upstream: the response to {request.method} {request.path} "
                f"(model {request.model!r}) ended before the client closed it"
            )
        return request.closed_at

    # -- serving (called on connection threads) --

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()

    def _add(self, request: Recorded) -> None:
        with self._changed:
            if self.record:
                self._requests.append(request)
            self._bump()

    def _mark_closed(self, request: Recorded, at: float, *, by_client: bool) -> None:
        with self._changed:
            if request.closed_at is None:
                request.closed_at = at
                request.client_closed = by_client
                self._bump()

    def _serve(self, handler: _Handler, request: Recorded) -> None:
        """Play the script chosen for ``request`` on its connection."""
        self._add(request)
        log.info("%s %s model=%s", request.method, request.path, request.model)
        conn = Connection(handler.connection)
        try:
            for item in self._route(request):
                conn.check()
                as_step(item).play(conn)
                if conn.ended:
                    break
            else:
                conn.finish()
        except ClientGone as gone:
            # When stopping, the fake closed the connection itself.
            self._mark_closed(request, gone.at, by_client=not self._stopping)
        except Exception as exc:
            log.exception("fake upstream: the script for %s failed", request.path)
            if not conn.head_sent:
                message = f"fake upstream: the script failed: {exc!r}"
                with contextlib.suppress(ClientGone):
                    conn.respond(500, _dumps({"error": {"code": 500, "message": message}}), {})
        if conn.reset:
            handler.server.reset_on_close(handler.connection)
        self._mark_closed(request, time.monotonic(), by_client=False)

    def _route(self, request: Recorded) -> Iterable[StepLike]:
        """The steps that answer ``request``."""
        path = _route_path(request.path)
        if request.method == "GET" and path.endswith("/models"):
            return [Respond(200, _dumps(self.models))]
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return [error_response(404, f"Not Found: {request.method} {path}")]
        if not isinstance(request.json, dict):
            return [error_response(400, "The request body is not a JSON object")]
        model = request.model
        if model is None:
            return [error_response(400, "No model given")]
        if model in self._scripts:
            source = self._scripts[model]
            return source(request) if callable(source) else source
        if model.startswith("fixture:"):
            return self._fixture(model.removeprefix("fixture:"))
        if model == "echo":
            return self.echo(request)
        if bench := _BENCH_MODEL.fullmatch(model):
            return self._bench(model, int(bench[1]), float(bench[2] or 0))
        return [error_response(400, f"{model} is not a valid model ID")]

    def _bench(self, model: str, count: int, words_per_second: float) -> Iterator[Step]:
        """``bench/<n>[/<words per second>]``: ``n`` chunks ``"w1 "``, ``"w2 "``, ..."""
        words = (f"w{n} " for n in range(1, count + 1))
        usage = {"prompt_tokens": 1, "completion_tokens": count, "total_tokens": count + 1}
        interval = 1 / words_per_second if words_per_second else 0.0
        return _iter_text_chunks(words, model, "stop", usage, interval, True)

    def _fixture(self, name: str) -> list[StepLike]:
        try:
            return list(fixture_steps(name))
        except FileNotFoundError:
            pass
        try:
            return [fixture_response(name)]
        except FileNotFoundError:
            return [error_response(400, f"fixture:{name} is not a valid model ID: no such file")]


_T = t.TypeVar("_T")


def _route_path(path: str) -> str:
    return path.split("?", 1)[0]


class _Server(ThreadingHTTPServer):
    """A thread per connection, and a register of open connections for :meth:`stop`."""

    daemon_threads = True
    #: the benchmark opens hundreds of connections at once
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeUpstream) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._to_reset: set[socket.socket] = set()
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host name up (getfqdn): no DNS here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: t.Any, client_address: t.Any) -> None:
        with self._idle:
            self._open.add(request)
        super().process_request(request, client_address)

    def reset_on_close(self, sock: socket.socket) -> None:
        with self._idle:
            self._to_reset.add(sock)

    def shutdown_request(self, request: t.Any) -> None:
        with self._idle:
            self._open.discard(request)
            reset = request in self._to_reset
            self._to_reset.discard(request)
            self._idle.notify_all()
        if reset:
            # A zero linger time makes close() send a RST instead of a FIN.
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def interrupt_connections(self) -> None:
        """Shut every open connection down: its reads see EOF and its writes fail."""
        with self._idle:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._open, timeout)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request (every response says ``Connection: close``) and hands it on."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        # Every write must leave at once, however small: no Nagle delay.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def do_GET(self) -> None:
        started_at = time.monotonic()
        try:
            body = self._read_body()
        except ValueError as exc:
            self.send_error(400, f"Bad request body: {exc}")
            return
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = Recorded(
            method=self.command,
            path=self.path,
            headers=self.headers,
            json=parsed,
            body=body,
            started_at=started_at,
        )
        self.server.fake._serve(self, request)

    do_POST = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        """The request body, by ``Content-Length`` (what requests sends).

        :raises ValueError: the length is malformed.
        """
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: t.Any) -> None:
        log.debug("fake upstream: " + format, *args)
