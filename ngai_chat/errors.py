"""One error tree for every failure a client can see (SPEC §4).

Every error carries its ``code``, HTTP ``status`` and ``retryable`` flag at class
level, so a view turns any of them into the same JSON body, and the relay turns
any of them into the same SSE ``error`` event::

    ApiError
    ├── InvalidJson                    400 invalid_json
    ├── InvalidRequest (ValueError)    400 invalid_request      (+ field)
    ├── UnsupportedMediaType           415 unsupported_media_type
    ├── PayloadTooLarge                413 payload_too_large
    ├── Unauthorized                   401 unauthorized
    ├── ModelNotAllowed                403 model_not_allowed
    ├── RateLimited                    429 rate_limited          (+ retryAfter)
    ├── BudgetExceeded                 429 budget_exceeded       (+ retryAfter)
    ├── CapacityExceeded               503 capacity_exceeded     (+ retryAfter)
    ├── SessionNotFound                404 session_not_found
    ├── NotFound                       404 not_found
    ├── MethodNotAllowed               405 method_not_allowed
    ├── TooLong                        507 too_long
    ├── StoreUnavailable               503 store_unavailable     (+ retryAfter)
    ├── InternalError                  500 internal_error
    └── UpstreamError                  what the upstream said, mapped
        ├── UpstreamBadRequest         400 upstream_bad_request
        ├── UpstreamUnauthorized       502 upstream_unauthorized
        ├── ContentBlocked             403 content_blocked
        ├── InsufficientCredits        402 insufficient_credits
        ├── UpstreamRateLimited        429 upstream_rate_limited
        ├── UpstreamUnavailable        502 upstream_unavailable
        ├── UpstreamTimeout (TimeoutError)  504 upstream_timeout
        ├── UpstreamStreamError        502 upstream_error
        └── UpstreamInterrupted        502 upstream_interrupted
"""

from __future__ import annotations

import typing as t

__all__ = [
    "ApiError",
    "BudgetExceeded",
    "CapacityExceeded",
    "ContentBlocked",
    "InsufficientCredits",
    "InternalError",
    "InvalidJson",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "SessionNotFound",
    "StoreUnavailable",
    "TooLong",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamBadRequest",
    "UpstreamError",
    "UpstreamInterrupted",
    "UpstreamRateLimited",
    "UpstreamStreamError",
    "UpstreamTimeout",
    "UpstreamUnauthorized",
    "UpstreamUnavailable",
]


class ApiError(Exception):
    """Base of every error a client may see.

    :param message: what went wrong and what to do about it, for people.
    :param field: for validation errors, the path of the offending field
        (``messages[2].role``).
    :param upstream: the upstream's own error object, passed along untouched.
    :param retry_after: seconds the client should wait before retrying.
    """

    #: machine-readable code, stable across releases
    code: t.ClassVar[str] = "internal_error"
    #: HTTP status of the JSON response
    status: t.ClassVar[int] = 500
    #: whether the same request may succeed later
    retryable: t.ClassVar[bool] = False
    #: message used when none is given
    default_message: t.ClassVar[str] = "Something went wrong on our side."
    #: ``retryAfter`` used when none is given (every 429 and 503 carries one)
    default_retry_after: t.ClassVar[int | None] = None

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        upstream: t.Any = None,
        retry_after: int | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.field = field
        self.upstream = upstream
        self.retry_after = self.default_retry_after if retry_after is None else retry_after
        super().__init__(self.message)

    def to_dict(self) -> dict[str, t.Any]:
        """The inner error object: the data of an SSE ``error`` event."""
        body: dict[str, t.Any] = {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "retryable": self.retryable,
        }
        if self.field is not None:
            body["field"] = self.field
        if self.retry_after is not None:
            body["retryAfter"] = self.retry_after
        if self.upstream is not None:
            body["upstream"] = self.upstream
        return body

    def to_body(self) -> dict[str, t.Any]:
        """The JSON body of an HTTP error response."""
        return {"error": self.to_dict()}


class InvalidJson(ApiError):
    code = "invalid_json"
    status = 400
    default_message = "The request body is not valid JSON."


