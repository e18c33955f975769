"""Spend budgets (``NGAI_BUDGET_PER_CLIENT``, ``NGAI_BUDGET_TOTAL``).

A budget is an amount of tokens or of US dollars per fixed window (second, minute,
hour, day), counted from the ``usage`` of finished answers: ``total_tokens``, or
``cost``. Dollars are kept as whole micro-dollars, since the counters are integers.
It is checked at ``POST /prepare``: past it, 429 ``budget_exceeded`` with
``Retry-After`` until the window resets. An answer already running finishes and
is counted; so an instance may overshoot a budget by what the answers running
when it was reached cost, never by more.

The counters live in the app's ``limits`` storage (:mod:`ngai_chat.counters`): Redis
when the store is shared, so that every worker and instance shares them, else this
process's memory. The window a
count belongs to is part of its key, computed from the app's clock, so a new
window starts from zero at once (and tests can move the clock).
"""

from __future__ import annotations

import logging
import math
import typing as t

from limits.errors import StorageError
from limits.storage import Storage

from . import errors
from .config import MICRO
from .config import Budget as Budget
from .config import parse_budget as parse_budget
from .usage import Usage

__all__ = ["Budget", "Budgets", "budgets_from_settings", "cost_of", "parse_budget"]

log = logging.getLogger(__name__)


def cost_of(budget: Budget, usage: t.Any) -> int:
    """What an answer's ``usage`` spends of ``budget``, in its unit (0 when the usage
    says nothing): ``cost`` in micro-dollars, else ``total_tokens`` (or prompt +
    completion), read by :meth:`Usage.of <ngai_chat.usage.Usage.of>`.
    """
    read = Usage.of(usage)
    if read is None:
        return 0
    if budget.unit == "usd":
        return 0 if read.cost is None else round(read.cost * MICRO)
    return 0 if read.total is None else int(read.total)


class Budgets:
    """The budgets of one app: one per client and one for the whole server.

    :param per_client: ``NGAI_BUDGET_PER_CLIENT``, or ``None``.
    :param total: ``NGAI_BUDGET_TOTAL``, or ``None``.
    :param storage: where the counters live
        (:func:`~ngai_chat.counters.counter_storage`).
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

    def record(self, client: str, usage: t.Any) -> None:
        """Count what a finished answer spent (the generation reports it when it ends).

        :param client: who made the session.
        :param usage: the upstream's ``usage`` object, or ``None``.
        """
        now = self.clock()
        for budget, scope, _ in self._scopes(client):
            amount = cost_of(budget, usage)
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
    storage: Storage,
    clock: t.Callable[[], float],
) -> Budgets | None:
    """The app's budgets, or ``None`` when neither is set.

    :param storage: the app's counters (:func:`~ngai_chat.counters.counter_storage`).
    """
    if per_client is None and total is None:
        return None
    return Budgets(per_client=per_client, total=total, storage=storage, clock=clock)
