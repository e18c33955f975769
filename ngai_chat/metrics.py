"""Prometheus metrics (``NGAI_METRICS=1``) on ``prometheus_client``, for the whole instance.

Two modes, chosen by the environment when an app is created:

- **multiprocess** (``PROMETHEUS_MULTIPROC_DIR`` set: the gunicorn hooks in
  :mod:`ngai_chat.gunicorn_conf` set it up): every worker writes its samples to
  memory-mapped files in that directory, and a scrape, whichever worker answers,
  merges every file with a :class:`~prometheus_client.multiprocess.MultiProcessCollector`.
  Counters of workers that died stay in the sum; gauges of dead workers drop out
  (``livesum``).
- **one process** (no such variable: a host app, the tests): a private
  :class:`~prometheus_client.CollectorRegistry` per app, never the global
  ``REGISTRY``, so that several apps in one process, and a host app with metrics
  of its own, do not collide.

The relay and the views report through the methods of :class:`Metrics` only.
Nothing is counted per chunk: a generation's chunks, tokens and cost are counted
once, when it ends (:meth:`Metrics.generation_finished`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import typing as t

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client import values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from . import errors
from .usage import Usage

__all__ = ["CONTENT_TYPE", "METRICS_HELP", "UPSTREAM_ERROR_CODES", "Finished", "Metrics"]

log = logging.getLogger(__name__)

#: what ``GET /metrics`` answers with (the text format ``generate_latest`` writes)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: name → (type, labels, help); docs/operations.md's "Metrics" table lists the same
#: (tests/test_docs.py holds them together)
METRICS_HELP: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ngai_info": ("gauge", ("version", "store", "upstream"), "Always 1."),
    "ngai_sessions_created_total": ("counter", (), "Sessions created by POST /prepare."),
    "ngai_requests_rejected_total": (
        "counter",
        ("code",),
        "Requests answered with an error (HTTP or a refused stream), by error code.",
    ),
    "ngai_sessions_live": (
        "gauge",
        (),
        "Sessions pending or generating in the store (with Redis: every instance's).",
    ),
    "ngai_streams_open": ("gauge", (), "GET /stream responses open, summed over live workers."),
    "ngai_streams_total": ("counter", (), "GET /stream responses started."),
    "ngai_generations_running": (
        "gauge",
        (),
        "Upstream requests in flight, summed over live workers.",
    ),
    "ngai_generations_total": (
        "counter",
        ("outcome",),
        "Finished generations, by outcome (done, cancelled, or the error code).",
    ),
    "ngai_upstream_errors_total": (
        "counter",
        ("code",),
        "Generations ended by an upstream failure, by error code (upstream_unavailable, ...).",
    ),
    "ngai_events_total": ("counter", ("event",), "Events appended to session logs, by event."),
    "ngai_tokens_total": (
        "counter",
        ("model", "kind"),
        "Tokens from the usage of finished answers, by model and kind "
        "(prompt, completion, reasoning, cached).",
    ),
    "ngai_cost_usd_total": (
        "counter",
        ("model",),
        "Cost in USD from the usage of finished answers, by model.",
    ),
    "gen_ai_client_token_usage": (
        "histogram",
        (
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "gen_ai_token_type",
        ),
        "Input and output tokens per answer (OpenTelemetry gen_ai.client.token.usage).",
    ),
    "gen_ai_client_operation_time_to_first_chunk_seconds": (
        "histogram",
        ("gen_ai_operation_name", "gen_ai_provider_name"),
        "Seconds from sending the upstream request to its first chunk "
        "(OpenTelemetry gen_ai.client.operation.time_to_first_chunk).",
    ),
    "ngai_relay_delay_seconds": (
        "histogram",
        (),
        "Seconds from an upstream chunk's arrival to its write to the first reader (sampled).",
    ),
}

#: the OpenTelemetry GenAI conventions' buckets for token counts
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
#: ... and for durations in seconds
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96)
#: the relay's own delay is meant to be well under a millisecond
RELAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: a model name longer than this is cut in labels (label values are kept forever)
MAX_LABEL = 200


def _codes(cls: type[errors.ApiError]) -> set[str]:
    found = {cls.code}
    for sub in cls.__subclasses__():
        found |= _codes(sub)
    return found


#: the error codes that mean the upstream failed (``ngai_upstream_errors_total``)
UPSTREAM_ERROR_CODES = frozenset(_codes(errors.UpstreamError))


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
    #: the model the request named, when the relay knows it (else :attr:`model`)
    request_model: str | None = None


class _ScrapeTime:
    """A collector of the values read when scraped: the store's live sessions, and
    the app's info (constant labels), so that neither needs a per-process file.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> t.Iterable[Metric]:
        info = GaugeMetricFamily(
            "ngai_info", METRICS_HELP["ngai_info"][2], labels=list(self._metrics.info)
        )
        info.add_metric(list(self._metrics.info.values()), 1)
        yield info
        live = float("nan")
        if self._metrics.live_sessions is not None:
            # NaN when the store does not answer this scrape
            with contextlib.suppress(errors.StoreUnavailable):
                live = float(self._metrics.live_sessions())
        yield GaugeMetricFamily("ngai_sessions_live", METRICS_HELP["ngai_sessions_live"][2], live)