class InvalidRequest(ApiError, ValueError):
    code = "invalid_request"
    status = 400
    default_message = "The request does not have the expected shape."


class UnsupportedMediaType(ApiError):
    code = "unsupported_media_type"
    status = 415
    default_message = "Send the body as JSON with 'Content-Type: application/json'."


class PayloadTooLarge(ApiError):
    code = "payload_too_large"
    status = 413
    default_message = "The request body is too large."


class Unauthorized(ApiError):
    code = "unauthorized"
    status = 401
    default_message = "Send a valid token as 'Authorization: Bearer <token>'."


class ModelNotAllowed(ApiError):
    code = "model_not_allowed"
    status = 403
    default_message = "This model is not allowed on this server."


class RateLimited(ApiError):
    code = "rate_limited"
    status = 429
    retryable = True
    default_message = "Too many requests; wait a little and try again."
    default_retry_after = 60


class BudgetExceeded(ApiError):
    code = "budget_exceeded"
    status = 429
    retryable = True
    default_message = "The spending budget is used up; try again when its window resets."
    default_retry_after = 60


class CapacityExceeded(ApiError):
    code = "capacity_exceeded"
    status = 503
    retryable = True
    default_message = "The server is at capacity; try again shortly."
    default_retry_after = 5


class SessionNotFound(ApiError):
    code = "session_not_found"
    status = 404
    default_message = (
        "No such session: it never existed, expired, or was already finished "
        "and forgotten. Call POST /prepare to start a new one."
    )


class NotFound(ApiError):
    code = "not_found"
    status = 404
    default_message = "No such endpoint."


class MethodNotAllowed(ApiError):
    code = "method_not_allowed"
    status = 405
    default_message = "This endpoint does not accept that method."


class TooLong(ApiError):
    code = "too_long"
    status = 507
    default_message = "The answer grew past the server's event limit and was cut off."


class StoreUnavailable(ApiError):
    code = "store_unavailable"
    status = 503
    retryable = True
    default_message = "The session store is unreachable; try again shortly."
    default_retry_after = 5


class InternalError(ApiError):
    code = "internal_error"
    status = 500
    default_message = "Something went wrong on our side; the server log has the details."


class UpstreamError(ApiError):
    """Anything the upstream model server did wrong, mapped to SPEC §4."""

    code = "upstream_unavailable"
    status = 502
    retryable = True
    default_message = "The model provider failed."


class UpstreamBadRequest(UpstreamError):
    code = "upstream_bad_request"
    status = 400
    retryable = False
    default_message = "The model provider rejected the request (bad model name or parameter)."


class UpstreamUnauthorized(UpstreamError):
    code = "upstream_unauthorized"
    status = 502
    retryable = False
    default_message = (
        "The model provider rejected this server's API key. "
        "The operator must fix OPENROUTER_API_KEY."
    )


class ContentBlocked(UpstreamError):
    code = "content_blocked"
    status = 403
    retryable = False
    default_message = "The model provider blocked this input (moderation or guardrail)."


class InsufficientCredits(UpstreamError):
    code = "insufficient_credits"
    status = 402
    retryable = False
    default_message = "The model provider account has too few credits for this request."


class UpstreamRateLimited(UpstreamError):
    code = "upstream_rate_limited"
    status = 429
    retryable = True
    default_message = "The model provider is rate limiting us; try again in a minute."
    #: free models allow 20 requests a minute
    default_retry_after = 30


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    status = 502
    retryable = True
    default_message = "The model provider is unreachable or failing; try again shortly."


class UpstreamTimeout(UpstreamError, TimeoutError):
    code = "upstream_timeout"
    status = 504
    retryable = True
    default_message = "The model provider took too long to answer."


class UpstreamStreamError(UpstreamError):
    code = "upstream_error"
    status = 502
    retryable = True
    default_message = "The model provider reported an error in the middle of the answer."


class UpstreamInterrupted(UpstreamError):
    code = "upstream_interrupted"
    status = 502
    retryable = True
    default_message = "The answer stopped before it was finished."
