"""Summaries of what the load generator recorded."""

from __future__ import annotations

import dataclasses
import math
import typing as t

__all__ = ["Percentiles", "StreamStats", "percentiles", "summarize"]


@dataclasses.dataclass(frozen=True)
class Percentiles:
    """Milliseconds; ``nan`` when nothing was measured."""

    p50: float
    p95: float
    count: int


def percentiles(seconds: t.Iterable[float | None]) -> Percentiles:
    """Median and 95th percentile (nearest rank) of durations, in milliseconds."""
    values = sorted(1000 * value for value in seconds if value is not None)
    if not values:
        return Percentiles(math.nan, math.nan, 0)

    def rank(q: float) -> float:
        return values[max(0, math.ceil(q * len(values)) - 1)]

    return Percentiles(rank(0.5), rank(0.95), len(values))


@dataclasses.dataclass(frozen=True)
class StreamStats:
    """A batch of streams: how many, how fast, how soon."""

    sessions: int
    errors: int
    events: int
    #: seconds from the first request to the last terminal event
    wall: float
    events_per_s: float
    prepare: Percentiles
    ttfb: Percentiles
    ttfc: Percentiles
    total: Percentiles
    first_error: str | None


def summarize(records: t.Sequence[dict[str, t.Any]], wall: float) -> StreamStats:
    """Summarize load-generator records (:class:`bench.jobs.Record` as dicts).

    Failed streams count as errors and their events are left out.
    """
    good = [r for r in records if r["error"] is None]
    failed = [r for r in records if r["error"] is not None]
    events = sum(r["events"] for r in good)
    return StreamStats(
        sessions=len(records),
        errors=len(failed),
        events=events,
        wall=wall,
        events_per_s=events / wall if wall > 0 else math.nan,
        prepare=percentiles(r["prepare"] for r in good),
        ttfb=percentiles(r["ttfb"] for r in good),
        ttfc=percentiles(r["ttfc"] for r in good),
        total=percentiles(r["total"] for r in good),
        first_error=failed[0]["error"] if failed else None,
    )