class Metrics:
    """The metrics of one app (in multiprocess mode: of every worker of the instance).

    :param enabled: ``NGAI_METRICS``; when off nothing is kept.
    :param provider: the upstream's name (``openrouter``, ``demo``), the
        ``gen_ai_provider_name`` label.
    :param info: the labels of ``ngai_info``.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        provider: str = "openrouter",
        info: dict[str, str] | None = None,
    ) -> None:
        self.enabled = enabled
        self.provider = provider
        self.info = dict(info or {})
        #: set (``PROMETHEUS_MULTIPROC_DIR``): samples go to files there, and a
        #: scrape merges every process's files
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        #: ``live_sessions() -> int``, read at scrape time (the store's count)
        self.live_sessions: t.Callable[[], int] | None = None
        #: the private registry (one-process mode), where the metrics below live
        self.registry = CollectorRegistry()
        if not enabled:
            return
        if self.multiprocess_dir:
            _use_multiprocess_values()
        # multiprocess: the values live in files, and a scrape builds its own registry
        registry = None if self.multiprocess_dir else self.registry
        self._scrape_time = _ScrapeTime(self)
        if registry is not None:
            registry.register(self._scrape_time)

        def help_of(name: str) -> str:
            return METRICS_HELP[name][2]

        def counter(name: str) -> Counter:
            labels = METRICS_HELP[name][1]
            return Counter(name, help_of(name), labels, registry=registry)

        def gauge(name: str) -> Gauge:
            return Gauge(name, help_of(name), registry=registry, multiprocess_mode="livesum")

        def histogram(name: str, buckets: t.Sequence[float]) -> Histogram:
            labels = METRICS_HELP[name][1]
            return Histogram(name, help_of(name), labels, buckets=buckets, registry=registry)

        self.sessions_created = counter("ngai_sessions_created_total")
        self.requests_rejected = counter("ngai_requests_rejected_total")
        self.streams_open = gauge("ngai_streams_open")
        self.streams_total = counter("ngai_streams_total")
        self.generations_running = gauge("ngai_generations_running")
        self.generations = counter("ngai_generations_total")
        self.upstream_errors = counter("ngai_upstream_errors_total")
        self.events = counter("ngai_events_total")
        self.tokens = counter("ngai_tokens_total")
        self.cost = counter("ngai_cost_usd_total")
        self.token_usage = histogram("gen_ai_client_token_usage", TOKEN_BUCKETS)
        ttfc = histogram("gen_ai_client_operation_time_to_first_chunk_seconds", DURATION_BUCKETS)
        self.first_chunk = ttfc.labels("chat", provider)
        self.relay_delay = histogram("ngai_relay_delay_seconds", RELAY_BUCKETS)

    # --- what the relay and the views report ---------------------------------

    def session_created(self) -> None:
        """``POST /prepare`` created a session."""
        if self.enabled:
            self.sessions_created.inc()

    def request_rejected(self, code: str) -> None:
        """A request was answered with the error ``code``."""
        if self.enabled:
            self.requests_rejected.labels(code).inc()

    def stream_opened(self) -> None:
        """A ``GET /stream`` response started (after any generation it starts)."""
        if self.enabled:
            self.streams_total.inc()
            self.streams_open.inc()

    def stream_closed(self) -> None:
        """A ``GET /stream`` response closed."""
        if self.enabled:
            self.streams_open.dec()

    def generation_started(self) -> None:
        """A generation started in this process."""
        if self.enabled:
            self.generations_running.inc()

    def generation_finished(self, finished: Finished) -> None:
        """A generation ended its log (once per generation, in the process that ran it).

        :param finished: its outcome, model, usage and size.
        """
        if not self.enabled:
            return
        self.generations_running.dec()
        self.generations.labels(finished.outcome).inc()
        if finished.outcome in UPSTREAM_ERROR_CODES:
            self.upstream_errors.labels(finished.outcome).inc()
        self.events.labels("chunk").inc(finished.chunks)
        self.events.labels("done" if finished.outcome in ("done", "cancelled") else "error").inc()
        usage = Usage.of(finished.usage)
        if usage is None:
            return
        model = (finished.model or finished.request_model or "unknown")[:MAX_LABEL]
        request_model = (finished.request_model or model)[:MAX_LABEL]
        for kind, amount in (
            ("prompt", usage.prompt),
            ("completion", usage.completion),
            ("reasoning", usage.reasoning),
            ("cached", usage.cached),
        ):
            if amount is not None:
                self.tokens.labels(model, kind).inc(amount)
        for kind, amount in (("input", usage.prompt), ("output", usage.completion)):
            if amount is not None:
                self.token_usage.labels("chat", self.provider, request_model, model, kind).observe(
                    amount
                )
        if usage.cost is not None:
            self.cost.labels(model).inc(usage.cost)

    def observe_first_chunk(self, seconds: float) -> None:
        """Seconds from sending the upstream request to its first chunk."""
        if self.enabled:
            self.first_chunk.observe(seconds)

    def observe_relay_delay(self, seconds: float) -> None:
        """Seconds from an upstream chunk's arrival to its write to the first reader."""
        if self.enabled:
            self.relay_delay.observe(seconds)

    # --- for the app ---------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition of every metric; in multiprocess mode, of every process."""
        registry = self.registry
        if self.enabled and self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            registry.register(self._scrape_time)
        return generate_latest(registry)


def _use_multiprocess_values() -> None:
    """Make ``prometheus_client`` keep values in files from now on in this process.

    It picks its value class once, when first imported; under gunicorn that is in
    the master, before the hook that sets ``PROMETHEUS_MULTIPROC_DIR`` runs (the
    config module imports the package). Picking again here, in the worker after
    gevent's patching, also gives its lock the patched type.
    """
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
