"""The OpenRouter client: the only module that imports ``requests``.

One :class:`requests.Session` per client with a connection pool sized for the
stream concurrency; ``(connect, read)`` timeouts, where the read timeout is the
longest silence accepted from the upstream. The body is read a whole HTTP chunk
at a time (never waiting for a full buffer) and split into events at the bytes
level by :mod:`ngai_chat.chunks`, which decodes only whole events, so multi-byte
characters split across network reads arrive whole. ``: OPENROUTER PROCESSING``
comments are dropped there. After ``[DONE]`` the body is read to its end, so the
connection is reused by the next session rather than closed.

Every ``requests``/``urllib3`` error is translated into the error tree of
:mod:`ngai_chat.errors`, on connect and during iteration alike, and the API key is
scrubbed from anything the upstream says before it goes anywhere.
"""

from __future__ import annotations

import json
import logging
import typing as t

import gevent
import orjson
import requests
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


def error_from_response(response: requests.Response, *, secret: str = "") -> errors.UpstreamError:
    """Map a non-streaming upstream answer to SPEC §4 (reads at most 64 KiB)."""
    try:
        text = response.raw.read(READ_SIZE, decode_content=True).decode("utf-8", "replace")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        text = ""
    retry_after = None
    header = response.headers.get("Retry-After", "")
    if header.isdigit():
        retry_after = int(header)
    status = response.status_code
    if status < 400:  # 200 with a JSON error object, or an HTML page
        code = None
        try:
            body = json.loads(text)
            code = body["error"].get("code") if isinstance(body.get("error"), dict) else None
        except (ValueError, AttributeError, TypeError):
            pass
        status = code if isinstance(code, int) and code >= 400 else 502
    return error_from_body(status, text, secret=secret, retry_after=retry_after)


class _Stream:
    """The chunks of one streaming response (see :class:`~ngai_chat.upstream.ChunkStream`).

    The body is read a whole HTTP chunk (up to 64 KiB) at a time through urllib3's
    public ``read_chunked``, and split into events by
    :class:`~ngai_chat.chunks.EventSplitter` one block at a time.

    :param max_event_bytes: the longest upstream event accepted.
    """

    def __init__(self, response: requests.Response, secret: str, max_event_bytes: int) -> None:
        self._response = response
        self._secret = secret
        self._splitter = EventSplitter(max_event_bytes)

    def _blocks(self) -> t.Iterator[bytes]:
        raw = self._response.raw
        if raw.chunked and raw.supports_chunked_reads():
            # urllib3's own generator, iterated directly: one resume per block
            return t.cast(t.Iterator[bytes], raw.read_chunked(READ_SIZE, decode_content=True))
        return self._reads(raw)

    @staticmethod
    def _reads(raw: t.Any) -> t.Iterator[bytes]:
        while True:  # a body with a Content-Length, or ended by closing
            data = raw.read1(READ_SIZE)
            if not data:
                return
            yield data

    def __iter__(self) -> t.Iterator[Chunk]:
        splitter, secret = self._splitter, self._secret
        try:
            blocks = self._blocks()
            for block in blocks:
                for data in splitter.feed(block):
                    if data == b"[DONE]":
                        self._drain(blocks)
                        return
                    chunk = parse_chunk(data, secret)
                    if chunk is not None:
                        yield chunk
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
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise errors.UpstreamInterrupted(
                "The connection to the model provider broke in the middle of the answer."
            ) from exc
        raise errors.UpstreamInterrupted(
            "The model provider closed the stream before finishing the answer."
        )

    @staticmethod
    def _drain(blocks: t.Iterator[bytes]) -> None:
        """Read what follows ``[DONE]`` (normally just the body's end, already on its
        way), so that the connection goes back to the pool for the next session
        instead of being closed; a server that keeps it open gets a short grace.
        """
        with gevent.Timeout(DRAIN_GRACE, False):
            for _ in blocks:
                pass

    def close(self) -> None:
        self._response.close()


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
                raise error_from_response(response, secret=self._api_key)
            finally:
                response.close()
        return _Stream(response, self._api_key, self.max_event_bytes)

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
                raise error_from_response(response, secret=self._api_key)
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
