"""The OpenRouter client: the only module that imports ``requests`` and ``sseclient``.

One :class:`requests.Session` per client with a connection pool sized for the
stream concurrency; ``(connect, read)`` timeouts, where the read timeout is the
longest silence accepted from the upstream. The raw body is read with ``read1``
(whatever bytes have arrived, never waiting for a full buffer) and parsed by
``sseclient``, which joins bytes into whole lines before decoding, so multi-byte
characters split across network reads arrive whole. ``: OPENROUTER PROCESSING``
comments are dropped by the parser.

Every ``requests``/``urllib3`` error is translated into the error tree of
:mod:`ngai_chat.errors`, on connect and during iteration alike, and the API key is
scrubbed from anything the upstream says before it goes anywhere.
"""

from __future__ import annotations

import json
import logging
import typing as t

import requests
import sseclient
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from .. import errors
from . import Chunk

__all__ = ["OpenRouterUpstream", "error_from_response"]

log = logging.getLogger(__name__)

#: bytes asked of the socket per read; ``read1`` returns whatever is there
READ_SIZE = 65536
REDACTED = "[redacted]"

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


def _redact(value: t.Any, secret: str) -> t.Any:
    """``value`` with every occurrence of ``secret`` replaced, at any depth."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, dict):
        return {_redact(k, secret): _redact(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(item, secret) for item in value]
    return value


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
    upstream = _redact(upstream, secret)
    message = _redact(message, secret) if message else None
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
    """The chunks of one streaming response (see :class:`~ngai_chat.upstream.ChunkStream`)."""

    def __init__(self, response: requests.Response, secret: str) -> None:
        self._response = response
        self._secret = secret

    def _raw_reads(self) -> t.Iterator[bytes]:
        raw = self._response.raw
        while True:
            data = raw.read1(READ_SIZE)
            if not data:
                return
            yield data

    def __iter__(self) -> t.Iterator[Chunk]:
        try:
            for event in sseclient.SSEClient(self._raw_reads()).events():
                data = event.data
                if data == "[DONE]":
                    return
                if self._secret and self._secret in data:
                    data = data.replace(self._secret, REDACTED)
                try:
                    chunk = json.loads(data)
                except ValueError:
                    log.warning("skipping a data line from upstream that is not JSON")
                    continue
                if isinstance(chunk, dict):
                    yield Chunk(data, chunk)
        except UnicodeDecodeError as exc:
            raise errors.UpstreamStreamError(
                "The model provider sent bytes that are not UTF-8 text."
            ) from exc
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
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
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

    def __repr__(self) -> str:
        return f"OpenRouterUpstream(base_url={self.base_url!r})"

    def _translate(self, exc: requests.RequestException) -> errors.UpstreamError:
        if isinstance(exc, requests.ConnectTimeout | requests.ReadTimeout):
            return errors.UpstreamTimeout(
                "The model provider did not answer in time; try again shortly."
            )
        return errors.UpstreamUnavailable(
            f"Could not reach the model provider at {self.base_url}; try again shortly."
        )

    def stream_chat(self, body: dict[str, t.Any], *, referer: str | None) -> _Stream:
        """Start one streamed completion (see :class:`~ngai_chat.upstream.Upstream`)."""
        headers = {"Accept": "text/event-stream"}
        if referer:
            headers["HTTP-Referer"] = referer
        try:
            response = self.session.post(
                f"{self.base_url}/chat/completions",
                json={**body, "stream": True},
                headers=headers,
                stream=True,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise self._translate(exc) from None
        content_type = response.headers.get("Content-Type", "")
        if response.status_code != 200 or "text/event-stream" not in content_type:
            try:
                raise error_from_response(response, secret=self._api_key)
            finally:
                response.close()
        return _Stream(response, self._api_key)

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
        return t.cast(dict[str, t.Any], _redact(data, self._api_key))

    def close(self) -> None:
        self.session.close()
