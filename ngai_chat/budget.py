"""Spend budgets (``NGAI_BUDGET_PER_CLIENT``, ``NGAI_BUDGET_TOTAL``).

A budget is an amount of tokens or of US dollars per fixed window (second, minute,
hour, day), counted from the ``usage`` of finished answers: ``total_tokens``, or
``cost``. Dollars are kept as whole micro-dollars, since the counters are integers.
It is checked at ``POST /prepare``: past it, 429 ``budget_exceeded`` with
``Retry-After`` until the window resets. An answer already running finishes and
is counted; so an instance may overshoot a budget by what the answers running
when it was reached cost, never by more.

The counters live in a ``limits`` storage: Redis when ``REDIS_URL`` is set, so that
every worker and instance shares them, else this process's memory. The window a
count belongs to is part of its key, computed from the app's clock, so a new
window starts from zero at once (and tests can move the clock).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import typing as t

from limits.errors import StorageError
from limits.storage import Storage
from limits.storage import storage_from_string

from . import errors

if t.TYPE_CHECKING:
    from .metrics import Finished

__all__ = ["Budget", "Budgets", "budgets_from_settings", "parse_budget"]

log = logging.getLogger(__name__)

MICRO = 1_000_000
WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_BUDGET = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(tokens?|usd)\s*/\s*(second|minute|hour|day)\s*$", re.IGNORECASE
)


@dataclasses.dataclass(frozen=True)
class Budget:
    """An amount that may be spent per window."""

    #: tokens, or micro-dollars
    limit: int
    #: ``tokens`` or ``usd``
    unit: t.Literal["tokens", "usd"]
    #: window length in seconds
    window: int
    #: the window's name (``day``)
    per: str

    def describe(self) -> str:
        """The budget as an operator writes it: ``200000 tokens/day``, ``2.50 usd/day``."""
        if self.unit == "usd":
            return f"{self.limit / MICRO:.2f} usd/{self.per}"
        return f"{self.limit} tokens/{self.per}"

    def cost_of(self, usage: t.Any) -> int:
        """What an answer's ``usage`` spends of this budget (0 when it says nothing)."""
        if not isinstance(usage, dict):
            return 0
        if self.unit == "usd":
            cost = _finite(usage.get("cost"))
            return 0 if cost is None else round(cost * MICRO)
        total = _finite(usage.get("total_tokens"))
        if total is None:
            total = sum(
                value
                for value in (
                    _finite(usage.get("prompt_tokens")),
                    _finite(usage.get("completion_tokens")),
                )
                if value is not None
            )
        return int(total)


