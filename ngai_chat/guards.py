"""What a request must pass before it costs anything: tokens, rate, model policy."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import math
import typing as t

from .config import Settings
from .errors import ModelNotAllowed
from .errors import RateLimited
from .errors import Unauthorized
from .schema import ChatRequest

__all__ = [
    "RateLimiter",
    "check_model_allowed",
    "check_token",
    "client_key",
    "model_allowed",
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
    check_model_allowed(model, settings.model_allowlist)
    for index, fallback in enumerate(chat.params.get("models", ())):
        check_model_allowed(fallback, settings.model_allowlist, field=f"models[{index}]")
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


class RateLimiter:
    """A fixed-window limit per client key.

    :param limit: calls allowed per window.
    :param window: window length in seconds.
    :param counter: ``counter(key, window) -> (count, seconds_left)``: the
        store's :meth:`~ngai_chat.store.Store.hit`, so that every instance
        sharing Redis shares the limit.
    """

    def __init__(
        self, limit: int, window: int, counter: t.Callable[[str, int], tuple[int, float]]
    ) -> None:
        self.limit = limit
        self.window = window
        self._counter = counter

    def hit(self, key: str) -> None:
        """Count one call for ``key``.

        :raises RateLimited: over the limit, with the seconds until it resets.
        """
        count, left = self._counter(f"rate:{key}", self.window)
        if count > self.limit:
            retry_after = max(1, math.ceil(left))
            raise RateLimited(
                f"Too many requests: the limit is {self.limit} per {self.window} s "
                f"(NGAI_RATE_LIMIT). Try again in {retry_after} s.",
                retry_after=retry_after,
            )
