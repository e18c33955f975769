"""The OpenRouter client: the only module that imports ``requests``.

One :class:`requests.Session` per client with a connection pool sized for the
stream concurrency; ``(connect, read)`` timeouts, where the read timeout is the
longest silence accepted from the upstream. The body is read as it arrives, one
network read (up to 64 KiB, whatever is there) at a time, its chunked framing
taken off by :class:`_Body`, and split into events at the bytes level by
:mod:`ngai_chat.chunks`, which decodes only whole events, so multi-byte
characters split across network reads arrive whole. ``: OPENROUTER PROCESSING``
comments are dropped there. After ``[DONE]`` the body is read to its end, so the
connection is reused by the next session rather than closed.

While the upstream is silent, a stream holds only what it must: the connection,
:class:`_Body` with a 1 KiB read buffer (``http.client``'s is 8 KiB) and
urllib3's response; the ``requests`` response, its request, header dicts and
cookie jar, and ``http.client``'s parse of the headers, are let go once the
status and the content type are checked.

Every ``requests``/``urllib3`` error is translated into the error tree of
:mod:`ngai_chat.errors`, on connect and during iteration alike, and the API key is
scrubbed from anything the upstream says before it goes anywhere.
"""

from __future__ import annotations

import http.client
import json
import logging
import typing as t

import gevent
import orjson
import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from .. import errors
from ..chunks import EventSplitter
from ..chunks import parse_chunk
from ..chunks import redact
from ..log import redact_url
from . import Chunk

__all__ = ["OpenRouterUpstream", "error_from_response"]

log = logging.getLogger(__name__)

#: the most bytes taken from the body at once (an HTTP chunk may be larger)
READ_SIZE = 65536
#: seconds to wait for the body's end after ``[DONE]``
DRAIN_GRACE = 1.0
#: bytes of the read buffer under the status line and headers (then the body is
#: read past it, straight into each block)
HEAD_BUFFER = 1024
#: the longest chunk-size line accepted (hex size and extensions)
MAX_SIZE_LINE = 4096

_STATUS_ERRORS: dict[int, type[errors.UpstreamError]] = {
    400: errors.UpstreamBadRequest,
    401: errors.UpstreamUnauthorized,
    402: errors.InsufficientCredits,
    403: errors.ContentBlocked,
    404: errors.UpstreamBadRequest,
    408: errors.UpstreamTimeout,
    413: errors.UpstreamBadRequest,
    422: errors.UpstreamBadRequest,
    429: errors.UpstreamRateLimited,
}


def _json_bytes(value: t.Any) -> bytes:
    """The request body: orjson, or the standard library for what orjson refuses
    (a lone surrogate from a client's ``"\\ud800"`` escape, a huge integer).
    """
    try:
        # copied to its own size: the response keeps its request (and so this
        # body) while the answer streams, and orjson's buffer is sized for growth
        # (4 KiB for a short conversation)
        return memoryview(orjson.dumps(value)).tobytes()
    except TypeError:
        return json.dumps(value).encode()


def error_for_status(status: int) -> type[errors.UpstreamError]:
    """The error class for an upstream HTTP status (or an error object's code)."""
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    if 400 <= status < 500:
        return errors.UpstreamBadRequest
    return errors.UpstreamUnavailable


def error_from_body(
    status: int, text: str, *, secret: str = "", retry_after: int | None = None
) -> errors.UpstreamError:
    """Map an upstream error answer (status and body text) to SPEC §4.

    :param status: the HTTP status, or the ``code`` of an error object.
    :param text: the body; OpenRouter sends ``{"error": {"code", "message", "metadata"}}``.
    :param secret: the API key, scrubbed from whatever is kept.
    """
    cls = error_for_status(status)
    upstream: t.Any = None
    message: str | None = None
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict | str):
        upstream = parsed["error"] if isinstance(parsed["error"], dict) else parsed
        raw_message = upstream.get("message") if isinstance(upstream, dict) else parsed["error"]
        if isinstance(raw_message, str) and raw_message.strip():
            message = raw_message
    elif text.lstrip()[:1] == "<":
        message = (
            f"The model provider answered with an HTML error page (HTTP {status}) instead of "
            "a stream; it is probably down or overloaded. Try again shortly."
        )
    if secret:
        upstream = redact(upstream, secret)[0]
        message = redact(message, secret)[0] if message else None
    return cls(message, upstream=upstream, retry_after=retry_after)