def _finite(value: t.Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def parse_budget(raw: str) -> Budget | None:
    """``"200000 tokens/day"`` or ``"2.50 usd/day"`` (also per second, minute, hour).

    :return: ``None`` for an empty value (no budget).
    :raises ValueError: anything else, a zero amount included.
    """
    if not raw.strip():
        return None
    match = _BUDGET.match(raw)
    if not match:
        raise ValueError(raw)
    amount, unit, per = match.group(1), match.group(2).lower(), match.group(3).lower()
    if unit.startswith("token"):
        if "." in amount:
            raise ValueError(raw)  # tokens are whole
        budget = Budget(limit=int(amount), unit="tokens", window=WINDOWS[per], per=per)
    else:
        limit = round(float(amount) * MICRO)
        budget = Budget(limit=limit, unit="usd", window=WINDOWS[per], per=per)
    if budget.limit <= 0:
        raise ValueError(raw)  # a zero budget would refuse everything: surely a typo
    return budget


class Budgets:
    """The budgets of one app: one per client and one for the whole server.

    :param per_client: ``NGAI_BUDGET_PER_CLIENT``, or ``None``.
    :param total: ``NGAI_BUDGET_TOTAL``, or ``None``.
    :param storage: where the counters live (``limits`` memory or Redis storage).
    :param clock: wall clock; it picks the window a count belongs to.
    """

    def __init__(
        self,
        *,
        per_client: Budget | None,
        total: Budget | None,
        storage: Storage,
        clock: t.Callable[[], float],
    ) -> None:
        self.per_client = per_client
        self.total = total
        self.storage = storage
        self.clock = clock

    def _scopes(self, client: str) -> list[tuple[Budget, str, str]]:
        """(budget, key scope, setting) for every budget that applies to ``client``."""
        scopes = []
        if self.per_client is not None:
            scopes.append((self.per_client, f"client:{client}", "NGAI_BUDGET_PER_CLIENT"))
        if self.total is not None:
            scopes.append((self.total, "total", "NGAI_BUDGET_TOTAL"))
        return scopes

    def _key(self, budget: Budget, scope: str, now: float) -> tuple[str, float]:
        """The counter's key for the window containing ``now``, and the seconds left in it."""
        index = int(now // budget.window)
        key = f"budget:{budget.unit}:{budget.window}:{index}:{scope}"
        return key, (index + 1) * budget.window - now

    def check(self, client: str) -> None:
        """Refuse a new session when a budget that applies to ``client`` is spent.

        :raises BudgetExceeded: with the seconds until that window resets.
        :raises StoreUnavailable: the counters' storage did not answer.
        """
        now = self.clock()
        for budget, scope, setting in self._scopes(client):
            key, left = self._key(budget, scope, now)
            try:
                spent = self.storage.get(key)
            except StorageError as exc:
                raise errors.StoreUnavailable() from exc
            if spent >= budget.limit:
                retry_after = max(1, math.ceil(left))
                who = "This client has" if scope != "total" else "This server has"
                raise errors.BudgetExceeded(
                    f"{who} used its budget of {budget.describe()} ({setting}); "
                    f"it resets in {retry_after} s.",
                    retry_after=retry_after,
                )

    def record(self, finished: Finished) -> None:
        """Count what a finished answer spent (a :meth:`Metrics.on_finished` listener)."""
        now = self.clock()
        for budget, scope, _ in self._scopes(finished.client):
            amount = budget.cost_of(finished.usage)
            if amount <= 0:
                continue
            key, left = self._key(budget, scope, now)
            try:
                # the key outlives its window a little; the window's index keeps
                # a late count from landing in the next one
                self.storage.incr(key, math.ceil(left) + 60, amount)
            except StorageError:
                log.warning("could not count %s against %s", amount, budget.describe())

    def spent(self, client: str) -> dict[str, int]:
        """What was spent in the current windows: ``{"client": n, "total": n}`` for
        the budgets that are set.
        """
        now = self.clock()
        return {
            ("total" if scope == "total" else "client"): self.storage.get(
                self._key(budget, scope, now)[0]
            )
            for budget, scope, _ in self._scopes(client)
        }


def budgets_from_settings(
    per_client: Budget | None,
    total: Budget | None,
    *,
    redis_url: str | None,
    key_prefix: str,
    clock: t.Callable[[], float],
) -> Budgets | None:
    """The app's budgets, or ``None`` when neither is set.

    :param redis_url: ``REDIS_URL``: shared counters there, else in memory.
    :param key_prefix: ``NGAI_REDIS_KEY_PREFIX``, so that instances of different
        deployments on one Redis count apart.
    """
    if per_client is None and total is None:
        return None
    if redis_url and redis_url != "memory://":
        # limits spells a Unix socket URL its own way
        url = (
            redis_url.replace("unix://", "redis+unix://", 1)
            if redis_url.startswith("unix:")
            else redis_url
        )
        storage = storage_from_string(
            url,
            key_prefix=key_prefix.rstrip(":") or "ngai",
            wrap_exceptions=True,
            socket_timeout=5,
            socket_connect_timeout=5,
        )
    else:
        storage = storage_from_string("memory://", wrap_exceptions=True)
    return Budgets(
        per_client=per_client, total=total, storage=t.cast(Storage, storage), clock=clock
    )
