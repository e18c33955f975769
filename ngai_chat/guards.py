"""What a request must pass before it costs anything: tokens, rate, model policy."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import hmac
import math
import time
import typing as t

import gevent
from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

from .config import Settings
from .errors import ModelNotAllowed
from .errors import RateLimited
from .errors import StoreUnavailable
from .errors import Unauthorized
from .schema import ChatRequest

__all__ = [
    "RateLimitStatus",
    "RateLimiter",
    "check_model_allowed",
    "check_token",
    "client_key",
    "deadline",
    "model_allowed",
    "rate_limiter_for",
    "upstream_body",
]


def model_allowed(model: str, allowlist: tuple[str, ...]) -> bool:
    """Whether ``model`` matches one of the glob patterns (all allowed when empty)."""
    return not allowlist or any(fnmatch.fnmatchcase(model, pattern) for pattern in allowlist)


def check_model_allowed(model: str, allowlist: tuple[str, ...], field: str = "model") -> None:
    """:raises ModelNotAllowed: ``model`` is outside ``NGAI_MODEL_ALLOWLIST``."""
    if not model_allowed(model, allowlist):
        raise ModelNotAllowed(
            f"The model '{model}' is not allowed on this server. Allowed: "
            + ", ".join(allowlist)
            + ". GET /models lists them.",
            field=field,
        )


def upstream_body(chat: ChatRequest, settings: Settings) -> dict[str, t.Any]:
    """The body to send upstream for a valid request, with the server's policy
    applied: the default model, the allowlist (fallback models included), the
    system prompt, and the fallback models.

    :raises ModelNotAllowed: a model outside ``NGAI_MODEL_ALLOWLIST``.
    """
    model = chat.model or settings.effective_default_model
    allowlist = settings.effective_allowlist
    check_model_allowed(model, allowlist)
    for index, fallback in enumerate(chat.params.get("models", ())):
        check_model_allowed(fallback, allowlist, field=f"models[{index}]")
    messages = chat.messages
    if settings.system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": settings.system_prompt}, *messages]
    body: dict[str, t.Any] = {"model": model, "messages": messages, **chat.params}
    if settings.fallback_models and "models" not in body:
        body["models"] = list(settings.fallback_models)
    return body


def client_key(token: str | None, remote_addr: str | None) -> str:
    """Who a request comes from, for per-client limits and budgets: its bearer
    token when tokens are required (a digest, so that no token is stored), else
    the client's address (as ``ProxyFix`` sees it behind trusted proxies).
    """
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "ip:" + (remote_addr or "unknown")


def check_token(authorization: str | None, tokens: tuple[str, ...]) -> str | None:
    """The caller's bearer token when ``NGAI_API_TOKENS`` is set, else ``None``.

    :raises Unauthorized: tokens are required and none of them was sent.
    """
    if not tokens:
        return None
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        # compare against every token, in constant time, so timing tells nothing
        matches = [hmac.compare_digest(token.encode(), known.encode()) for known in tokens]
        if any(matches):
            return token
    raise Unauthorized(
        "This server requires an API token: send 'Authorization: Bearer <token>' "
        "with one of the tokens in its NGAI_API_TOKENS."
        if not authorization
        else "The bearer token is not valid for this server (NGAI_API_TOKENS)."
    )


@dataclasses.dataclass(frozen=True)
class RateLimitStatus:
    """One client's standing after a counted call: what the ``RateLimit-*``
    headers say (the window with the fewest calls left), and whether the call
    was refused.
    """

    #: calls allowed in the window described
    limit: int
    #: calls left in it
    remaining: int
    #: whole seconds until it resets
    reset: int
    #: seconds to wait when refused (the longest wait among the full windows),
    #: else ``None``
    retry_after: int | None = None
    #: the full windows, as ``NGAI_RATE_LIMIT`` spells them, for the message
    refused: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` headers."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }

    def check(self) -> None:
        """:raises RateLimited: the call was refused, with the real wait."""
        if self.retry_after is not None:
            raise RateLimited(
                f"Too many requests from this client: the limit of {' and '.join(self.refused)} "
                f"(NGAI_RATE_LIMIT) is used up. Try again in {self.retry_after} s.",
                retry_after=self.retry_after,
            )


class RateLimiter:
    """``NGAI_RATE_LIMIT`` per client, on the `limits` library: a moving window
    for each configured window (every one applies), kept in memory or in Redis
    with the sessions, so that every process sharing Redis shares the limit.

    :param windows: the parsed windows (``20/minute;500/day``).
    :param storage: the app's counters (:func:`~ngai_chat.counters.counter_storage`).
    :param clock: wall-clock source; only for the seconds in the headers, since
        `limits` reads ``time.time()`` itself.
    """

    def __init__(
        self,
        windows: t.Sequence[RateLimitItem],
        storage: Storage,
        *,
        clock: t.Callable[[], float] = time.time,
    ) -> None:
        self.windows = tuple(windows)
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._clock = clock

    def hit(self, key: str) -> RateLimitStatus:
        """Count one call for ``key`` in every window that has room.

        :return: the status to report; :meth:`RateLimitStatus.check` raises
            when a window was full.
        :raises StoreUnavailable: the Redis behind the limit failed.
        """
        try:
            stats = []
            for window in self.windows:
                allowed = self._limiter.hit(window, "prepare", key)
                stats.append(
                    (window, allowed, self._limiter.get_window_stats(window, "prepare", key))
                )
        except StorageError as exc:
            raise StoreUnavailable(
                "The rate limit store (Redis) is unreachable or failing; try again shortly."
            ) from exc
        now = self._clock()
        # the window with the fewest calls left; of equals, the one that frees last
        window, _, shown = min(stats, key=lambda item: (item[2].remaining, -item[2].reset_time))
        refused = [(w, s) for w, allowed, s in stats if not allowed]
        retry_after = (
            max(max(1, math.ceil(s.reset_time - now)) for _, s in refused) if refused else None
        )
        return RateLimitStatus(
            limit=window.amount,
            remaining=max(0, shown.remaining),
            reset=max(0, math.ceil(shown.reset_time - now)),
            retry_after=retry_after,
            refused=tuple(_spell(w) for w, _ in refused),
        )


def _spell(window: RateLimitItem) -> str:
    """``20 per 1 minute`` → ``20/minute``; ``5 per 10 second`` → ``5/10 seconds``."""
    name = window.GRANULARITY.name
    if window.multiples == 1:
        return f"{window.amount}/{name}"
    return f"{window.amount}/{window.multiples} {name}s"


def rate_limiter_for(settings: Settings, storage: Storage) -> RateLimiter | None:
    """The rate limiter for ``NGAI_RATE_LIMIT``, counting in ``storage`` (the
    app's counters, kept where the sessions are); ``None`` when no limit is set.
    """
    if settings.rate_limit is None:
        return None
    return RateLimiter(settings.rate_limit, storage)


def deadline(seconds: float) -> gevent.Timeout:
    """A context in which blocking I/O gives up after ``seconds`` in all, with
    :class:`TimeoutError`. It acts in a gevent worker (where a blocked read
    yields to the hub), and does nothing in a plain thread.
    """
    return gevent.Timeout(seconds, TimeoutError)
