"""The one ``limits`` storage where the rate limit (:mod:`ngai_chat.guards`) and the
budgets (:mod:`ngai_chat.budget`) count: shared through Redis when the store is
(``REDIS_URL``), else this process's memory. Built once per app.
"""

from __future__ import annotations

import typing as t

from limits.errors import ConfigurationError
from limits.storage import Storage
from limits.storage import storage_from_string

from .config import ConfigError
from .config import Settings
from .log import redact_url
from .log import redact_urls

__all__ = ["counter_storage", "limits_url"]

#: ``REDIS_URL`` scheme → the scheme ``limits`` names the same server with, and
#: whether it speaks TLS (``limits`` has no ``unix://`` and no ``rediss+cluster://``)
_SCHEMES = {
    "redis://": ("redis://", False),
    "rediss://": ("rediss://", False),
    "unix://": ("redis+unix://", False),
    "redis+cluster://": ("redis+cluster://", False),
    "rediss+cluster://": ("redis+cluster://", True),
}


def limits_url(redis_url: str) -> tuple[str, dict[str, t.Any]]:
    """``REDIS_URL`` as ``limits`` spells it, and the options it then needs.

    :raises ConfigError: a scheme ``limits`` cannot reach (the URL shown with its
        password redacted).
    """
    for scheme, (theirs, tls) in _SCHEMES.items():
        if redis_url.startswith(scheme):
            return theirs + redis_url[len(scheme) :], ({"ssl": True} if tls else {})
    raise ConfigError(
        f"Invalid REDIS_URL={redact_url(redis_url)!r}: the rate limit and budgets cannot "
        "count there; use a redis://, rediss://, unix://, redis+cluster:// or "
        "rediss+cluster:// URL."
    )


def counter_storage(settings: Settings) -> Storage:
    """The app's counters: in the Redis of ``REDIS_URL`` when the store is shared
    (under ``NGAI_REDIS_KEY_PREFIX``, so that deployments on one Redis count apart),
    else in memory. Its errors are wrapped in :class:`limits.errors.StorageError`.

    :raises ConfigError: ``REDIS_URL`` cannot be used (its password never shown).
    """
    if not settings.store_shared or not settings.redis_url:
        return t.cast(Storage, storage_from_string("memory://", wrap_exceptions=True))
    url, options = limits_url(settings.redis_url)
    try:
        storage = storage_from_string(
            url,
            key_prefix=settings.redis_key_prefix.rstrip(":") or "ngai",
            wrap_exceptions=True,
            # RESP2 as the store uses; fail fast rather than hang a /prepare
            protocol=2,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            **options,
        )
    except (ConfigurationError, ValueError) as exc:
        # from None: the chained error would print the URL, password and all
        raise ConfigError(
            f"REDIS_URL={redact_url(settings.redis_url)!r} cannot hold the rate limit and "
            f"budget counters: {redact_urls(str(exc))}"
        ) from None
    return t.cast(Storage, storage)
