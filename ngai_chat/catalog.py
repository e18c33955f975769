"""``GET /models``: the upstream's list, cached, filtered, and kept when it fails."""

from __future__ import annotations

import logging
import time
import typing as t
from decimal import Decimal
from decimal import InvalidOperation

from .errors import UpstreamError
from .guards import model_allowed
from .upstream import Upstream

__all__ = ["FREE_VALUES", "ModelsCache", "filter_models", "is_free", "wants_free"]

log = logging.getLogger(__name__)

#: values of ``GET /models?free=…`` that keep only the free models (any case)
FREE_VALUES = ("1", "true", "yes")


def wants_free(value: str | None) -> bool:
    """Whether the ``free`` query value asks for free models only."""
    return (value or "").lower() in FREE_VALUES


def is_free(model: dict[str, t.Any]) -> bool:
    """Whether the prompt and completion prices are both zero as numbers.

    ``"0"`` and ``"0.0"`` are free; a router entry priced ``"-1"`` (price decided
    later) is not, and neither is a model without pricing.
    """
    pricing = model.get("pricing")
    if not isinstance(pricing, dict):
        return False
    try:
        return all(Decimal(str(pricing[key])) == 0 for key in ("prompt", "completion"))
    except (KeyError, InvalidOperation, ValueError):
        return False


def filter_models(
    data: dict[str, t.Any], *, allowlist: tuple[str, ...], free_only: bool
) -> dict[str, t.Any]:
    """``data`` with only the allowed (and, when asked, free) models."""
    models = [
        model
        for model in data.get("data", [])
        if isinstance(model, dict)
        and model_allowed(str(model.get("id", "")), allowlist)
        and (not free_only or is_free(model))
    ]
    return {**data, "data": models}


class ModelsCache:
    """The upstream model list, fetched at most once per ``ttl`` seconds.

    :param upstream: where the list comes from.
    :param ttl: seconds a fetched list is fresh.
    :param clock: monotonic clock.
    """

    def __init__(
        self, upstream: Upstream, ttl: float, *, clock: t.Callable[[], float] = time.monotonic
    ) -> None:
        self.upstream = upstream
        self.ttl = ttl
        self.clock = clock
        self._data: dict[str, t.Any] | None = None
        self._fetched_at = 0.0

    def get(self) -> tuple[dict[str, t.Any], bool]:
        """The list and whether it is stale (the upstream failed just now).

        :raises UpstreamError: the upstream failed and no copy was ever fetched.
        """
        if self._data is not None and self.clock() - self._fetched_at < self.ttl:
            return self._data, False
        try:
            data = self.upstream.list_models()
        except UpstreamError as exc:
            if self._data is None:
                raise
            log.warning("model list fetch failed (%s); serving the last good copy", exc.code)
            return self._data, True
        self._data, self._fetched_at = data, self.clock()
        return data, False