def error_from_response(response: t.Any, *, secret: str = "") -> errors.UpstreamError:
    """Map a non-streaming upstream answer to SPEC §4 (reads at most 64 KiB).

    :param response: urllib3's response (``requests.Response.raw``).
    """
    try:
        text = response.read(READ_SIZE, decode_content=True).decode("utf-8", "replace")
    except (
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
    ):
        text = ""
    retry_after = None
    header = response.headers.get("Retry-After", "")
    if header.isdigit():
        retry_after = int(header)
    status = response.status
    if status < 400:  # 200 with a JSON error object, or an HTML page
        code = None
        try:
            body = json.loads(text)
            code = body["error"].get("code") if isinstance(body.get("error"), dict) else None
        except (ValueError, AttributeError, TypeError):
            pass
        status = code if isinstance(code, int) and code >= 400 else 502
    return error_from_body(status, text, secret=secret, retry_after=retry_after)


class BadChunk(http.client.HTTPException):
    """The body's chunked framing is broken."""


class _Body(http.client.HTTPResponse):
    """``http.client``'s response, with a small buffer under the head and the body
    read a network read at a time (:meth:`read_block`).

    urllib3 reads a chunked body one HTTP chunk per call, a few calls each, and
    OpenRouter sends one event per HTTP chunk; here one ``recv`` takes whatever
    the socket has (up to :data:`READ_SIZE`) and the chunks' framing is taken off
    in one pass over it. ``recv`` waits for the socket before it takes a buffer
    (``read1`` would hold a 64 KiB one through the silence).
    """

    def __init__(self, sock: t.Any, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:  # fmt: skip
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # the 8 KiB one, not used yet; this releases its hold on the socket
        self.fp = sock.makefile("rb", HEAD_BUFFER)
        self._sock = sock
        #: the buffer may hold the body's first bytes, read with the head
        self._buffered = True
        #: the body was read to its end: the connection can serve another request
        self.complete = False
        #: in a chunked body: the bytes of the current chunk still to come and its
        #: CRLF; 0 before a size line; -1 in the trailers after the last chunk
        self._left = 0
        #: a size or trailer line split across reads
        self._rest = b""

    def forget_head(self) -> None:
        """Drop the parsed headers (urllib3 copied them; an open stream needs none)."""
        self.headers = self.msg = None  # type: ignore[assignment]

    def _read(self, limit: int) -> bytes:
        if not self._buffered:
            return self._sock.recv(limit)  # type: ignore[no-any-return]
        # first what the head's buffer holds (all of it: it is at most HEAD_BUFFER)
        self._buffered = False
        fp = self.fp
        data = fp.read1(min(limit, HEAD_BUFFER))
        if not self.will_close:
            # then the buffer goes (http.client counts the response closed without
            # it, and urllib3 closes the connection itself); when the connection
            # closes with the response, http.client handed the socket to this file
            self.fp = None  # type: ignore[assignment]
            fp.close()
        return data

    def read_block(self) -> bytes:
        """The body's next bytes, as soon as a network read brings some; ``b""``
        at its end.

        :raises BadChunk: the chunked framing is broken.
        :raises http.client.IncompleteRead: the connection closed before the end.
        :raises TimeoutError: the socket's (read) timeout passed.
        """
        if self.complete:
            return b""
        if self.chunked:
            while True:
                data = self._read(READ_SIZE)
                if not data:
                    raise http.client.IncompleteRead(b"")
                payload = self._dechunk(data)
                if payload or self.complete:
                    return payload
        if self.length is None:  # ended by closing
            data = self._read(READ_SIZE)
            if not data:
                self._finish()
            return data
        if self.length <= 0:
            self._finish()
            return b""
        data = self._read(min(READ_SIZE, self.length))
        if not data:
            raise http.client.IncompleteRead(b"", self.length)
        self.length -= len(data)
        if self.length <= 0:
            self._finish()
        return data

    def _finish(self) -> None:
        self.complete = True
        if self.fp is not None:
            self._close_conn()  # type: ignore[attr-defined]

    def _dechunk(self, data: bytes) -> bytes:
        """The payload in ``data``, a piece of a chunked body (RFC 9112 §7.1)."""
        if self._rest:
            data, self._rest = self._rest + data, b""
        payload: list[bytes] = []
        left, pos, end = self._left, 0, len(data)
        find = data.find
        while pos < end:
            if left > 2:  # the chunk's data
                take = left - 2
                if take > end - pos:
                    take = end - pos
                payload.append(data[pos : pos + take])
                pos += take
                left -= take
                if left != 2 or not data.startswith(b"\r\n", pos):
                    continue
                pos += 2  # the usual case: its CRLF follows in the same read
                left = 0
            elif left > 0:  # the CRLF that ends the chunk's data
                take = min(left, end - pos)
                if data[pos : pos + take] != b"\r\n"[2 - left : 2 - left + take]:
                    raise BadChunk("a chunk's data did not end with CRLF")
                pos += take
                left -= take
                continue
            # a size line, or a trailer line (left == -1)
            eol = find(b"\n", pos)
            if eol < 0:
                if end - pos > MAX_SIZE_LINE:
                    raise BadChunk("a chunk-size line is too long")
                self._rest = data[pos:]
                break
            line = data[pos:eol]
            pos = eol + 1
            if left < 0:
                if line in (b"", b"\r"):  # the blank line that ends the body
                    self._finish()
                    break
                continue
            left = _chunk_size(line) + 2
            if left == 2:  # the last chunk: trailers follow
                left = -1
        self._left = left
        return payload[0] if len(payload) == 1 else b"".join(payload)


def _chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (hex digits, then maybe ``;extensions``)."""
    if len(line) <= 18:  # the usual line: hex digits alone (and the CR before its LF)
        try:
            size = int(line, 16)
        except ValueError:
            pass
        else:
            if size >= 0:
                return size
    field = line.partition(b";")[0].strip()
    try:
        size = int(field, 16)
    except ValueError:
        size = -1
    if size < 0 or not field.isalnum() or len(line) > MAX_SIZE_LINE:
        raise BadChunk(f"not a chunk size: {line[:40]!r}")
    return size


class _BodyOnConnection:
    """Keeps the connection's last :class:`_Body`, where the stream finds it."""

    body: _Body | None = None

    def response_class(self, sock: t.Any, method: str | None = None) -> _Body:
        # http.client makes its response with ``self.response_class(sock, method=...)``
        self.body = _Body(sock, method=method)
        return self.body


class _Connection(_BodyOnConnection, urllib3.connection.HTTPConnection):  # type: ignore[misc]
    pass


class _HTTPSConnection(_BodyOnConnection, urllib3.connection.HTTPSConnection):  # type: ignore[misc]
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _Connection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Stream:
    """The chunks of one streaming response (see :class:`~ngai_chat.upstream.ChunkStream`).

    The body comes a network read at a time from :meth:`_Body.read_block` (or
    from urllib3, a whole HTTP chunk at a time, for a response that did not come
    through :class:`_Connection`, as in tests that mock ``requests``), and is
    split into events by :class:`~ngai_chat.chunks.EventSplitter` a block at a
    time.

    :param raw: urllib3's response; nothing of ``requests`` is kept.
    :param max_event_bytes: the longest upstream event accepted.
    """

    def __init__(self, raw: t.Any, secret: str, max_event_bytes: int) -> None:
        self._raw = raw
        connection = raw.connection
        self._body: _Body | None = getattr(connection, "body", None)
        if self._body is not None:
            self._body.forget_head()
            # the status and content type are checked: the header strings can go
            raw.headers = urllib3.HTTPHeaderDict()
        self._secret = secret
        self._splitter = EventSplitter(max_event_bytes)

    def _reader(self) -> t.Callable[[], bytes]:
        if self._body is not None:
            return self._body.read_block
        raw = self._raw
        if raw.chunked and raw.supports_chunked_reads():
            chunks = raw.read_chunked(READ_SIZE, decode_content=True)
            return lambda: next(chunks, b"")
        return lambda: raw.read1(READ_SIZE)

    def __iter__(self) -> t.Iterator[Chunk]:
        splitter, secret = self._splitter, self._secret
        try:
            read = self._reader()
            while block := read():
                for data in splitter.feed(block):
                    if data == b"[DONE]":
                        self._drain(read)
                        return
                    chunk = parse_chunk(data, secret)
                    if chunk is not None:
                        yield chunk
                # nothing of the last block is held while the upstream is silent
                block = data = b""
                chunk = None
            for data in splitter.finish():
                if data == b"[DONE]":
                    return
                chunk = parse_chunk(data, secret)
                if chunk is not None:
                    yield chunk
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise errors.UpstreamTimeout(
                "The model provider went silent longer than the read timeout "
                "(NGAI_UPSTREAM_READ_TIMEOUT)."
            ) from exc
        except (
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            requests.RequestException,
            OSError,
        ) as exc:
            raise errors.UpstreamInterrupted(
                "The connection to the model provider broke in the middle of the answer."
            ) from exc
        raise errors.UpstreamInterrupted(
            "The model provider closed the stream before finishing the answer."
        )

    @staticmethod
    def _drain(read: t.Callable[[], bytes]) -> None:
        """Read what follows ``[DONE]`` (normally just the body's end, already on its
        way), so that the connection goes back to the pool for the next session
        instead of being closed; a server that keeps it open gets a short grace.
        """
        with gevent.Timeout(DRAIN_GRACE, False):
            while read():
                pass

    def close(self) -> None:
        raw = self._raw
        if self._body is None or not self._body.complete:
            raw.close()  # the connection too, unless released: the upstream stops generating
        raw.release_conn()  # back to the pool (a closed one reconnects when next used)


class OpenRouterUpstream:
    """Chat completions from OpenRouter or any OpenAI-compatible server.

    :param api_key: the bearer key; never logged or returned.
    :param base_url: e.g. ``https://openrouter.ai/api/v1``.
    :param title: sent as ``X-OpenRouter-Title`` and ``X-Title``.
    :param connect_timeout: seconds to establish the connection.
    :param read_timeout: longest silence accepted from the upstream.
    :param pool_size: connections kept open to the upstream; match the number of
        concurrent streams, or requests opens and drops a connection per stream.
    :param max_event_bytes: the longest upstream SSE event accepted
        (``NGAI_MAX_EVENT_BYTES``).
    """

    name = "openrouter"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        title: str,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        pool_size: int = 100,
        max_event_bytes: int = 16_777_216,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_event_bytes = max_event_bytes
        self.session = requests.Session()
        # ``trust_env`` would let a stray HTTP(S)_PROXY or .netrc change where the
        # key goes; the upstream is configured explicitly instead.
        self.session.trust_env = False
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        # connections whose responses read their body a network read at a time
        adapter.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "X-OpenRouter-Title": title,
                "X-Title": title,
                "Accept-Encoding": "identity",
            }
        )
        # A completion goes straight to the adapter, its request built here once
        # and for all: ``Session.request`` would merge settings, cookies and hooks
        # (and keep the upstream's cookies) anew for every session.
        self._adapter = adapter
        self._chat_url = f"{self.base_url}/chat/completions"
        self._chat_headers: dict[str, str] = {
            **{name: str(value) for name, value in self.session.headers.items()},
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
        }

    def __repr__(self) -> str:
        return f"OpenRouterUpstream(base_url={redact_url(self.base_url)!r})"

    def _translate(self, exc: requests.RequestException) -> errors.UpstreamError:
        if isinstance(exc, requests.ConnectTimeout | requests.ReadTimeout):
            return errors.UpstreamTimeout(
                "The model provider did not answer in time; try again shortly."
            )
        # what failed, by kind only (an exception's text may quote the URL)
        causes: list[str] = []
        cause = exc.__cause__ or exc.__context__
        while cause is not None and len(causes) < 4:
            causes.append(type(cause).__name__)
            cause = cause.__cause__ or cause.__context__
        log.warning("could not reach the upstream: %s", " <- ".join([type(exc).__name__, *causes]))
        return errors.UpstreamUnavailable(
            f"Could not reach the model provider at {redact_url(self.base_url)}; try again shortly."
        )

    def stream_chat(self, body: dict[str, t.Any], *, referer: str | None) -> _Stream:
        """Start one streamed completion (see :class:`~ngai_chat.upstream.Upstream`)."""
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = self._chat_url
        request.headers = CaseInsensitiveDict(self._chat_headers)
        if referer:
            request.headers["HTTP-Referer"] = referer
        request.body = _json_bytes({**body, "stream": True})
        request.headers["Content-Length"] = str(len(request.body))
        try:
            response = self._adapter.send(request, stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise self._translate(exc) from None

        content_type = response.headers.get("Content-Type", "")
        if response.status_code != 200 or "text/event-stream" not in content_type:
            try:
                raise error_from_response(response.raw, secret=self._api_key)
            finally:
                response.close()
        return _Stream(response.raw, self._api_key, self.max_event_bytes)

    def list_models(self) -> dict[str, t.Any]:
        """The upstream's ``GET /models`` answer."""
        try:
            response = self.session.get(
                f"{self.base_url}/models", timeout=(self.timeout[0], 30), stream=True
            )
        except requests.RequestException as exc:
            raise self._translate(exc) from None
        with response:
            if response.status_code != 200:
                raise error_from_response(response.raw, secret=self._api_key)
            try:
                data = response.json()
            except (ValueError, requests.RequestException):
                data = None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise errors.UpstreamUnavailable(
                'The model provider\'s model list was not the expected {"data": [...]}.'
            )
        return t.cast(dict[str, t.Any], redact(data, self._api_key)[0])

    def close(self) -> None:
        self.session.close()
