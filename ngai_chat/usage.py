"""What an upstream ``usage`` object says, read once for metrics and budgets.

Pure: no I/O. An upstream's garbage (a string, ``NaN``, a negative count) is read
as absent, so that it never reaches a counter.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

__all__ = ["Usage"]


@dataclasses.dataclass(frozen=True)
class Usage:
    """The numbers of an upstream ``usage`` object; each ``None`` when absent or not a
    finite non-negative number.
    """

    prompt: float | None
    completion: float | None
    #: ``total_tokens``, else prompt + completion when either is known
    total: float | None
    reasoning: float | None
    cached: float | None
    #: US dollars, when the upstream reports it
    cost: float | None

    @classmethod
    def of(cls, usage: t.Any) -> Usage | None:
        """Read a usage object; ``None`` when it is not one."""
        if not isinstance(usage, dict):
            return None
        completion_details = usage.get("completion_tokens_details")
        prompt_details = usage.get("prompt_tokens_details")
        prompt = _amount(usage, "prompt_tokens")
        completion = _amount(usage, "completion_tokens")
        total = _amount(usage, "total_tokens")
        if total is None and (prompt is not None or completion is not None):
            total = (prompt or 0) + (completion or 0)
        return cls(
            prompt=prompt,
            completion=completion,
            total=total,
            reasoning=_amount(completion_details, "reasoning_tokens"),
            cached=_amount(prompt_details, "cached_tokens"),
            cost=_amount(usage, "cost"),
        )


def _amount(obj: t.Any, key: str) -> float | None:
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value
