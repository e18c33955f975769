"""Prometheus metrics (``NGAI_METRICS=1``), counted in this worker process.

Plain counters in dicts: incrementing one is a dict update, cheap enough for the
per-chunk path. ``GET /metrics`` renders the text exposition format; each gunicorn
worker reports its own numbers (scrape them per process, or sum them).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import typing as t

__all__ = ["METRICS_HELP", "Finished", "Metrics"]

#: name → (type, help); the README lists the same
METRICS_HELP: dict[str, tuple[str, str]] = {
    "ngai_info": ("gauge", "Always 1; labels: version, store, upstream."),
    "ngai_sessions_created_total": ("counter", "Sessions created by POST /prepare."),
    "ngai_requests_rejected_total": (
        "counter",
        "Requests answered with an error, by error code.",
    ),
    "ngai_sessions_live": ("gauge", "Sessions pending or generating, in the whole store."),
    "ngai_streams_open": ("gauge", "GET /stream responses open in this process."),
    "ngai_streams_total": ("counter", "GET /stream responses started in this process."),
    "ngai_generations_running": ("gauge", "Upstream requests in flight in this process."),
    "ngai_generations_total": (
        "counter",
        "Finished generations, by outcome (done, cancelled, or the error code).",
    ),
    "ngai_events_total": ("counter", "Events appended to logs by this process, by event."),
    "ngai_upstream_first_chunk_seconds": (
        "histogram",
        "Seconds from starting the upstream request to its first chunk.",
    ),
}

_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclasses.dataclass(frozen=True)
class Finished:
    """What the relay reports when a generation has ended its log."""

    #: ``done``, ``cancelled``, or the terminal error's code
    outcome: str
    #: the model that answered, as the upstream reported it (else the requested one)
    model: str | None
    #: the usage object the upstream sent (``prompt_tokens``, ``cost``, …), or ``None``
    usage: t.Any
    #: chunk events appended to the log
    chunks: int
    #: who made the session (:attr:`~ngai_chat.store.SessionInfo.client`)
    client: str


class Metrics:
    """The counters of one app in one process.

    The relay and the views report through the methods below and nothing else,
    so that how they are kept can change without touching the hot path.
    """

    def __init__(self) -> None:
        self.sessions_created = 0
        self.streams_total = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self.generations: collections.Counter[str] = collections.Counter()
        self.events: collections.Counter[str] = collections.Counter()
        self._first_chunk_buckets = [0] * (len(_BUCKETS) + 1)
        self._first_chunk_sum = 0.0
        self._first_chunk_count = 0

    def session_created(self) -> None:
        self.sessions_created += 1

    def request_rejected(self, code: str) -> None:
        self.rejected[code] += 1

    def stream_opened(self) -> None:
        self.streams_total += 1

    def stream_closed(self) -> None:
        """A ``GET /stream`` response closed (its gauge is the relay's count)."""

    def generation_finished(self, finished: Finished) -> None:
        self.events["chunk"] += finished.chunks
        self.events["error" if finished.outcome not in ("done", "cancelled") else "done"] += 1
        self.generations[finished.outcome] += 1

    def observe_relay_delay(self, seconds: float) -> None:
        """Seconds from an upstream chunk's arrival to its write to a reader."""

    def observe_first_chunk(self, seconds: float) -> None:
        self._first_chunk_buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self._first_chunk_sum += seconds
        self._first_chunk_count += 1

    def render(self, *, info: dict[str, str], gauges: dict[str, float]) -> str:
        """The text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def family(name: str, samples: t.Iterable[tuple[str, float]]) -> None:
            kind, text = METRICS_HELP[name]
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        family("ngai_info", [(_labels(info), 1)])
        family("ngai_sessions_created_total", [("", self.sessions_created)])
        family("ngai_requests_rejected_total", _by("code", self.rejected))
        for name, value in gauges.items():
            family(name, [("", value)])
        family("ngai_streams_total", [("", self.streams_total)])
        family("ngai_generations_total", _by("outcome", self.generations))
        family("ngai_events_total", _by("event", self.events))
        cumulative = 0
        samples: list[tuple[str, float]] = []
        for bound, count in zip((*_BUCKETS, float("inf")), self._first_chunk_buckets, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            samples.append((f'_bucket{{le="{le}"}}', cumulative))
        samples += [("_sum", self._first_chunk_sum), ("_count", self._first_chunk_count)]
        family("ngai_upstream_first_chunk_seconds", samples)  # suffixed samples
        return "\n".join(lines) + "\n"


def _by(label: str, counter: collections.Counter[str]) -> list[tuple[str, float]]:
    return [(_labels({label: key}), value) for key, value in sorted(counter.items())]


def _labels(labels: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
